"""The stand-in vendor's one fault vocabulary: what a request asks to go wrong, and when.

Faults ride in the `x-fake-fault` request header (comma-separated), or in a prompt
as a marker `[fault:<faults> <tag>]` anywhere in the request body
(`[fault:500@1 item-7]`), so one item of a batch can fail on its own:

    400..599          answer with that status, in the vendor's own error shape
                      (a 429 carries the wait; Anthropic answers a 503 as its 529,
                      Gemini a 401 as its 400 API_KEY_INVALID)
    quota             the vendor's final quota error (OpenAI and Azure 429
                      insufficient_quota, Anthropic 402 billing_error, Gemini 429 with
                      a per-day QuotaFailure, Cohere 402; Ollama has none: a 429)
    retry-after:<s>   the wait a 429 asks for (default: the server's retry_after_s)
    slow:<ms>         wait that long before answering
    stall:<ms>        wait that long between stream events (a whole reply waits
                      as long in total as its stream would)
    timeout           answer nothing for 10 minutes (or until the server stops),
                      then drop the connection
    midstream-drop    close the connection halfway through the reply, no terminator
    midstream-error   half the stream, then the vendor's in-stream error
    echo-headers      the vendor's error whose message echoes the request back, as
                      some servers and proxies do: first the credentials it carried,
                      then the request line and every header (the status is another
                      fault's in the same list, else 400)

A trailing `@N` (`429@1`) applies that fault to the first N requests carrying the
exact same header value, or the exact same marker. An unknown value is a 400 that
lists these. Requests that ask for no fault may still draw one from the server-wide
failure rate (`MockBehaviour`): rate_limited is a 429, server_error a 500, timeout
a timeout and midstream_drop a midstream-drop.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, replace

from dispatcher.vendors.mock import FailureKind

__all__ = [
    "FAULT_HEADER",
    "NO_FAULT",
    "TIMEOUT_FAULT_HANG_S",
    "Fault",
    "FaultCounts",
    "fault_for_kind",
    "parse_fault",
]

FAULT_HEADER = "x-fake-fault"
# A "timeout" fault outlasts any sane client timeout (ours default to 60 s), yet ends.
TIMEOUT_FAULT_HANG_S = 600.0
# A fault carried by a prompt: "[fault:500@1 item-7]" (faults, then a tag that makes it unique).
_MARKER = re.compile(rb"\[fault:([^\]]+)\]")
_MARKER_START = b"[fault:"
_ACCEPTED = (
    "400..599, quota, retry-after:<s>, slow:<ms>, stall:<ms>, timeout, midstream-drop, "
    "midstream-error, echo-headers, each with an optional @N"
)


@dataclass(frozen=True)
class Fault:
    """What to do wrong with one request."""

    status: int | None = None
    quota: bool = False
    retry_after_s: float | None = None
    slow_s: float = 0.0
    stall_s: float | None = None
    hang: bool = False
    drop: bool = False
    stream_error: bool = False
    echo: bool = False

    @property
    def refuses(self) -> bool:
        """Whether the answer is an error instead of a reply."""
        return self.status is not None or self.quota or self.echo


NO_FAULT = Fault()

_FAULT_FOR_KIND: dict[FailureKind, Fault] = {
    "rate_limited": Fault(status=429),
    "server_error": Fault(status=500),
    "timeout": Fault(hang=True),
    "midstream_drop": Fault(drop=True),
}


def fault_for_kind(kind: FailureKind) -> Fault:
    """The fault a server-wide failure draw of `kind` injects."""
    return _FAULT_FOR_KIND[kind]


def _milliseconds(item: str, name: str, argument: str) -> float:
    try:
        seconds = float(argument) / 1000.0
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= TIMEOUT_FAULT_HANG_S:
        raise ValueError(f"{FAULT_HEADER} {item!r}: give milliseconds, as in {name}:250")
    return seconds


def _apply(fault: Fault, item: str) -> Fault:
    """`fault` with one more value (no `@N`) applied; the first status named wins."""
    name, _, argument = item.partition(":")
    if item.isdigit() and 400 <= int(item) <= 599:
        return fault if fault.status is not None else replace(fault, status=int(item))
    if item == "quota":
        return replace(fault, quota=True)
    if name in ("slow", "stall") and argument:
        seconds = _milliseconds(item, name, argument)
        return replace(fault, slow_s=seconds) if name == "slow" else replace(fault, stall_s=seconds)
    if name == "retry-after" and argument:
        try:
            return replace(fault, retry_after_s=max(0.0, float(argument)))
        except ValueError:
            raise ValueError(
                f"{FAULT_HEADER} {item!r}: give seconds, as in retry-after:2"
            ) from None
    flags = {
        "timeout": "hang",
        "midstream-drop": "drop",
        "midstream-error": "stream_error",
        "echo-headers": "echo",
    }
    if item in flags:
        return replace(fault, **{flags[item]: True})
    raise ValueError(f"unknown {FAULT_HEADER} value {item!r}; accepted: {_ACCEPTED}")


def _items(value: str) -> list[tuple[str, int | None]]:
    """Each comma-separated value with its `@N` limit (None: every request)."""
    items = []
    for part in value.split(","):
        item, _, limit = part.strip().lower().partition("@")
        if not item:
            continue
        if limit and not limit.isdigit():
            raise ValueError(f"{FAULT_HEADER} {part.strip()!r}: @N takes a count, as in 429@1")
        items.append((item, int(limit) if limit else None))
    return items


def parse_fault(value: str) -> Fault | None:
    """The fault a header value asks for, every `@N` ignored; None when it is empty.

    Raises:
        ValueError: an unknown value; the message lists the accepted ones.
    """
    items = _items(value)
    if not items:
        return None
    fault = NO_FAULT
    for item, _ in items:
        fault = _apply(fault, item)
    return fault


class FaultCounts:
    """How many requests carried each header value or marker, for the `@N` limits."""

    def __init__(self) -> None:
        self._uses: Counter[str] = Counter()

    def clear(self) -> None:
        """Forget every count: each `@N` starts over."""
        self._uses.clear()

    def _active(self, value: str, counted_as: str) -> list[str]:
        items = _items(value)
        if not items:
            return []
        self._uses[counted_as] += 1
        uses = self._uses[counted_as]
        return [item for item, limit in items if limit is None or uses <= limit]

    def fault_of(
        self, header: str, body: bytes, *, down: bool = False
    ) -> tuple[Fault | None, list[str]]:
        """The fault one request asks for (None: none asked) and the values in force.

        `down` (the vendor is down for the test) adds a 503.

        Raises:
            ValueError: an unknown value; the message lists the accepted ones.
        """
        names = self._active(header, header) if header else []
        if _MARKER_START in body:
            for marker in _MARKER.findall(body):
                text = marker.decode(errors="replace")
                faults = text.split()
                if faults:
                    names += self._active(faults[0], text)
        if down:
            names.append("503")
        if not names:
            return None, names
        fault = NO_FAULT
        for name in names:
            fault = _apply(fault, name)
        return fault, names
