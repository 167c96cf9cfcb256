"""Bedrock Converse replies: the whole JSON reply, and the event stream of ConverseStream.

Reply: `output.message.content` blocks: `text` joined, `toolUse` as calls
(the `input` object as compact JSON text), `reasoningContent` kept for the
next turn. Usage: `inputTokens` leaves the cache out (the notes' example:
total = input + output + cache reads + writes), so the prompt is all three,
and `cacheReadInputTokens` is `cached_prompt_tokens`.
Stream: AWS event-stream frames (`event_stream`), JSON payloads by
`:event-type`: `messageStart`, `contentBlockStart` (a tool call's id and
name), `contentBlockDelta` (`text`, `toolUse.input` fragments joined by block
index, `reasoningContent`), `contentBlockStop`, `messageStop` (the stop
reason, without which the reply is incomplete) and `metadata` (usage). An
`exception` message is classified as the same error's HTTP reply would be; a
server or model failure is a broken stream.
"""

from __future__ import annotations

from typing import Any

from dispatcher.errors import DispatcherError, StreamBroken, VendorUnavailable
from dispatcher.models import FinishReason, Usage
from dispatcher.vendors import bedrock_blocks as blocks
from dispatcher.vendors.base import Completion, StreamDelta, StreamParser
from dispatcher.vendors.bedrock_errors import classified, message_of
from dispatcher.vendors.event_stream import EventMessage, EventStreamDecoder
from dispatcher.vendors.failures import json_or_none
from dispatcher.vendors.tool_calls import ToolCallAssembler, arguments_text, tool_call

__all__ = [
    "FINISH_REASONS",
    "ConverseStreamParser",
    "finish_reason",
    "parse_converse",
    "parse_usage",
]

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


def finish_reason(raw: str | None, calls: tuple[Any, ...] = ()) -> FinishReason:
    """Our finish reason for a stop reason; any call makes it a tool turn."""
    if calls:
        return FinishReason.TOOL_CALLS
    if raw is None:
        return FinishReason.STOP
    return FINISH_REASONS.get(raw, FinishReason.ERROR)


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


def parse_converse(body: Any, vendor: str = "bedrock") -> Completion:
    """A Converse reply: `text` blocks make the text, `toolUse` blocks the calls, and
    `reasoningContent` blocks (as received) the vendor state."""
    if not isinstance(body, dict):
        return Completion(text="", finish_reason=FinishReason.ERROR)
    message = _object(_object(body.get("output")).get("message"))
    content = message.get("content")
    items = [b for b in (content if isinstance(content, list) else []) if isinstance(b, dict)]
    text = "".join(str(b["text"]) for b in items if isinstance(b.get("text"), str))
    uses = [_object(b.get("toolUse")) for b in items if "toolUse" in b]
    calls = tuple(
        tool_call(
            use.get("toolUseId"),
            use.get("name"),
            arguments_text(use.get("input")),
            vendor=vendor,
            index=index,
        )
        for index, use in enumerate(uses)
    )
    raw = body.get("stopReason")
    return Completion(
        text=text,
        finish_reason=finish_reason(raw, calls),
        usage=parse_usage(body.get("usage")),
        vendor_finish_reason=raw,
        tool_calls=calls,
        vendor_state=blocks.reasoning_state(tuple(b for b in items if "reasoningContent" in b)),
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
        error = classified(kind, 200, f"error inside the stream: {text}", self.vendor, None)
        if type(error) is VendorUnavailable:
            # A server or model failure mid-stream: the stream broke, and is retried with a reset.
            return StreamBroken(error.message, partial=self.text_seen, vendor=self.vendor)
        return error

    def finish(self) -> StreamDelta:
        try:
            self.decoder.close()
        except StreamBroken as exc:
            raise StreamBroken(exc.message, partial=self.text_seen, vendor=self.vendor) from None
        if not self.stopped:
            raise self.broken("messageStop")
        calls = self.tool_calls.calls()
        return StreamDelta(
            finish_reason=finish_reason(self.raw_finish, calls),
            usage=self.usage,
            vendor_finish_reason=self.raw_finish,
            tool_calls=calls,
            vendor_state=blocks.reasoning_state(
                tuple({"reasoningContent": b} for b in self.reasoning.values())
            ),
        )


def _object(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one: vendors add and change fields."""
    return value if isinstance(value, dict) else {}
