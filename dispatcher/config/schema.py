"""The sections of the configuration: vendors, routing rules, retry, cost and latency.

`Settings` (in `settings.py`) assembles them from the environment and the file.
Every model here refuses unknown keys, so a typo fails at start-up. They only
describe; whether a vendor serves a model, what it charges for one and whether
a rule's condition holds for a request are routing's questions
(`dispatcher.routing.matching`, `dispatcher.routing.pricing`).
"""

from __future__ import annotations

import re
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from dispatcher.models import StrictModel

__all__ = [
    "AuthConfig",
    "Capability",
    "Price",
    "RateLimit",
    "VendorConfig",
    "VendorType",
]

# LLM calls are slow; the seed design recommends a generous timeout (60 s).
DEFAULT_VENDOR_TIMEOUT_S = 60.0
# Connecting is quick even when generating is slow: a vendor that does not complete the
# TCP (and TLS) handshake in 5 s is down, and the attempt should fail over, not wait 60 s.
DEFAULT_CONNECT_TIMEOUT_S = 5.0

ModelGlob = Annotated[str, StringConstraints(min_length=1)]
HttpUrlText = Annotated[str, StringConstraints(pattern=r"^https?://[^\s/]+", max_length=2048)]


class Price(StrictModel):
    """A model's list price in USD per million input, cached input and output tokens."""

    model_config = ConfigDict(frozen=True)

    input_per_mtok: float = Field(ge=0.0)
    output_per_mtok: float = Field(ge=0.0)
    cached_input_per_mtok: float | None = Field(
        default=None,
        ge=0.0,
        description="Prompt tokens served from the vendor's prompt cache; default the input price.",
    )


class Capability(StrEnum):
    """What a request may need beyond text, which a vendor (and model) may or may not serve."""

    TOOLS = "tools"
    VISION = "vision"
    JSON_SCHEMA = "json_schema"
    STREAMED_TOOLS = "streamed_tools"
    # tool_choice "required" or a named tool: the model must call one
    FORCED_TOOLS = "forced_tools"
    # parallel_tool_calls false: at most one call per reply
    NO_PARALLEL_TOOLS = "no_parallel_tools"


class VendorType(StrEnum):
    """The wire formats we speak; a custom vendor names its factory instead."""

    OPENAI = "openai"
    AZURE = "azure"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"
    OLLAMA = "ollama"
    COHERE = "cohere"
    BEDROCK = "bedrock"
    OPENAI_COMPATIBLE = "openai_compatible"
    MOCK = "mock"


# "package.module:Factory" names a custom vendor's factory.
CUSTOM_TYPE_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")


# Other names a built-in type answers to: the seeds call Gemini's wire format "google".
# A configuration may say either; the type is kept, and reported, under our name.
VENDOR_TYPE_ALIASES: dict[str, VendorType] = {"google": VendorType.GEMINI}


def _check_vendor_type(value: str) -> str:
    alias = VENDOR_TYPE_ALIASES.get(value)
    if alias is not None:
        return alias.value
    known = _BUILTIN_TYPES | _registered_type_names
    if value in known or CUSTOM_TYPE_PATTERN.match(value):
        return value
    raise ValueError(
        f"must be one of {', '.join(sorted(known | VENDOR_TYPE_ALIASES.keys()))}, "
        f"or a custom factory written 'package.module:Factory'"
    )


_BUILTIN_TYPES = frozenset(member.value for member in VendorType)
# Names added at run time by `vendors.register_vendor`, so `type: <name>` validates.
_registered_type_names: set[str] = set()


def allow_vendor_type(name: str) -> None:
    """Accept `type: <name>` in configuration (called by `vendors.register_vendor`)."""
    _registered_type_names.add(name)


VendorTypeName = Annotated[str, AfterValidator(_check_vendor_type)]

DEFAULT_BASE_URLS: dict[VendorType, str] = {
    VendorType.OPENAI: "https://api.openai.com/v1",
    VendorType.ANTHROPIC: "https://api.anthropic.com",
    VendorType.GEMINI: "https://generativelanguage.googleapis.com",
    VendorType.COHERE: "https://api.cohere.com",
    VendorType.OLLAMA: "http://localhost:11434",
}

# Types whose endpoint is the user's own, so there is no default to fall back on.
TYPES_NEEDING_BASE_URL = frozenset({VendorType.AZURE, VendorType.OPENAI_COMPATIBLE})

# The first part of a Bedrock model id: its provider, or a cross-region profile's region.
_BEDROCK_PROVIDERS = [
    "anthropic",
    "amazon",
    "meta",
    "mistral",
    "cohere",
    "ai21",
    "deepseek",
    "qwen",
    "openai",
    "writer",
]
_BEDROCK_PROFILE_REGIONS = ["us", "us-gov", "eu", "apac", "jp", "au", "ca", "global"]

