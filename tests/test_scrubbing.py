"""Secrets never leave the process: span attributes, span events, log messages, log fields and stacks."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi import FastAPI, Request
from opentelemetry import trace

import otel_kit
from otel_kit import testing
from otel_kit._internal.redaction import default_scrubber
from tests.asgi import call

log = logging.getLogger("app")

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
# (rule that must fire, a text that carries the secret, the secret itself)
VALUE_CASES = [
    ("bearer", "Authorization: Bearer abcDEF123456789xyz", "abcDEF123456789xyz"),
    ("jwt", f"session {JWT} expired", JWT),
    ("bearer", "AUTHORIZATION: BEARER abcDEF123456789xyz", "abcDEF123456789xyz"),
    ("bearer", "Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l", "YWxhZGRpbjpvcGVuc2VzYW1l"),
    ("aws-access-key", "using key AKIAIOSFODNN7EXAMPLE now", "AKIAIOSFODNN7EXAMPLE"),
    ("aws-access-key", "session key ASIAIOSFODNN7EXAMPLE now", "ASIAIOSFODNN7EXAMPLE"),
    ("card-number", "paid with 4111 1111 1111 1111 today", "4111 1111 1111 1111"),
    ("card-number", "amex 378282246310005 on file", "378282246310005"),
    # digits of another script: regex \d matches them, the ASCII digit count cannot see them
    ("card-number", "paid with \u0664\u0661\u0661\u0661" + "\u0661" * 12 + " today", "\u0664\u0661\u0661\u0661"),
    ("secret-param", "GET /orders?page=2&token=s3cr3tValue&sort=asc", "s3cr3tValue"),
    ("url-credentials", "postgres://admin:hunter2pass@db:5432/shop", "hunter2pass"),
    (
        "private-key",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
        "MIIEowIBAAKCAQEA",
    ),
]
KEY_CASES = ["password", "db_passwd", "api_key", "X-Api-Key", "authorization", "cookie", "client_secret",
             "refresh_token", "session_id", "private_key", "aws_credentials"]  # fmt: skip


@pytest.mark.parametrize(("rule", "text", "secret"), VALUE_CASES)
def test_each_value_rule_replaces_the_secret_and_names_itself(rule: str, text: str, secret: str) -> None:
    scrubber = default_scrubber()
    scrubbed = scrubber.text(text)
    assert secret not in scrubbed
    assert f"[REDACTED:{rule}]" in scrubbed


def test_every_rules_hint_is_in_what_its_pattern_matches() -> None:
    """A rule's pattern is only searched where its hint is: a hint missing from a match would let that secret out."""
    from otel_kit._internal.redaction import _VALUE_RULES

    checked = set()
    for _, text, _ in VALUE_CASES:
        for rule, hint, pattern in _VALUE_RULES:
            for match in pattern.finditer(text):
                # the match with what its lookarounds may check: 2 characters before, 1 after
                seen = text[max(match.start() - 2, 0) : match.end() + 1]
                assert hint in seen.lower(), (rule, hint, seen)
                checked.add((rule, hint))
    assert checked == {(rule, hint) for rule, hint, _ in _VALUE_RULES}  # every rule had an example


@pytest.mark.parametrize("key", KEY_CASES)
def test_each_secret_key_hides_its_whole_value(key: str) -> None:
    assert default_scrubber().value(key, "plain-looking-value") == "[REDACTED:secret-key]"


@pytest.mark.parametrize(
    "text",
    ["order 1234 shipped", "4111 1111 1111 1112 fails the Luhn check", "order 411111111111 (12 digits)",
     "trace 4bf92f3577b34da6a3ce929d0e0e4736",
     "user alice@example.com", "GET /orders?page=2"],
)  # fmt: skip
def test_ordinary_values_are_left_alone(text: str) -> None:
    assert default_scrubber().text(text) == text


def test_emails_only_when_asked() -> None:
    assert default_scrubber(emails=True).text("from alice@example.com") == "from [REDACTED:email]"


