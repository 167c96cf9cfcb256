"""AWS Bedrock Converse: content blocks, a binary event stream, errors named by type.

Request: `POST {endpoint}/model/{modelId}/converse` (`/converse-stream` to
stream), the model id percent-encoded as one path segment (`:` is `%3A`; an
inference-profile ARN fits too). The endpoint is `base_url`, else
`AWS_ENDPOINT_URL_BEDROCK_RUNTIME`, else `https://bedrock-runtime.{region}
.amazonaws.com`, the region being `region`, else `AWS_REGION`, else
`AWS_DEFAULT_REGION`. Auth (`bedrock_auth`): a Bedrock API key as Bearer, or
SigV4 by botocore. Body: `messages`, `system` blocks, `inferenceConfig`
(`maxTokens`, `temperature`, `topP`, `stopSequences`), `toolConfig`,
`outputConfig` and `additionalModelRequestFields` (all of `extra_body`); the
mapping of messages, tools and formats is `bedrock_blocks`. Converse has no
seed and no user field: a seed is refused, the user is not sent.
Reply: `output.message.content` blocks: `text` joined, `toolUse` as calls
(the `input` object as compact JSON text), `reasoningContent` kept in
`vendor_state` (key `bedrock_reasoning`) for the next turn. Usage:
`inputTokens` leaves the cache out (the notes' example: total = input +
output + cache reads + writes), so the prompt is all three, and
`cacheReadInputTokens` is `cached_prompt_tokens`.
Stream: AWS event-stream frames (`event_stream`), JSON payloads by
`:event-type`: `messageStart`, `contentBlockStart` (a tool call's id and
name), `contentBlockDelta` (`text`, `toolUse.input` fragments joined by block
index, `reasoningContent`), `contentBlockStop`, `messageStop` (the stop
reason, without which the reply is incomplete) and `metadata` (usage). An
`exception` message is classified as the same error's HTTP reply would be.
Errors: by AWS's error type (`bedrock_errors`).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpx

from dispatcher.config.schema import VendorConfig
from dispatcher.errors import ConfigError, DispatcherError, InvalidRequest, StreamBroken
from dispatcher.models import FinishReason, Request, Response, Usage
from dispatcher.vendors import bedrock_blocks as blocks
from dispatcher.vendors.base import (
    Completion,
    HttpVendor,
    StreamDelta,
    StreamParser,
    path_segment,
)
from dispatcher.vendors.bedrock_auth import BedrockAuth, SigV4Auth, bedrock_auth
from dispatcher.vendors.bedrock_errors import classified, classify_error, message_of
from dispatcher.vendors.event_stream import EventMessage, EventStreamDecoder
from dispatcher.vendors.failures import json_or_none
from dispatcher.vendors.tool_calls import ToolCallAssembler, tool_call

__all__ = [
    "FINISH_REASONS",
    "BedrockVendor",
    "ConverseCompletion",
    "ConverseStreamDelta",
    "ConverseStreamParser",
    "classify_error",
    "converse_body",
    "endpoint_and_region",
    "parse_converse",
    "parse_usage",
]

ENDPOINT_ENV = "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"
REGION_ENVS = ("AWS_REGION", "AWS_DEFAULT_REGION")

FINISH_REASONS: dict[str, FinishReason] = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "guardrail_intervened": FinishReason.CONTENT_FILTER,
    "content_filtered": FinishReason.CONTENT_FILTER,
    "malformed_model_output": FinishReason.ERROR,
    "malformed_tool_use": FinishReason.ERROR,
}

# The reasoning blocks of the reply `parse_response` last parsed in this task, for
# `_complete` to put in the Response (the shared Completion has no slot for them).
_REASONING: ContextVar[tuple[dict[str, Any], ...]] = ContextVar("bedrock_reasoning", default=())


@dataclass(frozen=True)
class ConverseCompletion(Completion):
    """A whole Converse reply, with the reasoning blocks the next turn must hand back."""

    reasoning: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class ConverseStreamDelta(StreamDelta):
    """The final delta of a ConverseStream, with the reasoning blocks it assembled."""

    reasoning: tuple[dict[str, Any], ...] = ()

    @property
    def vendor_state(self) -> dict[str, Any] | None:
        """The reasoning blocks as `vendor_state`, or None without any."""
        return blocks.reasoning_state(self.reasoning)


def endpoint_and_region(
    name: str, config: VendorConfig, env: Mapping[str, str]
) -> tuple[str, str | None]:
    """The base URL to call and the region (None when only an endpoint is known).

    Raises:
        ConfigError: neither an endpoint nor a region is configured.
    """
    region = config.region or next((env[n] for n in REGION_ENVS if env.get(n)), None)
    endpoint = config.base_url or env.get(ENDPOINT_ENV)
    if endpoint:
        return endpoint.rstrip("/"), region
    if region is None:
        raise ConfigError(
            [f"vendors.{name}.region: is required for type 'bedrock' (or set AWS_REGION)"]
        )
    return f"https://bedrock-runtime.{region}.amazonaws.com", region


def finish_reason(raw: str | None, calls: tuple[Any, ...] = ()) -> FinishReason:
    """Our finish reason for a stop reason; any call makes it a tool turn."""
    if calls:
        return FinishReason.TOOL_CALLS
    if raw is None:
        return FinishReason.STOP
    return FINISH_REASONS.get(raw, FinishReason.ERROR)


def converse_body(request: Request) -> dict[str, Any]:
    """The Converse (and ConverseStream) body for `request`.

    Raises:
        InvalidRequest: a seed, an image by URL, a call whose arguments are no
            object, one call per reply, or no user or assistant message.
    """
    if request.seed is not None:
        raise InvalidRequest(
            "seed: Bedrock has no repeatable sampling; leave seed out for this vendor"
        )
    messages = blocks.wire_messages(request.messages)
    if not messages:
        raise InvalidRequest("Bedrock needs at least one user or assistant message")
    body: dict[str, Any] = {"messages": messages}
    system = blocks.system_blocks(request)
    if system:
        body["system"] = system
    inference: dict[str, Any] = {}
    if request.max_tokens is not None:
        inference["maxTokens"] = request.max_tokens
    if request.temperature is not None:
        inference["temperature"] = request.temperature
    if request.top_p is not None:
        inference["topP"] = request.top_p
    if request.stop:
        inference["stopSequences"] = list(request.stop)
    if inference:
        body["inferenceConfig"] = inference
    tools = blocks.tool_config(request)
    if tools is not None:
        body["toolConfig"] = tools
    output = blocks.output_config(request)
    if output is not None:
        body["outputConfig"] = output
    if request.extra_body:
        body["additionalModelRequestFields"] = dict(request.extra_body)
    return body


def parse_usage(data: Any) -> Usage:
    """Usage from a Converse `usage` object; the prompt includes cache reads and writes."""
    if not isinstance(data, dict):
        return Usage()
    counts = {
        key: int(data.get(key) or 0)
        for key in ("inputTokens", "outputTokens", "cacheReadInputTokens", "cacheWriteInputTokens")
    }
    return Usage(
        prompt_tokens=counts["inputTokens"]
        + counts["cacheReadInputTokens"]
        + counts["cacheWriteInputTokens"],
        completion_tokens=counts["outputTokens"],
        cached_prompt_tokens=counts["cacheReadInputTokens"],
    )


def parse_converse(body: Any, vendor: str = "bedrock") -> ConverseCompletion:
    """A Converse reply: `text` blocks make the text, `toolUse` blocks the calls."""
    if not isinstance(body, dict):
        return ConverseCompletion(text="", finish_reason=FinishReason.ERROR)
    message = _object(_object(body.get("output")).get("message"))
    content = message.get("content")
    items = [b for b in (content if isinstance(content, list) else []) if isinstance(b, dict)]
    text = "".join(str(b["text"]) for b in items if isinstance(b.get("text"), str))
    uses = [_object(b.get("toolUse")) for b in items if "toolUse" in b]
    calls = tuple(
        tool_call(
            use.get("toolUseId"),
            use.get("name"),
            blocks.input_text(use.get("input")),
            vendor=vendor,
            index=index,
        )
        for index, use in enumerate(uses)
    )
    raw = body.get("stopReason")
    return ConverseCompletion(
        text=text,
        finish_reason=finish_reason(raw, calls),
        usage=parse_usage(body.get("usage")),
        vendor_finish_reason=raw,
        tool_calls=calls,
        reasoning=tuple(b for b in items if "reasoningContent" in b),
    )


class ConverseStreamParser(StreamParser):
    """AWS event-stream bytes, framed by `EventStreamDecoder`, from `messageStart` to
    `messageStop` (and the `metadata` after it).

    Items are the body's byte chunks as they arrive, cut anywhere. A tool
    call's input arrives as `toolUse.input` fragments, joined by block index;
    reasoning blocks are rebuilt from their deltas and handed over at the end.
    """

    def __init__(self, vendor: str) -> None:
        super().__init__(vendor)
        self.decoder = EventStreamDecoder(vendor)
        self.stopped = False
        self.raw_finish: str | None = None
        self.usage: Usage | None = None
        self.tool_calls = ToolCallAssembler(vendor)
        self.reasoning: dict[Any, dict[str, Any]] = {}

    def feed(self, item: bytes) -> list[StreamDelta]:
        try:
            messages = self.decoder.feed(item)
        except StreamBroken as exc:
            raise StreamBroken(exc.message, partial=self.text_seen, vendor=self.vendor) from None
        deltas: list[StreamDelta] = []
        for message in messages:
            deltas += self.event(message)
        return deltas

    def event(self, message: EventMessage) -> list[StreamDelta]:
        """The deltas of one decoded message; an exception message raises its error."""
        kind = message.event_type
        if message.message_type != "event":
            raise self._exception(message)
        data = json_or_none(message.payload.decode("utf-8", errors="replace"))
        if not isinstance(data, dict):
            return []
        index = data.get("contentBlockIndex")
        if kind == "contentBlockStart":
            use = _object(_object(data.get("start")).get("toolUse"))
            if use:
                self.tool_calls.add(index, call_id=use.get("toolUseId"), name=use.get("name"))
        elif kind == "contentBlockDelta":
            return self._delta(index, _object(data.get("delta")))
        elif kind == "messageStop":
            self.stopped = True
            self.raw_finish = data.get("stopReason") or self.raw_finish
        elif kind == "metadata" and isinstance(data.get("usage"), dict):
            self.usage = parse_usage(data["usage"])
        return []

    def _delta(self, index: Any, delta: dict[str, Any]) -> list[StreamDelta]:
        if isinstance(delta.get("text"), str):
            return self.text(delta["text"])
        if "toolUse" in delta:
            self.tool_calls.add(index, arguments=_object(delta["toolUse"]).get("input"))
        elif "reasoningContent" in delta:
            self._reason(index, _object(delta["reasoningContent"]))
        return []

    def _reason(self, index: Any, piece: dict[str, Any]) -> None:
        block = self.reasoning.setdefault(index, {})
        if isinstance(piece.get("redactedContent"), str):
            block["redactedContent"] = piece["redactedContent"]
            return
        text = block.setdefault("reasoningText", {})
        if isinstance(piece.get("text"), str):
            text["text"] = str(text.get("text") or "") + piece["text"]
        if isinstance(piece.get("signature"), str):
            text["signature"] = piece["signature"]

    def _exception(self, message: EventMessage) -> DispatcherError:
        data = json_or_none(message.payload.decode("utf-8", errors="replace"))
        text = message_of(data) or str(message.headers.get(":error-message") or "")
        name = message.event_type
        # Event-stream exception names start lower case (`throttlingException`).
        kind = name[:1].upper() + name[1:]
        if self.text_seen:
            text += "; the reply so far is incomplete"
        return classified(kind, 200, f"error inside the stream: {text}", self.vendor, None)

    def finish(self) -> ConverseStreamDelta:
        try:
            self.decoder.close()
        except StreamBroken as exc:
            raise StreamBroken(exc.message, partial=self.text_seen, vendor=self.vendor) from None
        if not self.stopped:
            raise self.broken("messageStop")
        calls = self.tool_calls.calls()
        return ConverseStreamDelta(
            finish_reason=finish_reason(self.raw_finish, calls),
            usage=self.usage,
            vendor_finish_reason=self.raw_finish,
            tool_calls=calls,
            reasoning=tuple({"reasoningContent": b} for b in self.reasoning.values()),
        )


def _object(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one: vendors add and change fields."""
    return value if isinstance(value, dict) else {}


