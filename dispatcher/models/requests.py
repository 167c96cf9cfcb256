"""What a producer asks for: `Request`, its `Message`s and their `Role`s, and their limits.

Messages are shaped as OpenAI Chat Completions has them: content is a string or
a list of parts (text, images: `dispatcher.models.content`); an assistant
message may carry `tool_calls` (then content may be None) and each `tool`
message answers one of them by `tool_call_id`. A request may declare tools,
choose among them, and ask for a response format (`tools.py`, `formats.py`).

Plain text costs what it always did: a string's checks are pydantic's own, and
the checks across fields run only for the messages that need them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from dispatcher.config.problems import custom_error
from dispatcher.models.base import Name, NonEmptyStr, StrictModel, Text, VendorName
from dispatcher.models.content import ContentPart, ImagePart, TextPart
from dispatcher.models.formats import ResponseFormat
from dispatcher.models.tools import NamedToolChoice, Tool, ToolCall, ToolChoiceMode

__all__ = [
    "DEFAULT_PRIORITY",
    "MAX_MAX_TOKENS",
    "MAX_PRIORITY",
    "MAX_STOP_SEQUENCES",
    "MAX_TIMEOUT_S",
    "RESERVED_BODY_FIELDS",
    "RESERVED_NESTED_FIELDS",
    "Message",
    "Request",
    "Role",
]

# Inside Gemini's `generationConfig` and Ollama's `options`: the same fields again.
RESERVED_NESTED_FIELDS = frozenset(
    {
        "maxOutputTokens", "temperature", "topP", "stopSequences", "candidateCount",
        "num_predict", "top_p", "stop", "seed",
        # Gemini's response format (camelCase and the snake_case REST also takes)
        "responseMimeType", "responseSchema", "responseJsonSchema",
        "response_mime_type", "response_schema", "response_json_schema",
        "format",  # in Anthropic's `output_config`: its structured output
    }
)  # fmt: skip
# Body fields the dispatcher writes from the request's own fields, in some vendor's
# wire format: `extra_body` may not set them, or the job record, the router's checks,
# limits, prices and `max_cost_usd` would no longer describe what was sent.
RESERVED_BODY_FIELDS = frozenset(
    {
        "model", "messages", "stream", "stream_options", "max_tokens",
        "max_completion_tokens", "max_output_tokens", "temperature", "top_p", "p", "stop",
        "stop_sequences", "system", "contents", "systemInstruction", "system_instruction",
        "user", "n", "candidateCount",
        # tools, tool choice, response format and seed (by their OpenAI names)
        "tools", "tool_choice", "parallel_tool_calls", "response_format", "seed",
        "output_format",  # Anthropic's structured output before output_config.format
        # the same by other vendors' names: Ollama's `format`, Cohere's `strict_tools`
        "format", "strict_tools",
        "toolConfig", "tool_config",  # Gemini's tool choice
    }
)  # fmt: skip

# OpenAI, Anthropic and Cohere all cap stop sequences at 4 or fewer.
MAX_STOP_SEQUENCES = 4
# Celery's Redis transport emulates priorities 0-9; we use the same range.
MAX_PRIORITY = 9
DEFAULT_PRIORITY = 5
# No model writes anywhere near 2**31 tokens; a bigger max_tokens can only be a mistake,
# and would overflow cost estimates (floats) and vendors' 32-bit fields.
MAX_MAX_TOKENS = 2**31 - 1
# A year: far past any job's life (one that never ends expires after a week), and small
# enough that submit time plus the deadline is always a date a record can hold.
MAX_TIMEOUT_S = 365 * 86_400.0


class Role(StrEnum):
    """Who wrote a message."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


def _content_kind(value: Any) -> str:
    """Which branch of `Message.content` validates `value` (anything odd: the string's)."""
    if value is None:
        return "none"
    return "parts" if isinstance(value, list) else "text"


def _tool_choice_kind(value: Any) -> str:
    """Which branch of `Request.tool_choice` validates `value`."""
    return "mode" if isinstance(value, str) else "function"


# A branch picked by the input's type validates alone, so an error names one problem,
# not one per branch; `_tidy_loc` then drops the branch labels from its path.
Content = Annotated[
    Annotated[NonEmptyStr, Tag("text")]
    | Annotated[list[ContentPart], Tag("parts")]
    | Annotated[None, Tag("none")],
    Discriminator(_content_kind),
]
ChosenTool = Annotated[
    Annotated[ToolChoiceMode, Tag("mode")] | Annotated[NamedToolChoice, Tag("function")],
    Discriminator(_tool_choice_kind),
]
_CONTENT_BRANCHES = frozenset({"text", "parts", "none"})
_PART_TAGS = frozenset({"text", "image_url"})
_FORMAT_TAGS = frozenset({"text", "json_object", "json_schema"})
_TOOL_CHOICE_BRANCHES = frozenset({"mode", "function"})


