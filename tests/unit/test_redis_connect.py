"""Clients and broker settings from either form of `REDIS_URL`; nothing connects here."""

from __future__ import annotations

import ssl
from typing import Any

import kombu
import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from kombu.transport.redis import SentinelTransport

from dispatcher import Settings
from dispatcher.broker.celery_config import celery_settings
from dispatcher.state.redis_connect import (
    SENTINEL_SOCKET_TIMEOUT_S,
    AsyncBlockingSentinelPool,
    BlockingSentinelPool,
    async_redis_client,
    broker_options,
    redis_client,
)

SENTINEL_URL = (
    "redis+sentinel://app:p%40ss%3Bword@10.0.0.1:26379,10.0.0.2:26380,[::1]/orders/3"
    "?sentinel_password=watch-pass"
)


def sentinel_settings(url: str = SENTINEL_URL) -> Settings:
    return Settings(redis_url=url)


def test_celery_gets_kombus_sentinel_urls_and_the_primarys_name() -> None:
    options = broker_options(sentinel_settings())

    assert options["broker_url"] == ";".join(
        f"sentinel://app:p%40ss%3Bword@{host}/3"
        for host in ("10.0.0.1:26379", "10.0.0.2:26380", "[::1]:26379")
    )
    assert options["broker_transport_options"] == {
        "master_name": "orders",
        "sentinel_kwargs": {
            "password": "watch-pass",
            "socket_timeout": SENTINEL_SOCKET_TIMEOUT_S,
            "socket_connect_timeout": SENTINEL_SOCKET_TIMEOUT_S,
        },
    }
    assert "broker_use_ssl" not in options


def test_kombu_reads_back_every_sentinel_the_credentials_and_the_database() -> None:
    conf = celery_settings(sentinel_settings())
    connection = kombu.Connection(
        conf["broker_url"], transport_options=conf["broker_transport_options"]
    )

    assert connection.transport_cls == "sentinel"
    assert isinstance(connection.transport, SentinelTransport)
    assert (connection.userid, connection.password) == ("app", "p@ss;word")
    assert connection.virtual_host == "3"
    assert len(connection.alt) == 3
    # Our own transport options are kept beside Sentinel's.
    assert connection.transport_options["master_name"] == "orders"
    assert connection.transport_options["visibility_timeout"] == Settings().visibility_timeout_s


def test_rediss_sentinel_gives_the_broker_tls_for_servers_and_sentinels() -> None:
    options = broker_options(
        sentinel_settings("rediss+sentinel://s1:26379/orders/0?ssl_ca_certs=/ca.pem")
    )

    tls = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/ca.pem"}
    assert options["broker_use_ssl"] == tls
    assert options["broker_transport_options"]["sentinel_kwargs"] == {
        "ssl": True,
        **tls,
        "socket_timeout": SENTINEL_SOCKET_TIMEOUT_S,
        "socket_connect_timeout": SENTINEL_SOCKET_TIMEOUT_S,
    }


def test_a_plain_url_is_the_broker_url_as_it_is() -> None:
    url = "rediss://:pw@cache:6380/1?ssl_cert_reqs=required"

    options = broker_options(Settings(redis_url=url))

    assert options == {"broker_url": url, "broker_use_ssl": {"ssl_cert_reqs": ssl.CERT_REQUIRED}}


def sentinel_kwargs_of(manager: Any) -> list[dict[str, Any]]:
    return [s.connection_pool.connection_kwargs for s in manager.sentinels]


def test_a_sentinel_client_asks_every_sentinel_for_the_primary_of_the_service() -> None:
    client = redis_client(sentinel_settings(), socket_timeout=5.0, socket_connect_timeout=1.0)
    pool = client.connection_pool

    assert type(pool) is redis.sentinel.SentinelConnectionPool
    assert pool.service_name == "orders"
    assert pool.is_master
    assert {k: pool.connection_kwargs[k] for k in ("db", "username", "password")} == {
        "db": 3,
        "username": "app",
        "password": "p@ss;word",
    }
    sentinels = sentinel_kwargs_of(pool.sentinel_manager)
    assert [(k["host"], k["port"]) for k in sentinels] == [
        ("10.0.0.1", 26379),
        ("10.0.0.2", 26380),
        ("::1", 26379),
    ]
    assert all(k["password"] == "watch-pass" for k in sentinels)
    # A sentinel that does not answer promptly is passed over for the next one.
    assert all(k["socket_timeout"] == SENTINEL_SOCKET_TIMEOUT_S for k in sentinels)
    assert all(k["socket_connect_timeout"] == 1.0 for k in sentinels)
    client.close()


def test_a_pool_timeout_makes_the_sentinel_pool_a_blocking_one() -> None:
    client = redis_client(sentinel_settings(), pool_timeout_s=7.0, max_connections=12)
    pool = client.connection_pool

    assert isinstance(pool, BlockingSentinelPool)
    assert isinstance(pool, redis.BlockingConnectionPool)
    assert (pool.timeout, pool.max_connections) == (7.0, 12)
    assert "timeout" not in pool.connection_kwargs
    client.close()


def test_the_async_sentinel_client_is_built_the_same_way() -> None:
    client = async_redis_client(sentinel_settings(), pool_timeout_s=7.0, max_connections=12)
    pool = client.connection_pool

    assert isinstance(pool, AsyncBlockingSentinelPool)
    assert isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool)
    assert isinstance(pool, redis.asyncio.BlockingConnectionPool)
    assert (pool.service_name, pool.timeout, pool.max_connections) == ("orders", 7.0, 12)
    assert pool.connection_kwargs["password"] == "p@ss;word"
    assert all(k["password"] == "watch-pass" for k in sentinel_kwargs_of(pool.sentinel_manager))


def test_a_plain_url_gives_the_pools_it_always_did() -> None:
    settings = Settings(redis_url="redis://:pw@cache:6379/2")

    blocking = redis_client(settings, pool_timeout_s=3.0, max_connections=5)
    plain = redis_client(settings, max_connections=5)
    asynchronous = async_redis_client(settings, pool_timeout_s=3.0)

    assert type(blocking.connection_pool) is redis.BlockingConnectionPool
    assert blocking.connection_pool.timeout == 3.0
    assert type(plain.connection_pool) is redis.ConnectionPool
    assert type(asynchronous.connection_pool) is redis.asyncio.BlockingConnectionPool
    assert plain.connection_pool.connection_kwargs["db"] == 2
    blocking.close()
    plain.close()


class CountingSentinels:
    """Stands in for `redis.sentinel.Sentinel` where a pool closes it."""

    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_closing_a_blocking_sentinel_client_closes_its_sentinel_connections_too() -> None:
    manager = CountingSentinels()
    pool = BlockingSentinelPool("orders", manager, max_connections=2, timeout=1.0)

    pool.disconnect(inuse_connections=False)  # what a failover does: sentinels stay
    assert manager.closed == 0
    redis.Redis.from_pool(pool).close()
    assert manager.closed >= 1
