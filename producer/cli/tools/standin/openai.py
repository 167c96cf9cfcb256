"""The OpenAI Chat Completions wire format (OpenAI, Azure, OpenAI-compatible), server side.

Per the wire-format notes' sections 1 and 2: a chat body is checked the way the
real API checks it (a bad one is a 400 naming the `param`); replies are whole or
streamed (`data:` chunks, the `include_usage` chunk with empty `choices`, then
`data: [DONE]`; Azure opens with a filter-only chunk); errors are
`{"error": {"message", "type", "param", "code"}}`, and a 429 carries
`retry-after`, `retry-after-ms` and the rate-limit headers.

Tools, tool results, response formats and images (the tools page, section 1):
`tools`, `tool_choice` (a named one must name a declared tool), `response_format`
(json_object needs the word "json" in the messages) and `image_url` parts (https
or `data:image/...;base64,` URLs, user messages only) are read and checked as the
real API does; a `tool` message must answer a call of an earlier assistant
message, and every call needs its answer before the next user or assistant
message. The answers follow `chat_rules`: a call is a `message.tool_calls` entry
(`content: null`, finish reason `tool_calls`, or `stop` under a named tool
choice, as OpenAI does); streamed, it opens with a `delta.tool_calls` fragment
holding the id, name and empty arguments, then sends the arguments in three
fragments under the same `index`.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from producer.cli.tools.standin.chat_rules import ChatAsk
from producer.cli.tools.standin.faults import Fault
from producer.cli.tools.standin.replies import (
    INJECTED,
    Call,
    Json,
    Refused,
    Reply,
    Stream,
    WireFormat,
    argument_pieces,
    dumps,
    text_of,
)

__all__ = ["AzureFormat", "OpenAIFormat", "openai_error"]

_FINGERPRINT = "fp_standin"
_DONE = b"data: [DONE]\n\n"
# Most stop sequences the API takes.
MAX_STOP_SEQUENCES = 4


def openai_error(
    status: int,
    message: str,
    *,
    kind: str | None = None,
    code: str | None = None,
    param: str | None = None,
    retry_after_s: float = 1.0,
) -> web.Response:
    """An error in OpenAI's shape; the type and code follow the status unless given."""
    if kind is None:
        kind, code = {
            401: ("invalid_request_error", code or "invalid_api_key"),
            429: ("requests", code or "rate_limit_exceeded"),
        }.get(status, ("server_error" if status >= 500 else "invalid_request_error", code))
    headers = {}
    if status == 429:
        headers = {
            "retry-after": f"{retry_after_s:g}",
            "retry-after-ms": f"{retry_after_s * 1000:g}",
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": f"{retry_after_s:g}s",
        }
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def _refuse(message: str, param: str | None = None) -> Refused:
    return Refused(openai_error(400, message, param=param))


def _max_tokens(body: Json) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _refuse(f"'{name}' must be a positive integer.", name)
        return value
    return None


