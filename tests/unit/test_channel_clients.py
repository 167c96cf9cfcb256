"""One redis-py client per kombu channel; a closed channel fails as a lost connection."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from dispatcher.channel_clients import reuse_sync_clients


class FakeChannel:
    """The two members of kombu's Redis Channel that the patch uses."""

    built = 0

    def __init__(self) -> None:
        self._pool: Any = redis.ConnectionPool()
        self.closed_connection = False

    @property
    def pool(self) -> Any:
        if self.closed_connection:
            # What kombu's `_connparams` raises once the connection's client is gone.
            raise AttributeError("'NoneType' object has no attribute 'hostname'")
        return self._pool

    def _create_client(self, asynchronous: bool = False) -> Any:
        type(self).built += 1
        return redis.Redis(connection_pool=self.pool)


def test_a_channel_reuses_one_client_until_its_pool_changes() -> None:
    assert reuse_sync_clients(FakeChannel)
    assert not reuse_sync_clients(FakeChannel)  # patched once per process
    channel = FakeChannel()
    first = channel._create_client()
    assert channel._create_client() is first
    channel._pool = redis.ConnectionPool()
    assert channel._create_client() is not first
    assert FakeChannel.built == 2


def test_a_closed_connections_channel_raises_a_connection_error_not_attribute_error() -> None:
    reuse_sync_clients(FakeChannel)
    channel = FakeChannel()
    channel.closed_connection = True
    with pytest.raises(redis.ConnectionError, match="broker connection is closed"):
        channel._create_client()
