"""One redis-py client per kombu channel, instead of a new one for every command.

kombu's Redis transport (5.x) builds a fresh `redis.Redis` for every publish,
acknowledgement and event it sends (`Channel._create_client`), on the channel's
one connection pool. redis-py 8's `Redis.__init__` fills a table of response
callbacks each time: profiled, it was 13 % of a worker's CPU, more than our
whole job store, and 13 % of a producer's `submit()`. A `redis.Redis` is
thread-safe and holds no connection of its own (it checks one out of the pool
per command), so one per channel and pool does the same work.

`reuse_sync_clients(Channel)` patches that one method of the channel class it
is given (kombu's `kombu.transport.redis.Channel`; this module never imports
kombu, so `dispatcher` stays free of it), once per process; the cached client is
rebuilt whenever the channel's pool changes (kombu replaces it after a
connection error). Workers apply it as their Celery app is built
(`workers.kombu_patches.clients`), producers as their sender's app is.

It also mends one of kombu's edges on a lost connection: closing the channel
restores its unacknowledged messages, which builds a client from the
connection's parameters, already gone by then (`AttributeError: 'NoneType'
object has no attribute 'hostname'`). Celery treats that as unrecoverable and
the worker stops consuming. Such a client now raises redis-py's
`ConnectionError`, which Celery handles by reconnecting; the messages stay
unacknowledged and come back by the visibility timeout.
"""

from __future__ import annotations

import threading
from typing import Any

import redis

__all__ = ["reuse_sync_clients"]

_lock = threading.Lock()
_patched: set[int] = set()
_CACHE_ATTRIBUTE = "_llmd_sync_client"


def reuse_sync_clients(channel_class: Any) -> bool:
    """Make `channel_class`'s channels reuse one sync client; False if they already do."""
    with _lock:
        if id(channel_class) in _patched:
            return False
        original: Any = channel_class._create_client

        def create_client(self: Any, asynchronous: bool = False) -> Any:
            if asynchronous:
                return original(self, asynchronous)
            try:
                pool = self.pool
            except AttributeError as exc:  # the connection was closed (see the module doc)
                raise redis.ConnectionError(f"the broker connection is closed ({exc})") from exc
            cached = self.__dict__.get(_CACHE_ATTRIBUTE)
            if cached is None or cached.connection_pool is not pool:
                cached = original(self, False)
                self.__dict__[_CACHE_ATTRIBUTE] = cached
            return cached

        create_client.__wrapped__ = original  # type: ignore[attr-defined]
        channel_class._create_client = create_client
        _patched.add(id(channel_class))
        return True
