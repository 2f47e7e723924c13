"""Scrubbing: secrets never leave the process in span attributes, span events, status descriptions or log records.

On by default (``OTEL_KIT_SCRUB=false`` turns it off). Two kinds of rule, each with a name that the replacement
carries, so a reader sees *why* a value is gone but never the value: ``[REDACTED:bearer]``.

- key rules: the value of any attribute or log field whose key looks secret (``password``, ``token``,
  ``authorization``, ``cookie``, ``api_key``, ...) is replaced whole;
- value rules: secrets inside any string are replaced where they stand (bearer tokens, JWTs, AWS access key ids,
  card numbers that pass the Luhn check, ``key=value`` pairs of query strings and forms with a secret key, and
  e-mail addresses when ``OTEL_KIT_SCRUB_EMAILS=true``).

``OTEL_KIT_SCRUB_SAFE_KEYS`` lists keys never touched (exact names); ``OTEL_KIT_SCRUB_EXTRA_PATTERNS`` adds value
regexes (comma-separated), each reported as ``custom``. Cost (``bench/``): nothing for numbers and booleans; for a
string, a few substring tests and one regex search the first time it is seen, then a set lookup (short clean
strings are remembered, and most attribute values repeat).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Status

__all__ = ["Scrubber", "default_scrubber", "scrub_record"]

_SECRET_KEY = re.compile(
    r"(?i)(passw(or)?d|pwd|secret|token|api[-_.]?key|authorization|auth[-_.]?header|cookie|session[-_.]?id"
    r"|private[-_.]?key|credential|access[-_.]?key|signature)"
)
_PARAMS = r"(?:passw(?:or)?d|pwd|secret|token|api[-_.]?key|access[-_.]?key|auth|signature|session[-_.]?id|key)"

# (rule name, hint, pattern): a match is replaced by [REDACTED:<rule name>]. The pattern is searched only in a
# string whose lower-cased form holds the hint, a part of every match: a substring test costs a fraction of a regex
# search. Hints start with uncommon letters where they can, so the one search for any hint (_ANY_HINT) tries few
# positions of ordinary text ("yj" rather than "eyj": half the cost of that search on a log message).
_VALUE_RULES: list[tuple[str, str, re.Pattern[str]]] = [
    ("bearer", "bearer", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}")),
    ("bearer", "basic", re.compile(r"(?i)\bbasic\s+[A-Za-z0-9._~+/=-]{8,}")),
    ("jwt", "yj", re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}")),
    ("aws-access-key", "kia", re.compile(r"\bAKIA[0-9A-Z]{16}\b")),
    ("aws-access-key", "sia", re.compile(r"\bASIA[0-9A-Z]{16}\b")),
    (
        "private-key",
        "vate key",
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)"),
    ),
    ("url-credentials", "@", re.compile(r"(?<=//)[^/@\s:]+:[^/@\s]+(?=@)")),
]
_ANY_HINT = re.compile("|".join(re.escape(hint) for _, hint, _ in _VALUE_RULES))
_PARAM_RULE = re.compile(rf"(?i)(\b{_PARAMS}=)([^&\s;]+)")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_CARD_MIN_DIGITS = 13
_ASCII_DIGITS = b"0123456789"
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_KEEP, _SECRET, _SCAN = 0, 1, 2  # what a key's values get: kept, replaced whole, scanned by the value rules
_CLEAN_MAX, _CLEAN_MAX_LENGTH = 4096, 256
_NOTHING: Mapping[str, Any] = MappingProxyType({})  # what Scrubber.changed() returns when nothing changed


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _may_hold_card(value: str) -> bool:
    """Whether ``value`` has the 13 digits a card number needs: counted on the bytes for an ASCII string (a tenth
    of the card regex's cost, and most strings are ASCII); other strings may hold other scripts' digits, which the
    regex's ``\\d`` matches, so they always go to the regex."""
    if not value.isascii():
        return True
    return len(value) - len(value.encode().translate(None, _ASCII_DIGITS)) >= _CARD_MIN_DIGITS


@dataclass
class Scrubber:
    """Replaces secrets in strings, mappings and attribute values; counts what each rule replaced."""

    enabled: bool = True
    safe_keys: frozenset[str] = frozenset()
    extra: tuple[re.Pattern[str], ...] = ()
    emails: bool = False
    fired: dict[str, int] = field(default_factory=dict)
    _key_kinds: dict[str, int] = field(default_factory=dict, repr=False)
    # strings already scanned and found clean: most attribute values repeat (methods, routes, hosts, user agents),
    # so each is scanned once; bounded by _CLEAN_MAX entries of at most _CLEAN_MAX_LENGTH characters
    _clean: set[str] = field(default_factory=set, repr=False)

    def _kind(self, key: str) -> int:
        """What to do with values under ``key``: keep, replace whole, or scan (decided once per key)."""
        kind = self._key_kinds.get(key)
        if kind is None:
            kind = _KEEP if key in self.safe_keys else _SECRET if _SECRET_KEY.search(key) else _SCAN
            if len(self._key_kinds) < 10_000:
                self._key_kinds[key] = kind
        return kind

    def _hit(self, rule: str) -> str:
        self.fired[rule] = self.fired.get(rule, 0) + 1
        return f"[REDACTED:{rule}]"

    def text(self, value: str) -> str:
        """``value`` with every secret inside it replaced."""
        if not self.enabled or not value or value in self._clean:
            return value
        scrubbed = self._scan(value)
        if scrubbed == value and len(value) <= _CLEAN_MAX_LENGTH:
            if len(self._clean) >= _CLEAN_MAX:
                self._clean.clear()
            self._clean.add(value)
        return scrubbed

    def _scan(self, value: str) -> str:
        lowered = value.lower()
        if _ANY_HINT.search(lowered):  # one search tells whether any rule's hint is there at all
            for rule, hint, pattern in _VALUE_RULES:
                if hint in lowered and pattern.search(value):
                    replacement = self._hit(rule)
                    value, extra_hits = pattern.subn(replacement, value)
                    self.fired[rule] += extra_hits - 1
        if "=" in value:
            value = _PARAM_RULE.sub(lambda m: m.group(1) + self._hit("secret-param"), value)
        if _may_hold_card(value):
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
        if not self.enabled:
            return value
        kind = self._kind(key)
        if kind == _KEEP:
            return value
        if kind == _SECRET:
            return self._hit("secret-key") if value not in (None, "") else value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, (list, tuple)):
            return type(value)(self.text(v) if isinstance(v, str) else v for v in value)
        if isinstance(value, Mapping):
            return {k: self.value(str(k), v) for k, v in value.items()}
        return value

    def changed(self, attributes: Mapping[str, Any] | None) -> Mapping[str, Any]:
        """The attributes whose scrubbed value differs, with that value (empty when nothing is secret).

        The common case (numbers, no secret keys, strings seen before) costs a cached key lookup and a set lookup
        per attribute; a string not seen before costs a regex search or two.
        """
        if not self.enabled or not attributes or attributes.keys() <= self.safe_keys:
            return _NOTHING  # the last test: a span with only the toolkit's ids (and safe keys) costs one set test
        out: dict[str, Any] | None = None  # made on the first change: most attribute sets have none
        kinds, clean = self._key_kinds, self._clean
        for key, value in attributes.items():
            kind = kinds.get(key)
            if kind is None:
                kind = self._kind(key)
            if kind == _KEEP:
                continue
            if kind == _SECRET:
                new: Any = self.value(key, value)
            elif type(value) is str:
                if value in clean:
                    continue
                new = self.text(value)
            elif isinstance(value, (list, tuple, Mapping)):
                new = self.value(key, value)
            else:
                continue
            if new != value:
                if out is None:
                    out = {}
                out[key] = new
        return out if out is not None else _NOTHING


