"""The AWS Bedrock Converse wire format, server side (`POST /model/{modelId}/converse`).

Written from AWS's API reference (Converse, ConverseStream) and the wire-format
notes' tools page, section 7. `/converse` answers JSON; `/converse-stream`
answers `application/vnd.amazon.eventstream`: binary event-stream messages
(`dispatcher.vendors.event_stream`'s framing, with `:event-type`,
`:content-type` and `:message-type` headers) whose JSON payloads are
`messageStart`, `contentBlockStart` (a tool call's id and name),
`contentBlockDelta`, `contentBlockStop`, `messageStop` and `metadata`, each
with the `p` padding field AWS adds. A mid-stream failure is an `exception`
message (`:exception-type` `modelStreamErrorException`).

Errors are `{"message": ...}` with the type in `x-amzn-ErrorType`
(`ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/`):
429 ThrottlingException, 400 ServiceQuotaExceededException (the quota
fault), 403 AccessDeniedException (a missing or wrong key, and the 401
fault), 404 ResourceNotFoundException, 408 ModelTimeoutException, 500
InternalServerException, 503 ServiceUnavailableException, 400
ValidationException. AWS sends no Retry-After.

Requests are checked as Converse checks them: `messages` alternate from
`user`; blocks are `text` (not blank), `image` (`format` png, jpeg, gif or
webp, `source.bytes` base64), `toolUse` (an object `input`, assistant only),
`toolResult` (user only, answering a call of the message before), and
`reasoningContent` (assistant only, sent back with its signature unchanged);
a history with tool blocks needs `toolConfig`; `toolChoice` is `auto`, `any`
or `tool`; `outputConfig.textFormat` holds the schema as a string. The
answers follow `chat_rules`; a call's id is `tooluse_` + the planned id, its
`input` an object (streamed as `toolUse.input` fragments); a tool result in
`json` is echoed as compact JSON. With
`additionalModelRequestFields.thinking.type` "enabled", a reply opens with a
signed `reasoningContent` block.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from dispatcher.vendors.event_stream import encode_message
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
    ending,
)

__all__ = ["BedrockFormat", "error_type_header"]

_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"
_TYPES = {
    400: "ValidationException",
    401: "AccessDeniedException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_FORMATS = frozenset({"png", "jpeg", "gif", "webp"})
_INFERENCE = frozenset({"maxTokens", "temperature", "topP", "stopSequences"})
_FIELDS = frozenset(
    {
        "messages",
        "system",
        "inferenceConfig",
        "toolConfig",
        "outputConfig",
        "additionalModelRequestFields",
        "additionalModelResponseFieldPaths",
        "guardrailConfig",
        "promptVariables",
        "requestMetadata",
        "performanceConfig",
        "serviceTier",
    }
)
_ACTIONS = ("converse", "converse-stream")
NEEDS_TOOL_CONFIG = (
    "The toolConfig field must be defined when using toolUse and toolResult content blocks."
)


def error_type_header(kind: str) -> str:
    """`x-amzn-ErrorType` as AWS sends it: the type, a colon, the service's namespace."""
    return f"{kind}:{_NAMESPACE}"


def _aws_error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response(
        {"message": message}, status=status, headers={"x-amzn-ErrorType": error_type_header(kind)}
    )


class _Bad(Exception):
    """A request Converse would refuse (a ValidationException), with its message."""


def _signature(text: str) -> str:
    """The stand-in's signature of a reasoning text: proof that it came back unchanged."""
    return "sig_" + hashlib.sha256(text.encode()).hexdigest()[:24]


def _padding(data: Json) -> Json:
    """A payload with the `p` field AWS pads stream events with (so sizes reveal nothing)."""
    return {**data, "p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"[: 1 + len(dumps(data)) % 30]}


def _event(kind: str, data: Json) -> bytes:
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return encode_message(headers, dumps(_padding(data)))


def _exception(kind: str, message: str) -> bytes:
    headers = {
        ":exception-type": kind,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, dumps({"message": message}))


def _object(value: Any) -> Json:
    return value if isinstance(value, dict) else {}


def _check_image(block: Json, where: str) -> None:
    image = _object(block.get("image"))
    if image.get("format") not in _FORMATS:
        raise _Bad(
            f"{where}.image.format: Member must satisfy enum value set: [png, jpeg, gif, webp]"
        )
    source = _object(image.get("source"))
    if "bytes" not in source:
        raise _Bad(f"{where}.image.source: exactly one of bytes or s3Location is required")
    try:
        base64.b64decode(str(source["bytes"]), validate=True)
    except (binascii.Error, ValueError):
        raise _Bad(f"{where}.image.source.bytes: Invalid base64") from None


