"""The worker's heartbeat: vouch for itself, and send back what dead workers held.

Each worker process records in Redis every message it holds unacknowledged, as
it receives and acknowledges it (`workers.kombu_patches.consumer.HELD`, mirrored to
`dispatcher.state.worker_registry`). Every `dead_after_s / 3` it records that it is
alive for `dead_after_s` more, then takes back every worker whose time has
passed: those messages go back to the head of their queues at once (kombu's
`QoS.restore_by_tag`, the transaction kombu's own visibility timeout uses, which
does nothing for a message acknowledged meanwhile).
Their jobs then run again as on any redelivery, recorded once. So a killed
worker's bells, batch messages and jobs wait about `dead_after_s`, not the
visibility timeout, which stays the last resort.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Collection
from typing import Any

from dispatcher.state.worker_registry import WorkerRegistry
from workers.kombu_patches.consumer import HeldMessages

__all__ = ["BEATS_PER_PERIOD", "Heartbeat", "restore_messages", "worker_id"]

log = logging.getLogger(__name__)

# Beats per `dead_after_s`: two may be missed (a long GC pause, a slow Redis) before
# the others take a worker back.
BEATS_PER_PERIOD = 3


def worker_id(hostname: str) -> str:
    """This process's id among the workers: its Celery node name and its process id."""
    return f"{hostname}:{os.getpid()}"


class Heartbeat:
    """One worker process's heartbeat; `beat` once, or `run` until stopped."""

    def __init__(
        self,
        registry: WorkerRegistry,
        worker: str,
        held: HeldMessages,
        *,
        dead_after_s: float,
        forget_after_s: float,
        restore: Callable[[Collection[str]], None],
        after_deaths: Callable[[], None] = lambda: None,
    ) -> None:
        self.registry = registry
        self.worker = worker
        self.held = held
        self.dead_after_s = dead_after_s
        self.forget_after_s = forget_after_s
        self.restore = restore
        self.after_deaths = after_deaths
        self.stopped = threading.Event()

    @property
    def interval_s(self) -> float:
        """How often it beats."""
        return self.dead_after_s / BEATS_PER_PERIOD

    def start(self) -> None:
        """Mirror the held messages to Redis from now on (those held already included)."""
        self.held.mirror_to(
            lambda tag: self.registry.hold(self.worker, tag),
            lambda tag: self.registry.release(self.worker, tag),
        )

    def beat(self) -> dict[str, list[str]]:
        """Vouch for this worker, then send back what each dead worker held; who was dead."""
        forgotten = self.held.forget_older_than(self.forget_after_s)
        self.registry.beat(self.worker, self.dead_after_s, forget=forgotten)
        dead = self.registry.take_dead()
        for worker, held in dead.items():
            if held:
                self.restore(held)
            log.warning(
                "worker %s stopped beating %g s ago at the latest: sent %d of its messages "
                "back to their queues",
                worker,
                self.dead_after_s,
                len(held),
            )
        if dead:
            # A message a dead worker took off its queue but had not recorded is in no
            # list: look for such jobs now, not a sweeper's minutes later.
            self.after_deaths()
        return dead

    def run(self) -> None:
        """Mirror, then beat until `stop`; a failed beat (Redis away) is logged, tried again."""
        self.start()
        while not self.stopped.is_set():
            try:
                self.beat()
            except Exception as exc:
                log.warning("heartbeat failed, trying again: %s", exc)
            self.stopped.wait(self.interval_s)

    def stop(self) -> None:
        """Stop beating and leave the registry: a clean stop is not a death."""
        self.stopped.set()
        try:
            self.registry.leave(self.worker)
        except Exception as exc:
            log.warning("could not leave the worker registry: %s", exc)


def restore_messages(celery_app: Any, tags: Collection[str]) -> None:
    """Put the unacknowledged messages `tags` back at the head of their queues."""
    with celery_app.connection_for_write() as connection:
        qos = connection.default_channel.qos
        for tag in tags:
            qos.restore_by_tag(tag, leftmost=True)
