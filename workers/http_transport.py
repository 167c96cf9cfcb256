"""The worker's HTTP transport: httpx's API, aiohttp's connection pool, less work per call.

`httpx_aiohttp.AiohttpTransport` hands aiohttp the request's `httpx.Headers`;
aiohttp copies them through the mapping interface, and httpx decodes every
header again on each pass: measured at about an eighth of a batch worker's CPU
per call (bench/history/2026-12-01.md, batches). This transport passes them as the
(name, value) pairs they already are, and reuses one aiohttp timeout per
distinct setting. Everything else (pool, exceptions, the response stream) is
the library's own. `vendor_http_client` builds a worker's client for one vendor.
"""

from __future__ import annotations

from typing import Any

import httpx
from aiohttp import ClientTimeout
from httpx_aiohttp import HttpxAiohttpClient
from httpx_aiohttp.transport import AiohttpResponseStream, AiohttpTransport, map_aiohttp_exceptions

from dispatcher.config.schema import VendorConfig
from dispatcher.vendors.base import http_timeout

__all__ = ["HTTP_CONNECTIONS_PER_VENDOR", "PairsAiohttpTransport", "vendor_http_client"]

# Connections per vendor: enough for the calls one worker keeps in flight.
HTTP_CONNECTIONS_PER_VENDOR = 1_000


def vendor_http_client(config: VendorConfig) -> httpx.AsyncClient:
    """The vendor's pooled client: httpx's API, aiohttp's connection pool underneath.

    Measured (bench/history/2026-11.md, queue_io): with hundreds of connections open,
    httpx's own pool walks every connection on each request and release; it
    cost 32.7 ms of worker CPU per call at 600 in flight, against 4.1 ms
    through the httpx-aiohttp transport with the same limits and timeouts.
    """
    limits = httpx.Limits(
        max_connections=HTTP_CONNECTIONS_PER_VENDOR,
        max_keepalive_connections=HTTP_CONNECTIONS_PER_VENDOR,
    )
    transport = PairsAiohttpTransport(limits=limits)
    return HttpxAiohttpClient(timeout=http_timeout(config), limits=limits, transport=transport)


class PairsAiohttpTransport(AiohttpTransport):
    """`AiohttpTransport`, sending headers as decoded pairs (no proxy or Unix socket use)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._timeouts: dict[tuple[Any, Any, Any], ClientTimeout] = {}

    def _timeout(self, request: httpx.Request) -> ClientTimeout:
        given = request.extensions.get("timeout", {})
        key = (given.get("connect"), given.get("read"), given.get("pool"))
        found = self._timeouts.get(key)
        if found is None:
            found = self._timeouts[key] = ClientTimeout(
                sock_connect=key[0], sock_read=key[1], connect=key[2]
            )
        return found

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.proxy is not None or self.uds:
            return await super().handle_async_request(request)
        if self.client is None or callable(self.client):
            self.client = self.get_client()
        encoding = request.headers.encoding
        headers = [
            (name.decode(encoding), value.decode(encoding)) for name, value in request.headers.raw
        ]
        with map_aiohttp_exceptions():
            try:
                data: bytes | httpx.AsyncByteStream | None = request.content or None
            except httpx.RequestNotRead:
                data = request.stream  # type: ignore[assignment]
                headers = [pair for pair in headers if pair[0].lower() != "transfer-encoding"]
            response = await self.client.request(
                method=request.method,
                url=str(request.url),
                headers=headers,
                data=data,
                allow_redirects=False,
                auto_decompress=False,
                compress=False,
                timeout=self._timeout(request),
                server_hostname=request.extensions.get("sni_hostname"),
            ).__aenter__()
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=AiohttpResponseStream(response),
            request=request,
            extensions=extensions,
        )