class Message(StrictModel):
    """One turn of a conversation.

    `content` is text or a list of parts; images go in user messages only. An
    assistant message may carry the `tool_calls` its reply asked for, and then
    needs no content; a `tool` message answers one of those calls, naming it in
    `tool_call_id`, with text. `vendor_state` is what a vendor handed back with
    a reply that its next turn must see again (a thought signature, a thinking
    block): opaque, kept from `Response.to_message()`.
    """

    model_config = ConfigDict(frozen=True)

    role: Role
    content: Content = None
    tool_calls: list[ToolCall] | None = Field(
        default=None, description="Assistant messages: the calls its reply asked for."
    )
    tool_call_id: Name | None = Field(
        default=None, description="Tool messages: the id of the call this answers."
    )
    vendor_state: dict[str, JsonValue] | None = Field(
        default=None, description="Assistant messages: vendor data the next turn hands back."
    )

    @model_validator(mode="after")
    def _fields_fit_the_role(self) -> Self:
        # Plain text from a user or the system: nothing to check across fields.
        if (
            type(self.content) is str
            and self.tool_calls is None
            and self.tool_call_id is None
            and self.vendor_state is None
            and self.role is not Role.TOOL
        ):
            return self
        problems = _role_problems(self)
        if problems:
            raise ValidationError.from_exception_data(
                "Message",
                [custom_error("message_fields", loc, message) for loc, message in problems],
            )
        return self

    @classmethod
    def _tidy_loc(cls, loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
        # ("content", "parts", 0, "image_url", "image_url", "url") -> content[0].image_url.url
        if len(loc) >= 2 and loc[0] == "content" and loc[1] in _CONTENT_BRANCHES:
            loc = ("content", *loc[2:])
            if len(loc) >= 3 and isinstance(loc[1], int) and loc[2] in _PART_TAGS:
                loc = (*loc[:2], *loc[3:])
        return loc

    @property
    def text(self) -> str:
        """The message's text: the string, or its text parts joined by newlines; "" for none."""
        content = self.content
        if content is None:
            return ""
        if type(content) is str:
            return content
        return "\n".join(part.text for part in content if isinstance(part, TextPart))

    @property
    def image_count(self) -> int:
        """How many image parts the message holds."""
        content = self.content
        if content is None or type(content) is str:
            return 0
        return sum(1 for part in content if isinstance(part, ImagePart))


def _role_problems(message: Message) -> list[tuple[tuple[int | str, ...], str]]:
    """What in `message` does not fit its role, as (path, problem) pairs."""
    problems: list[tuple[tuple[int | str, ...], str]] = []
    role = message.role
    if message.tool_calls is not None and role is not Role.ASSISTANT:
        problems.append((("tool_calls",), "only assistant messages carry tool calls"))
    if message.vendor_state is not None and role is not Role.ASSISTANT:
        problems.append((("vendor_state",), "only assistant messages carry vendor state"))
    if role is Role.TOOL:
        if message.tool_call_id is None:
            problems.append((("tool_call_id",), "is required in a tool message"))
        if isinstance(message.content, list) and message.image_count:
            problems.append((("content",), "a tool message holds text only, not images"))
    elif message.tool_call_id is not None:
        problems.append((("tool_call_id",), "only tool messages answer a tool call"))
    if message.content is None and not (role is Role.ASSISTANT and message.tool_calls):
        problems.append((("content",), "is required unless an assistant message has tool_calls"))
    elif role not in (Role.USER, Role.TOOL) and message.image_count:
        problems.append((("content",), "only user messages may hold images"))
    elif isinstance(message.content, list) and not message.content:
        problems.append((("content",), "a list of parts must hold at least one part"))
    if message.tool_calls is not None and not message.tool_calls:
        problems.append((("tool_calls",), "must hold at least one call, or be left out"))
    return problems


class Request(StrictModel):
    """A chat completion request, as a producer submits it."""

    model_config = ConfigDict(frozen=True)

    model: Name = Field(description="Model name, or the name of a configured model group.")
    messages: list[Message] = Field(min_length=1)
    # Strict: `True` is not a temperature, nor "9" a priority; JSON gives real numbers.
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, strict=True)
    max_tokens: int | None = Field(default=None, gt=0, le=MAX_MAX_TOKENS, strict=True)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0, strict=True)
    stream: bool = Field(default=False, strict=True)
    stop: list[NonEmptyStr] | None = Field(default=None, max_length=MAX_STOP_SEQUENCES)
    user: Name | None = None
    metadata: dict[Name, Text] = Field(default_factory=dict)
    vendor: VendorName | None = Field(
        default=None, description="Preferred vendor; used when it can take the request."
    )
    vendor_weights: dict[VendorName, Annotated[float, Field(ge=0.0)]] | None = Field(
        default=None,
        description="Per-request routing weights; only the vendors named here are chosen first.",
    )
    allow_fallback: bool = Field(
        default=True, strict=True, description="False: fail rather than move to another vendor."
    )
    priority: int = Field(default=DEFAULT_PRIORITY, ge=0, le=MAX_PRIORITY, strict=True)
    timeout_s: float | None = Field(
        default=None,
        gt=0.0,
        le=MAX_TIMEOUT_S,
        strict=True,
        description="Deadline for the whole job, counted from submit.",
    )
    tools: list[Tool] | None = Field(
        default=None, description="Functions the model may call (OpenAI's `tools`)."
    )
    tool_choice: ChosenTool | None = Field(
        default=None,
        description='"auto", "none", "required", or {"type": "function", "function": '
        '{"name": ...}} naming a declared tool; None: the vendor\'s default (auto).',
    )
    parallel_tool_calls: bool | None = Field(
        default=None, strict=True, description="False: at most one tool call per reply."
    )
    response_format: ResponseFormat | None = Field(
        default=None,
        description="text, json_object or json_schema; a JSON reply is parsed into "
        "Response.parsed (and checked against the schema when strict).",
    )
    seed: int | None = Field(
        default=None, strict=True, description="Asks the vendor for repeatable sampling."
    )
    extra_body: dict[Name, JsonValue] = Field(
        default_factory=dict,
        description="Merged untouched into the body sent to vendors that accept it; it may "
        "not set a field the dispatcher writes (model, messages, stream, max_tokens, "
        "tools, response_format, ...).",
    )

    @classmethod
    def _tidy_loc(cls, loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
        # ("response_format", "json_schema", "json_schema", "name"): drop the tag
        if len(loc) >= 2 and (
            (loc[0] == "response_format" and loc[1] in _FORMAT_TAGS)
            or (loc[0] == "tool_choice" and loc[1] in _TOOL_CHOICE_BRANCHES)
        ):
            return (loc[0], *loc[2:])
        return loc

    @model_validator(mode="after")
    def _tools_and_tool_messages_agree(self) -> Self:
        # Plain text (no tools, no tool messages): nothing to pair or look up.
        if (
            self.tools is None
            and self.tool_choice is None
            and self.parallel_tool_calls is None
            and not any(m.tool_calls or m.tool_call_id for m in self.messages)
        ):
            return self
        problems = _tool_problems(self)
        if problems:
            raise ValidationError.from_exception_data(
                "Request",
                [custom_error("request_tools", loc, message) for loc, message in problems],
            )
        return self

    @field_validator("stop", mode="before")
    @classmethod
    def _single_stop_string_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("extra_body")
    @classmethod
    def _extra_body_sets_no_field_we_write(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(RESERVED_BODY_FIELDS & set(value))
        reserved += [
            f"{outer}.{inner}"
            for outer in ("generationConfig", "options", "output_config")
            if isinstance(value.get(outer), dict)
            for inner in sorted(RESERVED_NESTED_FIELDS & set(value[outer]))
        ]
        if reserved:
            raise ValueError(
                f"may not set {', '.join(map(repr, reserved))}: the dispatcher writes "
                "it from the request's own fields (model, messages, stream, max_tokens, "
                "temperature, top_p, stop, user, tools, tool_choice, parallel_tool_calls, "
                "response_format, seed)"
            )
        return value

    @field_validator("vendor_weights")
    @classmethod
    def _some_weight_is_positive(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None and not any(weight > 0 for weight in value.values()):
            raise ValueError("at least one vendor weight must be greater than 0")
        return value


def _tool_problems(request: Request) -> list[tuple[tuple[int | str, ...], str]]:
    """Tool messages that answer no earlier call, and tool choices naming no declared tool."""
    problems: list[tuple[tuple[int | str, ...], str]] = []
    asked: set[str] = set()
    for index, message in enumerate(request.messages):
        for call in message.tool_calls or ():
            asked.add(call.id)
        if message.tool_call_id is not None and message.tool_call_id not in asked:
            problems.append(
                (
                    ("messages", index, "tool_call_id"),
                    f"{message.tool_call_id!r} answers no tool call of an earlier assistant "
                    "message",
                )
            )
    declared = [tool.function.name for tool in request.tools or ()]
    if len(set(declared)) != len(declared):
        twice = sorted({name for name in declared if declared.count(name) > 1})
        problems.append((("tools",), f"declares {', '.join(map(repr, twice))} more than once"))
    if request.tools is not None and not request.tools:
        problems.append((("tools",), "must declare at least one tool, or be left out"))
    choice = request.tool_choice
    if isinstance(choice, NamedToolChoice) and choice.function.name not in declared:
        problems.append(
            (
                ("tool_choice", "function", "name"),
                f"{choice.function.name!r} is not a declared tool"
                + (f" (declared: {', '.join(declared)})" if declared else ""),
            )
        )
    elif choice is not None and choice != "none" and not declared:
        problems.append((("tool_choice",), "needs tools to choose from"))
    if request.parallel_tool_calls is not None and not declared:
        problems.append((("parallel_tool_calls",), "needs tools"))
    return problems
