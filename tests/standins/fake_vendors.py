"""One HTTP server that stands in for every vendor, in each vendor's own wire format.

Written from the wire-format notes (shared/docs/vendor-wire-formats.md, §10),
not from our clients, so a client test against it checks the real shapes.

Deterministic, so tests can assert exact values:
- the reply is "echo: " + the text of the last user message; streams send one
  word per content event, leading whitespace included;
- prompt tokens are the whitespace-separated words of all input text,
  completion tokens the words of the reply actually returned;
- the vendor's max-token field truncates the reply to that many words (the
  vendor's "length" reason); a stop sequence cuts the reply just before it.

Request header `x-fake-fault` (comma-separated) injects faults: `429`, `500`,
`503`, `529`, `401`, `retry-after:<s>` (the wait a 429 asks for; default 1),
`slow:<ms>`, `stall:<ms>` (between stream events),
`midstream-drop` (close the connection halfway, no terminator),
`midstream-error` (half the events, then the vendor's in-stream error) and
`echo-headers` (the vendor's error, in its own error shape, whose message
echoes the request back verbatim, as some servers and proxies do: first the
credentials it carried (`Authorization`, `x-api-key`, `api-key`,
`x-goog-api-key`, any header whose name mentions a key, token or auth, and a
`key=` query parameter), then the request line and every header as JSON; the
status is another fault's in the same list, `[fault:401,echo-headers k1]` is
a 401, else 400). A trailing `@N` (`429@1`) applies the fault to the first N
requests carrying that exact header value. The same faults can ride in a
prompt, as a marker `[fault:<faults> <tag>]` anywhere in the request body
(`[fault:500@1 item-7]`):
`@N` then counts the requests carrying that exact marker, so one item of a
batch can fail once and succeed on its retry. `POST /__down/<seconds>[?x-vendor=<v>]`
makes every call (to vendor `<v>` only, by its `x-vendor` header, when given)
answer 503 for that long. `GET /__requests` lists what was received;
`POST /__reset` clears it. `POST /__models_status/<code>[?x-vendor=<v>]` makes
the model lists (what health checks call) answer with that status from then on
(only to requests whose `x-vendor` header is `<v>`, when given).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import web

__all__ = ["FakeVendors"]

Json = dict[str, Any]
# A fault carried by a prompt: "[fault:500@1 item-7]" (faults, then a tag that makes it unique).
_FAULT_MARKER = re.compile(r"\[fault:([^\]]+)\]")
# The statuses a fault can ask for, in the order `_pre_faults` looks for them.
_FAULT_STATUSES = (401, 429, 500, 503, 529)
# Header names an echoing server repeats first, as the credentials it was given.
_CREDENTIAL_HEADER = re.compile(r"(?i)authorization|api-?key|token|auth")


@dataclass
class Call:
    """What the stand-in must answer: the vendor, the prompt and the limits asked for."""

    vendor: str
    messages: list[tuple[str, str]]  # (role, text), system included
    stream: bool
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    model: str = "model"

    def reply(self) -> tuple[list[str], bool, bool]:
        """The reply's words (with leading spaces), cut by max tokens? cut by stop?"""
        last_user = next((text for role, text in reversed(self.messages) if role == "user"), "")
        text = "echo: " + last_user
        stopped = False
        for stop in self.stop:
            index = text.find(stop)
            if stop and index >= 0:
                text, stopped = text[:index], True
        words = re.findall(r"\s*\S+", text)
        truncated = self.max_tokens is not None and len(words) > self.max_tokens
        if truncated:
            words = words[: self.max_tokens]
        return words, truncated, stopped and not truncated

    @property
    def prompt_tokens(self) -> int:
        return sum(len(text.split()) for _, text in self.messages)


