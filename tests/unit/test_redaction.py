"""Credentials are masked wherever text leaves our hands."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from dispatcher.config.settings import Settings
from dispatcher.redaction import MASK, redact, register_secret
from dispatcher.vendors import anthropic, cohere, gemini, ollama, openai
from dispatcher.vendors.failures import MAX_MESSAGE_CHARS, error_for_status, summary


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer sk-abc123def456ghi789", "sk-abc123def456ghi789"),
        ("authorization: basic dXNlcjpwYXNzd29yZDEyMw==", "dXNlcjpwYXNzd29yZDEyMw=="),
        ('{"x-api-key": "ant-api03-AbCdEf123456"}', "ant-api03-AbCdEf123456"),
        ("api-key: 0123456789abcdef0123", "0123456789abcdef0123"),
        ("x-goog-api-key=AIzaSyD-0123456789abcdefghijk", "AIzaSyD-0123456789abcdefghijk"),
        ("GET /v1beta/models/m:generateContent?key=AIzaSy12345&alt=sse", "AIzaSy12345"),
        ("redis://:hunter2hunter2@redis.internal:6379/0", "hunter2hunter2"),
        ("rediss://default:s3cr3t-pass@host:6380", "s3cr3t-pass"),
        (
            "rediss://app:p%40ss%2Fw0rd-42@redis.internal:6380/0"
            "?ssl_cert_reqs=required&ssl_ca_certs=/etc/redis/ca.pem",
            "p%40ss%2Fw0rd-42",
        ),
        ("the key sk-live-ABCDEFGH12345678 leaked", "sk-live-ABCDEFGH12345678"),
    ],
)
def test_credential_shaped_text_is_masked(text: str, secret: str) -> None:
    masked = redact(text)
    assert secret not in masked
    assert MASK in masked


@pytest.mark.parametrize(
    "text",
    [
        "vendors.openai.api_key: must be set",
        "unknown key 'api_key' for VendorConfig",
        "password: required",
        "model gpt-4o answered in 812 ms",
    ],
)
def test_ordinary_messages_are_left_alone(text: str) -> None:
    assert redact(text) == text


def test_a_registered_secret_is_masked_wherever_it_appears() -> None:
    register_secret("plain-looking-secret-without-digits")
    assert redact("x plain-looking-secret-without-digits y") == f"x {MASK} y"


def test_a_secret_that_contains_another_is_masked_whole() -> None:
    register_secret("outer-secret-abc")
    register_secret("outer-secret-abc-and-more")
    assert redact("[outer-secret-abc-and-more]") == f"[{MASK}]"


def test_short_values_are_not_registered_to_avoid_masking_ordinary_words() -> None:
    register_secret("abc")
    assert redact("abc def") == "abc def"


def test_the_password_of_a_rediss_url_with_a_user_is_registered_in_both_spellings() -> None:
    Settings(redis_url="rediss://app:tls%2Fpass%40word-7@redis.internal:6380/0?ssl_cert_reqs=none")
    # redis-py sends the decoded password; an error may quote it either way.
    assert redact("AUTH app tls/pass@word-7 failed") == f"AUTH app {MASK} failed"
    assert redact("password tls%2Fpass%40word-7") == f"password {MASK}"


# A key in a header no redaction pattern knows: only the registered secret masks it.
ECHOED_KEY = "zq" + secrets.token_hex(20)
# The key starts this far before the length limit, so a cut made first keeps part of it.
KEPT_BEFORE_CUT = 20


def _echo_of_our_headers() -> str:
    """An echo whose key straddles the length limit of an error message."""
    lead = "request rejected; headers: "
    padding = "x" * (MAX_MESSAGE_CHARS - KEPT_BEFORE_CUT - len(lead) - len("X-Our-Token: "))
    return f"{lead}{padding}X-Our-Token: {ECHOED_KEY}; Accept: application/json"


@pytest.fixture
def echoed_key() -> str:
    """The key, registered as the configuration registers every vendor's key."""
    register_secret(ECHOED_KEY)
    return ECHOED_KEY


def _pieces_of_the_key(text: str) -> list[str]:
    """Every 8-character piece of the key that appears in `text`."""
    return [
        ECHOED_KEY[i : i + 8] for i in range(len(ECHOED_KEY) - 7) if ECHOED_KEY[i : i + 8] in text
    ]


def test_a_key_cut_by_the_message_length_limit_leaves_no_piece_behind(echoed_key: str) -> None:
    message = _echo_of_our_headers()
    assert message.index(echoed_key) + len(echoed_key) > MAX_MESSAGE_CHARS  # it straddles
    error = error_for_status(401, message, vendor="acme")
    assert _pieces_of_the_key(str(error)) == []
    assert f"X-Our-Token: {MASK}" in error.message


@pytest.mark.usefixtures("echoed_key")
def test_the_summary_of_a_body_that_is_not_json_masks_before_it_cuts() -> None:
    text = summary(_echo_of_our_headers())
    assert _pieces_of_the_key(text) == []
    assert f"X-Our-Token: {MASK}" in text


Classify = Callable[[int, httpx.Headers, str, str], Any]


def _error_bodies(message: str) -> list[tuple[str, Classify, str]]:
    """Each wire format's own error body around `message`, and a body that is not JSON."""
    shapes: list[tuple[str, Classify, dict[str, Any]]] = [
        ("openai", openai.classify_error, {"error": {"message": message, "type": "auth"}}),
        (
            "anthropic",
            anthropic.classify_error,
            {"type": "error", "error": {"type": "authentication_error", "message": message}},
        ),
        (
            "gemini",
            gemini.classify_error,
            {"error": {"code": 401, "message": message, "status": "UNAUTHENTICATED"}},
        ),
        ("ollama", ollama.classify_error, {"error": message}),
        ("cohere", cohere.classify_error, {"id": "err_1", "message": message}),
    ]
    bodies = [(name, classify, json.dumps(body)) for name, classify, body in shapes]
    bodies += [(f"{name} (not JSON)", classify, message) for name, classify, _ in shapes]
    return bodies


@pytest.mark.parametrize(
    ("name", "classify", "body"),
    _error_bodies(_echo_of_our_headers()),
    ids=[name for name, _, _ in _error_bodies("")],
)
@pytest.mark.usefixtures("echoed_key")
def test_every_vendors_error_body_that_echoes_our_key_is_masked_however_long(
    name: str, classify: Classify, body: str
) -> None:
    error = classify(401, httpx.Headers(), body, "acme")
    assert _pieces_of_the_key(str(error)) == [], name
    assert MASK in error.message, name