class BedrockVendor(HttpVendor):
    """bedrock-runtime in the configured region, or any endpoint given."""

    request_id_header = "x-amzn-requestid"

    def __init__(
        self,
        name: str,
        config: VendorConfig,
        client: httpx.AsyncClient | None = None,
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        # AWS's own variables are read where AWS's SDKs read them: when the vendor is
        # built (once, at a worker's start); tests pass `env`.
        env = os.environ if env is None else env
        endpoint, region = endpoint_and_region(name, config, env)
        self.region = region
        self.auth: BedrockAuth = bedrock_auth(name, config, env, region or "")
        if isinstance(self.auth, SigV4Auth) and not region:
            raise ConfigError(
                [f"vendors.{name}.region: SigV4 signing needs the region (or set AWS_REGION)"]
            )
        super().__init__(name, config.model_copy(update={"base_url": endpoint}), client)
        self.base_url = endpoint

    def build_request(self, request: Request, model: str, *, stream: bool) -> httpx.Request:
        try:
            body = converse_body(request)
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, vendor=self.name) from None
        action = "converse-stream" if stream else "converse"
        # No Accept header, as AWS's SDKs send none: the action decides JSON or event stream.
        headers = httpx.Headers({"Content-Type": "application/json"})
        headers.update(self.config.headers)
        http_request = httpx.Request(
            "POST",
            self.parsed_url(f"{self.base_url}/model/{path_segment(model)}/{action}"),
            headers=headers,
            content=json.dumps(body).encode(),
        )
        return self.auth.sign(http_request)

    async def _complete(self, request: Request, model: str) -> Response:
        # The shared machinery builds the Response from a Completion, which has no
        # slot for vendor state: the reasoning blocks come through `_REASONING`.
        token = _REASONING.set(())
        try:
            response = await super()._complete(request, model)
            state = blocks.reasoning_state(_REASONING.get())
        finally:
            _REASONING.reset(token)
        return response.model_copy(update={"vendor_state": state}) if state else response

    def parse_response(self, body: Any) -> Completion:
        completion = parse_converse(body, self.name)
        _REASONING.set(completion.reasoning)
        return completion

    def stream_parser(self) -> StreamParser:
        return ConverseStreamParser(self.name)

    async def _items(self, response: httpx.Response) -> AsyncIterator[Any]:
        # The body is binary event-stream frames, not lines: the parser frames them.
        async for chunk in response.aiter_bytes():
            yield chunk

    def classify_error(self, status: int, headers: httpx.Headers, body: str) -> DispatcherError:
        return classify_error(status, headers, body, self.name)

    def health_request(self) -> httpx.Request:
        # bedrock-runtime lists no models (that is the control plane's host): a signed
        # GET of the root answers 404, which the probe reports as "no model list".
        # `health_check: call` probes with a one-token Converse call instead.
        return self.auth.sign(httpx.Request("GET", f"{self.base_url}/"))
