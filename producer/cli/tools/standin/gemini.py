"""The Google Gemini wire format, server side (`POST /v1beta/models/{model}:{method}`).

Per the wire-format notes' section 4: roles are `user` and `model` (anything else
is a 400), `systemInstruction` holds the system text, streaming is
`:streamGenerateContent?alt=sse` with CRLF-separated events and cumulative
`usageMetadata`; errors are `{"error": {"code", "message", "status", "details"}}`,
a rejected key is a 400 `API_KEY_INVALID`, and a 429 says its wait in a
`RetryInfo` detail.

Tools, function results, JSON output and images (the tools page, section 4)
are read into `chat_rules`' answers: `tools[].functionDeclarations[]` (schema
in `parametersJsonSchema`, or `parameters` in the OpenAPI dialect, never
both), `toolConfig.functionCallingConfig` (`AUTO`, `NONE`, `ANY` with
`allowedFunctionNames` only under `ANY`), `functionResponse` parts (a `name`
and an object `response`, as many as the calls they answer), `inlineData` and
`fileData` image parts (PNG, JPEG, WEBP, HEIC, HEIF, each with its
`mimeType`), and `generationConfig.responseMimeType` "application/json" with
`responseJsonSchema` or `responseSchema` (not both). A call comes back as a
`functionCall` part (args an object, no id, finish reason `STOP`), whole in one
chunk when streamed, with a `thoughtSignature` beside it, as Gemini 3 sends.
As Gemini 3 does, a request whose current turn (from the latest user content
that is not only function responses) holds a model content whose first
`functionCall` part lacks the signature it was given is refused with a 400.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from aiohttp import web

from producer.cli.tools.standin.chat_rules import ChatAsk, PlannedCall
from producer.cli.tools.standin.faults import Fault
from producer.cli.tools.standin.replies import (
    INJECTED,
    Call,
    Json,
    Refused,
    Reply,
    Stream,
    WireFormat,
    as_list,
    cumulative_words,
    dumps,
)

__all__ = ["GeminiFormat"]

_RPC_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_TYPE = "type.googleapis.com/google.rpc."
_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})
_MODES = frozenset({"AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"})
# The observed wording of Gemini 3's refusal of a call sent back without its signature.
MISSING_SIGNATURE = (
    "Function call is missing a thought_signature in functionCall parts. This is required "
    "for tools to work correctly, and missing thought_signature may lead to degraded model "
    "performance. Additional data, function call `default_api:{name}` , position {position}. "
    "Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
)


def _error(status: int, rpc: str, message: str, details: list[Json] | None = None) -> web.Response:
    body = {"error": {"code": status, "message": message, "status": rpc, "details": details or []}}
    return web.json_response(body, status=status)


def _event(data: Json) -> bytes:
    return b"data: " + dumps(data) + b"\r\n\r\n"


def _invalid(message: str) -> Refused:
    return Refused(_error(400, "INVALID_ARGUMENT", message))


def thought_signature(name: str, args: Any) -> str:
    """The signature the stand-in puts beside its call of `name` with `args` (deterministic)."""
    seed = json.dumps([name, args], sort_keys=True, separators=(",", ":"))
    return base64.b64encode(hashlib.sha256(f"standin:{seed}".encode()).digest()).decode()


def _parts(content: Any) -> list[Json]:
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _is_results(content: Json) -> bool:
    """True for a user content of function responses only (it does not start a turn)."""
    parts = _parts(content)
    return bool(parts) and all("functionResponse" in p for p in parts)


def _openapi_to_json_schema(schema: Any) -> Any:
    """A `parameters`/`responseSchema` (OpenAPI dialect: `type: "STRING"`) in lower case."""
    if isinstance(schema, list):
        return [_openapi_to_json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {
        key: value.lower()
        if key == "type" and isinstance(value, str)
        else _openapi_to_json_schema(value)
        for key, value in schema.items()
    }


def _declared_tools(body: Json) -> tuple[tuple[str, Json], ...]:
    tools = body.get("tools")
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise _invalid("Invalid value at 'tools': expected a list of Tool.")
    declared = []
    for tool in tools:
        for index, function in enumerate((tool or {}).get("functionDeclarations") or []):
            name = function.get("name") if isinstance(function, dict) else None
            if not isinstance(name, str) or not name:
                raise _invalid(f"* tools[0].function_declarations[{index}].name: Name is empty.")
            if "parameters" in function and "parametersJsonSchema" in function:
                raise _invalid(
                    f"tools[0].function_declarations[{index}]: parameters and "
                    "parameters_json_schema are mutually exclusive."
                )
            schema = function.get("parametersJsonSchema")
            if schema is None:
                schema = _openapi_to_json_schema(function.get("parameters"))
            declared.append((name, schema if isinstance(schema, dict) else {}))
    return tuple(declared)


def _tool_choice(body: Json, declared: tuple[tuple[str, Json], ...]) -> str | None:
    config = (body.get("toolConfig") or {}).get("functionCallingConfig")
    if not isinstance(config, dict):
        return None
    mode = config.get("mode", "AUTO")
    if mode not in _MODES:
        raise _invalid(f"Invalid value at 'tool_config.function_calling_config.mode' ({mode!r})")
    allowed = config.get("allowedFunctionNames")
    if allowed is not None and mode != "ANY":
        raise _invalid(
            "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names"
            ": only allowed when mode is ANY."
        )
    names = dict(declared)
    unknown = [name for name in allowed or () if name not in names]
    if unknown:
        raise _invalid(f"allowed_function_names {unknown[0]!r} is not a declared function.")
    if mode == "NONE":
        return "none"
    if mode == "ANY":
        return str(allowed[0]) if allowed else "required"
    return "auto"


def _check_calls_answered(contents: list[Json]) -> None:
    """Each function-call turn is answered by as many `functionResponse` parts, each named."""
    for index, content in enumerate(contents):
        for part in _parts(content):
            response = part.get("functionResponse")
            if response is None:
                continue
            if not isinstance(response, dict) or not response.get("name"):
                raise _invalid(f"* contents[{index}]: function_response.name: Name is empty.")
            if not isinstance(response.get("response"), dict):
                raise _invalid(f"* contents[{index}]: function_response.response must be a Struct.")
        calls = sum(1 for p in _parts(content) if "functionCall" in p)
        following = contents[index + 1] if index + 1 < len(contents) else None
        if content.get("role") != "model" or not calls or following is None:
            continue
        answers = sum(1 for p in _parts(following) if "functionResponse" in p)
        if answers != calls:
            raise _invalid(
                "Please ensure that the number of function response parts is equal to the "
                "number of function call parts of the function call turn."
            )


def _check_signatures(contents: list[Json]) -> None:
    """Gemini 3: the current turn's calls carry the signatures they were given."""
    start = max(
        (
            i
            for i, c in enumerate(contents)
            if c.get("role", "user") == "user" and not _is_results(c)
        ),
        default=0,
    )
    for index in range(start, len(contents)):
        if contents[index].get("role") != "model":
            continue
        calls = [p for p in _parts(contents[index]) if isinstance(p.get("functionCall"), dict)]
        if not calls:
            continue
        first = calls[0]
        function = first["functionCall"]
        expected = thought_signature(str(function.get("name")), function.get("args") or {})
        signature = first.get("thoughtSignature")
        if signature is None:
            position = _parts(contents[index]).index(first) + 1
            message = MISSING_SIGNATURE.format(name=function.get("name"), position=position)
            raise _invalid(message)
        if signature != expected:
            raise _invalid(f"Corrupted thought signature in contents[{index}].")


