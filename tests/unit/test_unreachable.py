"""A producer gets one clear, typed error within its timeouts when Redis is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from dispatcher import Request, Settings, StoreUnavailable
from dispatcher.redaction import register_secret
from producer import AsyncClient, Client
from producer.cli.tools.embedded_redis import free_port
from producer.unreachable import reaching_redis, unavailable

PASSWORD = "pw-unreachable-0123456789"


def settings_for(url: str) -> Settings:
    return Settings(
        redis_url=SecretStr(url),
        vendors={"mock": {"type": "mock", "models": ["*"]}},
        default_vendor="mock",
    )


@pytest.fixture
def closed_url() -> str:
    """A Redis URL with a password, on a loopback port nothing listens on."""
    register_secret(PASSWORD)
    return f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"


def test_submit_get_and_wait_fail_fast_with_a_store_error_that_hides_the_password(
    closed_url: str,
) -> None:
    client = Client(settings_for(closed_url))
    request = Request(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    calls = {
        "submit": lambda: client.submit(request),
        "get": lambda: client.get("0" * 32),
        "wait": lambda: client.wait("0" * 32, timeout_s=30),
        "stats": client.stats,
        "batch_status": lambda: client.batch_status("0" * 32),
        "stream": lambda: next(client.stream("0" * 32)),
    }
    for name, call in calls.items():
        began = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            call()
        assert time.monotonic() - began < 10, name
        message = str(caught.value)
        assert "is unreachable" in message, name
        assert "127.0.0.1" in message, name
        assert PASSWORD not in message, name
        assert caught.value.retryable
    client.close()


def test_the_async_client_fails_the_same_way(closed_url: str) -> None:
    async def main() -> None:
        client = AsyncClient(settings_for(closed_url))
        try:
            with pytest.raises(StoreUnavailable, match="is unreachable"):
                await client.get("0" * 32)
            with pytest.raises(StoreUnavailable, match="is unreachable"):
                await client.stats()
        finally:
            await client.aclose()

    asyncio.run(main())


class Holder:
    """What `reaching_redis` needs of a client: its settings."""

    def __init__(self) -> None:
        self.settings = settings_for(f"redis://:{PASSWORD}@db.internal:6379/0")

    @reaching_redis
    def items(self) -> Iterator[int]:
        yield 1
        raise redis.ConnectionError("Connection reset by peer")

    @reaching_redis
    async def aitems(self) -> AsyncIterator[int]:
        yield 1
        raise redis.TimeoutError("Timeout reading from socket")

    @reaching_redis
    def fine(self) -> str:
        return "ok"

    @reaching_redis
    def buggy(self) -> None:
        raise KeyError("not an outage")


def test_iterators_are_translated_while_they_are_read() -> None:
    register_secret(PASSWORD)
    holder = Holder()
    items = holder.items()
    assert next(items) == 1
    with pytest.raises(StoreUnavailable, match=r"db\.internal"):
        next(items)

    async def read_all() -> list[int]:
        return [item async for item in holder.aitems()]

    with pytest.raises(StoreUnavailable, match="TimeoutError"):
        asyncio.run(read_all())


def test_other_results_and_errors_pass_through_untouched() -> None:
    holder = Holder()
    assert holder.fine() == "ok"
    with pytest.raises(KeyError):
        holder.buggy()


def test_refused_credentials_say_so() -> None:
    register_secret(PASSWORD)
    error = unavailable(
        f"redis://:{PASSWORD}@127.0.0.1:1/0", redis.AuthenticationError("invalid password")
    )
    assert "refused our credentials" in str(error)
    assert PASSWORD not in str(error)


def test_unavailable_drops_the_query_string(tmp_path: Any) -> None:
    error = unavailable(
        f"rediss://127.0.0.1:1/0?ssl_ca_certs={tmp_path}/ca.pem", redis.ConnectionError("x")
    )
    assert "ca.pem" not in str(error)
    assert "rediss://127.0.0.1:1/0" in str(error)
