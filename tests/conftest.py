"""Fixtures shared by the unit and integration suites.

Unit tests need nothing running. Integration tests ask for `redis_server`,
a private redis-server on a free port, started once per session and stopped
at the end; it never touches a Redis that was already running.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
import redis

from dispatcher import Message, Request
from dispatcher.config import ENV_NAMES
from producer.embedded_redis import EmbeddedRedis


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's real keys or Redis: every documented variable is unset."""
    documented = {*ENV_NAMES.values(), "LLMDISPATCH_CONFIG"}
    # Settings matches names case-insensitively, so `openai_api_key` would count too.
    for name in list(os.environ):
        if name.upper() in documented:
            monkeypatch.delenv(name)


@pytest.fixture
def make_request() -> Callable[..., Request]:
    """Build a valid request, overriding any field: make_request(model="claude-3-5-haiku")."""

    def build(**overrides: Any) -> Request:
        fields: dict[str, Any] = {
            "model": "gpt-4o-mini",
            "messages": [Message(role="user", content="Say hello.")],
        }
        fields.update(overrides)
        return Request(**fields)

    return build


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """A private redis-server for the whole session."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A client of the private server, with an empty database before and after the test."""
    client = redis_server.client(decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(
    params=[
        pytest.param("fake", id="fakeredis"),
        pytest.param("real", id="real-redis", marks=pytest.mark.integration),
    ]
)
def fake_or_real_redis(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """The same test twice: on fakeredis, and (marked integration) on the private server.

    The client answers bytes and sees an empty database, before and after the test.
    """
    client: redis.Redis
    if request.param == "fake":
        client = fakeredis.FakeRedis()
    else:
        server: EmbeddedRedis = request.getfixturevalue("redis_server")
        client = server.client()
        client.flushdb()
    yield client
    client.flushdb()
    client.close()