def _images(content: Json, index: int) -> int:
    count = 0
    for part in _parts(content):
        blob = part.get("inlineData") or part.get("fileData")
        if blob is None:
            continue
        kind = "inline_data" if "inlineData" in part else "file_data"
        mime = blob.get("mimeType") if isinstance(blob, dict) else None
        if not mime:
            raise _invalid(f"* contents[{index}].parts.{kind}.mime_type: Mime type is required.")
        if mime not in _IMAGE_TYPES:
            raise _invalid(f"Unsupported MIME type: {mime}")
        if kind == "inline_data":
            try:
                base64.b64decode(str(blob.get("data") or ""), validate=True)
            except (binascii.Error, ValueError):
                raise _invalid(
                    f"Invalid value at 'contents[{index}].parts.inline_data.data' (TYPE_BYTES), "
                    "Base64 decoding failed"
                ) from None
        elif not str(blob.get("fileUri") or "").startswith(("https://", "files/")):
            raise _invalid(f"* contents[{index}].parts.file_data.file_uri: Invalid file URI.")
        count += 1
    return count


def _response_schema(config: Json) -> tuple[Json | None, bool]:
    """The JSON schema asked for, and whether JSON is asked for at all."""
    json_schema, open_schema = config.get("responseJsonSchema"), config.get("responseSchema")
    if json_schema is not None and open_schema is not None:
        raise _invalid("response_schema and response_json_schema are mutually exclusive.")
    schema = json_schema if json_schema is not None else _openapi_to_json_schema(open_schema)
    wants_json = config.get("responseMimeType") == "application/json"
    if schema is not None and not wants_json:
        raise _invalid(
            "response_mime_type: application/json is required when a response schema is set."
        )
    return (schema if isinstance(schema, dict) else None), wants_json


