"""Pub/sub connections an `AsyncClient` reuses from one stream to the next.

redis-py's asyncio `PubSub` disconnects its connection when closed (to shed
its subscriptions), so a stream that opens and closes its own pays for a new
TCP connection and redis-py's handshake every time: with hundreds of streams
starting together (the HTTP front's), that was most of a stream's setup.
Instead, a finished stream unsubscribes and hands its `PubSub` back here; the
next stream subscribes it to its own channel. Redis answers a connection's
commands in order, so a message a reused `PubSub` still holds for its former
channel comes before its new subscription's confirmation, which the follower
reads past; `streaming._event_in` also checks each message's channel. A
`PubSub` whose unsubscribe fails is closed, not kept. At most `MAX_IDLE` wait
here; the rest are closed.
"""

from __future__ import annotations

import contextlib

import redis
import redis.asyncio

__all__ = ["MAX_IDLE", "PubSubPool"]

# Idle pub/sub connections kept for the next streams (each holds one Redis connection).
MAX_IDLE = 64


class PubSubPool:
    """Idle `PubSub`s of one asyncio Redis client, ready for the next stream."""

    def __init__(self, client: redis.asyncio.Redis, max_idle: int = MAX_IDLE) -> None:
        self.client = client
        self.max_idle = max_idle
        self._idle: list[redis.asyncio.client.PubSub] = []

    def take(self) -> redis.asyncio.client.PubSub:
        """An idle `PubSub`, or a new one (it connects on its first subscribe)."""
        return self._idle.pop() if self._idle else self.client.pubsub()

    async def give_back(self, pubsub: redis.asyncio.client.PubSub) -> None:
        """Unsubscribe `pubsub` and keep it for the next stream, or close it.

        Unsubscribing first does not rely on the server noticing a closed connection
        (fakeredis's asyncio connection never does).
        """
        try:
            await pubsub.unsubscribe()
        except (redis.RedisError, OSError):
            await _close(pubsub)  # a broken connection: closing it ends the subscription
            return
        if len(self._idle) < self.max_idle:
            self._idle.append(pubsub)
        else:
            await _close(pubsub)

    async def aclose(self) -> None:
        """Close every idle `PubSub`."""
        idle, self._idle = self._idle, []
        for pubsub in idle:
            await _close(pubsub)


async def _close(pubsub: redis.asyncio.client.PubSub) -> None:
    with contextlib.suppress(redis.RedisError, OSError):
        await pubsub.aclose()
