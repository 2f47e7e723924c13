"""Scrubbing: secrets never leave the process in span attributes, span events or log records.

On by default (``OTEL_KIT_SCRUB=false`` turns it off). Two kinds of rule, each with a name that the replacement
carries, so a reader sees *why* a value is gone but never the value: ``[REDACTED:bearer]``.

- key rules: the value of any attribute or log field whose key looks secret (``password``, ``token``,
  ``authorization``, ``cookie``, ``api_key``, ...) is replaced whole;
- value rules: secrets inside any string are replaced where they stand (bearer tokens, JWTs, AWS access key ids,
  card numbers that pass the Luhn check, ``key=value`` pairs of query strings and forms with a secret key, and
  e-mail addresses when ``OTEL_KIT_SCRUB_EMAILS=true``).

``OTEL_KIT_SCRUB_SAFE_KEYS`` lists keys never touched (exact names); ``OTEL_KIT_SCRUB_EXTRA_PATTERNS`` adds value
regexes (comma-separated), each reported as ``custom``. Cost: nothing for numbers and booleans, one pass of a few
regexes per string (``bench/``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Scrubber", "ScrubbingLogFilter", "default_scrubber"]

_SECRET_KEY = re.compile(
    r"(?i)(passw(or)?d|pwd|secret|token|api[-_.]?key|authorization|auth[-_.]?header|cookie|session[-_.]?id"
    r"|private[-_.]?key|credential|access[-_.]?key|signature)"
)
_PARAMS = r"(?:passw(?:or)?d|pwd|secret|token|api[-_.]?key|access[-_.]?key|auth|signature|session[-_.]?id|key)"

# (rule name, pattern); a match is replaced by [REDACTED:<rule name>]
_VALUE_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("bearer", re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}")),
    ("aws-access-key", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("private-key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)")),
    ("url-credentials", re.compile(r"(?<=//)[^/@\s:]+:[^/@\s]+(?=@)")),
]
_PARAM_RULE = re.compile(rf"(?i)(\b{_PARAMS}=)([^&\s;]+)")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# a cheap first look: a string with none of these cannot match any rule above
_MAYBE = re.compile(r"[@=]|\d[ -]?\d[ -]?\d[ -]?\d|[Bb]earer|BEARER|[Bb]asic|BASIC|eyJ|AKIA|ASIA|PRIVATE KEY")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


@dataclass
class Scrubber:
    """Replaces secrets in strings, mappings and attribute values; counts what each rule replaced."""

    enabled: bool = True
    safe_keys: frozenset[str] = frozenset()
    extra: tuple[re.Pattern[str], ...] = ()
    emails: bool = False
    fired: dict[str, int] = field(default_factory=dict)
    _secret_keys: dict[str, bool] = field(default_factory=dict, repr=False)

    def secret_key(self, key: str) -> bool:
        """Whether values under ``key`` are replaced whole (decided once per key)."""
        known = self._secret_keys.get(key)
        if known is None:
            known = key not in self.safe_keys and bool(_SECRET_KEY.search(key))
            if len(self._secret_keys) < 10_000:
                self._secret_keys[key] = known
        return known

    def _hit(self, rule: str) -> str:
        self.fired[rule] = self.fired.get(rule, 0) + 1
        return f"[REDACTED:{rule}]"

    def text(self, value: str) -> str:
        """``value`` with every secret inside it replaced."""
        if not self.enabled or not value or (not self.extra and not _MAYBE.search(value)):
            return value
        for rule, pattern in _VALUE_RULES:
            if pattern.search(value):
                replacement = self._hit(rule)
                value, extra_hits = pattern.subn(replacement, value)
                self.fired[rule] += extra_hits - 1
        if "=" in value:
            value = _PARAM_RULE.sub(lambda m: m.group(1) + self._hit("secret-param"), value)
        if any(c.isdigit() for c in value):
            value = _CARD.sub(self._card, value)
        if self.emails and "@" in value:
            value = _EMAIL.sub(lambda _m: self._hit("email"), value)
        for pattern in self.extra:
            value = pattern.sub(lambda _m: self._hit("custom"), value)
        return value

    def _card(self, match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        return self._hit("card-number") if 13 <= len(digits) <= 19 and _luhn(digits) else match.group(0)

    def value(self, key: str, value: Any) -> Any:
        """An attribute or log field value after scrubbing: whole when the key is secret, else its strings."""
        if not self.enabled or key in self.safe_keys:
            return value
        if self.secret_key(key):
            return self._hit("secret-key") if value not in (None, "") else value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, (list, tuple)):
            return type(value)(self.text(v) if isinstance(v, str) else v for v in value)
        if isinstance(value, Mapping):
            return {k: self.value(str(k), v) for k, v in value.items()}
        return value

    def changed(self, attributes: Mapping[str, Any] | None) -> dict[str, Any]:
        """The attributes whose scrubbed value differs, with that value (empty when nothing is secret).

        The common case (short strings, numbers, no secret keys) costs a cached key lookup and at most one
        regex search per string.
        """
        if not self.enabled or not attributes:
            return {}
        out: dict[str, Any] = {}
        for key, value in attributes.items():
            if key in self.safe_keys:
                continue
            if self.secret_key(key):
                new: Any = self.value(key, value)
            elif type(value) is str:
                if not self.extra and not _MAYBE.search(value):
                    continue
                new = self.text(value)
            elif isinstance(value, (list, tuple, Mapping)):
                new = self.value(key, value)
            else:
                continue
            if new != value:
                out[key] = new
        return out


def default_scrubber(
    enabled: bool = True, safe_keys: Iterable[str] = (), extra_patterns: Iterable[str] = (), emails: bool = False
) -> Scrubber:
    return Scrubber(enabled, _OWN_IDS | frozenset(safe_keys), tuple(re.compile(p) for p in extra_patterns), emails)


# The toolkit's own identifiers, validated where they are adopted: scrubbing one (a correlation id of 16 digits
# can pass the card-number check) would break the join between a trace and its logs.
_OWN_IDS = frozenset({"correlation_id", "trace_id", "span_id", "xray_trace_id"})


_BARE_RECORD_SIZE = len(vars(logging.LogRecord("", 0, "", 0, "", None, None)))
_STANDARD_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class ScrubbingLogFilter(logging.Filter):
    """Scrubs a log record in place before any handler formats or exports it: the message (rendered with its
    arguments), every ``extra`` field, and the exception text."""

    def __init__(self, scrubber: Scrubber) -> None:
        super().__init__()
        self.scrubber = scrubber

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.scrubber.enabled or getattr(record, "_otel_kit_scrubbed", False):
            return True
        message = record.getMessage()
        scrubbed = self.scrubber.text(message)
        if scrubbed != message or record.args:
            record.msg, record.args = scrubbed, None
        fields = record.__dict__
        # only what the caller added with extra= (a record without extras has no more keys than a bare one)
        extras = fields.keys() - _STANDARD_RECORD_FIELDS if len(fields) > _BARE_RECORD_SIZE else ()
        for key in extras:
            value = fields[key]
            if key.startswith("_") or value is None or type(value) in (int, float, bool):
                continue
            new = self.scrubber.value(key, value)
            if new is not value:
                fields[key] = new
        if record.exc_info and record.exc_info[0] is not None:
            exc_type = record.exc_info[0].__name__
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            # the handlers read the scrubbed text, never the exception object (whose message may hold a secret)
            record.exc_info = None
            record.exc_text = self.scrubber.text(text)
            setattr(record, "exception.type", exc_type)
            setattr(record, "exception.stacktrace", record.exc_text)
        elif record.exc_text:
            record.exc_text = self.scrubber.text(record.exc_text)
        record._otel_kit_scrubbed = True
        return True
