"""One redis-py client per kombu channel; a closed channel fails as a lost connection."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from dispatcher.broker.channel_clients import reuse_sync_clients


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


@pytest.fixture
def channel_class() -> type[FakeChannel]:
    """A channel class of this test's own: the patch applies once per class and process,
    so no test may depend on another having patched (or not) a shared one."""
    return type("FakeChannel", (FakeChannel,), {"built": 0})


def test_a_channel_reuses_one_client_until_its_pool_changes(
    channel_class: type[FakeChannel],
) -> None:
    assert reuse_sync_clients(channel_class)
    assert not reuse_sync_clients(channel_class)  # patched once per process
    channel = channel_class()
    first = channel._create_client()
    assert channel._create_client() is first
    channel._pool = redis.ConnectionPool()
    assert channel._create_client() is not first
    assert channel_class.built == 2


def test_a_closed_connections_channel_raises_a_connection_error_not_attribute_error(
    channel_class: type[FakeChannel],
) -> None:
    assert reuse_sync_clients(channel_class)
    channel = channel_class()
    channel.closed_connection = True
    with pytest.raises(redis.ConnectionError, match="broker connection is closed"):
        channel._create_client()
