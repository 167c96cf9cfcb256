"""Our responses and stream events in OpenAI's Chat Completions shapes.

`chat_completion` is a `chat.completion` object (batch output lines and the
HTTP front's answers); `ChunkWriter` turns a job's stream events into
`chat.completion.chunk` objects: the role first, then text and tool-call
deltas, then the finish reason, then (when asked) the usage chunk.
Everything ours that OpenAI has no field for rides in `x_llmdispatch`.
"""

from __future__ import annotations

import time
from typing import Any

from dispatcher.models import FinishReason, Response, StreamEvent, ToolCallDelta, Usage

__all__ = ["OPENAI_FINISH_REASONS", "ChunkWriter", "chat_completion", "openai_usage"]

OPENAI_FINISH_REASONS: dict[FinishReason, str] = {
    FinishReason.STOP: "stop",
    FinishReason.LENGTH: "length",
    FinishReason.CONTENT_FILTER: "content_filter",
    FinishReason.TOOL_CALLS: "tool_calls",
}


def completion_id(job_id: str) -> str:
    """The `chatcmpl-` id of a job's completion."""
    return f"chatcmpl-{job_id}"


def openai_usage(usage: Usage) -> dict[str, Any]:
    """Usage in OpenAI's shape, with the cached and reasoning token details."""
    counts: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cached_prompt_tokens:
        counts["prompt_tokens_details"] = {"cached_tokens": usage.cached_prompt_tokens}
    if usage.reasoning_tokens:
        counts["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return counts


def chat_completion(job_id: str, response: Response) -> dict[str, Any]:
    """`response` as an OpenAI chat.completion object (tool calls and token details included)."""
    message: dict[str, Any] = {"role": "assistant", "content": response.content}
    if response.tool_calls:
        message["content"] = response.content or None
        message["tool_calls"] = [call.model_dump() for call in response.tool_calls]
    return {
        "id": completion_id(job_id),
        "object": "chat.completion",
        "created": int(response.created_at.timestamp()),
        "model": response.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": OPENAI_FINISH_REASONS.get(response.finish_reason, "stop"),
            }
        ],
        "usage": openai_usage(response.usage),
        "x_llmdispatch": {
            "job_id": job_id,
            "vendor": response.vendor,
            "cost_usd": response.cost_usd,
            "latency_ms": response.latency_ms,
            # What the next turn's assistant message must carry back (a thought signature).
            **({"vendor_state": response.vendor_state} if response.vendor_state else {}),
        },
    }


class ChunkWriter:
    """One job's stream events as `chat.completion.chunk` objects, in OpenAI's order."""

    def __init__(self, job_id: str, model: str, *, include_usage: bool = False) -> None:
        self.id = completion_id(job_id)
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time())
        self.started = False

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }

    def _delta(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if not self.started:
            delta = {"role": "assistant", **delta}
            self.started = True
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": finish}])

    def chunks(self, event: StreamEvent) -> list[dict[str, Any]]:
        """The chunks a `chunk` or `done` event makes (none for other events)."""
        if event.type == "chunk":
            delta: dict[str, Any] = {}
            if event.delta:
                delta["content"] = event.delta
            if event.tool_calls:
                delta["tool_calls"] = _tool_call_deltas(event.tool_calls)
            return [self._delta(delta)] if delta else []
        if event.type != "done":
            return []
        finish = OPENAI_FINISH_REASONS.get(event.finish_reason or FinishReason.STOP, "stop")
        if event.model:
            self.model = event.model
        out = [self._delta({}, finish)]
        if self.include_usage:
            usage = openai_usage(event.usage or Usage())
            out.append(self._chunk([], usage=usage))
        return out


def _tool_call_deltas(pieces: list[ToolCallDelta]) -> list[dict[str, Any]]:
    """An event's tool-call pieces as OpenAI sends them: one entry per call in a chunk
    (pieces of one call that arrived together are joined), id, type and name with the
    call's first piece only."""
    entries: dict[int, dict[str, Any]] = {}
    for piece in pieces:
        entry = entries.get(piece.index)
        if entry is None:
            entry = entries[piece.index] = {"index": piece.index, "function": {"arguments": ""}}
        if piece.id is not None:
            entry["id"] = piece.id
            entry["type"] = "function"
        if piece.name is not None:
            entry["function"]["name"] = piece.name
        entry["function"]["arguments"] += piece.arguments
    return list(entries.values())
