"""Celery's consumer, restoring at once the countdown messages a lost connection drops.

A retry waits as a countdown message held in the worker's memory (ETA). When
the broker connection is lost, say while Redis restarts, Celery drops those
from memory (`Consumer.on_close`: their delivery tags belong to the old
channel). kombu would put them back in their queues as the channel closes,
but Redis is down at that moment, so they stay in the `unacked` hash until
the visibility timeout (an hour by default) brings them back: every retry in
flight during a Redis blip would wait an hour.

This consumer notes the delivery tags of the countdown messages it is about
to drop and, once it has connected again, restores exactly those to their
queues (`QoS.restore_by_tag`, one Redis transaction each: a message already
restored or acknowledged is left alone). It touches no other worker's
messages. Messages it was running are not in that list: those finish, and
their copies are skipped as ended (`dispatcher.outage`).

Enabled by `worker_consumer` in the worker's Celery settings (`workers.app`).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker import state
from celery.worker.consumer import Consumer

__all__ = ["RestoringConsumer"]

logger = logging.getLogger(__name__)


class RestoringConsumer(Consumer):  # type: ignore[misc]
    """`Consumer` that restores the countdown messages a lost connection made it drop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.dropped_tags: list[str] = []
        super().__init__(*args, **kwargs)

    def on_close(self) -> None:
        dropped = dropped_countdown_tags()
        if dropped:
            logger.info("the lost connection drops %d countdown messages", len(dropped))
        self.dropped_tags += dropped
        super().on_close()

    def connect(self) -> Any:
        connection = super().connect()
        if self.dropped_tags:
            self.dropped_tags = restore(connection, self.dropped_tags)
        return connection


def dropped_countdown_tags() -> list[str]:
    """Delivery tags of the countdown messages `Consumer.on_close` is about to drop."""
    tags = []
    for request in tuple(state.scheduled_requests):
        if request in state.active_requests or request in state.reserved_requests:
            continue  # running or about to run: not dropped
        tag = getattr(request.message, "delivery_tag", None)
        if tag is not None and not request.acknowledged:
            tags.append(str(tag))
    return tags


def restore(connection: Any, tags: list[str]) -> list[str]:
    """Put the messages of `tags` back in their queues; returns the tags not restored."""
    qos = connection.default_channel.qos
    for index, tag in enumerate(tags):
        try:
            qos.restore_by_tag(tag, leftmost=True)
        except connection.connection_errors as exc:
            logger.warning("could not restore %d countdown messages yet: %s", len(tags), exc)
            return tags[index:]
    logger.info("restored %d countdown messages dropped with the lost connection", len(tags))
    return []
