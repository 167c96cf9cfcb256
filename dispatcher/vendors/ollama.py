"""Ollama's native chat API: one JSON object per line, ending with a `"done": true` line.

Request: `POST {endpoint}/api/chat`, with no auth locally (Bearer when a key is
configured, for ollama.com or a remote host behind auth). The sampling knobs go
in `options` (`max_tokens` is `num_predict`), `user` is dropped, and `stream` is
always sent, because Ollama streams unless told `"stream": false`. Reply:
`message.content`, usage in `prompt_eval_count` / `eval_count` (older servers
leave the first out on a cache hit: 0 then). Stream: NDJSON; any line may be a
bare `{"error": "..."}` after HTTP 200, so every line is checked for it first,
and a body that ends without `done: true` is broken. Error bodies are
`{"error": "text"}`; a 404 usually means the model was never pulled.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, Literal

import httpx

from dispatcher.errors import (
    DispatcherError,
    InvalidRequest,
    StreamBroken,
    VendorUnavailable,
)
from dispatcher.models import (
    FinishReason,
    ImagePart,
    JsonObjectFormat,
    JsonSchemaFormat,
    Message,
    NamedToolChoice,
    Request,
    Role,
    ToolCall,
    Usage,
)
from dispatcher.vendors.auth import auth_headers_and_params, request_headers
from dispatcher.vendors.base import Completion, HttpVendor, StreamDelta, StreamParser
from dispatcher.vendors.failures import error_for_status, json_or_none, retry_after_s, summary
from dispatcher.vendors.tool_calls import ToolCallAssembler, arguments_text, tool_call

__all__ = [
    "DONE_REASONS",
    "STATE_KEY",
    "ChatNdjsonParser",
    "OllamaVendor",
    "chat_body",
    "classify_error",
    "minted_id",
    "parse_chat_response",
    "parse_tool_calls",
    "raw_calls",
    "thinking_state",
    "wire_message",
]

DONE_REASONS: dict[str, FinishReason] = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    # An empty request loaded or unloaded the model: nothing was generated.
    "load": FinishReason.STOP,
    "unload": FinishReason.STOP,
}
NO_GENERATION = frozenset({"load", "unload"})

# The `vendor_state` key under which an assistant message keeps Ollama's thinking.
STATE_KEY = "ollama_thinking"

# Our request fields that Ollama takes inside `options`, under its own names.
OPTION_NAMES = (("temperature", "temperature"), ("max_tokens", "num_predict"), ("top_p", "top_p"))


def finish_reason(raw: str | None, *, tool_calls: bool = False) -> FinishReason:
    """Our finish reason for a `done_reason`; absent (older servers) is a stop, unknown an error."""
    reason = FinishReason.STOP if raw is None else DONE_REASONS.get(raw, FinishReason.ERROR)
    if reason is FinishReason.STOP and tool_calls and raw not in NO_GENERATION:
        return FinishReason.TOOL_CALLS
    return reason


def chat_body(request: Request, model: str, *, stream: bool) -> dict[str, Any]:
    """The `/api/chat` body for `request`.

    `extra_body` is merged at the top level (`keep_alive`, `think`), except that
    its `options` are merged into ours (`num_ctx`), and it cannot change
    `stream`, which decides how the reply is read.

    Raises:
        InvalidRequest: the request asks for what Ollama has no form of (a forced
            tool choice, one call per reply, an image by URL, arguments that are
            not a JSON object), naming the field.
    """
    names = _call_names(request.messages)
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            wire_message(message, index, names) for index, message in enumerate(request.messages)
        ],
    }
    tools = _tools(request)
    if tools:
        body["tools"] = tools
    fmt = request.response_format
    if isinstance(fmt, JsonObjectFormat):
        body["format"] = "json"
    elif isinstance(fmt, JsonSchemaFormat):
        body["format"] = fmt.json_schema.schema_
    options: dict[str, Any] = {}
    for ours, theirs in OPTION_NAMES:
        value = getattr(request, ours)
        if value is not None:
            options[theirs] = value
    if request.stop:
        options["stop"] = list(request.stop)
    if request.seed is not None:
        options["seed"] = request.seed
    extra = dict(request.extra_body)
    extra_options = extra.get("options")
    if isinstance(extra_options, dict):
        options.update(extra_options)
        del extra["options"]
    if options:
        body["options"] = options
    body.update(extra)
    body["stream"] = stream
    return body


def _tools(request: Request) -> list[dict[str, Any]]:
    """The declarations to send: none for tool choice "none"; a forced choice is refused."""
    choice = request.tool_choice
    if not request.tools or choice == "none":
        return []
    if choice == "required" or isinstance(choice, NamedToolChoice):
        shown = choice if isinstance(choice, str) else f"the named tool {choice.function.name!r}"
        raise InvalidRequest(
            f"tool_choice: Ollama cannot force a tool call ({shown}): its /api/chat has no "
            "tool_choice; use 'auto' (or leave it out), or route the request to a vendor "
            "that has one"
        )
    if request.parallel_tool_calls is False:
        raise InvalidRequest(
            "parallel_tool_calls: Ollama cannot limit a reply to one tool call; leave it out "
            "(or true), or route the request to a vendor that can"
        )
    return [
        {"type": "function", "function": tool.function.model_dump(exclude_none=True,
                                                                   exclude={"strict"})}
        for tool in request.tools
    ]  # fmt: skip


def _call_names(messages: list[Message]) -> dict[str, str]:
    """The function name of every call in the conversation, by call id (for `tool_name`)."""
    return {call.id: call.name for message in messages for call in message.tool_calls or ()}


def wire_message(message: Message, index: int, call_names: dict[str, str]) -> dict[str, Any]:
    """One message as `/api/chat` takes it: text content, `images`, `tool_calls`, `tool_name`."""
    content = message.content
    if (
        type(content) is str
        and message.tool_calls is None
        and message.tool_call_id is None
        and message.vendor_state is None
    ):
        return {"role": message.role.value, "content": content}
    wire: dict[str, Any] = {"role": message.role.value, "content": message.text}
    thinking = (message.vendor_state or {}).get(STATE_KEY)
    if message.role is Role.ASSISTANT and isinstance(thinking, str):
        wire["thinking"] = thinking
    if isinstance(content, list) and message.image_count:
        wire["images"] = [
            _bare_base64(part, f"messages[{index}].content[{position}].image_url.url")
            for position, part in enumerate(content)
            if isinstance(part, ImagePart)
        ]
    if message.tool_calls:
        wire["tool_calls"] = [
            _wire_call(call, position, f"messages[{index}].tool_calls[{position}]")
            for position, call in enumerate(message.tool_calls)
        ]
    if message.tool_call_id is not None:
        name = call_names.get(message.tool_call_id)
        if name is not None:
            wire["tool_name"] = name
        wire["tool_call_id"] = message.tool_call_id
    return wire


def _bare_base64(part: ImagePart, where: str) -> str:
    """The base64 of a data URL image; an https URL has no form here (Ollama fetches nothing)."""
    url = part.image_url.url
    if url[:5].lower() != "data:":
        raise InvalidRequest(
            f"{where}: Ollama takes images as base64 only and fetches no URL; send the image "
            "as a data:image/...;base64 URL, or route the request to a vendor that fetches URLs"
        )
    return url.partition(",")[2]


def _wire_call(call: ToolCall, position: int, where: str) -> dict[str, Any]:
    """A call as Ollama sends it: arguments as a JSON object, with its id and index."""
    try:
        arguments = call.parsed_arguments()
    except DispatcherError:
        arguments = None
    if not isinstance(arguments, dict):
        raise InvalidRequest(
            f"{where}.function.arguments: Ollama takes a call's arguments as a JSON object; "
            f"{call.arguments[:80]!r} is not one"
        )
    function = {"index": position, "name": call.name, "arguments": arguments}
    return {"id": call.id, "function": function}


def minted_id(position: int, name: Any, arguments: str) -> str:
    """An id for a call that came without one: the same for the same call at the same place."""
    digest = hashlib.sha256(f"{position}:{name}:{arguments}".encode()).hexdigest()[:12]
    return f"call_{digest}"


def raw_calls(data: Any, *, start: int = 0) -> list[tuple[int, str, Any, str]]:
    """`message.tool_calls` as (position, id, name, arguments as JSON text) each.

    `start` counts the calls seen before (in earlier stream lines); a call
    without an id gets `minted_id` of its position, name and arguments.
    """
    if not isinstance(data, list):
        return []
    found: list[tuple[int, str, Any, str]] = []
    for item in data:
        if not isinstance(item, dict):
            continue
        position = start + len(found)
        function = item.get("function")
        if not isinstance(function, dict):
            function = {}
        name, raw = function.get("name"), function.get("arguments")
        arguments = raw if isinstance(raw, str) else arguments_text(raw)
        found.append((position, str(item.get("id") or minted_id(position, name, arguments)),
                      name, arguments))  # fmt: skip
    return found


def parse_tool_calls(data: Any, vendor: str) -> list[ToolCall]:
    """`message.tool_calls` of a whole reply as our calls, arguments as JSON text."""
    return [
        tool_call(call_id, name, arguments, vendor=vendor, index=position)
        for position, call_id, name, arguments in raw_calls(data)
    ]


def parse_usage(data: dict[str, Any]) -> Usage:
    """Usage from a final line or reply; a missing count is 0, not an error.

    No server documents a cached count; `prompt_eval_cached_count` is read if a build sends it.
    """
    prompt = int(data.get("prompt_eval_count") or 0)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=int(data.get("eval_count") or 0),
        cached_prompt_tokens=min(prompt, int(data.get("prompt_eval_cached_count") or 0)),
    )


def _message(data: dict[str, Any]) -> dict[str, Any]:
    message = data.get("message")
    return message if isinstance(message, dict) else {}


def thinking_state(thinking: str | None) -> dict[str, Any] | None:
    """`vendor_state` keeping a reply's thinking; None when it has none."""
    return {STATE_KEY: thinking} if thinking else None


