"""The one interface every vendor offers, and the HTTP machinery the wire formats share.

A wire-format module (`openai.py`, `anthropic.py`, ...) supplies pure pieces:
`build_request` (our `Request` -> `httpx.Request`), `parse_response` (a JSON
body -> `Completion`), a `StreamParser` (vendor events or lines -> deltas) and
`classify_error` (status, headers, body -> one of our errors). What a next turn
must hand back (thinking blocks, thought signatures, a tool plan) is the
`vendor_state` of the `Completion` or of the stream's final delta. `HttpVendor`
sends, times, reads the stream framing (SSE via httpx-sse, or NDJSON), turns
transport failures into typed errors, and never reports a stream that broke
off as a finished answer.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError
from pydantic import ConfigDict, Field

from dispatcher.config.schema import VendorConfig
from dispatcher.errors import (
    ConfigError,
    DispatcherError,
    StreamBroken,
    VendorTimeout,
    VendorUnavailable,
)
from dispatcher.models import (
    FinishReason,
    HealthStatus,
    Message,
    Request,
    Response,
    Role,
    StrictModel,
    ToolCall,
    ToolCallDelta,
    Usage,
    utc_now,
)
from dispatcher.redaction import register_secret
from dispatcher.routing.pricing import (
    cost_usd,
    estimate_completion_tokens,
    estimate_prompt_tokens,
    price_for,
)
from dispatcher.vendors.tool_calls import ToolCallAssembler

__all__ = [
    "Completion",
    "Health",
    "HttpVendor",
    "StreamDelta",
    "StreamParser",
    "Vendor",
    "http_timeout",
    "path_segment",
]

# A health probe slower than this is reported as degraded rather than healthy.
DEGRADED_LATENCY_MS = 2_000.0
# A model-list probe answered so has found no list there, not a sick vendor.
NO_MODEL_LIST_STATUSES = frozenset({404, 405})


class Health(StrictModel):
    """A vendor's state at its last probe, and why, in words an operator can act on."""

    model_config = ConfigDict(frozen=True)

    status: HealthStatus
    latency_ms: float | None = Field(default=None, ge=0.0)
    detail: str = ""
    problem: str = Field(
        default="",
        description="What failed, when something did: an error kind ('auth', 'timeout', ...), "
        "'no_model_list' (the probe found no model list: health unknown) or 'off'.",
    )
    status_code: int | None = Field(default=None, description="The probe's HTTP status.")
    checked_at: datetime = Field(default_factory=utc_now)


@dataclass(frozen=True)
class StreamDelta:
    """A piece of a streamed reply. The last one has `finish_reason` and, when known, usage,
    the tool calls the stream assembled from its fragments, and the vendor state."""

    text: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    vendor_finish_reason: str | None = None
    model: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    # Pieces of tool calls as they arrive, for the job's stream events.
    tool_call_deltas: tuple[ToolCallDelta, ...] = ()
    # On the final delta: what the next turn's assistant message must carry back
    # (thinking blocks, thought signatures, a tool plan); None when the vendor keeps none.
    vendor_state: dict[str, Any] | None = None


@dataclass(frozen=True)
class Completion:
    """A whole reply as a wire format parsed it, before timing and cost are added."""

    text: str
    finish_reason: FinishReason
    usage: Usage = field(default_factory=Usage)
    model: str | None = None
    vendor_finish_reason: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    # What the next turn's assistant message must carry back (thinking blocks, thought
    # signatures, a tool plan); None when the vendor keeps none.
    vendor_state: dict[str, Any] | None = None


class StreamParser(ABC):
    """Turns a vendor's stream, one event (or line) at a time, into deltas.

    `feed` returns the deltas an item produced; `finish` is called at the end of
    the body and returns the final delta, or raises `StreamBroken` if the
    vendor's end marker never came.
    """

    def __init__(self, vendor: str) -> None:
        self.vendor = vendor
        self.text_seen = False

    @abstractmethod
    def feed(self, item: Any) -> list[StreamDelta]:
        """Deltas produced by one `ServerSentEvent` (SSE formats) or one line (NDJSON)."""

    @abstractmethod
    def finish(self) -> StreamDelta:
        """The final delta with finish reason and usage; raise if the stream broke off."""

    def broken(self, what: str) -> StreamBroken:
        """The error for a stream that ended without its terminator."""
        return StreamBroken(
            f"stream ended before {what}; the reply is incomplete",
            partial=self.text_seen,
            vendor=self.vendor,
        )

    def tool_call_pieces(self) -> tuple[ToolCallDelta, ...]:
        """Tool-call fragments the last `feed` added to the parser's `tool_calls`
        assembler, if it keeps one (`dispatcher.vendors.tool_calls`)."""
        assembler = getattr(self, "tool_calls", None)
        return assembler.take_pieces() if isinstance(assembler, ToolCallAssembler) else ()

    def text(self, text: str) -> list[StreamDelta]:
        """A text delta, or nothing for empty text."""
        if not text:
            return []
        self.text_seen = True
        return [StreamDelta(text=text)]


