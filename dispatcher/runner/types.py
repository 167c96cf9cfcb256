"""The shapes the job runner deals in: its outcomes, and the calls it is given.

Shared by `dispatcher.runner.job_runner` (claim, call, write the result) and
`dispatcher.runner.after_failure` (retry, reroute, wait or fail), and by the worker
that hands the runner its vendor calls and message sends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from dispatcher.broker.messages import RunJob
from dispatcher.models import Deployment, JobRecord, Request, ToolCallDelta
from dispatcher.models import Response as VendorResponse
from dispatcher.vendors.base import Vendor

__all__ = [
    "BUSY",
    "AttemptWatcher",
    "CallMany",
    "CallVendor",
    "OnText",
    "OnToolCalls",
    "Outcome",
    "Ready",
    "SendMessage",
    "Unwatched",
    "VendorCall",
]


# Why a batch item was left alone: another copy of its message runs it.
BUSY = "already started by another copy of its message"

# Sends a message to a queue: (message, queue, priority, countdown in seconds).
SendMessage = Callable[[RunJob, str, int, float], None]
# Makes the vendor call for a message and returns its reply (the worker runs it on its
# event loop and, for a streaming job, publishes every delta as it arrives).
CallVendor = Callable[[Vendor, Request, str, RunJob], VendorResponse]
# Publishes a delta of a streaming job: (text, epoch seconds it arrived) -> still wanted?
OnText = Callable[[str, float], Awaitable[bool]]
# Hears pieces of a stream's tool calls with when they arrived; False drops the stream.
OnToolCalls = Callable[[Sequence[ToolCallDelta], float], Awaitable[bool]]
# One vendor call of `call_many`: what `CallVendor` takes.
VendorCall = tuple[Vendor, Request, str, RunJob]
# Makes many vendor calls concurrently; yields (position in the list, reply or the
# exception the call raised) as each one ends.
CallMany = Callable[[Sequence[VendorCall]], Iterable[tuple[int, "VendorResponse | Exception"]]]
# A claimed job, ready for its vendor call: its record, route and deadline.
Ready = tuple[JobRecord, Sequence[Deployment], float | None]


@dataclass(frozen=True)
class Outcome:
    """What an attempt led to; the worker logs it, tests assert on it."""

    kind: Literal["succeeded", "failed", "rescheduled", "skipped"]
    detail: str = ""
    next_message: RunJob | None = None
    delay_s: float = 0.0
    queue: str | None = None
    errors: list[str] = field(default_factory=list)


class AttemptWatcher(Protocol):
    """Told when an attempt starts and what it came to (the worker shows jobs in Flower)."""

    def started(self, message: RunJob, model: str) -> None:
        """The attempt was claimed and its vendor is called next, for `model`."""

    def ended(
        self, message: RunJob, outcome: Outcome, result: VendorResponse | Exception | None
    ) -> None:
        """The attempt came to `outcome`; `result` is its vendor call's, when it made one."""


class Unwatched:
    """The watcher of a runner nobody watches: does nothing."""

    def started(self, message: RunJob, model: str) -> None:
        """Nothing to do."""

    def ended(
        self, message: RunJob, outcome: Outcome, result: VendorResponse | Exception | None
    ) -> None:
        """Nothing to do."""