# Models a first-party vendor serves when its `models` list is left empty, so a
# "claude-*" request is never sent to OpenAI. Other types serve any model name.
DEFAULT_MODEL_PATTERNS: dict[VendorType, tuple[str, ...]] = {
    VendorType.OPENAI: ("gpt-*", "chatgpt-*", "o1*", "o3*", "o4*", "ft:*"),
    VendorType.ANTHROPIC: ("claude-*",),
    VendorType.GEMINI: ("gemini-*", "gemma-*"),
    VendorType.COHERE: ("command*", "c4ai-*"),
    # Bedrock's model ids: provider-prefixed, a cross-region profile's region first, or ARNs.
    VendorType.BEDROCK: (
        *(f"{prefix}.*" for prefix in (*_BEDROCK_PROVIDERS, *_BEDROCK_PROFILE_REGIONS)),
        "arn:aws:bedrock:*",
    ),
}


class AuthConfig(StrictModel):
    """How a custom or OpenAI-compatible vendor expects its key (the seed's auth options)."""

    model_config = ConfigDict(frozen=True)

    scheme: Literal["bearer", "header", "query", "basic", "none"] = "bearer"
    header_name: str | None = Field(default=None, description="For scheme 'header'.")
    query_param: str | None = Field(default=None, description="For scheme 'query'.")
    username: str | None = Field(default=None, description="For scheme 'basic'; key = password.")

    @model_validator(mode="after")
    def _scheme_has_its_parameter(self) -> Self:
        needed = {"header": "header_name", "query": "query_param", "basic": "username"}
        field = needed.get(self.scheme)
        if field and not getattr(self, field):
            raise ValueError(f"scheme {self.scheme!r} needs {field}")
        return self


# A bucket holds this share of a minute's rate when no burst is configured: bursts of
# up to six seconds' worth, smooth enough that a vendor's own per-second checks pass.
DEFAULT_BURST_FRACTION = 0.1


def _default_burst(rate_per_minute: int) -> float:
    return max(1.0, rate_per_minute * DEFAULT_BURST_FRACTION)


class RateLimit(StrictModel):
    """Requests and tokens per minute, each a token bucket whose size is its burst."""

    model_config = ConfigDict(frozen=True)

    rpm: int | None = Field(default=None, gt=0, description="Requests per minute.")
    tpm: int | None = Field(default=None, gt=0, description="Tokens per minute.")
    rpm_burst: int | None = Field(
        default=None, gt=0, description="Requests let through at once; default rpm / 10."
    )
    tpm_burst: int | None = Field(
        default=None, gt=0, description="Tokens let through at once; default tpm / 10."
    )

    @property
    def is_set(self) -> bool:
        """True when this limits anything."""
        return self.rpm is not None or self.tpm is not None

    def buckets(self) -> list[tuple[Literal["rpm", "tpm"], float, float]]:
        """(kind, refill per second, size) of each bucket this limit needs."""
        limits: list[tuple[Literal["rpm", "tpm"], int | None, int | None]] = [
            ("rpm", self.rpm, self.rpm_burst),
            ("tpm", self.tpm, self.tpm_burst),
        ]
        return [
            (kind, rate / 60.0, float(burst) if burst is not None else _default_burst(rate))
            for kind, rate, burst in limits
            if rate is not None
        ]


