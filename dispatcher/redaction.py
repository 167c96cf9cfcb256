"""Keeps secrets out of every text we produce: error messages, logs, job records.

Two layers work together:

- every secret value the configuration loads (API keys, Redis passwords) is
  registered here, and `redact()` replaces each occurrence with a mask;
- patterns catch credentials we were never told about, such as a key a vendor
  echoes back in an error body or a password inside a URL.

Redaction is applied where text leaves our control (the `DispatcherError`
constructor, the job store, and the workers' log handlers through
`dispatcher.log_redaction`), so a caller never has to remember it.
"""

from __future__ import annotations

import re
import threading

MASK = "***"

# Shorter values are too likely to collide with ordinary words to be masked
# blindly; real API keys are far longer than this.
MIN_SECRET_LENGTH = 8

# A credential-shaped value: long, no spaces, and with at least one digit, so
# that ordinary words after a field name ("api_key: must be set") survive.
_CREDENTIAL_SHAPE = r"(?=[^\s\"']*\d)[A-Za-z0-9._~+/=-]{12,}"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Bearer <token> / Basic <token>, in headers or echoed text.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {MASK}"),
    # Header-style and JSON-style credential fields: api-key: x, "x-api-key": "x".
    (
        re.compile(
            r"(?i)([\"']?\b(?:x-api-key|api[-_]?key|x-goog-api-key|access[-_]token|"
            r"secret[-_]key|password)[\"']?\s*[:=]\s*[\"']?)" + _CREDENTIAL_SHAPE
        ),
        rf"\1{MASK}",
    ),
    # Credentials in a query string: ?key=..., &api_key=...
    (re.compile(r"(?i)([?&](?:key|api[-_]?key|token|access_token)=)[^&\s\"']+"), rf"\1{MASK}"),
    # Well-known key shapes: OpenAI/Anthropic "sk-...", Google "AIza...".
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), MASK),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{20,}"), MASK),
    # user:password@ inside URLs (redis://:pw@host, https://u:pw@host).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)([^@\s/]+)(@)"), rf"\1{MASK}\3"),
)


class _SecretRegistry:
    """The set of secret values known to this process; safe to share across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()

    def add(self, value: str) -> None:
        if len(value) < MIN_SECRET_LENGTH:
            return
        with self._lock:
            self._values = self._values | {value}

    def values(self) -> frozenset[str]:
        return self._values


_registry = _SecretRegistry()


def register_secret(value: str | None) -> None:
    """Remember a secret so that `redact()` masks it wherever it appears."""
    if value:
        _registry.add(value)


def redact(text: str) -> str:
    """Return `text` with every registered secret and credential-like token masked."""
    # Longest first, so a secret that contains another is masked whole.
    for value in sorted(_registry.values(), key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
