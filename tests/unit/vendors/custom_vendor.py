"""A custom vendor as a user would write one, loaded by `type: "module:Factory"`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from dispatcher import FinishReason, HealthStatus, Request, Response, VendorConfig
from dispatcher.vendors import Health, StreamDelta, Vendor


class ShoutingVendor(Vendor):
    """Answers with the last message in capitals."""

    async def complete(self, request: Request, model: str | None = None) -> Response:
        return Response(
            content=request.messages[-1].content.upper(),
            model=model or request.model,
            vendor=self.name,
        )

    async def stream(
        self, request: Request, model: str | None = None
    ) -> AsyncIterator[StreamDelta]:
        yield StreamDelta(text=request.messages[-1].content.upper())
        yield StreamDelta(finish_reason=FinishReason.STOP)

    async def health_check(self) -> Health:
        return Health(status=HealthStatus.HEALTHY, latency_ms=0.0)


def make_shouting_vendor(
    name: str, config: VendorConfig, client: httpx.AsyncClient | None = None
) -> Vendor:
    """The factory named in configuration."""
    return ShoutingVendor(name, config)


def not_a_vendor(name: str, config: VendorConfig, client: httpx.AsyncClient | None = None) -> str:
    """A broken factory, for the error test."""
    return "oops"
