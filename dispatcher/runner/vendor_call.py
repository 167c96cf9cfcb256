"""One vendor call as the runner makes it: `complete`, or a stream collected into a reply."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from dispatcher.errors import DeadlineExceeded, JobCancelled, VendorTimeout, VendorUnavailable
from dispatcher.models import FinishReason, Request, ToolCall, ToolCallDelta, Usage
from dispatcher.models import Response as VendorResponse
from dispatcher.runner.reply_checks import checked_reply
from dispatcher.runner.types import OnText, OnToolCalls
from dispatcher.vendors.base import Vendor

__all__ = ["call_vendor"]


async def call_vendor(
    vendor: Vendor,
    request: Request,
    model: str,
    on_text: OnText | None = None,
    *,
    on_tool_calls: OnToolCalls | None = None,
    max_stream_s: float | None = None,
    deadline: float | None = None,
) -> VendorResponse:
    """The vendor's reply: `complete`, or for a streamed request the collected stream.

    `deadline` (epoch seconds, the job's): the call is cut when it passes, and
    `DeadlineExceeded` raised, whatever the vendor is doing then.

    `on_text` is awaited with every delta as it arrives, and `on_tool_calls`
    with the pieces of the reply's tool calls (a vendor that sends its calls
    whole gets one piece per call, before the stream ends); when either answers
    False (the job was cancelled, or a newer attempt owns it) the stream is dropped.
    A stream still going after `max_stream_s` is dropped as a `VendorTimeout`: the
    vendor's stall timeout bounds each wait between chunks, this bounds them all.

    Whatever the vendor, a JSON response format's reply is parsed into
    `parsed` and strict schemas are checked (`reply_checks`): a reply that
    fails is `InvalidVendorOutput`.
    """
    listeners = _Listeners(on_text, on_tool_calls)
    if deadline is None:
        return checked_reply(request, await _call(vendor, request, model, listeners, max_stream_s))
    left_s = deadline - time.time()
    if left_s <= 0:
        raise _deadline_passed(vendor, request)
    bound = asyncio.timeout(left_s)
    try:
        async with bound:
            response = await _call(vendor, request, model, listeners, max_stream_s)
    except TimeoutError:
        if bound.expired():
            raise _deadline_passed(vendor, request) from None
        raise
    return checked_reply(request, response)


def _deadline_passed(vendor: Vendor, request: Request) -> DeadlineExceeded:
    after = f" ({request.timeout_s:g} s after submit)" if request.timeout_s is not None else ""
    return DeadlineExceeded(
        f"the job's deadline{after} passed during its call to {vendor.name}; the call was cut",
        vendor=vendor.name,
    )


class _Listeners:
    """Who hears a stream's pieces, and whether its tool calls were heard piece by piece."""

    def __init__(self, on_text: OnText | None, on_tool_calls: OnToolCalls | None) -> None:
        self.on_text = on_text
        self.on_tool_calls = on_tool_calls
        self.pieces_heard = False

    async def text(self, text: str) -> None:
        if text and self.on_text is not None and not await self.on_text(text, time.time()):
            raise JobCancelled("the job was cancelled or taken over while streaming")

    async def tool_calls(self, pieces: Sequence[ToolCallDelta]) -> None:
        self.pieces_heard = True
        if self.on_tool_calls is not None and not await self.on_tool_calls(pieces, time.time()):
            raise JobCancelled("the job was cancelled or taken over while streaming")

    async def whole_calls(self, calls: Sequence[ToolCall]) -> None:
        """Calls a vendor sent whole: one piece each, unless pieces were heard already."""
        if calls and not self.pieces_heard:
            await self.tool_calls(
                [
                    ToolCallDelta(index=i, id=c.id, name=c.name, arguments=c.arguments)
                    for i, c in enumerate(calls)
                ]
            )


async def _call(
    vendor: Vendor,
    request: Request,
    model: str,
    listeners: _Listeners,
    max_stream_s: float | None,
) -> VendorResponse:
    if not request.stream:
        return await vendor.complete(request, model)
    started = time.perf_counter()
    parts: list[str] = []
    final = None
    stream = vendor.stream(request, model)
    try:
        async for delta in stream:
            if max_stream_s is not None and time.perf_counter() - started > max_stream_s:
                raise VendorTimeout(
                    f"the stream ran past {max_stream_s:g} s (its longest, kept below the "
                    "visibility timeout)",
                    vendor=vendor.name,
                )
            parts.append(delta.text)
            await listeners.text(delta.text)
            if delta.tool_call_deltas:
                await listeners.tool_calls(delta.tool_call_deltas)
            if delta.finish_reason is not None:
                final = delta
    finally:
        # Closing a dropped stream closes its HTTP connection now, not at garbage collection.
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()
    if final is None:  # a vendor must end its stream with a final delta
        raise VendorUnavailable(f"{vendor.name} ended its stream without a final delta")
    await listeners.whole_calls(final.tool_calls)
    usage = final.usage or Usage()
    return VendorResponse(
        content="".join(parts),
        tool_calls=list(final.tool_calls),
        usage=usage,
        model=final.model or model,
        vendor=vendor.name,
        finish_reason=final.finish_reason or FinishReason.STOP,
        latency_ms=(time.perf_counter() - started) * 1000.0,
        cost_usd=vendor.cost_of(usage, model),
        vendor_finish_reason=final.vendor_finish_reason,
        # What the next turn hands back (thought signatures, thinking blocks), if any.
        vendor_state=final.vendor_state,
    )
