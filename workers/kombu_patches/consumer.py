"""Celery's consumer, restoring at once the countdown messages a lost connection drops.

Tested with celery 5.7.0 and kombu 5.7.0 (`dispatcher/tested_versions.py`).

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
their copies are skipped as ended (`dispatcher.runner.outage`).

The same reconnect also puts back the messages kombu popped but never
recorded. The Redis transport takes a message off its queue (BRPOP) and only
then records it as unacknowledged, in a second command (`QoS.append`). If
Redis goes away between the two, the message is in no list at all: lost.
`keep_undelivered` holds on to such a message, and the reconnect pushes it
back to its queue. If its record did reach Redis before the connection broke,
the copy comes back twice; both are run safely (compare-and-set ends).

An acknowledgement that meets the outage is kept too (`finish_acks_later`):
kombu would log it at CRITICAL and leave the message in `unacked` until the
visibility timeout brought it back (to be skipped as ended). The reconnect
deletes it from there instead.

It also publishes task events in batches. With the event loop, Celery
buffers task events and flushes them at the loop's next turn, which under load
is one or two events per publish: a publish costs a kombu message, its
encoding and a Redis round trip. This consumer flushes at most every
`EVENT_FLUSH_S`, or once `EVENT_BUFFER_LIMIT` events wait (Celery's own limit,
24, would publish every eight jobs now that each job sends its own task events,
`workers.task_events`), so Flower sees a task's events up to that much later, and
a worker spends far less on them. While a timed flush is due, an event does not
wake the loop at all (the flush will take it): once per job event, that wake
was a loop turn of its own. The buffer is flushed before the consumer stops.

Enabled by `worker_consumer` in the worker's Celery settings, and by
`keep_undelivered(QoS)` and `finish_acks_later(QoS)` as the app is built
(`workers.kombu_patches.clients.reuse_redis_clients`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from celery import bootsteps
from celery.worker import state
from celery.worker.consumer import Consumer

from dispatcher.runner.outage import REDIS_UNREACHABLE

__all__ = [
    "EVENT_BUFFER_LIMIT",
    "EVENT_FLUSH_S",
    "HELD",
    "LOST_FLUSH_S",
    "UNDELIVERED",
    "UNFINISHED_ACKS",
    "EventBuffer",
    "EventPacer",
    "HeldMessages",
    "KeptUntilReconnect",
    "RestoringConsumer",
    "Undelivered",
    "UnfinishedAcks",
    "finish_acks_later",
    "keep_undelivered",
]

logger = logging.getLogger(__name__)

# The longest a task event waits in the worker's buffer before it is published.
EVENT_FLUSH_S = 0.05
# Task events buffered before they are published whatever the time: 50 ms of a worker
# running 3,000 jobs/s (three events each), so the pacer's timer, not the count, flushes.
EVENT_BUFFER_LIMIT = 500
# How late a timed flush may be before the pacer takes it for lost (a reconnect cancels
# timers the loop set while connecting) and lets the next event arm another.
LOST_FLUSH_S = 1.0


class EventBuffer(bootsteps.StartStopStep):  # type: ignore[misc]
    """Gives each new event dispatcher of the consumer (one per connection) our buffer limit."""

    requires = ("celery.worker.consumer.events:Events",)

    def start(self, c: Any) -> None:
        if c.event_dispatcher is not None:
            c.event_dispatcher.buffer_limit = EVENT_BUFFER_LIMIT


class RestoringConsumer(Consumer):  # type: ignore[misc]
    """`Consumer` that restores the countdown messages a lost connection made it drop."""

    # This process's consumer once built: `workers.task_events` sends jobs' task
    # events through its event dispatcher.
    current: ClassVar[RestoringConsumer | None] = None

    class Blueprint(Consumer.Blueprint):  # type: ignore[misc]
        """Celery's consumer steps, and `EventBuffer` once Events has built the dispatcher."""

        default_steps = (
            *Consumer.Blueprint.default_steps,
            "workers.kombu_patches.consumer:EventBuffer",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.dropped_tags: list[str] = []
        self.event_pacer = EventPacer(lambda: Consumer._flush_events(self))
        super().__init__(*args, **kwargs)
        RestoringConsumer.current = self

    def _flush_events(self) -> None:
        # Celery calls this on the loop's thread once an event is buffered.
        self.event_pacer.offered(self.hub.call_later if self.hub is not None else None)

    def on_send_event_buffered(self) -> None:
        """Wake the loop for a buffered event, unless a timed flush will publish it anyway."""
        # Called on the sending thread, a task thread for jobs' events. The timed flush
        # clears `armed` before it reads the buffer, so an event buffered while it reads
        # True is in the buffer when the flush takes it.
        if not self.event_pacer.armed:
            super().on_send_event_buffered()

    def shutdown(self) -> None:
        try:
            self.event_pacer.flush_now()  # the buffer would be lost with the dispatcher
        except Exception as exc:
            logger.warning("could not publish the last task events: %s", exc)
        super().shutdown()

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
        UNDELIVERED.redo(connection)
        UNFINISHED_ACKS.redo(connection)
        return connection


class EventPacer:
    """Publishes buffered task events at most every `interval_s`, on the loop's thread."""

    def __init__(
        self,
        flush: Callable[[], None],
        interval_s: float = EVENT_FLUSH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._flush, self.interval_s, self._clock = flush, interval_s, clock
        self._flushed_at = float("-inf")
        self._armed = False
        self._due = float("-inf")

    @property
    def armed(self) -> bool:
        """Whether a timed flush is due (and not `LOST_FLUSH_S` overdue: then it is lost)."""
        return self._armed and self._clock() <= self._due + LOST_FLUSH_S

    def offered(self, call_later: Callable[[float, Callable[[], None]], Any] | None) -> None:
        """Events wait in the buffer: flush now, or arm one timer for when the interval is up."""
        now = self._clock()
        wait = self._flushed_at + self.interval_s - now
        if wait <= 0 or call_later is None:
            self.flush_now()
        elif not self.armed:
            self._armed, self._due = True, now + wait
            call_later(wait, self._timed)

    def _timed(self) -> None:
        self._armed = False
        self.flush_now()

    def flush_now(self) -> None:
        """Publish what the buffer holds."""
        self._flushed_at = self._clock()
        self._flush()


class KeptUntilReconnect:
    """Broker writes the outage refused, kept to be done again once Redis answers."""

    # What `redo` logs: the items it could not do yet, and those it did.
    refused = "could not redo %d broker writes yet: %s"
    done = "redid %d broker writes the outage had refused"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Any] = []

    def keep(self, item: Any) -> None:
        with self._lock:
            self._items.append(item)

    def __len__(self) -> int:
        return len(self._items)

    def redo(self, connection: Any) -> None:
        """Do every kept write in one pipeline; keep them all if Redis refuses again."""
        with self._lock:
            kept, self._items = self._items, []
        if not kept:
            return
        try:
            self.write(connection, kept)
        except connection.connection_errors as exc:
            logger.warning(self.refused, len(kept), exc)
            with self._lock:
                self._items = kept + self._items
            return
        logger.info(self.done, len(kept))

    def write(self, connection: Any, kept: list[Any]) -> None:
        raise NotImplementedError


class Undelivered(KeptUntilReconnect):
    """Messages popped from a queue whose unacknowledged record could not be written.

    Each kept as (raw message, exchange, routing key); `redo` pushes them back.
    """

    refused = "could not requeue %d undelivered messages yet: %s"
    done = "requeued %d messages popped but not recorded before the outage"

    def write(self, connection: Any, kept: list[Any]) -> None:
        channel = connection.default_channel
        with channel.conn_or_acquire() as client, client.pipeline() as pipe:
            for raw, exchange, routing_key in kept:
                channel._do_restore_message(raw, exchange, routing_key, pipe, leftmost=True)
            pipe.execute()


UNDELIVERED = Undelivered()


class UnfinishedAcks(KeptUntilReconnect):
    """Acknowledgements that could not reach Redis: finished on the reconnect.

    kombu's Redis transport acknowledges by deleting the message from the
    `unacked` hash. With Redis away that fails, kombu logs it at CRITICAL and
    the message stays there until the visibility timeout brings it back, to be
    skipped as ended. Instead the tag is kept and deleted once Redis answers.
    """

    refused = "could not finish %d acknowledgements yet: %s"
    done = "finished %d acknowledgements the outage had interrupted"

    def write(self, connection: Any, kept: list[Any]) -> None:
        qos = connection.default_channel.qos
        with qos.pipe_or_acquire() as pipe:
            for tag in kept:
                qos._remove_from_indices(tag, pipe)
            pipe.execute()


UNFINISHED_ACKS = UnfinishedAcks()


class HeldMessages:
    """The delivery tags of the messages this process holds unacknowledged, kept in Redis.

    Recorded as kombu records a delivery (`keep_undelivered`'s `append`), dropped as it
    acknowledges one (`finish_acks_later`'s `ack`), and mirrored at once to the worker
    registry (`workers.heartbeat`), so the workers that outlive this one know what to
    take back. Until the mirror is set (before the worker is ready) tags wait here and
    go to Redis when it is. A tag left over (a message kombu itself rejected or
    restored) is harmless: taking back a message no longer unacknowledged does
    nothing; tags older than the visibility timeout are forgotten at a beat.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._since: dict[str, float] = {}
        self._clock = clock
        self._mirror: tuple[Callable[[str], None], Callable[[str], None]] | None = None

    def mirror_to(self, hold: Callable[[str], None], release: Callable[[str], None]) -> None:
        """From now on, each tag held or released is told to `hold` or `release` too."""
        with self._lock:
            self._mirror = (hold, release)
            waiting = list(self._since)
        for tag in waiting:
            hold(tag)

    def add(self, tag: str) -> None:
        with self._lock:
            self._since[tag] = self._clock()
            mirror = self._mirror
        if mirror is not None:
            mirror[0](tag)

    def discard(self, tag: str) -> None:
        with self._lock:
            known = self._since.pop(tag, None) is not None
            mirror = self._mirror
        if known and mirror is not None:
            mirror[1](tag)

    def tags(self) -> list[str]:
        """The tags held now."""
        with self._lock:
            return list(self._since)

    def forget_older_than(self, age_s: float) -> list[str]:
        """Drop the tags held longer than `age_s` (kombu gave them back long ago); which."""
        with self._lock:
            oldest = self._clock() - age_s
            forgotten = [tag for tag, at in self._since.items() if at < oldest]
            for tag in forgotten:
                del self._since[tag]
        return forgotten


HELD = HeldMessages()


def _mirrored(change: Callable[[str], None], tag: str) -> None:
    """Record a held or acknowledged message; Redis refusing it must not fail the message."""
    try:
        change(tag)
    except REDIS_UNREACHABLE as exc:  # the next beat's take-back is late for it, no more
        logger.warning("could not record message %s as held or released: %s", tag, exc)


def _wrap_once(qos_class: Any, name: str, wrap: Callable[[Any], Any]) -> bool:
    """Replace `qos_class.<name>` by `wrap(original)`, once; False if it already was."""
    original = getattr(qos_class, name)
    if getattr(original, "_llmd_wraps", None) == name:
        return False
    wrapped = wrap(original)
    wrapped._llmd_wraps = name
    setattr(qos_class, name, wrapped)
    return True


def keep_undelivered(qos_class: Any) -> bool:
    """Make `qos_class.append` keep a message whose record fails; False if it already does."""

    def wrap(original: Any) -> Any:
        def append(self: Any, message: Any, delivery_tag: Any) -> Any:
            # Held before kombu records it: should this worker die in between, the tag
            # names nothing unacknowledged (harmless), never an unlisted message.
            _mirrored(HELD.add, str(delivery_tag))
            try:
                return original(self, message, delivery_tag)
            except REDIS_UNREACHABLE:
                delivery = message.delivery_info
                UNDELIVERED.keep((message._raw, delivery["exchange"], delivery["routing_key"]))
                raise

        return append

    return _wrap_once(qos_class, "append", wrap)


def finish_acks_later(qos_class: Any) -> bool:
    """Make `qos_class.ack` keep an acknowledgement Redis refused; False if it already does."""

    def wrap(original: Any) -> Any:
        def ack(self: Any, delivery_tag: Any) -> Any:
            _mirrored(HELD.discard, str(delivery_tag))
            try:
                return original(self, delivery_tag)
            except REDIS_UNREACHABLE:
                UNFINISHED_ACKS.keep(str(delivery_tag))
                # The in-memory part of the acknowledgement (virtual.QoS.ack), as kombu's own.
                return super(qos_class, self).ack(delivery_tag)

        return ack

    return _wrap_once(qos_class, "ack", wrap)


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