class Vendor(ABC):
    """The interface the worker uses, whatever the vendor."""

    def __init__(self, name: str, config: VendorConfig) -> None:
        self.name = name
        self.config = config
        # A vendor may be built without Settings.load(); its secrets must be masked all the same.
        for secret in config.secret_values():
            register_secret(secret)

    @abstractmethod
    async def complete(self, request: Request, model: str | None = None) -> Response:
        """Run `request` (as `model`, default the request's) and return the whole reply."""

    @abstractmethod
    def stream(self, request: Request, model: str | None = None) -> AsyncIterator[StreamDelta]:
        """Run `request` streaming: text deltas, then one delta with finish reason and usage."""

    @abstractmethod
    async def health_check(self) -> Health:
        """Probe the vendor cheaply and say how it is."""

    def estimate_cost(self, request: Request, model: str | None = None) -> float | None:
        """The most `request` may cost in USD, or None when the model has no price."""
        price = price_for(self.config, model or request.model)
        if price is None:
            return None
        estimate = Usage(
            prompt_tokens=estimate_prompt_tokens(request),
            completion_tokens=estimate_completion_tokens(request),
        )
        return cost_usd(estimate, price)

    def cost_of(self, usage: Usage, model: str) -> float:
        """What `usage` of `model` cost, by its configured or built-in price (0 when unpriced)."""
        price = price_for(self.config, model)
        return cost_usd(usage, price) if price is not None else 0.0

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections; vendors without any need not override it."""


# Distinct URLs a vendor keeps parsed (a few per vendor in practice: chat, models, health).
MAX_CACHED_URLS = 256


def path_segment(value: str) -> str:
    """`value` (a model or deployment name) as one URL path segment, whatever it holds.

    Every reserved character is percent-encoded (`/`, `?`, `#`, `%`, ...), so a name can
    never add a path segment, a query or a fragment; a name of only dots (`.`, `..`)
    is encoded too, so no client or server resolves it as a relative step.
    """
    encoded = quote(value, safe="")
    return encoded.replace(".", "%2E") if set(encoded) <= {"."} else encoded


def http_timeout(config: VendorConfig) -> httpx.Timeout:
    """The request timeout from configuration; between stream chunks it bounds a stall."""
    return httpx.Timeout(config.timeout, connect=config.connect_timeout)


class HttpVendor(Vendor):
    """A vendor reached over HTTP; subclasses bind one wire format's functions."""

    #: How the stream body is framed: Server-Sent Events or one JSON object per line.
    stream_framing: ClassVar[Literal["sse", "ndjson"]] = "sse"
    #: The response header holding the vendor's request id, for logs and support.
    request_id_header: ClassVar[str] = "x-request-id"
    #: What a base URL looks like for this vendor, for the error when none is configured.
    base_url_hint: ClassVar[str] = ""

    def __init__(
        self, name: str, config: VendorConfig, client: httpx.AsyncClient | None = None
    ) -> None:
        if not config.endpoint:
            hint = f" ({self.base_url_hint})" if self.base_url_hint else ""
            raise ConfigError(
                [f"vendors.{name}.base_url: is required for type {config.type!r}{hint}"]
            )
        super().__init__(name, config)
        self._owns_client = client is None
        self.client = client or httpx.AsyncClient(timeout=http_timeout(config))
        self._urls: dict[tuple[str, tuple[tuple[str, str], ...]], httpx.URL] = {}
        self._timeout = self.client.timeout.as_dict()

    def parsed_url(self, url: str, params: Mapping[str, str] | None = None) -> httpx.URL:
        """`url` with `params` merged into its query, parsed once and then reused.

        A vendor posts to the same few URLs every call; parsing one costs more than
        the rest of building the request (measured: 11 % of a batch worker's CPU).
        """
        key = (url, tuple(sorted(params.items())) if params else ())
        found = self._urls.get(key)
        if found is None:
            found = httpx.URL(url)
            if params:
                found = found.copy_merge_params(dict(params))
            if len(self._urls) < MAX_CACHED_URLS:
                self._urls[key] = found
        return found

    # --- the wire format's pieces ---------------------------------------------------

    @abstractmethod
    def build_request(self, request: Request, model: str, *, stream: bool) -> httpx.Request:
        """The exact HTTP request the vendor expects."""

    @abstractmethod
    def parse_response(self, body: Any) -> Completion:
        """A non-streamed JSON body as a `Completion`."""

    @abstractmethod
    def stream_parser(self) -> StreamParser:
        """A fresh parser for one streamed reply."""

    @abstractmethod
    def classify_error(self, status: int, headers: httpx.Headers, body: str) -> DispatcherError:
        """The typed error for a failed response."""

    @abstractmethod
    def health_request(self) -> httpx.Request:
        """A cheap authenticated request whose success means the vendor is reachable."""

    # --- the shared machinery -----------------------------------------------------------

    async def complete(self, request: Request, model: str | None = None) -> Response:
        """The whole call (connect, headers and body) within `timeout_s`, a byte at a time
        included: the transport's own timeouts bound each read, this bounds their sum."""
        try:
            async with asyncio.timeout(self.config.timeout):
                return await self._complete(request, model or request.model)
        except TimeoutError:
            raise VendorTimeout(
                f"no whole answer within {self.config.timeout:g} s (timeout_s)", vendor=self.name
            ) from None

    async def _complete(self, request: Request, model: str) -> Response:
        started = time.perf_counter()
        response = await self._send(self.build_request(request, model, stream=False))
        try:
            if response.status_code >= 400:
                raise self.classify_error(response.status_code, response.headers, response.text)
            try:
                body = response.json()
            except ValueError:
                raise VendorUnavailable(
                    "the vendor answered with a body that is not JSON",
                    vendor=self.name,
                    status_code=response.status_code,
                ) from None
            completion = self.parse_response(body)
        finally:
            await response.aclose()
        usage = completion.usage
        return Response(
            content=completion.text,
            tool_calls=list(completion.tool_calls),
            usage=usage,
            model=completion.model or model,
            vendor=self.name,
            finish_reason=completion.finish_reason,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            cost_usd=self.cost_of(usage, model),
            vendor_finish_reason=completion.vendor_finish_reason,
            vendor_request_id=response.headers.get(self.request_id_header),
            vendor_state=completion.vendor_state,
        )

    async def stream(
        self, request: Request, model: str | None = None
    ) -> AsyncIterator[StreamDelta]:
        model = model or request.model
        parser = self.stream_parser()
        http_request = self.build_request(request, model, stream=True)
        # Between chunks, the read timeout is the stall timeout: a hung stream ends as a
        # retryable StreamBroken instead of holding the call until the overall timeout.
        stall_s = self.config.stall_timeout_s or self.config.timeout
        http_request.extensions["timeout"] = httpx.Timeout(
            self.config.timeout, connect=self.config.connect_timeout, read=stall_s
        ).as_dict()
        response = await self._send(http_request, stream=True)
        try:
            if response.status_code >= 400:
                body = (await response.aread()).decode("utf-8", errors="replace")
                raise self.classify_error(response.status_code, response.headers, body)
            async for item in self._items(response):
                try:
                    deltas = parser.feed(item)
                except VendorUnavailable as exc:
                    raise _as_broken(exc, parser) from exc
                for delta in deltas:
                    yield delta
                pieces = parser.tool_call_pieces()
                if pieces:
                    yield StreamDelta(tool_call_deltas=pieces)
            yield parser.finish()
        except httpx.TimeoutException as exc:
            raise StreamBroken(
                f"the stream stalled: no data for "
                f"{self.config.stall_timeout_s or self.config.timeout:g} s",
                partial=parser.text_seen,
                vendor=self.name,
            ) from exc
        except (httpx.TransportError, SSEError) as exc:
            raise StreamBroken(
                f"the stream broke off: {type(exc).__name__}",
                partial=parser.text_seen,
                vendor=self.name,
            ) from exc
        finally:
            await response.aclose()

    async def health_check(self) -> Health:
        """Probe as `health_check` says: the model list, a one-token call, or not at all."""
        probe = self.config.health_check
        if probe == "off":
            return Health(status=HealthStatus.UNKNOWN, problem="off", detail="health check off")
        request = self.health_request() if probe == "models" else self.probe_call_request()
        started = time.perf_counter()
        try:
            response = await self._send(request)
            await response.aclose()
        except DispatcherError as exc:
            return Health(status=HealthStatus.UNHEALTHY, problem=exc.kind, detail=exc.message)
        latency_ms = (time.perf_counter() - started) * 1000.0
        code = response.status_code
        if probe == "models" and code in NO_MODEL_LIST_STATUSES:
            # Many OpenAI-compatible servers have no model list: that says nothing of health.
            return Health(
                status=HealthStatus.UNKNOWN,
                latency_ms=latency_ms,
                problem="no_model_list",
                status_code=code,
                detail=f"no model list at {request.method} {request.url.path} (HTTP {code}); "
                "set health_check: call (or off) to probe it another way",
            )
        if code >= 400:
            error = self.classify_error(code, response.headers, response.text)
            return Health(
                status=HealthStatus.DEGRADED if error.retryable else HealthStatus.UNHEALTHY,
                latency_ms=latency_ms,
                problem=error.kind,
                status_code=code,
                detail=error.message,
            )
        if latency_ms > DEGRADED_LATENCY_MS:
            return Health(
                status=HealthStatus.DEGRADED,
                latency_ms=latency_ms,
                detail=f"slow: {latency_ms:.0f} ms",
            )
        return Health(status=HealthStatus.HEALTHY, latency_ms=latency_ms)

    def probe_call_request(self) -> httpx.Request:
        """The one-token completion `health_check: call` sends to `probe_model`."""
        model = self.config.probe_model or ""
        probe = Request(
            model=model, messages=[Message(role=Role.USER, content="ping")], max_tokens=1
        )
        return self.build_request(probe, model, stream=False)

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()

    async def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        """Send, turning transport failures into our retryable errors.

        Straight to the client's transport for the request's URL: a vendor call needs
        none of `AsyncClient.send`'s layers (no auth flow: credentials are in the
        request; no redirects, which httpx does not follow by default either; no
        cookie jar, which would carry one call's cookies into the next), and they
        cost about a quarter of the call's CPU (bench/history/2026-12-01.md, batches).
        """
        request.extensions.setdefault("timeout", self._timeout)
        try:
            transport = self.client._transport_for_url(request.url)
            response = await transport.handle_async_request(request)
            response.request = request
            if not stream:
                try:
                    await response.aread()
                except BaseException:
                    await response.aclose()
                    raise
            return response
        except httpx.ConnectTimeout as exc:
            # (httpx-aiohttp reports a refused connection this way too: say both.)
            raise VendorUnavailable(
                f"could not connect within {self.config.connect_timeout:g} s "
                f"(connect_timeout_s), or the connection was refused: {str(exc)[:200]}",
                vendor=self.name,
            ) from exc
        except httpx.TimeoutException as exc:
            raise VendorTimeout(
                f"no answer within {self.config.timeout:g} s ({type(exc).__name__})",
                vendor=self.name,
            ) from exc
        except httpx.TransportError as exc:
            raise VendorUnavailable(
                f"could not reach the vendor: {type(exc).__name__}", vendor=self.name
            ) from exc

    async def _items(self, response: httpx.Response) -> AsyncIterator[ServerSentEvent | str]:
        if self.stream_framing == "sse":
            async for event in EventSource(response).aiter_sse():
                yield event
        else:
            async for line in response.aiter_lines():
                if line.strip():
                    yield line


def _as_broken(error: VendorUnavailable, parser: StreamParser) -> StreamBroken:
    """A vendor failure reported inside a stream, typed as the broken stream it is."""
    if isinstance(error, StreamBroken):
        return error
    return StreamBroken(
        error.message,
        partial=parser.text_seen,
        vendor=error.vendor,
        status_code=error.status_code,
    )


def feed_all(parser: StreamParser, items: Iterable[Any]) -> list[StreamDelta]:
    """Run a parser over a whole list of items, as tests and replays do."""
    deltas = [delta for item in items for delta in parser.feed(item)]
    return [*deltas, parser.finish()]
