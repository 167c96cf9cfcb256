"""What a request needs beyond text, and which vendors (and models) serve it.

A request needs `tools` when it declares tools or its conversation holds tool
calls or tool results, `streamed_tools` when it also streams, `forced_tools`
when its tool choice is "required" or names a tool, `no_parallel_tools` when
`parallel_tool_calls` is false, `vision` when a message holds an image, and
`json_schema` for a `json_object` or `json_schema` response format. The router
sends it only to a deployment that serves all it needs (`missing`), and a
`NoRoute` names what each vendor lacks.

What a deployment serves: its vendor's configured `capabilities` (a list for
every model, or model name or glob -> list: an exact entry first, then the
first glob match), else the built-in table below for the vendor's type, from
the vendors' documentation. A custom vendor type serves text only unless its
configuration says more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

from dispatcher.config.schema import Capability, VendorConfig
from dispatcher.models import Request, Role

__all__ = ["BUILTIN_CAPABILITIES", "Capability", "missing", "needs", "served"]

ALL = frozenset(Capability)
TEXT_ONLY: frozenset[Capability] = frozenset()
NO_VISION = ALL - {Capability.VISION}
# Gemini and Cohere have no switch for one call per reply; Ollama cannot force a call either.
GEMINI = ALL - {Capability.NO_PARALLEL_TOOLS}
OLLAMA = ALL - {Capability.FORCED_TOOLS, Capability.NO_PARALLEL_TOOLS}
COHERE = ALL - {Capability.NO_PARALLEL_TOOLS}

BEDROCK = ALL - {Capability.NO_PARALLEL_TOOLS}
# Bedrock models with structured output (outputConfig), by model id or inference profile.
BEDROCK_STRUCTURED_MODELS = (
    "*anthropic.claude-*-4-5*", "*anthropic.claude-*-4-6*", "*anthropic.claude-*-4-7*",
    "*anthropic.claude-*-4-8*", "*anthropic.claude-opus-5*", "*anthropic.claude-sonnet-5*",
)  # fmt: skip

# Ollama's library models that see images.
OLLAMA_VISION_MODELS = (
    "llava*", "bakllava*", "*vision*", "gemma3*", "qwen2.5vl*", "qwen2.5-vl*",
    "minicpm-v*", "moondream*", "llama4*", "mistral-small3.1*",
)  # fmt: skip

# Vendor type -> (model glob, what it serves), first match wins. Only the models a
# vendor documents as seeing images get vision; tools and JSON are per wire format.
BUILTIN_CAPABILITIES: Mapping[str, Sequence[tuple[str, frozenset[Capability]]]] = {
    "openai": [("*", ALL)],
    "azure": [("*", ALL)],
    "anthropic": [("*", ALL)],
    "gemini": [("*", GEMINI)],
    # An OpenAI-compatible server's models vary: images only when configured.
    "openai_compatible": [("*", NO_VISION)],
    # Ollama: tools, `format` and streamed tool calls in /api/chat; images for the
    # vision models of its library.
    "ollama": [
        *((pattern, OLLAMA) for pattern in OLLAMA_VISION_MODELS),
        ("*", OLLAMA - {Capability.VISION}),
    ],
    # Cohere: images for its vision models only.
    "cohere": [
        ("command-a-vision*", COHERE),
        ("*aya-vision*", COHERE),
        ("*", COHERE - {Capability.VISION}),
    ],
    # Bedrock Converse: no switch for one call per reply; structured output
    # (outputConfig.textFormat) on the Claude 4.5 generation and later only; images
    # for the Claude and Nova models that see; other models as configured.
    "bedrock": [
        *((pattern, BEDROCK) for pattern in BEDROCK_STRUCTURED_MODELS),
        ("*anthropic.claude-*", BEDROCK - {Capability.JSON_SCHEMA}),
        ("*amazon.nova-micro*", BEDROCK - {Capability.JSON_SCHEMA, Capability.VISION}),
        ("*amazon.nova-*", BEDROCK - {Capability.JSON_SCHEMA}),
        ("*", TEXT_ONLY),
    ],
    # The stand-in answers every format's tools, JSON and images.
    "mock": [("*", ALL)],
}


def needs(request: Request) -> frozenset[Capability]:
    """What `request` needs beyond text (empty for a plain text chat)."""
    tools = bool(request.tools)
    vision = False
    for message in request.messages:
        if type(message.content) is not str:  # parts, or None beside tool calls
            vision = vision or message.image_count > 0
        if message.tool_calls or message.role is Role.TOOL:
            tools = True
    found: set[Capability] = set()
    if tools:
        found.add(Capability.TOOLS)
        if request.stream:
            found.add(Capability.STREAMED_TOOLS)
        if request.tool_choice is not None and request.tool_choice not in ("auto", "none"):
            found.add(Capability.FORCED_TOOLS)
        if request.parallel_tool_calls is False:
            found.add(Capability.NO_PARALLEL_TOOLS)
    if vision:
        found.add(Capability.VISION)
    if request.response_format is not None and request.response_format.type != "text":
        found.add(Capability.JSON_SCHEMA)
    return frozenset(found)


def served(vendor: VendorConfig, model: str) -> frozenset[Capability]:
    """What `vendor` serves for `model` beyond text."""
    configured = vendor.capabilities
    if configured is not None:
        if model in configured:
            return frozenset(configured[model])
        for pattern, listed in configured.items():
            if fnmatchcase(model, pattern):
                return frozenset(listed)
        return TEXT_ONLY
    for pattern, table in BUILTIN_CAPABILITIES.get(vendor.type, ()):
        if fnmatchcase(model, pattern):
            return table
    return TEXT_ONLY


def missing(required: frozenset[Capability], vendor: VendorConfig, model: str) -> list[Capability]:
    """What of `required` `vendor` does not serve for `model`, in a stable order."""
    if not required:
        return []
    lacking = required - served(vendor, model)
    return sorted(lacking, key=list(Capability).index)