def parse_chat(body: Json, default_model: str | None = None) -> Call:
    """The call a chat completions body makes; `default_model` stands in for a missing model.

    Raises:
        Refused: a body the real API would refuse, naming the offending parameter.
    """
    model = body.get("model") or default_model
    if not isinstance(model, str) or not model:
        raise _refuse("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _refuse("'messages' must be a non-empty array.", "messages")
    pairs: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _refuse(f"messages[{index}] must be an object with a 'role'.", "messages")
        pairs.append((message["role"], text_of(message.get("content"))))
    ask = _chat_ask(body, messages, pairs)
    stream = body.get("stream") is True
    stream_options = body.get("stream_options")
    if stream_options is not None and not stream:
        raise _refuse(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else ([] if stop is None else stop)
    if (
        not isinstance(stops, list)
        or not all(isinstance(s, str) for s in stops)
        or len(stops) > MAX_STOP_SEQUENCES
    ):
        raise _refuse("'stop' must be a string or an array of at most 4 strings.", "stop")
    return Call(
        model=model,
        messages=pairs,
        stream=stream,
        max_tokens=_max_tokens(body),
        stop=stops,
        include_usage=isinstance(stream_options, dict)
        and stream_options.get("include_usage") is True,
        ask=ask,
    )


def _images(message: Json, index: int) -> int:
    """The image parts of a message, each checked as the API checks it."""
    content = message.get("content")
    if not isinstance(content, list):
        return 0
    count = 0
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in ("text", "image_url"):
            raise _refuse(
                f"Invalid content part in messages[{index}].", f"messages.[{index}].content"
            )
        if part["type"] != "image_url":
            continue
        url = (part.get("image_url") or {}).get("url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://", "data:image/")):
            raise _refuse("Invalid image URL.", f"messages.[{index}].content")
        if message.get("role") != "user":
            raise _refuse(
                f"Image parts are only allowed in user messages (messages[{index}]).",
                f"messages.[{index}].content",
            )
        count += 1
    return count


def _check_tool_pairs(messages: list[Any]) -> None:
    """Tool messages answer earlier calls, and every call is answered before the next turn."""
    open_calls: list[str] = []
    asked: set[str] = set()
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            if message.get("tool_call_id") not in asked:
                raise _refuse(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    f"messages.[{index}].role",
                )
            if message["tool_call_id"] in open_calls:
                open_calls.remove(message["tool_call_id"])
            continue
        if open_calls:
            raise _refuse(
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(open_calls)}",
                "messages",
            )
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict) and isinstance(call.get("id"), str):
                asked.add(call["id"])
                open_calls.append(call["id"])


def _declared_tools(body: Json) -> tuple[tuple[str, Json], ...]:
    tools = body.get("tools")
    if tools is None:
        return ()
    if not isinstance(tools, list) or not tools:
        raise _refuse("'tools' must be a non-empty array.", "tools")
    declared = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function":
            raise _refuse(f"Invalid 'tools[{index}]': a function with a name.", f"tools[{index}]")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise _refuse(f"Invalid 'tools[{index}]': a function with a name.", f"tools[{index}]")
        declared.append((name, function.get("parameters") or {}))
    return tuple(declared)


def _tool_choice(body: Json, declared: tuple[tuple[str, Json], ...]) -> str | None:
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if not declared:
        raise _refuse(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' "
            "are specified.",
            "tool_choice",
        )
    if choice in ("auto", "none", "required"):
        return str(choice)
    name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    if name not in dict(declared):
        raise _refuse(f"Tool choice '{name}' not found in 'tools' parameter.", "tool_choice")
    return str(name)


def _chat_ask(body: Json, messages: list[Any], pairs: list[tuple[str, str]]) -> ChatAsk:
    """What of the body shapes the answer (`chat_rules`), checked as the API checks it."""
    declared = _declared_tools(body)
    choice = _tool_choice(body, declared)
    _check_tool_pairs(messages)
    images = [_images(message, index) for index, message in enumerate(messages)]
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is not None and kind not in ("text", "json_object", "json_schema"):
        raise _refuse("Invalid value for 'response_format.type'.", "response_format.type")
    schema = None
    if kind == "json_schema":
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise _refuse("Missing required parameter: 'response_format.json_schema'.",
                          "response_format.json_schema")  # fmt: skip
    if kind == "json_object" and not any("json" in text.lower() for _, text in pairs):
        raise _refuse(
            "'messages' must contain the word 'json' in some form, to use 'response_format' "
            "of type 'json_object'.",
            "messages",
        )
    last_role, last_text = pairs[-1]
    prompt = next((text for role, text in reversed(pairs) if role == "user"), "")
    return ChatAsk(
        tools=declared,
        tool_choice=choice,
        last_role=last_role,
        last_text=last_text,
        prompt=prompt,
        images=images[-1] if last_role == "user" else 0,
        json_schema=schema,
        json_object=kind == "json_object",
    )


def _finish(call: Call, reply: Reply) -> str:
    if reply.tool_call is not None:
        # OpenAI says "stop" when a named tool choice forced the call.
        named = call.ask.tool_choice not in (None, "auto", "required")
        return "stop" if named else "tool_calls"
    return "length" if reply.truncated else "stop"


def _tool_calls(reply: Reply) -> list[Json]:
    call = reply.tool_call
    if call is None:
        return []
    function = {"name": call.name, "arguments": call.arguments}
    return [{"id": call.id, "type": "function", "function": function}]