def _check_block(block: Any, role: str, where: str) -> None:
    """Refuse a block that does not fit its message."""
    if not isinstance(block, dict) or len(block) != 1:
        raise _Bad(f"{where}: a content block has exactly one member")
    kind = next(iter(block))
    allowed = {
        "user": {"text", "image", "toolResult"},
        "assistant": {"text", "toolUse", "reasoningContent"},
    }
    if kind not in allowed[role]:
        raise _Bad(f"{where}: a {kind} block may not be in a {role} message")
    if kind == "text" and not str(block["text"]).strip():
        raise _Bad(f"{where}.text: The text field in the ContentBlock object is blank.")
    if kind == "image":
        _check_image(block, where)
    if kind == "toolUse" and not isinstance(_object(block["toolUse"]).get("input"), dict):
        raise _Bad(f"{where}.toolUse.input: the input must be a JSON object")
    if kind == "reasoningContent":
        text = _object(_object(block["reasoningContent"]).get("reasoningText"))
        if text.get("signature") != _signature(str(text.get("text"))):
            raise _Bad(f"{where}.reasoningContent: the reasoning block's signature is invalid")


def _conversation(messages: Any) -> list[tuple[str, list[Json]]]:
    """The messages as (role, blocks), checked as Converse checks them."""
    if not isinstance(messages, list) or not messages:
        raise _Bad("messages: Member must have length greater than or equal to 1")
    conversation: list[tuple[str, list[Json]]] = []
    asked: list[str] = []
    for index, raw in enumerate(messages):
        message = _object(raw)
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise _Bad(
                f"messages.{index}.role: Member must satisfy enum value set: [user, assistant]"
            )
        expected = "user" if index % 2 == 0 else "assistant"
        if role != expected:
            raise _Bad(
                "A conversation must alternate between user and assistant roles, "
                "starting with a user message."
            )
        content = message.get("content")
        if not isinstance(content, list) or not content:
            raise _Bad(
                f"messages.{index}.content: Member must have length greater than or equal to 1"
            )
        for number, block in enumerate(content):
            _check_block(block, role, f"messages.{index}.content.{number}")
        results = [
            str(_object(b.get("toolResult")).get("toolUseId")) for b in content if "toolResult" in b
        ]
        unasked = [r for r in results if r not in asked]
        if unasked or (asked and role == "user" and sorted(results) != sorted(asked)):
            raise _Bad(
                f"messages.{index}: the toolResult blocks must answer exactly the toolUse blocks "
                f"of the previous turn ({', '.join(asked) or 'none'})"
            )
        asked = [str(_object(b.get("toolUse")).get("toolUseId")) for b in content if "toolUse" in b]
        conversation.append((role, content))
    return conversation


def _declared(body: Json) -> tuple[tuple[tuple[str, Json], ...], str | None]:
    """The declared tools (name, schema) and the choice in `chat_rules`' terms."""
    config = body.get("toolConfig")
    if config is None:
        return (), None
    tools = _object(config).get("tools")
    if not isinstance(tools, list) or not tools:
        raise _Bad("toolConfig.tools: Member must have length greater than or equal to 1")
    declared = []
    for index, tool in enumerate(tools):
        spec = _object(_object(tool).get("toolSpec"))
        schema = _object(spec.get("inputSchema")).get("json")
        if not isinstance(spec.get("name"), str) or not isinstance(schema, dict):
            raise _Bad(
                f"toolConfig.tools.{index}.toolSpec: a name and inputSchema.json are required"
            )
        declared.append((str(spec["name"]), dict(schema)))
    choice = _object(config).get("toolChoice")
    if choice is None:
        return tuple(declared), "auto"
    kind = next(iter(_object(choice)), None)
    if kind == "tool":
        name = _object(choice["tool"]).get("name")
        if name not in dict(declared):
            raise _Bad(f"toolConfig.toolChoice.tool.name: {name!r} is not a declared tool")
        return tuple(declared), str(name)
    if kind not in ("auto", "any"):
        raise _Bad("toolConfig.toolChoice: exactly one of auto, any or tool is required")
    return tuple(declared), "auto" if kind == "auto" else "required"


