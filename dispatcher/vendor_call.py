"""One vendor call as the runner makes it: `complete`, or a stream collected into a reply."""

from __future__ import annotations

import time

from dispatcher.errors import JobCancelled, VendorUnavailable
from dispatcher.models import FinishReason, Request, Usage
from dispatcher.models import Response as VendorResponse
from dispatcher.runner_types import OnText
from dispatcher.vendors.base import Vendor

__all__ = ["call_vendor"]


async def call_vendor(
    vendor: Vendor, request: Request, model: str, on_text: OnText | None = None
) -> VendorResponse:
    """The vendor's reply: `complete`, or for a streamed request the collected stream.

    `on_text` is awaited with every delta as it arrives; when it answers False
    (the job was cancelled, or a newer attempt owns it) the stream is dropped.
    """
    if not request.stream:
        return await vendor.complete(request, model)
    started = time.perf_counter()
    parts: list[str] = []
    final = None
    stream = vendor.stream(request, model)
    try:
        async for delta in stream:
            parts.append(delta.text)
            if delta.text and on_text is not None and not await on_text(delta.text, time.time()):
                raise JobCancelled("the job was cancelled or taken over while streaming")
            if delta.finish_reason is not None:
                final = delta
    finally:
        # Closing a dropped stream closes its HTTP connection now, not at garbage collection.
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()
    if final is None:  # a vendor must end its stream with a final delta
        raise VendorUnavailable(f"{vendor.name} ended its stream without a final delta")
    usage = final.usage or Usage()
    return VendorResponse(
        content="".join(parts),
        usage=usage,
        model=final.model or model,
        vendor=vendor.name,
        finish_reason=final.finish_reason or FinishReason.STOP,
        latency_ms=(time.perf_counter() - started) * 1000.0,
        cost_usd=vendor.cost_of(usage, model),
        vendor_finish_reason=final.vendor_finish_reason,
    )
