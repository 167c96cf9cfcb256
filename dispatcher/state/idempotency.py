"""Idempotency keys: the same submit, sent twice, makes one job (or batch).

A caller whose submit failed (`StoreUnavailable`: the write may or may not have
reached Redis) cannot tell whether its job exists. Sent again with the same
idempotency key, the submit returns the id the key already names, and writes
nothing; otherwise it records the key in the same MULTI/EXEC as the job, with
`WATCH` on the key, so two racing submits with one key make one job. A key is
kept for the job's TTL from the first submit; it is stored hashed (SHA-256), so
any caller's string is a safe, bounded key name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

from dispatcher.state.redis_values import text as _text

if TYPE_CHECKING:
    from dispatcher.state.keys import Keys

__all__ = ["MAX_IDEMPOTENCY_KEY_CHARS", "IdempotencyKeys", "check_idempotency_key"]

# Long enough for a UUID, a request hash or a caller's own composite key.
MAX_IDEMPOTENCY_KEY_CHARS = 256


def check_idempotency_key(key: str) -> str:
    """`key` when usable: 1-256 characters, none of them control characters.

    Raises:
        ValueError: naming what is wrong (never repeating the key: it may be sensitive).
    """
    if not isinstance(key, str) or not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise ValueError(
            f"idempotency_key must be a string of 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"
        )
    if any(char < " " or "\x7f" <= char <= "\x9f" or "\ud800" <= char <= "\udfff" for char in key):
        raise ValueError("idempotency_key must not contain control characters or lone surrogates")
    return key


class IdempotencyKeys:
    """Which id each idempotency key names, written with the job it names."""

    def __init__(self, client: redis.Redis, keys: Keys, *, ttl_s: int) -> None:
        self.redis = client
        self.keys = keys
        self.ttl_s = ttl_s

    def key(self, idempotency_key: str) -> str:
        """The Redis key that records `idempotency_key`."""
        digest = hashlib.sha256(check_idempotency_key(idempotency_key).encode()).hexdigest()
        return self.keys.idempotency(digest)

    def named(self, idempotency_key: str) -> str | None:
        """The id `idempotency_key` names, or None."""
        value = self.redis.get(self.key(idempotency_key))
        return _text(value) if value is not None else None

    def write_once(self, idempotency_key: str, new_id: str, write: Callable[[Any], None]) -> str:
        """`write` (queued on a MULTI/EXEC pipeline) recording `idempotency_key` -> `new_id`,
        unless the key already names an id: then that id, and nothing is written."""
        key = self.key(idempotency_key)
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    found = pipe.get(key)
                    if found is not None:
                        pipe.unwatch()
                        return _text(found)
                    pipe.multi()
                    pipe.set(key, new_id, ex=self.ttl_s)
                    write(pipe)
                    pipe.execute()
                    return new_id
                except redis.WatchError:
                    continue  # another submit with this key won: the next look finds its id