def default_scrubber(
    enabled: bool = True, safe_keys: Iterable[str] = (), extra_patterns: Iterable[str] = (), emails: bool = False
) -> Scrubber:
    return Scrubber(enabled, _OWN_IDS | frozenset(safe_keys), tuple(re.compile(p) for p in extra_patterns), emails)


# The toolkit's own identifiers, validated where they are adopted: scrubbing one (a correlation id of 16 digits
# can pass the card-number check) would break the join between a trace and its logs.
_OWN_IDS = frozenset({"correlation_id", "trace_id", "span_id", "xray_trace_id"})


_BARE_RECORD_SIZE = len(vars(logging.LogRecord("", 0, "", 0, "", None, None)))
_STANDARD_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def scrub_record(scrubber: Scrubber, record: logging.LogRecord) -> None:
    """Scrub a log record in place before any handler formats or exports it: the message (rendered with its
    arguments), every ``extra`` field, and the exception text. The log handlers' filter calls it once per record."""
    message = record.getMessage()
    scrubbed = scrubber.text(message)
    if scrubbed != message or record.args:
        record.msg, record.args = scrubbed, None
    fields = record.__dict__
    # only what the caller added with extra= (a record without extras has no more keys than a bare one)
    extras = fields.keys() - _STANDARD_RECORD_FIELDS if len(fields) > _BARE_RECORD_SIZE else ()
    for key in extras:
        value = fields[key]
        if key.startswith("_") or value is None or type(value) in (int, float, bool):
            continue
        new = scrubber.value(key, value)
        if new is not value:
            fields[key] = new
    if record.exc_info and record.exc_info[0] is not None:
        exc_type = record.exc_info[0].__name__
        text = record.exc_text or logging.Formatter().formatException(record.exc_info)
        # the handlers read the scrubbed text, never the exception object (whose message may hold a secret)
        record.exc_info = None
        record.exc_text = scrubber.text(text)
        setattr(record, "exception.type", exc_type)
        setattr(record, "exception.stacktrace", record.exc_text)
    elif record.exc_text:
        record.exc_text = scrubber.text(record.exc_text)