def test_seeded_secrets_never_reach_exported_spans_logs_or_json_lines() -> None:
    """A demo request carries every kind of secret, through every path; none comes out, the safe key does."""
    seeded = [secret for _, _, secret in VALUE_CASES] + ["topSecretPw1"]
    app = FastAPI()

    @app.get("/checkout")
    async def checkout(request: Request) -> None:
        span = trace.get_current_span()
        span.set_attribute("request.url", str(request.url))
        span.set_attribute("password", "topSecretPw1")
        span.set_attribute("token_count", 3)
        span.add_event("charge", {"card": VALUE_CASES[3][1], "auth": VALUE_CASES[0][1]})
        log.info("calling ledger with %s", VALUE_CASES[5][1], extra={"api_key": "topSecretPw1", "jwt": JWT})
        raise RuntimeError(f"ledger refused {VALUE_CASES[2][1]}")

    with testing.capture("shop", scrub_safe_keys="token_count") as tel:
        otel_kit.instrument_fastapi(app)
        query = b"token=s3cr3tValue&note=" + VALUE_CASES[6][1].encode().replace(b"\n", b"%0A")
        with pytest.raises(RuntimeError):
            call(
                app, [(b"authorization", VALUE_CASES[0][1].split(": ")[1].encode())], path="/checkout?" + query.decode()
            )
        exported = [span.to_json() for span in tel.spans()]
        records = [
            json.dumps(r.log_record.to_json() if hasattr(r.log_record, "to_json") else str(r))
            for r in tel.log_records()
        ]
        lines = tel.stream.getvalue()
        server = next(s for s in tel.spans() if s.kind is trace.SpanKind.SERVER)
    everything = "\n".join([*exported, *records, lines])
    leaked = [secret for secret in seeded if secret in everything]
    print(f"{len(seeded)} seeded secrets, {len(leaked)} found in {len(everything)} characters of output")
    assert leaked == []
    assert "[REDACTED:" in lines and "[REDACTED:" in "".join(exported)
    assert server.attributes["token_count"] == 3  # a safe key survives
    assert server.attributes["password"] == "[REDACTED:secret-key]"


def test_scrubbing_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_KIT_SCRUB", "false")
    with testing.capture("svc") as tel:
        log.info("token=visible123")
    assert "token=visible123" in tel.stream.getvalue()


def test_bad_extra_pattern_is_reported_and_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_KIT_SCRUB_EXTRA_PATTERNS", "ORD-[0-9]+,([unclosed")
    with testing.capture("svc") as tel:
        log.info("order ORD-123")
    assert [p.variable for p in tel.handle.problems] == ["OTEL_KIT_SCRUB_EXTRA_PATTERNS"]
    assert "ORD-123" in tel.stream.getvalue()  # the whole setting falls back to its default (none)


def test_extra_pattern_is_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_KIT_SCRUB_EXTRA_PATTERNS", r"ORD-\d+")
    with testing.capture("svc") as tel:
        log.info("order ORD-123")
    assert "ORD-123" not in tel.stream.getvalue() and "[REDACTED:custom]" in tel.stream.getvalue()


def test_attribute_values_are_cut_to_4096_characters_by_default() -> None:
    with testing.capture("svc") as tel, trace.get_tracer("t").start_as_current_span("big") as span:
        span.set_attribute("payload", "x" * 10_000)
    assert len(tel.spans()[0].attributes["payload"]) == 4096


def test_attribute_length_limit_follows_the_standard_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "100")
    with testing.capture("svc") as tel, trace.get_tracer("t").start_as_current_span("big") as span:
        span.set_attribute("payload", "x" * 10_000)
    assert len(tel.spans()[0].attributes["payload"]) == 100


def test_safe_keys_and_the_toolkits_own_ids_keep_values_that_look_like_cards() -> None:
    """A digits-only correlation id can pass the Luhn check; scrubbing it would cut the trace from its logs."""
    luhn_valid = "4111111111111111"

    @otel_kit.traced(attributes={"order_ref": luhn_valid, "note": f"card {luhn_valid}"})
    def work() -> None:
        log.info("working")

    with testing.capture("svc", scrub_safe_keys="order_ref") as tel, otel_kit.correlation_scope(luhn_valid):
        work()
    exported = tel.spans()[0].attributes
    assert exported["correlation_id"] == luhn_valid
    assert exported["order_ref"] == luhn_valid
    assert exported["note"] == "card [REDACTED:card-number]"
    assert json.loads(tel.stream.getvalue().splitlines()[-1])["correlation_id"] == luhn_valid


def test_a_secret_seen_again_is_replaced_again_and_counted_each_time() -> None:
    """Clean strings are remembered so repeated values are scanned once; secrets are never remembered."""
    scrubber = default_scrubber()
    for _ in range(3):
        assert scrubber.text("/orders/42") == "/orders/42"
        assert scrubber.text("token=s3cr3tValue") == "token=[REDACTED:secret-param]"
        assert scrubber.changed({"url.path": "/orders/42", "url.full": "http://h/?token=s3cr3tValue"}) == {
            "url.full": "http://h/?token=[REDACTED:secret-param]"
        }
    assert scrubber.fired == {"secret-param": 6}


def test_many_distinct_clean_values_do_not_stop_secrets_being_found() -> None:
    """The memory of clean strings is bounded; once it fills up it starts again, and scrubbing goes on."""
    scrubber = default_scrubber()
    for n in range(10_000):
        scrubber.text(f"/orders/{n}")
    assert len(scrubber._clean) <= 4096
    assert scrubber.text("Bearer abcDEF123456789xyz") == "[REDACTED:bearer]"