def _result_text(content: Json) -> str:
    """The last function response's output, as text."""
    responses = [p["functionResponse"] for p in _parts(content) if "functionResponse" in p]
    response = responses[-1].get("response") or {}
    output = response.get("output", response)
    return output if isinstance(output, str) else json.dumps(output, separators=(",", ":"))


def _text(content: Json) -> str:
    return "".join(str(p.get("text", "")) for p in _parts(content) if p.get("thought") is not True)


def _chat_ask(body: Json, contents: list[Json]) -> ChatAsk:
    """What of the body shapes the answer (`chat_rules`), checked as Gemini checks it."""
    declared = _declared_tools(body)
    choice = _tool_choice(body, declared)
    _check_calls_answered(contents)
    _check_signatures(contents)
    images = [_images(content, index) for index, content in enumerate(contents)]
    schema, wants_json = _response_schema(body.get("generationConfig") or {})
    last = contents[-1] if contents else {}
    last_role = "assistant" if last.get("role") == "model" else "user"
    if _is_results(last):
        last_role = "tool"
    prompt = next(
        (
            _text(c)
            for c in reversed(contents)
            if c.get("role", "user") == "user" and not _is_results(c)
        ),
        "",
    )
    return ChatAsk(
        tools=declared,
        tool_choice=choice,
        last_role=last_role,
        last_text=_result_text(last) if last_role == "tool" else _text(last),
        prompt=prompt,
        images=images[-1] if images and last_role == "user" else 0,
        json_schema=schema,
        json_object=wants_json and schema is None,
    )


def _call_part(call: PlannedCall) -> Json:
    args = json.loads(call.arguments)
    return {
        "functionCall": {"name": call.name, "args": args},
        "thoughtSignature": thought_signature(call.name, args),
    }


def _reply_parts(reply: Reply, text: str) -> list[Json]:
    return [_call_part(reply.tool_call)] if reply.tool_call is not None else [{"text": text}]


