"""Credentials are masked wherever text leaves our hands."""

from __future__ import annotations

import pytest

from dispatcher.redaction import MASK, redact, register_secret


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
