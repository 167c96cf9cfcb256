"""The stand-in vendor's request handlers, and the state they share.

Every chat route goes through one handler that records the request (when asked
to), checks the key, finds the fault it asks for (or draws one from the
server-wide failure rate), then answers in the route's wire format. The test
controls live under `/__`:

- `GET /__requests` lists what was received (when recording); `POST /__reset`
  clears it, every `@N` count and every outage;
- `POST /__down/<seconds>[?x-vendor=<v>]` makes every call (to vendor `<v>`
  only, by its `x-vendor` header, when given) answer 503 for that long;
- `POST /__models_status/<code>[?x-vendor=<v>]` makes the model lists (what
  health checks call) answer with that status from then on.

Handlers start no threads or tasks of their own: one event loop serves every
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import random
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web

from producer.cli.tools.standin.faults import (
    FAULT_HEADER,
    NO_FAULT,
    TIMEOUT_FAULT_HANG_S,
    Fault,
    FaultCounts,
    fault_for_kind,
)
from producer.cli.tools.standin.openai import openai_error
from producer.cli.tools.standin.options import StandInOptions
from producer.cli.tools.standin.replies import (
    Call,
    Json,
    Refused,
    WireFormat,
    drop_connection,
    echoed_request,
    reply_to,
    send_stream,
    send_whole,
)

__all__ = ["StandInApi"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The headers and query parameter that carry a key, in any vendor's way.
_BEARER = "bearer "
_KEY_HEADERS = ("x-api-key", "api-key", "x-goog-api-key")


async def _pause(seconds: float) -> None:
    # Zero is the default: skip the sleep rather than yield to the loop on every request.
    if seconds > 0:
        await asyncio.sleep(seconds)


def _key_sent(request: web.Request) -> str | None:
    """The key a request carries, however its vendor sends it; None when it carries none."""
    authorization = request.headers.get("Authorization", "")
    if authorization[: len(_BEARER)].lower() == _BEARER:
        return authorization[len(_BEARER) :].strip()
    for name in _KEY_HEADERS:
        value = request.headers.get(name)
        if value:
            return value
    return request.query.get("key")


class StandInApi:
    """The handlers, and their state: options, failure dice, fault counts, outages, the log."""

    def __init__(self, options: StandInOptions) -> None:
        self.options = options
        behaviour = options.behaviour
        self._random = random.Random("mock-server" if behaviour.seed is None else behaviour.seed)
        self._ids = itertools.count(1)
        self._stopping = asyncio.Event()
        key = options.api_key
        self._key = key.get_secret_value().encode() if key is not None else None
        self.requests: list[Json] = []
        self.faults = FaultCounts()
        # Until when calls answer 503: per `x-vendor` header value ("" for every call).
        self.down_until: dict[str, float] = {}
        # What the model lists (the vendors' health-check endpoints) answer, and to whom.
        self.models_status = HTTPStatus.OK
        self.models_status_for: str | None = None

    async def on_shutdown(self, app: web.Application) -> None:
        """Release requests hung by a timeout fault, so stopping is quick."""
        self._stopping.set()

    # --- the vendors ------------------------------------------------------------------

    def chat(self, wire: WireFormat) -> Handler:
        """The handler of one wire format's chat route."""

        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._chat(request, wire)

        return handle

    async def _chat(self, request: web.Request, wire: WireFormat) -> web.StreamResponse:
        request_id = f"req_standin_{next(self._ids)}"
        headers = {wire.request_id_header: request_id}
        retry_after_s = self.options.behaviour.retry_after_s
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        try:
            fault, named = self.faults.fault_of(
                request.headers.get(FAULT_HEADER, ""),
                raw,
                down=bool(self.down_until) and self._is_down(request.headers.get("x-vendor", "")),
            )
        except ValueError as exc:
            fault, named, problem = None, [], str(exc)
        else:
            problem = ""
        if self.options.record_requests:
            self._record(request, wire, body, named)
        denied = self._check_key(request, wire)
        if denied is not None:
            return denied
        if problem or not isinstance(body, dict):
            why = problem or "We could not parse the JSON body of your request. Send valid JSON."
            response = wire.error(400, why, retry_after_s=retry_after_s)
            response.headers.update(headers)
            return response
        try:
            call = wire.parse(request, body)
        except Refused as refused:
            return refused.response
        if fault is None:
            kind = self.options.behaviour.draw_failure(self._random)
            fault = fault_for_kind(kind) if kind is not None else NO_FAULT
        await _pause(fault.slow_s)
        if fault.refuses:
            response = self._refusal(request, wire, fault, retry_after_s)
            response.headers.update(headers)
            return response
        if fault.hang:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), TIMEOUT_FAULT_HANG_S)
            drop_connection(request)
            return web.Response()
        return await self._reply(
            request, wire, call, fault=fault, request_id=request_id, headers=headers
        )

    async def _reply(
        self,
        request: web.Request,
        wire: WireFormat,
        call: Call,
        *,
        fault: Fault,
        request_id: str,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        behaviour = self.options.behaviour
        reply = reply_to(call, behaviour.chunk_count)
        delay_s = fault.stall_s if fault.stall_s is not None else behaviour.chunk_delay_s
        await _pause(behaviour.time_to_first_token_s)
        if call.stream:
            stream = wire.stream(call, reply, request_id)
            return await send_stream(request, stream, fault=fault, delay_s=delay_s, headers=headers)
        # A whole reply takes as long as streaming it would.
        await _pause(delay_s * max(0, len(reply.chunks) - 1))
        body = wire.whole(call, reply, request_id)
        return await send_whole(request, body, fault=fault, headers=headers)

    @staticmethod
    def _refusal(
        request: web.Request, wire: WireFormat, fault: Fault, retry_after_s: float
    ) -> web.Response:
        """The error a refusing fault asks for, its wait as the fault says."""
        if fault.retry_after_s is not None:
            retry_after_s = fault.retry_after_s
        if fault.echo:
            status = fault.status or HTTPStatus.BAD_REQUEST
            return wire.error(status, echoed_request(request), retry_after_s=retry_after_s)
        return wire.injected(fault, retry_after_s)

    def _record(
        self, request: web.Request, wire: WireFormat, body: Json | None, named: list[str]
    ) -> None:
        self.requests.append(
            {
                "at": time.time(),
                "vendor": wire.vendor,
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": body if body is not None else {},
                "fault": named,
            }
        )

    def _check_key(self, request: web.Request, wire: WireFormat) -> web.Response | None:
        """None when the caller may proceed, else the 401 the vendor would send."""
        if self._key is None:
            return None
        sent = _key_sent(request)
        if sent is None:
            message = (
                "You didn't provide an API key. Send the key the stand-in was started with, "
                "the way this vendor takes it (for OpenAI: Authorization: Bearer YOUR_KEY)."
            )
        elif not hmac.compare_digest(sent.encode(), self._key):
            message = "Incorrect API key provided. Check the key the stand-in was started with."
        else:
            return None
        return wire.error(401, message, retry_after_s=0)

    def _is_down(self, vendor: str) -> bool:
        now = time.time()
        return any(
            until > now and target in ("", vendor) for target, until in self.down_until.items()
        )

    # --- model lists and health --------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        """Always 200, key or not: for start-up probes."""
        return web.json_response({"status": "ok"})

    async def list_models(self, request: web.Request) -> web.Response:
        """The served models, in the OpenAI (`data`) and Gemini/Ollama (`models`) shapes."""
        refused = self._models_refusal(request)
        if refused is not None:
            return refused
        created = int(time.time())
        models = self.options.models
        data = [
            {"id": model, "object": "model", "created": created, "owned_by": "llmdispatch"}
            for model in models
        ]
        return web.json_response(
            {"object": "list", "data": data, "models": [{"name": model} for model in models]}
        )

    async def foundation_models(self, request: web.Request) -> web.Response:
        """The served models as Bedrock's ListFoundationModels lists them."""
        refused = self._models_refusal(request)
        if refused is not None:
            return refused
        summaries = [
            {
                "modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{model}",
                "modelId": model,
                "providerName": model.partition(".")[0] or "standin",
                "inputModalities": ["TEXT"],
                "outputModalities": ["TEXT"],
                "responseStreamingSupported": True,
                "inferenceTypesSupported": ["ON_DEMAND"],
                "modelLifecycle": {"status": "ACTIVE"},
            }
            for model in self.options.models
        ]
        return web.json_response({"modelSummaries": summaries})

    def _models_refusal(self, request: web.Request) -> web.Response | None:
        """The error a model list answers with (a test's status, or a bad key); None: list."""
        targeted = self.models_status_for in (None, request.headers.get("x-vendor"))
        if self.models_status != HTTPStatus.OK and targeted:
            problem = {"error": {"message": "down for the test", "type": "server_error"}}
            return web.json_response(problem, status=self.models_status)
        if self._key is not None:
            sent = _key_sent(request)
            if sent is None or not hmac.compare_digest(sent.encode(), self._key):
                return openai_error(401, "Incorrect API key provided.")
        return None

    # --- test controls --------------------------------------------------------------------

    async def dump_requests(self, request: web.Request) -> web.Response:
        """What was received, oldest first."""
        return web.json_response(self.requests)

    async def reset(self, request: web.Request) -> web.Response:
        """Forget what was received, every `@N` count and every outage."""
        self.requests.clear()
        self.faults.clear()
        self.down_until.clear()
        return web.json_response({"ok": True})

    async def set_down(self, request: web.Request) -> web.Response:
        """Every call (to one vendor, by `x-vendor`) answers 503 for the seconds given."""
        seconds = float(request.match_info["seconds"])
        self.down_until[request.query.get("x-vendor", "")] = time.time() + seconds
        return web.json_response({"ok": True})

    async def set_models_status(self, request: web.Request) -> web.Response:
        """The model lists answer with this status from now on (to one vendor, by `x-vendor`)."""
        self.models_status = HTTPStatus(int(request.match_info["status"]))
        self.models_status_for = request.query.get("x-vendor")
        return web.json_response({"ok": True})
