"""The chat surface in Gemini's native form: parts, function calls, tools and JSON output.

Request side (the wire-format notes' tools page, section 4): a message becomes a
`contents` entry of parts. User text is `text`; an image is `inlineData` (the
base64 of a data URL) or `fileData` (an https URL, which Google fetches, with
the MIME type its extension names). An assistant turn is a `model` content:
its text, then one `functionCall` part per tool call (`args` the parsed
object). Consecutive `tool` messages become one `user` content of
`functionResponse` parts in call order, each named after the call it answers
and holding `{"output": <the result parsed as JSON, else its text>}`. Tools
are one `functionDeclarations` entry (schemas passed through as
`parametersJsonSchema`), the tool choice is `toolConfig.functionCallingConfig`,
a JSON format is `responseMimeType` plus `responseJsonSchema`, and the seed
goes to `generationConfig.seed`. Gemini has no switch for one call per
reply, so `parallel_tool_calls: false` is refused rather than ignored.

Reply side (`PartReader`): text parts (thoughts skipped) make the text,
`functionCall` parts our `ToolCall`s. Gemini rarely gives a call an id, so one
is minted, `call_<responseId>_<n>` (n counts the reply's calls), and the call's
name is found again from it when the result goes back. Thought signatures ride
beside a part; they are kept in `vendor_state` under "gemini":
`{"signatures": {call id: signature}, "text_signature": ..., "ids": [...]}`
(`ids`: the call ids Gemini gave itself, which go back as `functionCall.id`
and `functionResponse.id`), and put back on the same calls' parts next turn,
which Gemini 3 requires of the current turn's function calls.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from dispatcher.errors import InvalidRequest, InvalidVendorOutput
from dispatcher.models import (
    ImagePart,
    JsonObjectFormat,
    JsonSchemaFormat,
    Message,
    NamedToolChoice,
    Request,
    Role,
    ToolCall,
)
from dispatcher.vendors.tool_calls import arguments_text, tool_call

__all__ = [
    "GEMINI_IMAGE_TYPES",
    "STATE_KEY",
    "PartReader",
    "contents",
    "format_config",
    "image_part",
    "tool_fields",
]

# Where our `vendor_state` keeps Gemini's part of a turn (other vendors use their own keys).
STATE_KEY = "gemini"
# The image types Gemini reads (GIF is not among them).
GEMINI_IMAGE_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"}
)
_EXTENSION_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".heif": "image/heif",
}
_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}


def image_part(url: str) -> dict[str, Any]:
    """An image URL as Gemini's part: `inlineData` for a data URL, else `fileData`.

    Raises:
        InvalidRequest: a type Gemini does not read, or an https URL whose type its
            path does not name (Gemini needs the MIME type beside the URL).
    """
    if url[:5].lower() == "data:":
        header, _, data = url.partition(",")
        media_type = header[len("data:") : -len(";base64")].lower()
        if media_type not in GEMINI_IMAGE_TYPES:
            raise InvalidRequest(
                f"gemini does not read {media_type} images; send PNG, JPEG or WEBP"
            )
        return {"inlineData": {"mimeType": media_type, "data": data}}
    path = urlsplit(url).path.lower()
    guessed = next((t for ext, t in _EXTENSION_TYPES.items() if path.endswith(ext)), None)
    if guessed is None:
        raise InvalidRequest(
            "gemini needs an image URL's type, and this URL's path does not end in "
            f".png, .jpg, .jpeg, .webp, .heic or .heif ({url[:80]}); send it as a data URL"
        )
    return {"fileData": {"mimeType": guessed, "fileUri": url}}


def _state(message: Message) -> dict[str, Any]:
    state = (message.vendor_state or {}).get(STATE_KEY)
    return state if isinstance(state, dict) else {}


def _user_parts(message: Message) -> list[dict[str, Any]]:
    content = message.content
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    return [
        image_part(part.image_url.url) if isinstance(part, ImagePart) else {"text": part.text}
        for part in content
    ]


def _call_args(call: ToolCall) -> dict[str, Any]:
    try:
        args = call.parsed_arguments()
    except InvalidVendorOutput:
        args = None
    if not isinstance(args, dict):
        raise InvalidRequest(
            f"tool call {call.id!r} ({call.name}) must have a JSON object as arguments: "
            "gemini sends them back as an object"
        )
    return args


def _model_parts(message: Message, native_ids: set[str]) -> list[dict[str, Any]]:
    """An assistant message as the model's parts, signatures back where they came."""
    state = _state(message)
    signatures = state.get("signatures")
    signatures = signatures if isinstance(signatures, dict) else {}
    text_signature = state.get("text_signature")
    parts: list[dict[str, Any]] = []
    if message.content is not None:
        parts.append({"text": message.text})
    for call in message.tool_calls or ():
        function: dict[str, Any] = {"name": call.name, "args": _call_args(call)}
        if call.id in native_ids:
            function["id"] = call.id
        part: dict[str, Any] = {"functionCall": function}
        if isinstance(signatures.get(call.id), str):
            part["thoughtSignature"] = signatures[call.id]
        parts.append(part)
    if isinstance(text_signature, str):
        if parts and "text" in parts[0]:
            parts[0]["thoughtSignature"] = text_signature
        else:  # it came on a part of its own, with no text
            parts.append({"text": "", "thoughtSignature": text_signature})
    return parts