def parse_chat_response(body: dict[str, Any], vendor: str = "ollama") -> Completion:
    """A non-streamed `/api/chat` reply; its `message.thinking` is kept as the vendor state."""
    message = _message(body)
    done_reason = body.get("done_reason")
    raw = str(done_reason) if done_reason is not None else None
    text = "" if raw in NO_GENERATION else str(message.get("content") or "")
    calls = tuple(parse_tool_calls(message.get("tool_calls"), vendor))
    return Completion(
        text=text,
        finish_reason=finish_reason(raw, tool_calls=bool(calls)),
        usage=parse_usage(body),
        model=body.get("model"),
        vendor_finish_reason=raw,
        tool_calls=calls,
        vendor_state=thinking_state(str(message.get("thinking") or "")),
    )


def error_text(error: Any) -> str:
    """The message of an `error` value: a plain string natively, an object from proxies."""
    if isinstance(error, dict):
        return str(error.get("message") or json.dumps(error))
    return str(error)


class ChatNdjsonParser(StreamParser):
    """NDJSON lines until one with `"done": true`; a line with `error` is a failure.

    Tool calls arrive whole, on `done: false` lines (several may share one): they
    are gathered in order and handed over in the final delta.
    """

    def __init__(self, vendor: str) -> None:
        super().__init__(vendor)
        self.done = False
        self.raw_finish: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.tool_calls = ToolCallAssembler(vendor)
        self.calls_seen = 0
        self.thinking: list[str] = []

    def feed(self, item: str) -> list[StreamDelta]:
        line = json_or_none(item)
        if not isinstance(line, dict):
            return []
        # First, on every line: a failure after HTTP 200 is a bare {"error": "..."}.
        if "error" in line:
            raise StreamBroken(
                f"{self.vendor} reported an error inside the stream: "
                f"{summary(error_text(line['error']))}",
                partial=self.text_seen,
                vendor=self.vendor,
            )
        if self.done:
            return []
        self.model = line.get("model") or self.model
        message = _message(line)
        if message.get("thinking"):
            self.thinking.append(str(message["thinking"]))
        for position, call_id, name, arguments in raw_calls(
            message.get("tool_calls"), start=self.calls_seen
        ):
            self.tool_calls.add(position, call_id=call_id, name=name, arguments=arguments)
            self.calls_seen += 1
        deltas = self.text(str(message.get("content") or ""))
        if line.get("done"):
            self.done = True
            raw = line.get("done_reason")
            self.raw_finish = str(raw) if raw is not None else None
            self.usage = parse_usage(line)
        return deltas

    def finish(self) -> StreamDelta:
        if not self.done:
            raise self.broken("a line with done: true")
        calls = self.tool_calls.calls()
        return StreamDelta(
            finish_reason=finish_reason(self.raw_finish, tool_calls=bool(calls)),
            usage=self.usage,
            vendor_finish_reason=self.raw_finish,
            model=self.model,
            tool_calls=calls,
            vendor_state=thinking_state("".join(self.thinking)),
        )