def _schema(body: Json) -> Json | None:
    """The json_schema of `outputConfig.textFormat` (a string on the wire), or None."""
    fmt = _object(body.get("outputConfig")).get("textFormat")
    if fmt is None:
        return None
    definition = _object(_object(_object(fmt).get("structure")).get("jsonSchema"))
    if _object(fmt).get("type") != "json_schema" or not isinstance(definition.get("schema"), str):
        raise _Bad(
            "outputConfig.textFormat: a json_schema type and structure.jsonSchema.schema "
            "(a string) are required"
        )
    try:
        schema = json.loads(definition["schema"])
    except ValueError:
        raise _Bad(
            "outputConfig.textFormat.structure.jsonSchema.schema: is not valid JSON"
        ) from None
    if not isinstance(schema, dict):
        raise _Bad("outputConfig.textFormat.structure.jsonSchema.schema: must be a JSON object")
    return schema


def _text(blocks: list[Json]) -> str:
    """The text of a message's blocks for the answer and the token count (results included)."""
    parts = []
    for block in blocks:
        if "text" in block:
            parts.append(str(block["text"]))
        elif "toolResult" in block:
            parts.append(_result_text(block))
    return "\n".join(parts)


def _result_text(block: Json) -> str:
    content = _object(block.get("toolResult")).get("content")
    parts = []
    for item in content if isinstance(content, list) else []:
        if "json" in _object(item):
            parts.append(json.dumps(item["json"], separators=(",", ":")))
        elif "text" in _object(item):
            parts.append(str(item["text"]))
    return "\n".join(parts)


def _chat_ask(body: Json, conversation: list[tuple[str, list[Json]]]) -> ChatAsk:
    declared, choice = _declared(body)
    tool_blocks = any("toolUse" in b or "toolResult" in b for _, bs in conversation for b in bs)
    if not declared and tool_blocks:
        raise _Bad(NEEDS_TOOL_CONFIG)
    role, blocks = conversation[-1]
    results = [b for b in blocks if "toolResult" in b]
    # The prompt: the last user message that answers no call.
    prompt = next(
        (
            _text(bs)
            for r, bs in reversed(conversation)
            if r == "user" and not any("toolResult" in b for b in bs)
        ),
        "",
    )
    return ChatAsk(
        tools=declared,
        tool_choice=choice,
        last_role="tool" if results else role,
        last_text=_result_text(results[-1]) if results else _text(blocks),
        prompt=prompt,
        images=sum(1 for b in blocks if "image" in b) if role == "user" else 0,
        json_schema=_schema(body),
    )