class GeminiFormat(WireFormat):
    """Gemini's generateContent and streamGenerateContent."""

    vendor = "gemini"

    def error(self, status: int, message: str, *, retry_after_s: float) -> web.Response:
        rpc = _RPC_STATUS.get(status) or ("UNAVAILABLE" if status >= 500 else "INVALID_ARGUMENT")
        details = []
        if status == 429:
            details = [{"@type": f"{_TYPE}RetryInfo", "retryDelay": f"{retry_after_s:g}s"}]
        return _error(status, rpc, message, details)

    def injected(self, fault: Fault, retry_after_s: float) -> web.Response:
        if fault.quota:
            violation = {"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}
            details = [{"@type": f"{_TYPE}QuotaFailure", "violations": [violation]}]
            return _error(429, "RESOURCE_EXHAUSTED", f"Quota exceeded {INJECTED}", details)
        status = fault.status or 500
        if status == 401:
            details = [{"@type": f"{_TYPE}ErrorInfo", "reason": "API_KEY_INVALID"}]
            return _error(400, "INVALID_ARGUMENT", f"API key not valid. {INJECTED}", details)
        messages = {
            429: "Resource has been exhausted",
            500: "An internal error has occurred.",
            503: "The model is overloaded.",
        }
        message = f"{messages.get(status, f'HTTP {status}')} {INJECTED}"
        return self.error(status, message, retry_after_s=retry_after_s)

    def parse(self, request: web.Request, body: Json) -> Call:
        model, _, method = request.match_info["target"].partition(":")
        contents = body.get("contents") or []
        if any(c.get("role") not in ("user", "model", None) for c in contents):
            raise Refused(_error(400, "INVALID_ARGUMENT", "Please use a valid role: user, model."))
        stream = method == "streamGenerateContent"
        if stream and request.query.get("alt") != "sse":
            problem = "this stand-in streams only with alt=sse"
            raise Refused(_error(400, "INVALID_ARGUMENT", problem))
        config = body.get("generationConfig") or {}
        system = (body.get("systemInstruction") or {}).get("parts") or []
        return Call(
            model=model,
            messages=[("system", p.get("text", "")) for p in system]
            + [
                (
                    "tool"
                    if _is_results(c)
                    else "user"
                    if c.get("role", "user") == "user"
                    else "assistant",
                    _result_text(c) if _is_results(c) else _text(c),
                )
                for c in contents
            ],
            stream=stream,
            max_tokens=config.get("maxOutputTokens"),
            stop=as_list(config.get("stopSequences")),
            ask=_chat_ask(body, contents),
        )

    @staticmethod
    def _usage(reply: Reply, completion: int) -> Json:
        return {
            "promptTokenCount": reply.prompt_tokens,
            "candidatesTokenCount": completion,
            "totalTokenCount": reply.prompt_tokens + completion,
        }

    @staticmethod
    def _finish(reply: Reply) -> str:
        return "MAX_TOKENS" if reply.truncated else "STOP"

    def whole(self, call: Call, reply: Reply, request_id: str) -> Json:
        candidate = {
            "content": {"role": "model", "parts": _reply_parts(reply, reply.text)},
            "finishReason": self._finish(reply),
            "index": 0,
        }
        return {
            "candidates": [candidate],
            "usageMetadata": self._usage(reply, reply.completion_tokens),
            "modelVersion": call.model,
            "responseId": request_id,
        }

    def stream(self, call: Call, reply: Reply, request_id: str) -> Stream:
        events = []
        # A function call comes whole, in one chunk of its own.
        chunks = [""] if reply.tool_call is not None else reply.chunks
        sent = cumulative_words(chunks) if reply.tool_call is None else [reply.completion_tokens]
        for index, text in enumerate(chunks):
            parts = _reply_parts(reply, text)
            candidate: Json = {"content": {"role": "model", "parts": parts}, "index": 0}
            if index == len(chunks) - 1:
                candidate["finishReason"] = self._finish(reply)
            data = {
                "candidates": [candidate],
                "usageMetadata": self._usage(reply, sent[index]),
                "modelVersion": call.model,
                "responseId": request_id,
            }
            events.append(_event(data))
        error = _event({"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}})
        return Stream(opening=b"", events=events, closing=b"", error=error)