def _function_response(message: Message, names: dict[str, str], native_ids: set[str]) -> Any:
    call_id = message.tool_call_id or ""
    text = message.text
    try:
        output: Any = json.loads(text)
    except ValueError:
        output = text
    response: dict[str, Any] = {"name": names[call_id], "response": {"output": output}}
    if call_id in native_ids:
        response["id"] = call_id
    return {"functionResponse": response}


def contents(request: Request) -> list[dict[str, Any]]:
    """The request's non-system messages as Gemini's `contents`."""
    names: dict[str, str] = {}  # call id -> function name, for the results
    native_ids: set[str] = set()
    for message in request.messages:
        for call in message.tool_calls or ():
            names[call.id] = call.name
        ids = _state(message).get("ids")
        if isinstance(ids, list):
            native_ids.update(i for i in ids if isinstance(i, str))
    result: list[dict[str, Any]] = []
    answers: list[dict[str, Any]] | None = None  # the open user content of results
    for message in request.messages:
        if message.role is Role.SYSTEM:
            continue
        if message.role is Role.TOOL:
            if answers is None:
                answers = []
                result.append({"role": "user", "parts": answers})
            answers.append(_function_response(message, names, native_ids))
            continue
        answers = None
        if message.role is Role.ASSISTANT:
            result.append({"role": "model", "parts": _model_parts(message, native_ids)})
        else:
            result.append({"role": "user", "parts": _user_parts(message)})
    return result


def tool_fields(request: Request) -> dict[str, Any]:
    """`tools` (one entry of `functionDeclarations`) and `toolConfig`, when the request has them.

    Raises:
        InvalidRequest: `parallel_tool_calls` is false, which Gemini cannot promise.
    """
    fields: dict[str, Any] = {}
    if request.parallel_tool_calls is False:
        raise InvalidRequest(
            "gemini has no switch for one tool call per reply (parallel_tool_calls: false); "
            "leave parallel_tool_calls out, or route to a vendor that has one"
        )
    if request.tools:
        declarations = []
        for tool in request.tools:
            function = tool.function
            declaration: dict[str, Any] = {"name": function.name}
            if function.description is not None:
                declaration["description"] = function.description
            if function.parameters is not None:
                declaration["parametersJsonSchema"] = function.parameters
            declarations.append(declaration)
        fields["tools"] = [{"functionDeclarations": declarations}]
    choice = request.tool_choice
    if isinstance(choice, NamedToolChoice):
        config = {"mode": "ANY", "allowedFunctionNames": [choice.function.name]}
        fields["toolConfig"] = {"functionCallingConfig": config}
    elif choice is not None and request.tools:
        fields["toolConfig"] = {"functionCallingConfig": {"mode": _MODES[choice]}}
    return fields


def format_config(request: Request) -> dict[str, Any]:
    """The `generationConfig` fields of the response format and the seed."""
    config: dict[str, Any] = {}
    fmt = request.response_format
    if isinstance(fmt, JsonObjectFormat | JsonSchemaFormat):
        config["responseMimeType"] = "application/json"
    if isinstance(fmt, JsonSchemaFormat):
        config["responseJsonSchema"] = fmt.json_schema.schema_
    if request.seed is not None:
        config["seed"] = request.seed
    return config


def _minted_id(response_id: str | None, index: int, name: Any, args: Any) -> str:
    if response_id:
        return f"call_{response_id}_{index}"
    # No responseId: the call itself names it, the same each time it is read.
    digest = hashlib.sha256(json.dumps([name, args], sort_keys=True).encode()).hexdigest()
    return f"call_{digest[:12]}_{index}"


@dataclass
class PartReader:
    """Reads a reply's parts, whole or chunk by chunk: its text, calls and thought signatures."""

    vendor: str
    calls: list[ToolCall] = field(default_factory=list)
    signatures: dict[str, str] = field(default_factory=dict)
    native_ids: list[str] = field(default_factory=list)
    text_signature: str | None = None

    def add(self, parts: list[dict[str, Any]], response_id: Any = None) -> str:
        """Take `parts` in; the answer's text among them (thought summaries are not)."""
        text: list[str] = []
        for part in parts:
            signature = part.get("thoughtSignature")
            function = part.get("functionCall")
            if isinstance(function, dict):
                call = self._call(function, str(response_id) if response_id else None)
                self.calls.append(call)
                if isinstance(signature, str) and signature:
                    self.signatures[call.id] = signature
                continue
            if "text" in part and part.get("thought") is not True:
                text.append(str(part["text"]))
            if isinstance(signature, str) and signature:
                self.text_signature = signature
        return "".join(text)

    def _call(self, function: dict[str, Any], response_id: str | None) -> ToolCall:
        index = len(self.calls)
        args = function.get("args")
        if args is None:
            args = {}  # the minted id is of the arguments as sent: `{}` when none came
        native = function.get("id")
        call_id = (
            str(native) if native else _minted_id(response_id, index, function.get("name"), args)
        )
        if native:
            self.native_ids.append(call_id)
        arguments = arguments_text(args)
        return tool_call(call_id, function.get("name"), arguments, vendor=self.vendor, index=index)

    def vendor_state(self) -> dict[str, Any] | None:
        """What the next turn must hand back, under `STATE_KEY`; None when there is nothing."""
        state: dict[str, Any] = {}
        if self.signatures:
            state["signatures"] = dict(self.signatures)
        if self.text_signature is not None:
            state["text_signature"] = self.text_signature
        if self.native_ids:
            state["ids"] = list(self.native_ids)
        return {STATE_KEY: state} if state else None