class VendorConfig(StrictModel):
    """One vendor as configured: where it is, how to authenticate, what it serves."""

    model_config = ConfigDict(frozen=True)

    type: VendorTypeName
    api_key: SecretStr | None = None
    base_url: HttpUrlText | None = None
    timeout_s: float | None = Field(default=None, gt=0.0)
    stall_timeout_s: float | None = Field(
        default=None,
        gt=0.0,
        description="Longest silence between stream chunks before a retry; default timeout_s.",
    )
    connect_timeout_s: float | None = Field(
        default=None,
        gt=0.0,
        description="Longest wait for a connection (TCP and TLS); default 5 s, at most timeout_s.",
    )
    health_check: Literal["models", "call", "off"] = Field(
        default="models",
        description=(
            "The scheduled probe: list the models (cheap), make a one-token call to "
            "health_check_model (for servers with no model list), or none (health unknown)."
        ),
    )
    health_check_model: str | None = Field(
        default=None,
        min_length=1,
        description="The model of `health_check: call`; default the first of `models` "
        "that is not a pattern.",
    )
    headers: dict[str, str] = Field(default_factory=dict)
    auth: AuthConfig | None = None
    api_version: str | None = Field(
        default=None, description="Azure's api-version, or Anthropic's anthropic-version."
    )
    region: Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,32}$")] | None = Field(
        default=None,
        description="Bedrock's AWS region; default AWS_REGION, then AWS_DEFAULT_REGION.",
    )
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] | None = Field(
        default=None, description="How OpenAI-style bodies name max_tokens; None: the default."
    )
    models: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=list, description="Glob patterns of the models served; empty: defaults."
    )
    weight: float = Field(default=1.0, ge=0.0)
    priority: int = Field(default=0, description="Higher is preferred.")
    enabled: bool = True
    stand_in: bool | None = Field(
        default=None,
        description=(
            "A test double (the mock server, say): routed to only when named, or when no "
            "real vendor is enabled. Default: true for type mock, false otherwise."
        ),
    )
    rpm: int | None = Field(default=None, gt=0, description="Requests per minute.")
    tpm: int | None = Field(default=None, gt=0, description="Tokens per minute.")
    rpm_burst: int | None = Field(
        default=None, gt=0, description="Requests let through at once; default rpm / 10."
    )
    tpm_burst: int | None = Field(
        default=None, gt=0, description="Tokens let through at once; default tpm / 10."
    )
    model_limits: dict[Annotated[str, StringConstraints(min_length=1)], RateLimit] = Field(
        default_factory=dict,
        description="Model name or glob -> its own limit, beside the vendor's (first match).",
    )
    tenant_limit: RateLimit | None = Field(
        default=None,
        description="Each tenant's (request `user`) own limit on this vendor.",
    )
    prices: dict[str, Price] = Field(
        default_factory=dict, description="Model name or glob -> USD per million tokens."
    )
    capabilities: dict[Annotated[str, StringConstraints(min_length=1)], list[Capability]] | None = (
        Field(
            default=None,
            description=(
                "What beyond text this vendor serves (tools, vision, json_schema, "
                "streamed_tools): a list for every model, or model name or glob -> list "
                "(an exact entry first, then the first glob match). None: the built-in "
                "table for the vendor's type (docs/chat-surface.md)."
            ),
        )
    )

    @field_validator("capabilities", mode="before")
    @classmethod
    def _a_list_is_for_every_model(cls, value: Any) -> Any:
        return {"*": value} if isinstance(value, list) else value

    @property
    def endpoint(self) -> str | None:
        """The base URL to call: the configured one, or the vendor type's public default."""
        if self.base_url:
            return self.base_url
        return DEFAULT_BASE_URLS.get(VendorType(self.type)) if self.is_builtin else None

    @property
    def limit(self) -> RateLimit:
        """The vendor-wide limit (rpm and tpm, with their bursts)."""
        return RateLimit(
            rpm=self.rpm, tpm=self.tpm, rpm_burst=self.rpm_burst, tpm_burst=self.tpm_burst
        )

    @property
    def is_limited(self) -> bool:
        """True when any shared rate limit applies to this vendor's calls."""
        return (
            self.limit.is_set
            or any(limit.is_set for limit in self.model_limits.values())
            or (self.tenant_limit is not None and self.tenant_limit.is_set)
        )

    def model_limit_for(self, model: str) -> tuple[str, RateLimit] | None:
        """The (pattern, limit) of `model`: an exact entry first, else the first glob match."""
        if model in self.model_limits:
            return model, self.model_limits[model]
        return next(
            ((p, limit) for p, limit in self.model_limits.items() if fnmatchcase(model, p)),
            None,
        )

    def secret_values(self) -> list[str]:
        """Values the redactor must mask: the key, and every configured header's value.

        Header values count as secrets whatever their name (an `x-org-id`, a gateway's
        token): a vendor that echoes our request back must not carry one into Redis or a
        log. (The redactor leaves values under 8 characters alone.)
        """
        values = list(self.headers.values())
        if self.api_key is not None:
            values.append(self.api_key.get_secret_value())
        return values

    @property
    def is_stand_in(self) -> bool:
        """True for a vendor that must never take a real vendor's traffic unasked."""
        return self.stand_in if self.stand_in is not None else self.type == VendorType.MOCK

    @property
    def is_builtin(self) -> bool:
        """True for the wire formats we ship; False for a custom factory."""
        return self.type in _BUILTIN_TYPES

    @property
    def timeout(self) -> float:
        """The request timeout in seconds."""
        return self.timeout_s if self.timeout_s is not None else DEFAULT_VENDOR_TIMEOUT_S

    @property
    def connect_timeout(self) -> float:
        """How long to wait for a connection, in seconds: never past the request timeout."""
        configured = self.connect_timeout_s or DEFAULT_CONNECT_TIMEOUT_S
        return min(configured, self.timeout)

    @property
    def probe_model(self) -> str | None:
        """The model `health_check: call` asks: the configured one, else the first concrete
        entry of `models` (no glob characters); None when there is neither."""
        if self.health_check_model is not None:
            return self.health_check_model
        return next((m for m in self.models if not any(ch in m for ch in "*?[")), None)

    @model_validator(mode="after")
    def _a_call_probe_has_a_model(self) -> Self:
        if self.health_check == "call" and self.probe_model is None:
            raise ValueError(
                "health_check 'call' needs health_check_model, or a model in `models` "
                "that is not a pattern"
            )
        return self

    def model_patterns(self) -> tuple[str, ...]:
        """The glob patterns of the models this vendor serves; empty means any model."""
        if self.models:
            return tuple(self.models)
        return DEFAULT_MODEL_PATTERNS.get(VendorType(self.type), ()) if self.is_builtin else ()