def classify_error(status: int, headers: httpx.Headers, body: str, vendor: str) -> DispatcherError:
    """Ollama's `{"error": "text"}` bodies, by the common status table."""
    data = json_or_none(body)
    error = data.get("error") if isinstance(data, dict) else None
    message = summary(error_text(error)) if error is not None else summary(body)
    if status == 404:
        return InvalidRequest(
            f"{vendor} answered HTTP 404: {message or '(no message)'} (pull the model on the "
            "Ollama host first: `ollama pull <model>`; or check that base_url is an Ollama server)",
            vendor=vendor,
            status_code=status,
        )
    return error_for_status(status, message, vendor=vendor, retry_after=retry_after_s(headers))


class OllamaVendor(HttpVendor):
    """A local or remote Ollama server, by its native `/api/chat`."""

    stream_framing: ClassVar[Literal["sse", "ndjson"]] = "ndjson"
    base_url_hint = "e.g. http://localhost:11434"

    @property
    def base_url(self) -> str:
        """The configured endpoint, without a trailing slash."""
        return (self.config.endpoint or "").rstrip("/")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Request:
        headers, params = auth_headers_and_params(self.config)
        return httpx.Request(
            method,
            f"{self.base_url}{path}",
            params=params,
            headers=request_headers(self.config, headers),
            content=json.dumps(body).encode() if body is not None else None,
        )

    def build_request(self, request: Request, model: str, *, stream: bool) -> httpx.Request:
        try:
            body = chat_body(request, model, stream=stream)
        except InvalidRequest as exc:
            exc.vendor = self.name
            raise
        return self._call("POST", "/api/chat", body)

    def parse_response(self, body: Any) -> Completion:
        if not isinstance(body, dict):
            raise VendorUnavailable(
                "the vendor answered with JSON that is not a chat reply",
                vendor=self.name,
                status_code=200,
            )
        if "error" in body:
            message = summary(error_text(body["error"]))
            raise VendorUnavailable(
                f"{self.name} answered HTTP 200 with an error: {message}",
                vendor=self.name,
                status_code=200,
            )
        return parse_chat_response(body, self.name)

    def stream_parser(self) -> StreamParser:
        return ChatNdjsonParser(self.name)

    def classify_error(self, status: int, headers: httpx.Headers, body: str) -> DispatcherError:
        return classify_error(status, headers, body, self.name)

    def health_request(self) -> httpx.Request:
        return self._call("GET", "/api/tags")
