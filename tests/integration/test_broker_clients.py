"""kombu's Redis channels reuse one client once the worker's patch is applied."""

from __future__ import annotations

import kombu
import pytest

from producer.cli.tools.embedded_redis import EmbeddedRedis
from workers.kombu_patches.clients import reuse_redis_clients

pytestmark = pytest.mark.integration


def test_a_channel_hands_out_one_client_until_its_pool_changes(
    redis_server: EmbeddedRedis,
) -> None:
    reuse_redis_clients()
    assert reuse_redis_clients() is False  # applied once per process

    with kombu.Connection(redis_server.url) as connection:
        channel = connection.default_channel
        first = channel._create_client()
        assert channel._create_client() is first
        assert first.connection_pool is channel.pool
        # Async clients (BRPOP) are left to kombu: a fresh one each time, as before.
        assert channel._create_client(asynchronous=True) is not first

        # kombu drops its pool after a connection error: the next client uses the new one.
        channel._pool = None
        second = channel._create_client()
        assert second is not first
        assert second.connection_pool is channel.pool

        # And the reused client really talks to the broker.
        producer = connection.Producer()
        producer.publish({"n": 1}, routing_key="llmd-test-queue", serializer="json")
        assert first.llen("llmd-test-queue") == 1
        first.delete("llmd-test-queue")
