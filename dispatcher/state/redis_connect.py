"""Redis clients and Celery's broker settings, built from `Settings.redis_url` in one place.

Every component connects through here, so the two forms of `REDIS_URL`
(`dispatcher.config.redis_address`: one server, or a primary watched by Sentinel)
reach the job store, the streams, the producers, the workers and the broker
alike:

- `redis_client(settings, ...)` and `async_redis_client(settings, ...)`: a
  redis-py client of the primary. For one server, its pool is built by
  `from_url`; for Sentinel, by `Sentinel(...).master_for(service)`, whose
  pool asks the sentinels for the primary's address each time it opens a
  connection. With `pool_timeout_s` the pool is a blocking one: a caller past
  `max_connections` queues that long for a free connection instead of failing.
- `broker_options(settings)`: Celery's `broker_url`, `broker_use_ssl` and the
  transport options kombu's Sentinel transport needs (`master_name`,
  `sentinel_kwargs`), which Flower reads too.

A failover looks like an outage, so the code that rides out a Redis restart
rides it out too: until the sentinels have promoted a replica, a connection
to the dead primary is refused and the sentinels name no primary
(`MasterNotFoundError`, a redis-py `ConnectionError`); a connection still
open to a primary demoted to replica gets `READONLY`, which redis-py's
Sentinel connections turn into a `ConnectionError` and drop. Workers wait and
run the step again (`dispatcher.runner.outage`), producers raise `StoreUnavailable`
(`producer.unreachable`), kombu reconnects through the sentinels. Lua scripts
are loaded again on the new primary (redis-py's `Script` on `NOSCRIPT`,
`dispatcher.state.store_async` for its own).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from dispatcher.config.redis_address import (
    SentinelAddress,
    is_sentinel_url,
    parse_sentinel_url,
    tls_options,
)
from dispatcher.config.settings import Settings

__all__ = [
    "SENTINEL_SOCKET_TIMEOUT_S",
    "AsyncBlockingSentinelPool",
    "BlockingSentinelPool",
    "async_redis_client",
    "broker_options",
    "broker_ssl_options",
    "redis_client",
]

# How long a question to one sentinel may take before the next sentinel is asked:
# a sentinel answers from memory, so a slow one is as good as gone.
SENTINEL_SOCKET_TIMEOUT_S = 2.0


class BlockingSentinelPool(redis.sentinel.SentinelConnectionPool, redis.BlockingConnectionPool):
    """redis-py's Sentinel pool with a blocking pool's queue: past `max_connections`,
    a caller waits up to `timeout` seconds for a free connection instead of failing.

    Closing it (`disconnect()` of every connection, as `Redis.close()` does) closes
    the connections to the sentinels too; a failover's `disconnect(inuse_connections=False)`
    leaves them open.
    """

    def disconnect(self, inuse_connections: bool = True) -> None:
        """Close the pool's connections; with in-use ones, the sentinels' too."""
        super().disconnect(inuse_connections)
        if inuse_connections:
            self.sentinel_manager.close()


class AsyncBlockingSentinelPool(
    redis.asyncio.sentinel.SentinelConnectionPool, redis.asyncio.BlockingConnectionPool
):
    """`BlockingSentinelPool` for asyncio clients."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        """Close the pool's connections; with in-use ones, the sentinels' too."""
        await super().disconnect(inuse_connections)
        if inuse_connections:
            await self.sentinel_manager.aclose()


def redis_client(
    settings: Settings, *, pool_timeout_s: float | None = None, **options: Any
) -> redis.Redis:
    """A client of the primary named by `settings.redis_url`.

    Args:
        pool_timeout_s: make the pool a blocking one, where a caller past
            `max_connections` waits this long for a free connection.
        options: redis-py connection and pool options (`max_connections`,
            `socket_timeout`, `decode_responses`, ...), for every connection
            to the primary; the socket timeouts also bound each question to a
            sentinel (at most `SENTINEL_SOCKET_TIMEOUT_S` when not given).
    """
    url = settings.redis_url.get_secret_value()
    blocking = _blocking(pool_timeout_s)
    if not is_sentinel_url(url):
        plain = redis.BlockingConnectionPool if blocking else redis.ConnectionPool
        return redis.Redis.from_pool(plain.from_url(url, **blocking, **options))
    address = parse_sentinel_url(url)
    sentinel = redis.sentinel.Sentinel(
        address.sentinels,
        sentinel_kwargs=_sentinel_kwargs(address, options),
        **address.server_options(),
    )
    watched = BlockingSentinelPool if blocking else redis.sentinel.SentinelConnectionPool
    client: redis.Redis = sentinel.master_for(
        address.service_name,
        redis_class=redis.Redis,
        connection_pool_class=watched,
        **blocking,
        **options,
    )
    return client


def async_redis_client(
    settings: Settings, *, pool_timeout_s: float | None = None, **options: Any
) -> redis.asyncio.Redis:
    """`redis_client` for asyncio code: use it on one event loop only."""
    url = settings.redis_url.get_secret_value()
    blocking = _blocking(pool_timeout_s)
    if not is_sentinel_url(url):
        plain = redis.asyncio.BlockingConnectionPool if blocking else redis.asyncio.ConnectionPool
        return redis.asyncio.Redis.from_pool(plain.from_url(url, **blocking, **options))
    address = parse_sentinel_url(url)
    sentinel = redis.asyncio.sentinel.Sentinel(
        address.sentinels,
        sentinel_kwargs=_sentinel_kwargs(address, options),
        **address.server_options(),
    )
    watched = (
        AsyncBlockingSentinelPool if blocking else redis.asyncio.sentinel.SentinelConnectionPool
    )
    client: redis.asyncio.Redis = sentinel.master_for(
        address.service_name,
        redis_class=redis.asyncio.Redis,
        connection_pool_class=watched,
        **blocking,
        **options,
    )
    return client


def broker_options(settings: Settings) -> dict[str, Any]:
    """Celery's `broker_url`, and `broker_use_ssl` and Sentinel's transport options when needed.

    Transport options here are to be merged into Celery's `broker_transport_options`.
    """
    url = settings.redis_url.get_secret_value()
    if not is_sentinel_url(url):
        tls = broker_ssl_options(url)
        return {"broker_url": url, **({"broker_use_ssl": tls} if tls is not None else {})}
    address = parse_sentinel_url(url)
    options: dict[str, Any] = {
        "broker_url": _kombu_sentinel_url(address),
        "broker_transport_options": {
            "master_name": address.service_name,
            "sentinel_kwargs": _sentinel_kwargs(address, {}),
        },
    }
    if address.tls is not None:
        options["broker_use_ssl"] = dict(address.tls)
    return options


def broker_ssl_options(redis_url: str) -> dict[str, Any] | None:
    """Celery's `broker_use_ssl` for a `rediss://` URL, from its query; None for other URLs.

    Raises:
        ValueError: `ssl_cert_reqs` is not one of required, optional, none.
    """
    parts = urlsplit(redis_url)
    if parts.scheme != "rediss":
        return None
    query = dict(parse_qsl(parts.query))
    try:
        return tls_options(query)
    except ValueError as exc:
        raise ValueError(f"REDIS_URL: {exc}") from None


def _blocking(pool_timeout_s: float | None) -> dict[str, Any]:
    return {} if pool_timeout_s is None else {"timeout": pool_timeout_s}


def _sentinel_kwargs(address: SentinelAddress, options: dict[str, Any]) -> dict[str, Any]:
    """Options of the connections to the sentinels: their credentials and TLS, short timeouts."""
    timeouts = {
        name: min(options.get(name) or SENTINEL_SOCKET_TIMEOUT_S, SENTINEL_SOCKET_TIMEOUT_S)
        for name in ("socket_timeout", "socket_connect_timeout")
    }
    return {**address.sentinel_options(), **timeouts}


def _kombu_sentinel_url(address: SentinelAddress) -> str:
    """kombu's form: `sentinel://[user:password@]host:port/db`, one per sentinel, `;`-joined.

    Every one carries the credentials and database: kombu reads them from the
    URL it is on, and moves to the next one when a connection fails.
    """
    userinfo = ""
    if address.username is not None or address.password is not None:
        userinfo = (
            f"{quote(address.username or '', safe='')}:{quote(address.password or '', safe='')}@"
        )
    return ";".join(
        f"sentinel://{userinfo}{_host(host)}:{port}/{address.db}"
        for host, port in address.sentinels
    )


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
