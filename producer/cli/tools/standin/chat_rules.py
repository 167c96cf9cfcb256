"""The stand-in's deterministic answers to tools, tool results, JSON formats and images.

Any wire format that reads these from its request (into `Call`) gets the same
answers, so tests can assert exact values:

- **Tool call**: when the request declares tools, its tool choice is not
  "none", and the last message is the user's, the reply is one call to the
  named tool (a named tool choice) or else the first declared one. Its id is
  `call_` + the first 12 hex digits of the SHA-256 of "<tool name>:<prompt>";
  its arguments are `argument_value` of the tool's parameters schema (a schema
  without properties gives `{}`), as compact JSON.
- **Tool result**: when the last message is a tool result, the reply is
  "echo: " + that result's text.
- **JSON**: a json_schema format's reply is `argument_value` of its schema; a
  json_object format's is `{"echo": <prompt>}`; both as compact JSON.
- **Images**: a last user message holding images is answered
  "echo: <its text> [N image(s)]".

`argument_value(schema, prompt)`: an object gives each of its properties
(`properties`, in order) its own value; a string is the prompt; an integer or
a number is the prompt's word count; a boolean is true; an array is `[]`; an
`enum` (or `const`) gives its first value; a list of types uses its first
non-null one; anything else is null. The prompt is the last user message's
text. Prompt tokens are counted as for text; completion tokens are the words
of the reply's text, or of a call's arguments.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from dispatcher.vendors.mock import REPLY_PREFIX, count_words

__all__ = ["ChatAsk", "PlannedCall", "argument_value", "planned_call", "planned_text"]

Json = dict[str, Any]


@dataclass(frozen=True)
class ChatAsk:
    """What of a request decides a tool or format answer (empty: a plain text answer)."""

    tools: tuple[tuple[str, Json], ...] = ()  # (name, parameters schema), in order
    tool_choice: str | None = None  # "auto", "none", "required", or a tool's name
    last_role: str = "user"
    last_text: str = ""  # the last message's text
    prompt: str = ""  # the last user message's text
    images: int = 0  # image parts of the last message, when it is the user's
    json_schema: Json | None = None
    json_object: bool = False

    @property
    def plain(self) -> bool:
        """True when nothing here changes the plain echo answer."""
        return not (self.tools or self.images or self.json_object or self.json_schema) and (
            self.last_role != "tool"
        )


@dataclass(frozen=True)
class PlannedCall:
    """The one tool call the stand-in makes."""

    id: str
    name: str
    arguments: str  # compact JSON text

    @property
    def completion_tokens(self) -> int:
        """The words of the arguments."""
        return count_words(self.arguments.replace(",", ", "))


def argument_value(schema: Any, prompt: str) -> Any:
    """The value the stand-in writes for `schema` (rules in the module docstring)."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties") or {}
        return {name: argument_value(sub, prompt) for name, sub in properties.items()}
    return {
        "string": prompt,
        "integer": count_words(prompt),
        "number": count_words(prompt),
        "boolean": True,
        "array": [],
    }.get(str(kind))


def planned_call(ask: ChatAsk) -> PlannedCall | None:
    """The tool call to make, or None for a text answer."""
    if not ask.tools or ask.last_role != "user" or ask.tool_choice == "none":
        return None
    schemas = dict(ask.tools)
    name = ask.tool_choice if ask.tool_choice in schemas else ask.tools[0][0]
    digest = hashlib.sha256(f"{name}:{ask.prompt}".encode()).hexdigest()[:12]
    arguments = argument_value(schemas[name] or {"type": "object"}, ask.prompt)
    if not isinstance(arguments, dict):
        arguments = {}
    return PlannedCall(
        id=f"call_{digest}",
        name=name,
        arguments=json.dumps(arguments, separators=(",", ":")),
    )


def planned_text(ask: ChatAsk) -> str | None:
    """The text answer when tools, formats or images shape it; None: the plain echo."""
    if ask.json_schema is not None:
        return json.dumps(argument_value(ask.json_schema, ask.prompt), separators=(",", ":"))
    if ask.json_object:
        return json.dumps({"echo": ask.prompt}, separators=(",", ":"))
    if ask.last_role == "tool":
        return REPLY_PREFIX + ask.last_text
    if ask.images:
        return f"{REPLY_PREFIX}{ask.prompt} [{ask.images} image{'s' if ask.images != 1 else ''}]"
    return None
