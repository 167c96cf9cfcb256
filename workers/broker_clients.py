"""The worker's kombu Redis channels reuse one client (see `dispatcher.channel_clients`)."""

from __future__ import annotations

from dispatcher.channel_clients import reuse_sync_clients

__all__ = ["reuse_redis_clients"]


def reuse_redis_clients() -> bool:
    """Make kombu's Redis channels reuse one sync client; False if they already do."""
    from kombu.transport import redis as kombu_redis  # noqa: PLC0415 - only when asked

    return reuse_sync_clients(kombu_redis.Channel)