def _inference(body: Json) -> tuple[int | None, list[str]]:
    config = _object(body.get("inferenceConfig"))
    unknown = sorted(set(config) - _INFERENCE)
    if unknown:
        raise _Bad(f"inferenceConfig: unknown field {unknown[0]!r}")
    max_tokens = config.get("maxTokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise _Bad("inferenceConfig.maxTokens: Member must have value greater than or equal to 1")
    stops = config.get("stopSequences") or []
    return max_tokens, [str(s) for s in stops]


@dataclass(frozen=True)
class _ConverseCall(Call):
    """A call with what only Converse has here: whether reasoning is on."""

    thinking: bool = False


def _thinking_on(body: Json) -> bool:
    thinking = _object(_object(body.get("additionalModelRequestFields")).get("thinking"))
    return thinking.get("type") == "enabled"


def _reasoning_block(call: Call) -> Json | None:
    if not isinstance(call, _ConverseCall) or not call.thinking:
        return None
    text = f"The user asks: {call.ask.prompt}"
    return {"reasoningContent": {"reasoningText": {"text": text, "signature": _signature(text)}}}


def _tool_use_id(planned_id: str) -> str:
    return "tooluse_" + planned_id.removeprefix("call_")


class BedrockFormat(WireFormat):
    """Bedrock's Converse and ConverseStream."""

    vendor = "bedrock"
    request_id_header = "x-amzn-RequestId"

    def error(self, status: int, message: str, *, retry_after_s: float) -> web.Response:
        kind = _TYPES.get(status) or (
            "InternalServerException" if status >= 500 else "ValidationException"
        )
        # AWS answers a bad key with a 403; the stand-in's 401 fault says the same.
        return _aws_error(403 if status == 401 else status, kind, message)

    def injected(self, fault: Fault, retry_after_s: float) -> web.Response:
        if fault.quota:
            message = f"Your request exceeds the service quota for your account. {INJECTED}"
            return _aws_error(400, "ServiceQuotaExceededException", message)
        status = fault.status or 500
        messages = {
            401: "You don't have access to the model with the specified model ID.",
            403: "You don't have access to the model with the specified model ID.",
            429: "Too many requests, please wait before trying again.",
            503: "Bedrock is unable to process your request.",
        }
        text = f"{messages.get(status, f'HTTP {status}')} {INJECTED}"
        return self.error(status, text, retry_after_s=retry_after_s)

    def parse(self, request: web.Request, body: Json) -> Call:
        action = request.match_info.get("action", "")
        if action not in _ACTIONS:
            raise Refused(
                _aws_error(404, "UnknownOperationException", f"unknown operation {action!r}")
            )
        try:
            unknown = sorted(set(body) - _FIELDS)
            if unknown:
                raise _Bad(f"{unknown[0]}: extraneous key [{unknown[0]}] is not permitted")
            conversation = _conversation(body.get("messages"))
            ask = _chat_ask(body, conversation)
            max_tokens, stop = _inference(body)
        except _Bad as bad:
            raise Refused(self.error(400, str(bad), retry_after_s=0)) from None
        system = [str(b.get("text")) for b in body.get("system") or [] if "text" in _object(b)]
        messages = [("system", text) for text in system]
        messages += [(role, _text(blocks)) for role, blocks in conversation]
        return _ConverseCall(
            model=request.match_info.get("model", "bedrock"),
            messages=messages,
            stream=action == "converse-stream",
            max_tokens=max_tokens,
            stop=stop,
            ask=ask,
            thinking=_thinking_on(body),
        )

    @staticmethod
    def _reason(reply: Reply) -> str:
        # Converse's stop reasons are Anthropic's.
        return ending(reply, tool="tool_use", length="max_tokens", stop="stop_sequence",
                      end="end_turn")  # fmt: skip

    @staticmethod
    def _usage(reply: Reply) -> Json:
        return {
            "inputTokens": reply.prompt_tokens,
            "outputTokens": reply.completion_tokens,
            "totalTokens": reply.total_tokens,
        }

    def whole(self, call: Call, reply: Reply, request_id: str) -> Json:
        content: list[Json] = []
        reasoning = _reasoning_block(call)
        if reasoning is not None:
            content.append(reasoning)
        planned = reply.tool_call
        if planned is None:
            content.append({"text": reply.text})
        else:
            use = {"toolUseId": _tool_use_id(planned.id), "name": planned.name}
            content.append({"toolUse": {**use, "input": json.loads(planned.arguments)}})
        return {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": self._reason(reply),
            "usage": self._usage(reply),
            "metrics": {"latencyMs": 1},
        }

    def stream(self, call: Call, reply: Reply, request_id: str) -> Stream:
        opening = _event("messageStart", {"role": "assistant"})
        index = 0
        reasoning = _reasoning_block(call)
        if reasoning is not None:
            text = reasoning["reasoningContent"]["reasoningText"]
            for piece in ({"text": text["text"]}, {"signature": text["signature"]}):
                delta = {"contentBlockIndex": index, "delta": {"reasoningContent": piece}}
                opening += _event("contentBlockDelta", delta)
            opening += _event("contentBlockStop", {"contentBlockIndex": index})
            index += 1
        planned = reply.tool_call
        if planned is None:
            deltas: list[Json] = [{"text": chunk} for chunk in reply.chunks]
        else:
            start = {"toolUse": {"toolUseId": _tool_use_id(planned.id), "name": planned.name}}
            opening += _event("contentBlockStart", {"contentBlockIndex": index, "start": start})
            deltas = [{"toolUse": {"input": piece}} for piece in argument_pieces(planned.arguments)]
        events = [
            _event("contentBlockDelta", {"contentBlockIndex": index, "delta": delta})
            for delta in deltas
        ]
        closing = (
            _event("contentBlockStop", {"contentBlockIndex": index})
            + _event("messageStop", {"stopReason": self._reason(reply)})
            + _event("metadata", {"usage": self._usage(reply), "metrics": {"latencyMs": 1}})
        )
        error = _exception(
            "modelStreamErrorException", f"The model stream was interrupted {INJECTED}"
        )
        return Stream(
            opening=opening,
            events=events,
            closing=closing,
            error=error,
            content_type="application/vnd.amazon.eventstream",
        )
