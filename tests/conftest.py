"""Fixtures shared by the unit and integration suites.

Unit tests need nothing running. Integration tests ask for `redis_server`,
a private redis-server on a free port, started once per session and stopped
at the end; it never touches a Redis that was already running.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from dispatcher import Message, Request, Settings
from dispatcher.config.settings import ENV_NAMES
from producer.cli.tools.embedded_redis import EmbeddedRedis

# The dotenv file Settings reads as shipped (`.env` in the working directory).
SHIPPED_ENV_FILE = Settings.model_config.get("env_file")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's real keys or Redis: every documented variable is unset,
    and no `.env` is read (the one in the checkout may hold real keys; see `dotenv_here`)."""
    documented = {*ENV_NAMES.values(), "LLMDISPATCH_CONFIG"}
    # Settings matches names case-insensitively, so `openai_api_key` would count too.
    for name in list(os.environ):
        if name.upper() in documented:
            monkeypatch.delenv(name)
    monkeypatch.setitem(Settings.model_config, "env_file", None)


@pytest.fixture
def dotenv_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory where Settings reads `.env` as shipped; the file's path.

    The test writes the file; nothing outside `tmp_path` is read.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(Settings.model_config, "env_file", SHIPPED_ENV_FILE)
    return tmp_path / ".env"


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


@pytest.fixture
def fake_or_real_redis(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """fakeredis for a unit test; the private redis-server for the same test body run
    again from tests/integration (`tests/integration/test_real_redis_*.py`).

    The client answers bytes and sees an empty database, before and after the test.
    """
    client: redis.Redis
    if request.node.get_closest_marker("integration") is None:
        client = fakeredis.FakeRedis()
    else:
        server: EmbeddedRedis = request.getfixturevalue("redis_server")
        client = server.client()
        client.flushdb()
    yield client
    client.flushdb()
    client.close()
