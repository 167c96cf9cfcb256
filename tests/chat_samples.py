"""Requests and replies using the whole chat surface: tools, images, response formats."""

from __future__ import annotations

import base64
from typing import Any

from pydantic import BaseModel

from dispatcher import (
    FunctionCall,
    FunctionDefinition,
    ImagePart,
    ImageUrl,
    JsonObjectFormat,
    JsonSchemaFormat,
    JsonSchemaSpec,
    NamedFunction,
    NamedToolChoice,
    Request,
    Response,
    TextFormat,
    TextPart,
    Tool,
    ToolCall,
    Usage,
)

# A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temp_c": {"type": ["number", "null"]}},
    "required": ["city", "temp_c"],
    "additionalProperties": False,
}
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": WEATHER_SCHEMA,
        "strict": True,
    },
}
# A strict JSON reply: the response_format the integration tests ask for.
ANSWER_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "words": {"type": "integer"}},
            "required": ["city", "words"],
            "additionalProperties": False,
        },
    },
}
CALL: dict[str, Any] = {
    "id": "call_a1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
}

# The request of vendor-wire-formats-tools.md §0.1: every new field at once.
TOOL_TURN: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this photo, and what is the weather there?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://example.com/p.jpg", "detail": "auto"},
                },
                {"type": "image_url", "image_url": {"url": PNG_URL}},
            ],
        },
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_a1", "content": '{"temp_c":18}'},
    ],
    "tools": [WEATHER_TOOL],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "seed": 7,
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA, "strict": True},
    },
}

CHAT_SAMPLES: dict[type[BaseModel], BaseModel] = {
    TextPart: TextPart(type="text", text="Compare these two."),
    ImageUrl: ImageUrl(url=PNG_URL, detail="low"),
    ImagePart: ImagePart(type="image_url", image_url=ImageUrl(url="https://example.com/a.jpg")),
    FunctionDefinition: FunctionDefinition.model_validate(WEATHER_TOOL["function"]),
    Tool: Tool.model_validate(WEATHER_TOOL),
    NamedFunction: NamedFunction(name="get_weather"),
    NamedToolChoice: NamedToolChoice(function=NamedFunction(name="get_weather")),
    FunctionCall: FunctionCall(name="get_weather", arguments='{"city":"Paris"}'),
    ToolCall: ToolCall.model_validate(CALL),
    TextFormat: TextFormat(type="text"),
    JsonObjectFormat: JsonObjectFormat(type="json_object"),
    JsonSchemaSpec: JsonSchemaSpec.model_validate(
        {"name": "answer", "schema": ANSWER_SCHEMA, "strict": True}
    ),
    JsonSchemaFormat: JsonSchemaFormat.model_validate(TOOL_TURN["response_format"]),
}
# Not classes of their own, but the richest samples of Request and Response.
RICH_REQUEST = Request.model_validate(TOOL_TURN)
RICH_RESPONSE = Response(
    content="",
    tool_calls=[ToolCall.model_validate(CALL)],
    parsed=None,
    vendor_state={"thought_signature": "c2ln"},
    usage=Usage(prompt_tokens=88, completion_tokens=41, cached_prompt_tokens=64),
    model="gpt-4o",
    vendor="openai",
    finish_reason="tool_calls",
)