class FakeVendors:
    """The aiohttp application, its request log and its fault counters."""

    def __init__(self) -> None:
        self.requests: list[Json] = []
        self._fault_uses: Counter[str] = Counter()
        # What the model lists (the vendors' health-check endpoints) answer, and how often.
        self.models_status = HTTPStatus.OK
        self.models_status_for: str | None = None
        self.models_calls = 0
        # Until when calls answer 503: per `x-vendor` header value ("" for every call).
        self.down_until: dict[str, float] = {}
        self.app = web.Application()
        routes = [
            web.post("/v1/chat/completions", self.openai),
            web.post("/openai/deployments/{deployment}/chat/completions", self.azure),
            web.post("/openai/v1/chat/completions", self.azure),
            web.post("/v1/messages", self.anthropic),
            web.post("/v1beta/models/{target}", self.gemini),
            web.post("/api/chat", self.ollama),
            web.post("/v2/chat", self.cohere),
            web.get("/v1/models", self.list_models),
            web.get("/openai/models", self.list_models),
            web.get("/openai/v1/models", self.list_models),
            web.get("/v1beta/models", self.list_models),
            web.get("/api/tags", self.list_models),
            web.get("/__requests", self.dump_requests),
            web.post("/__reset", self.reset),
            web.post("/__models_status/{status}", self.set_models_status),
            web.post("/__down/{seconds}", self.set_down),
        ]
        self.app.add_routes(routes)

    # --- introspection -------------------------------------------------------------

    async def dump_requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.requests)

    async def reset(self, request: web.Request) -> web.Response:
        self.requests.clear()
        self._fault_uses.clear()
        self.down_until.clear()
        return web.json_response({"ok": True})

    async def _record(self, request: web.Request, vendor: str) -> tuple[Json, list[str]]:
        raw = await request.read()
        body = json.loads(raw) if raw else {}
        faults = self._faults(request.headers.get("x-fake-fault", ""))
        for marker in _FAULT_MARKER.findall(raw.decode(errors="replace")):
            faults += self._faults(marker.split()[0], counted_as=marker)
        if self._is_down(request.headers.get("x-vendor", "")):
            faults.append("503")
        self.requests.append(
            {
                "at": time.time(),
                "vendor": vendor,
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": body,
                "fault": faults,
            }
        )
        return body, faults

    def _faults(self, header: str, counted_as: str | None = None) -> list[str]:
        if not header:
            return []
        key = counted_as or header
        self._fault_uses[key] += 1
        active = []
        for part in (p.strip() for p in header.split(",")):
            name, _, limit = part.partition("@")
            if not limit or self._fault_uses[key] <= int(limit):
                active.append(name)
        return active

    def _is_down(self, vendor: str) -> bool:
        now = time.time()
        return any(
            until > now and target in ("", vendor) for target, until in self.down_until.items()
        )

    async def set_down(self, request: web.Request) -> web.Response:
        seconds = float(request.match_info["seconds"])
        self.down_until[request.query.get("x-vendor", "")] = time.time() + seconds
        return web.json_response({"ok": True})

    async def set_models_status(self, request: web.Request) -> web.Response:
        self.models_status = int(request.match_info["status"])
        self.models_status_for = request.query.get("x-vendor")
        return web.json_response({"ok": True})

    async def list_models(self, request: web.Request) -> web.Response:
        self.models_calls += 1
        targeted = self.models_status_for in (None, request.headers.get("x-vendor"))
        if self.models_status != HTTPStatus.OK and targeted:
            problem = {"error": {"message": "down for the test", "type": "server_error"}}
            return web.json_response(problem, status=self.models_status)
        return web.json_response({"data": [], "models": []})

    # --- shared behaviour --------------------------------------------------------------

    async def _pre_faults(
        self,
        request: web.Request,
        faults: list[str],
        errors: dict[int, web.Response],
        echo: Callable[[int, str], web.Response],
    ) -> web.Response | None:
        """The error the faults ask for; `echo(status, message)` builds an `echo-headers` one."""
        for fault in faults:
            if fault.startswith("slow:"):
                await asyncio.sleep(int(fault[5:]) / 1000)
        asked = [code for code in _FAULT_STATUSES if str(code) in faults]
        response: web.Response | None = None
        if "echo-headers" in faults:
            status = asked[0] if asked else HTTPStatus.BAD_REQUEST
            response = echo(status, _echoed_request(request))
        elif asked:
            response = errors.get(asked[0]) or errors[500]
        if response is None:
            return None
        wait = next((f[12:] for f in faults if f.startswith("retry-after:")), None)
        if response.status == 429 and wait is not None and "retry-after" in response.headers:
            response.headers["retry-after"] = wait
            response.headers.pop("retry-after-ms", None)
        return response

    async def _stream(
        self,
        request: web.Request,
        events: list[bytes],
        faults: list[str],
        content_type: str,
        error_event: bytes,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        stall = next((int(f[6:]) / 1000 for f in faults if f.startswith("stall:")), 0.0)
        half = max(1, len(events) // 2)
        for index, event in enumerate(events):
            if index == half and "midstream-drop" in faults:
                assert request.transport is not None
                request.transport.close()  # no terminator, no final chunk
                return response
            if index == half and "midstream-error" in faults:
                await response.write(error_event)
                await response.write_eof()
                return response
            await response.write(event)
            if stall:
                await asyncio.sleep(stall)
        await response.write_eof()
        return response

    # --- OpenAI and Azure ------------------------------------------------------------------

    @staticmethod
    def _openai_error(
        status: int, message: str, kind: str, code: str | None, *, with_retry_ms: bool = False
    ) -> web.Response:
        headers = {"retry-after": "1"} if status == 429 else {}
        if with_retry_ms and status == 429:
            headers["retry-after-ms"] = "1000"
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return web.json_response(body, status=status, headers=headers)

    def _openai_echo(self, status: int, message: str) -> web.Response:
        kind, code = {
            401: ("invalid_request_error", "invalid_api_key"),
            429: ("requests", "rate_limit_exceeded"),
        }.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
        return self._openai_error(status, message, kind, code)

    def _openai_errors(self, with_retry_ms: bool = False) -> dict[int, web.Response]:
        def error(status: int, message: str, kind: str, code: str | None) -> web.Response:
            return self._openai_error(status, message, kind, code, with_retry_ms=with_retry_ms)

        return {
            401: error(
                401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            ),
            429: error(429, "Rate limit reached for requests", "requests", "rate_limit_exceeded"),
            500: error(500, "The server had an error", "server_error", None),
            503: error(503, "The engine is currently overloaded", "server_error", None),
        }

    async def openai(self, request: web.Request) -> web.StreamResponse:
        body, faults = await self._record(request, "openai")
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return self._openai_errors()[401]
        return await self._chat_completions(request, body, faults, "openai")

    async def azure(self, request: web.Request) -> web.StreamResponse:
        body, faults = await self._record(request, "azure")
        classic = "deployment" in request.match_info
        if classic and "api-version" not in request.query:
            return web.json_response(
                {"error": {"code": "404", "message": "Resource not found"}}, status=404
            )
        if not (request.headers.get("api-key") or request.headers.get("Authorization")):
            return web.json_response(
                {
                    "error": {
                        "code": "401",
                        "message": "Access denied due to invalid subscription key",
                    }
                },
                status=401,
            )
        return await self._chat_completions(request, body, faults, "azure")

    async def _chat_completions(
        self, request: web.Request, body: Json, faults: list[str], vendor: str
    ) -> web.StreamResponse:
        failure = await self._pre_faults(
            request, faults, self._openai_errors(vendor == "azure"), self._openai_echo
        )
        if failure is not None:
            return failure
        stream = bool(body.get("stream"))
        if "stream_options" in body and not stream:
            return web.json_response(
                {
                    "error": {
                        "message": "stream_options requires stream",
                        "type": "invalid_request_error",
                    }
                },
                status=400,
            )
        call = Call(
            vendor=vendor,
            messages=[(m["role"], m["content"]) for m in body.get("messages", [])],
            stream=stream,
            max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
            stop=_as_list(body.get("stop")),
            model=body.get("model") or request.match_info.get("deployment", "deployment"),
        )
        words, truncated, _ = call.reply()
        finish = "length" if truncated else "stop"
        usage = {
            "prompt_tokens": call.prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": call.prompt_tokens + len(words),
        }
        if not stream:
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": 1760000000,
                    "model": call.model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": finish,
                            "message": {
                                "role": "assistant",
                                "content": "".join(words),
                                "refusal": None,
                            },
                        }
                    ],
                    "usage": usage,
                },
                headers={"x-request-id": "req_fake"},
            )

        def chunk(choices: list[Json], usage_: Json | None = None) -> bytes:
            data = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "model": call.model,
                "choices": choices,
                "usage": usage_,
            }
            return f"data: {json.dumps(data)}\n\n".encode()

        events = []
        if vendor == "azure":  # Azure opens with a filter-only chunk
            events.append(
                f"data: {json.dumps({'id': '', 'choices': [], 'created': 0, 'model': '', 'prompt_filter_results': [{'prompt_index': 0}]})}\n\n".encode()
            )
        events.append(
            chunk(
                [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
            )
        )
        events += [
            chunk([{"index": 0, "delta": {"content": w}, "finish_reason": None}]) for w in words
        ]
        events.append(chunk([{"index": 0, "delta": {}, "finish_reason": finish}]))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(chunk([], usage))
        events.append(b"data: [DONE]\n\n")
        error = (
            b'data: {"error": {"message": "The server had an error", "type": "server_error"}}\n\n'
        )
        return await self._stream(request, events, faults, "text/event-stream", error)

    # --- Anthropic ---------------------------------------------------------------------------------

    async def anthropic(self, request: web.Request) -> web.StreamResponse:
        body, faults = await self._record(request, "anthropic")

        def error(status: int, kind: str, message: str) -> web.Response:
            headers = {"retry-after": "1"} if status == 429 else {}
            return web.json_response(
                {
                    "type": "error",
                    "error": {"type": kind, "message": message},
                    "request_id": "req_x",
                },
                status=status,
                headers=headers,
            )

        if not (request.headers.get("x-api-key") or request.headers.get("Authorization")):
            return error(401, "authentication_error", "invalid x-api-key")
        version = request.headers.get("anthropic-version")
        if not version:
            return error(400, "invalid_request_error", "anthropic-version header is required")
        if "max_tokens" not in body:
            return error(400, "invalid_request_error", "max_tokens: Field required")
        messages = body.get("messages", [])
        if any(m.get("role") == "system" for m in messages):
            return error(400, "invalid_request_error", 'messages: Unexpected role "system"')
        if version == "2026-10-21" and ({"temperature", "top_p", "top_k"} & set(body)):
            return error(
                400, "invalid_request_error", "temperature: Extra inputs are not permitted"
            )
        anthropic_kinds = {
            400: "invalid_request_error",
            401: "authentication_error",
            429: "rate_limit_error",
            500: "api_error",
        }
        failure = await self._pre_faults(
            request,
            faults,
            {
                401: error(401, "authentication_error", "invalid x-api-key"),
                429: error(
                    429, "rate_limit_error", "Number of requests has exceeded your rate limit"
                ),
                500: error(500, "api_error", "Internal server error"),
                503: error(529, "overloaded_error", "Overloaded"),
                529: error(529, "overloaded_error", "Overloaded"),
            },
            lambda status, message: error(
                status, anthropic_kinds.get(status, "overloaded_error"), message
            ),
        )
        if failure is not None:
            return failure
        system = body.get("system")
        call = Call(
            vendor="anthropic",
            messages=([("system", system)] if isinstance(system, str) else [])
            + [(m["role"], m["content"]) for m in messages],
            stream=bool(body.get("stream")),
            max_tokens=body["max_tokens"],
            stop=_as_list(body.get("stop_sequences")),
            model=body.get("model", "claude"),
        )
        words, truncated, stopped = call.reply()
        reason = "max_tokens" if truncated else ("stop_sequence" if stopped else "end_turn")
        if not call.stream:
            return web.json_response(
                {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": call.model,
                    "content": [{"type": "text", "text": "".join(words)}],
                    "stop_reason": reason,
                    "stop_sequence": None,
                    "usage": {"input_tokens": call.prompt_tokens, "output_tokens": len(words)},
                },
                headers={"request-id": "req_fake"},
            )

        def event(name: str, data: Json) -> bytes:
            return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()

        events = [
            event(
                "message_start",
                {
                    "message": {
                        "id": "msg_fake",
                        "type": "message",
                        "role": "assistant",
                        "model": call.model,
                        "content": [],
                        "stop_reason": None,
                        "usage": {"input_tokens": call.prompt_tokens, "output_tokens": 1},
                    }
                },
            ),
            event(
                "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
            ),
            event("ping", {}),
            *[
                event(
                    "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": w}}
                )
                for w in words
            ],
            event("content_block_stop", {"index": 0}),
            event(
                "message_delta",
                {
                    "delta": {"stop_reason": reason, "stop_sequence": None},
                    "usage": {"output_tokens": len(words)},
                },
            ),
            event("message_stop", {}),
        ]
        error_event = event(
            "error", {"error": {"type": "overloaded_error", "message": "Overloaded"}}
        )
        return await self._stream(request, events, faults, "text/event-stream", error_event)

    # --- Gemini --------------------------------------------------------------------------------------

    async def gemini(self, request: web.Request) -> web.StreamResponse:
        body, faults = await self._record(request, "gemini")
        model, _, method = request.match_info["target"].partition(":")

        def error(
            status: int, rpc: str, message: str, details: list[Json] | None = None
        ) -> web.Response:
            return web.json_response(
                {
                    "error": {
                        "code": status,
                        "message": message,
                        "status": rpc,
                        "details": details or [],
                    }
                },
                status=status,
            )

        if not (request.headers.get("x-goog-api-key") or request.query.get("key")):
            return error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers")
        contents = body.get("contents", [])
        if any(c.get("role") not in ("user", "model", None) for c in contents):
            return error(400, "INVALID_ARGUMENT", "Please use a valid role: user, model.")
        rpc_statuses = {
            400: "INVALID_ARGUMENT",
            401: "UNAUTHENTICATED",
            429: "RESOURCE_EXHAUSTED",
            500: "INTERNAL",
        }
        failure = await self._pre_faults(
            request,
            faults,
            {
                401: error(
                    400,
                    "INVALID_ARGUMENT",
                    "API key not valid.",
                    [
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "API_KEY_INVALID",
                        }
                    ],
                ),
                429: error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "Resource has been exhausted",
                    [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}],
                ),
                500: error(500, "INTERNAL", "An internal error has occurred."),
                503: error(503, "UNAVAILABLE", "The model is overloaded."),
            },
            lambda status, message: error(status, rpc_statuses.get(status, "UNAVAILABLE"), message),
        )
        if failure is not None:
            return failure
        config = body.get("generationConfig", {})
        system = body.get("systemInstruction", {}).get("parts", [])
        call = Call(
            vendor="gemini",
            messages=[("system", p["text"]) for p in system]
            + [
                (
                    "user" if c.get("role", "user") == "user" else "assistant",
                    "".join(p.get("text", "") for p in c["parts"]),
                )
                for c in contents
            ],
            stream=method == "streamGenerateContent",
            max_tokens=config.get("maxOutputTokens"),
            stop=_as_list(config.get("stopSequences")),
            model=model,
        )
        words, truncated, _ = call.reply()
        finish = "MAX_TOKENS" if truncated else "STOP"

        def usage(completion: int) -> Json:
            return {
                "promptTokenCount": call.prompt_tokens,
                "candidatesTokenCount": completion,
                "totalTokenCount": call.prompt_tokens + completion,
            }

        if not call.stream:
            return web.json_response(
                {
                    "candidates": [
                        {
                            "content": {"role": "model", "parts": [{"text": "".join(words)}]},
                            "finishReason": finish,
                            "index": 0,
                        }
                    ],
                    "usageMetadata": usage(len(words)),
                    "modelVersion": model,
                    "responseId": "r1",
                }
            )
        if request.query.get("alt") != "sse":
            return error(400, "INVALID_ARGUMENT", "this stand-in streams only with alt=sse")
        events = []
        for index, word in enumerate(words):
            candidate: Json = {"content": {"role": "model", "parts": [{"text": word}]}, "index": 0}
            if index == len(words) - 1:
                candidate["finishReason"] = finish
            data = {
                "candidates": [candidate],
                "usageMetadata": usage(index + 1),
                "modelVersion": model,
            }
            events.append(f"data: {json.dumps(data)}\r\n\r\n".encode())
        error_event = f"data: {json.dumps({'error': {'code': 500, 'message': 'Internal error', 'status': 'INTERNAL'}})}\r\n\r\n".encode()
        return await self._stream(request, events, faults, "text/event-stream", error_event)

    # --- Ollama ----------------------------------------------------------------------------------------

    async def ollama(self, request: web.Request) -> web.StreamResponse:
        body, faults = await self._record(request, "ollama")
        failure = await self._pre_faults(
            request,
            faults,
            {
                401: web.json_response({"error": "unauthorized"}, status=401),
                429: web.json_response({"error": "too many requests"}, status=429),
                500: web.json_response(
                    {"error": "model runner has unexpectedly stopped"}, status=500
                ),
                503: web.json_response(
                    {"error": "server busy, maximum pending requests exceeded"}, status=503
                ),
            },
            lambda status, message: web.json_response({"error": message}, status=status),
        )
        if failure is not None:
            return failure
        options = body.get("options", {})
        call = Call(
            vendor="ollama",
            messages=[(m["role"], m["content"]) for m in body.get("messages", [])],
            stream=body.get("stream", True),  # Ollama streams unless told otherwise
            max_tokens=options.get("num_predict"),
            stop=_as_list(options.get("stop")),
            model=body.get("model", "llama"),
        )
        words, truncated, _ = call.reply()
        done = {
            "done": True,
            "done_reason": "length" if truncated else "stop",
            "prompt_eval_count": call.prompt_tokens,
            "eval_count": len(words),
            "total_duration": 1000,
            "eval_duration": 500,
        }
        if not call.stream:
            return web.json_response(
                {
                    "model": call.model,
                    "created_at": "2026-11-01T10:00:00Z",
                    "message": {"role": "assistant", "content": "".join(words)},
                    **done,
                }
            )
        lines = [
            (
                json.dumps(
                    {
                        "model": call.model,
                        "message": {"role": "assistant", "content": w},
                        "done": False,
                    }
                )
                + "\n"
            ).encode()
            for w in words
        ]
        lines.append(
            (
                json.dumps(
                    {"model": call.model, "message": {"role": "assistant", "content": ""}, **done}
                )
                + "\n"
            ).encode()
        )
        return await self._stream(
            request, lines, faults, "application/x-ndjson", b'{"error": "model runner crashed"}\n'
        )

    # --- Cohere -------------------------------------------------------------------------------------------

    async def cohere(self, request: web.Request) -> web.StreamResponse:
        body, faults = await self._record(request, "cohere")

        def error(status: int, message: str) -> web.Response:
            headers = {"retry-after": "1"} if status == 429 else {}
            return web.json_response(
                {"id": "err_1", "message": message}, status=status, headers=headers
            )

        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return error(401, "invalid api token")
        failure = await self._pre_faults(
            request,
            faults,
            {
                401: error(401, "invalid api token"),
                429: error(429, "trial key rate limit"),
                500: error(500, "internal server error"),
                503: error(503, "service unavailable"),
            },
            error,
        )
        if failure is not None:
            return failure
        call = Call(
            vendor="cohere",
            messages=[
                (
                    m["role"],
                    m["content"]
                    if isinstance(m["content"], str)
                    else "".join(p["text"] for p in m["content"]),
                )
                for m in body.get("messages", [])
            ],
            stream=bool(body.get("stream")),
            max_tokens=body.get("max_tokens"),
            stop=_as_list(body.get("stop_sequences")),
            model=body.get("model", "command"),
        )
        words, truncated, stopped = call.reply()
        finish = "MAX_TOKENS" if truncated else ("STOP_SEQUENCE" if stopped else "COMPLETE")
        usage = {
            "billed_units": {"input_tokens": call.prompt_tokens, "output_tokens": len(words)},
            "tokens": {"input_tokens": call.prompt_tokens, "output_tokens": len(words)},
        }
        if not call.stream:
            return web.json_response(
                {
                    "id": "c1",
                    "finish_reason": finish,
                    "message": {
                        "role": "assistant",
                        "content": [{"type": "text", "text": "".join(words)}],
                    },
                    "usage": usage,
                }
            )

        def event(name: str, data: Json) -> bytes:
            return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()

        events = [
            event(
                "message-start",
                {"id": "c1", "delta": {"message": {"role": "assistant", "content": []}}},
            ),
            event(
                "content-start",
                {"index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}},
            ),
            *[
                event("content-delta", {"index": 0, "delta": {"message": {"content": {"text": w}}}})
                for w in words
            ],
            event("content-end", {"index": 0}),
            event("message-end", {"delta": {"finish_reason": finish, "usage": usage}}),
        ]
        error_event = event(
            "message-end", {"delta": {"finish_reason": "ERROR", "error": "internal failure"}}
        )
        return await self._stream(request, events, faults, "text/event-stream", error_event)


def _echoed_request(request: web.Request) -> str:
    """The request repeated back verbatim: its credentials, then its line and every header."""
    credentials = [
        f"{name}: {value}"
        for name, value in request.headers.items()
        if _CREDENTIAL_HEADER.search(name)
    ]
    credentials += [f"{name}={value}" for name, value in request.query.items() if name == "key"]
    return (
        f"request rejected; credentials received: {'; '.join(credentials) or 'none'}; "
        f"request: {request.method} {request.path_qs}; "
        f"headers: {json.dumps(dict(request.headers.items()))}"
    )


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)
