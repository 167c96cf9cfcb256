"""The worker's patches to kombu's Redis transport.

Tested with kombu 5.7.0 (`dispatcher/tested_versions.py`).

Its channels reuse one client (see `dispatcher.broker.channel_clients`), and a
message popped but not recorded as unacknowledged is kept for requeueing
(see `workers.kombu_patches.consumer`).
"""

from __future__ import annotations

from dispatcher.broker.channel_clients import reuse_sync_clients

__all__ = ["reuse_redis_clients"]


def reuse_redis_clients() -> bool:
    """Make kombu's Redis channels reuse one sync client; False if they already do."""
    from kombu.transport import redis as kombu_redis  # noqa: PLC0415 - only when asked

    from workers.kombu_patches.consumer import finish_acks_later, keep_undelivered  # noqa: PLC0415 - Celery

    keep_undelivered(kombu_redis.QoS)
    finish_acks_later(kombu_redis.QoS)
    return reuse_sync_clients(kombu_redis.Channel)