def _usage(reply: Reply) -> Json:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.total_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _event(payload: Json) -> bytes:
    return b"data: " + dumps(payload) + b"\n\n"


class OpenAIFormat(WireFormat):
    """`POST /v1/chat/completions`: OpenAI and every OpenAI-compatible server."""

    vendor = "openai"
    # Azure opens its streams with a chunk that only carries the prompt filter's results.
    opens_with_filter_chunk = False

    def parse(self, request: web.Request, body: Json) -> Call:
        return parse_chat(body)

    def error(self, status: int, message: str, *, retry_after_s: float) -> web.Response:
        return openai_error(status, message, retry_after_s=retry_after_s)

    def injected(self, fault: Fault, retry_after_s: float) -> web.Response:
        if fault.quota:
            return openai_error(
                429,
                "You exceeded your current quota, please check your plan and billing "
                f"details. {INJECTED}",
                kind="insufficient_quota",
                code="insufficient_quota",
                retry_after_s=retry_after_s,
            )
        messages = {
            401: "Incorrect API key provided.",
            429: f"Rate limit reached for requests. Please try again in {retry_after_s:g}s.",
            503: "The engine is currently overloaded.",
        }
        status = fault.status or 500
        default = (
            "The server had an error while processing your request."
            if status >= 500
            else f"HTTP {status}."
        )
        message = f"{messages.get(status, default)} {INJECTED}"
        return openai_error(status, message, retry_after_s=retry_after_s)

    def whole(self, call: Call, reply: Reply, request_id: str) -> Json:
        return {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": _finish(call, reply),
                    "logprobs": None,
                    "message": {
                        "role": "assistant",
                        "content": None if reply.tool_call else reply.text,
                        "refusal": None,
                        "annotations": [],
                        **({"tool_calls": _tool_calls(reply)} if reply.tool_call else {}),
                    },
                }
            ],
            "usage": _usage(reply),
            "system_fingerprint": _FINGERPRINT,
            "service_tier": "default",
        }

    def stream(self, call: Call, reply: Reply, request_id: str) -> Stream:
        head = {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": call.model,
            "system_fingerprint": _FINGERPRINT,
        }
        # With include_usage every chunk but the usage one says "usage": null.
        no_usage: Json = {"usage": None} if call.include_usage else {}

        def chunk(delta: Json, finish: str | None = None) -> bytes:
            choice: dict[str, Any] = {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish,
            }
            return _event({**head, "choices": [choice], **no_usage})

        opening = chunk({"role": "assistant", "content": ""})
        events = [chunk({"content": text}) for text in reply.chunks]
        if reply.tool_call is not None:
            tool_call = reply.tool_call
            first = {
                "index": 0,
                "id": tool_call.id,
                "type": "function",
                "function": {"name": tool_call.name, "arguments": ""},
            }
            opening = chunk({"role": "assistant", "content": None, "tool_calls": [first]})
            events = [
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]})
                for fragment in argument_pieces(tool_call.arguments)
            ]
        if self.opens_with_filter_chunk:
            filters = {"id": "", "choices": [], "created": 0, "model": ""}
            opening = _event({**filters, "prompt_filter_results": [{"prompt_index": 0}]}) + opening
        closing = chunk({}, _finish(call, reply))
        if call.include_usage:
            closing += _event({**head, "choices": [], "usage": _usage(reply)})
        error = {
            "message": f"The server had an error while generating {INJECTED}.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
        return Stream(
            opening=opening,
            events=events,
            closing=closing + _DONE,
            error=_event({"error": error}),
        )


class AzureFormat(OpenAIFormat):
    """Azure OpenAI: `/openai/deployments/{deployment}/chat/completions?api-version=...`
    (the deployment names the model) and `/openai/v1/chat/completions`."""

    vendor = "azure"
    opens_with_filter_chunk = True

    def parse(self, request: web.Request, body: Json) -> Call:
        deployment = request.match_info.get("deployment")
        if deployment is not None and "api-version" not in request.query:
            problem = {"error": {"code": "404", "message": "Resource not found"}}
            raise Refused(web.json_response(problem, status=404))
        return parse_chat(body, default_model=deployment)