def scrub_span(span: ReadableSpan, scrubber: Scrubber) -> None:
    """Replace secrets in the ended span's attributes, status description and events before any exporter sees it.

    Runs first among the processors, on the one ``ReadableSpan`` they all receive; it swaps that object's
    attribute and event containers for scrubbed copies (SDK 1.45 internals, covered by tests).
    """
    attributes = span._attributes  # the container itself: the public property wraps it in a new proxy each call
    # its plain dict when there is one: iterating BoundedAttributes goes through the Mapping machinery
    changed = scrubber.changed(getattr(attributes, "_dict", attributes))
    if changed:
        clean = {**(attributes or {}), **changed}
        if isinstance(attributes, BoundedAttributes):  # kept by _slim for its count of dropped attributes
            bounded = BoundedAttributes(attributes=clean, immutable=True)
            bounded.dropped = attributes.dropped
            span._attributes = bounded
        else:
            span._attributes = clean
    status = span._status
    if status.description:  # the SDK and the servers' middlewares describe an error by its exception's message
        clean_description = scrubber.text(status.description)
        if clean_description != status.description:
            span._status = Status(status.status_code, clean_description)
    events = span._events
    if events:
        scrubbed = []
        touched = False
        for event in events:
            fixed = scrubber.changed(event.attributes)
            if fixed:
                touched = True
                event = Event(event.name, {**(event.attributes or {}), **fixed}, event.timestamp)
            scrubbed.append(event)
        if touched and isinstance(events, BoundedList):  # kept by _slim for its count of dropped events
            kept = BoundedList.from_seq(len(events), scrubbed)
            kept.dropped = events.dropped
            span._events = kept
        elif touched:
            span._events = tuple(scrubbed)
