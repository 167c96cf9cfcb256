"""`Settings`: the whole configuration, from the environment and an optional file.

Where values come from, highest priority first:

1. keyword arguments (tests, embedding applications);
2. the documented environment variables: `REDIS_URL`, `LLMDISPATCH_KEY_PREFIX`,
   `LLMDISPATCH_CONFIG`, and per vendor `<VENDOR>_API_KEY`, `<VENDOR>_BASE_URL`,
   `<VENDOR>_TIMEOUT` (Azure's base URL is `AZURE_OPENAI_ENDPOINT`);
3. the same variables in a `.env` file in the working directory, when there is
   one (`KEY=value` lines, as docker compose reads them): a variable set in the
   environment wins over the file's line, and lines naming anything else
   (`FLOWER_BASIC_AUTH`, say) are not settings and are left alone;
4. the YAML or JSON file named by `LLMDISPATCH_CONFIG` (in the environment or
   `.env`): vendors, model groups, routing rules, default and fallback vendor,
   retry policy, cost and latency optimisation. String values may use `${VAR}`
   and `${VAR:-default}`, looked up in the environment, then in `.env`.

When the file lists no vendors, each vendor whose key or base URL is set in
the environment exists under its standard name (`openai`, `anthropic`,
`gemini`, `azure`, `cohere`, `ollama`). When the file lists vendors, those are
the vendors: an entry with a standard name (or `google`, the seeds' name for
Gemini, whose `type: google` is also accepted) takes any value it leaves out
from its variables, and no other vendor appears (a file that names its vendor
`primary` and uses `${OPENAI_API_KEY}` gets exactly one vendor).
`Settings.load()` reports every problem at once, each with its path
(`vendors.openai.rpm: must be greater than 0`), and never echoes a value,
since values may be secrets. Secrets are `SecretStr` and are
registered with `redaction` so they are masked wherever text is produced.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from dispatcher.config.file import Unresolved, expand_variables, read_config_file
from dispatcher.config.problems import custom_error, describe, rebuild
from dispatcher.config.redis_address import redis_url_problem, redis_url_secrets
from dispatcher.config.schema import (
    TYPES_NEEDING_BASE_URL,
    VENDOR_TYPE_ALIASES,
    CircuitBreaker,
    CostOptimization,
    HttpUrlText,
    LatencyOptimization,
    LeastBusy,
    RetryPolicy,
    RoutingRule,
    VendorConfig,
    VendorType,
)
from dispatcher.errors import ConfigError
from dispatcher.models import Deployment, VendorName
from dispatcher.redaction import register_secret

__all__ = ["ENV_VENDORS", "EnvVendor", "Settings", "key_hint"]

# The Redis every component shares when REDIS_URL is not set: a local default.
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
# Every Redis key starts with this, so one Redis can host several deployments.
DEFAULT_KEY_PREFIX = "llmd"
# The dotenv file read from the working directory: the name docker compose and the
# seeds' examples use, so one file serves both.
ENV_FILE = ".env"
# Ended jobs stay readable for a day: long enough to poll, short enough to bound memory.
DEFAULT_JOB_TTL_S = 86_400
# A batch's messages out at once per vendor (of 50 items each): 800 items in
# flight, enough for a vendor with half a second of latency to keep one worker
# process busy (bench/history/2026-12-01.md, batches: 8 gave 587 items/s, 16 gave 660).
# The sweeper (dispatcher.runner.sweeper): a pass every 30 s, for jobs overdue by a minute.
DEFAULT_SWEEP_INTERVAL_S = 30.0
DEFAULT_SWEEP_GRACE_S = 60.0
# A worker beats every 10 s; one silent for 30 s (two beats missed) is dead, and what it
# held goes back to its queues then, not after the hour of the visibility timeout.
DEFAULT_WORKER_DEAD_AFTER_S = 30.0
# Submitted jobs one worker process takes from a vendor's lane to run at once.
DEFAULT_WORKER_MAX_IN_FLIGHT = 1_000
DEFAULT_BATCH_WINDOW = 16
# Celery's default on Redis; must exceed the longest call plus scheduled wait (celery_config).
DEFAULT_VISIBILITY_TIMEOUT_S = 3_600
# A stream runs at most this share of the visibility timeout: the rest is for writing
# its end and acknowledging its message, before the transport would deliver it again.
STREAM_SHARE_OF_VISIBILITY = 0.9
# Tests use a few seconds to see a killed worker's job come back quickly.
MIN_VISIBILITY_TIMEOUT_S = 2
# 4 MiB of request JSON: a million-token prompt (about 4 bytes a token) fits, while no
# one request can weigh on Redis memory and on every read of its job much beyond that.
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
# A batch is a day's work for a few vendors at their limits, and its write to Redis and
# its items' records must fit comfortably in one Redis's memory: 50,000 items, 256 MiB.
DEFAULT_MAX_BATCH_ITEMS = 50_000
DEFAULT_MAX_BATCH_BYTES = 256 * 1024 * 1024

Seconds = Annotated[float, Field(gt=0.0)]
# A probe costs the vendor one cheap request; twice a minute notices an outage quickly.
DEFAULT_HEALTH_CHECK_INTERVAL_S = 30.0
GroupName = Annotated[str, StringConstraints(min_length=1, max_length=256)]


@dataclass(frozen=True)
class EnvVendor:
    """A vendor the environment can define, and the settings fields that define it."""

    name: str
    type: VendorType
    key_field: str
    base_url_field: str
    timeout_field: str


ENV_VENDORS: tuple[EnvVendor, ...] = (
    EnvVendor("openai", VendorType.OPENAI, "openai_api_key", "openai_base_url", "openai_timeout"),
    EnvVendor(
        "anthropic",
        VendorType.ANTHROPIC,
        "anthropic_api_key",
        "anthropic_base_url",
        "anthropic_timeout",
    ),
    EnvVendor("gemini", VendorType.GEMINI, "google_api_key", "google_base_url", "google_timeout"),
    EnvVendor(
        "azure",
        VendorType.AZURE,
        "azure_openai_api_key",
        "azure_openai_endpoint",
        "azure_openai_timeout",
    ),
    EnvVendor("cohere", VendorType.COHERE, "cohere_api_key", "cohere_base_url", "cohere_timeout"),
    EnvVendor("ollama", VendorType.OLLAMA, "ollama_api_key", "ollama_base_url", "ollama_timeout"),
)

# The keys the configuration file may hold; everything else belongs to the environment.
FILE_FIELDS = (
    "vendors",
    "model_groups",
    "routing_rules",
    "default_vendor",
    "fallback_vendor",
    "retry_policy",
    "circuit_breaker",
    "cost_optimization",
    "latency_optimization",
    "least_busy",
)


class Settings(BaseSettings):
    """Everything a producer or worker needs to know, validated once at start-up."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        case_sensitive=False,
        env_ignore_empty=True,
        validate_default=True,
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
    )

    # --- from the environment -------------------------------------------------
    redis_url: SecretStr = Field(default=SecretStr(DEFAULT_REDIS_URL), validation_alias="REDIS_URL")
    key_prefix: str = Field(
        default=DEFAULT_KEY_PREFIX,
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        validation_alias="LLMDISPATCH_KEY_PREFIX",
    )
    config_file: Path | None = Field(default=None, validation_alias="LLMDISPATCH_CONFIG")
    job_ttl_s: int = Field(
        default=DEFAULT_JOB_TTL_S, gt=0, validation_alias="LLMDISPATCH_JOB_TTL_S"
    )
    sent_events: bool = Field(
        default=False,
        validation_alias="LLMDISPATCH_SENT_EVENTS",
        description="Producers emit Celery 'task-sent' events (Flower shows queued tasks).",
    )
    visibility_timeout_s: int = Field(
        default=DEFAULT_VISIBILITY_TIMEOUT_S,
        ge=MIN_VISIBILITY_TIMEOUT_S,
        validation_alias="LLMDISPATCH_VISIBILITY_TIMEOUT_S",
    )
    health_check_interval_s: float = Field(
        default=DEFAULT_HEALTH_CHECK_INTERVAL_S,
        ge=0.0,
        validation_alias="LLMDISPATCH_HEALTH_CHECK_INTERVAL_S",
        description="How often workers probe their vendors (one worker per vendor); 0: never.",
    )

    sweep_interval_s: float = Field(
        default=DEFAULT_SWEEP_INTERVAL_S,
        ge=0.0,
        validation_alias="LLMDISPATCH_SWEEP_INTERVAL_S",
        description="How often a worker looks for queued jobs whose message was lost; 0: never.",
    )
    sweep_grace_s: float = Field(
        default=DEFAULT_SWEEP_GRACE_S,
        gt=0.0,
        validation_alias="LLMDISPATCH_SWEEP_GRACE_S",
        description="How long past its due time a queued job's message is looked for.",
    )
    worker_dead_after_s: float = Field(
        default=DEFAULT_WORKER_DEAD_AFTER_S,
        gt=0.0,
        validation_alias="LLMDISPATCH_WORKER_DEAD_AFTER_S",
        description="A worker silent this long is dead: another sends back what it held.",
    )
    worker_max_in_flight: int = Field(
        default=DEFAULT_WORKER_MAX_IN_FLIGHT,
        ge=1,
        validation_alias="LLMDISPATCH_WORKER_MAX_IN_FLIGHT",
        description=(
            "Submitted jobs a worker process holds per vendor at once; past it each bell "
            "takes one, leaving the backlog to the lane's other workers."
        ),
    )

    batch_window: int = Field(
        default=DEFAULT_BATCH_WINDOW,
        ge=1,
        validation_alias="LLMDISPATCH_BATCH_WINDOW",
        description="Messages of one batch queued or running at once, per vendor.",
    )
    max_request_bytes: int = Field(
        default=DEFAULT_MAX_REQUEST_BYTES,
        gt=0,
        validation_alias="LLMDISPATCH_MAX_REQUEST_BYTES",
        description="Largest request a submit accepts: the bytes of its JSON, as the job holds it.",
    )
    max_batch_items: int = Field(
        default=DEFAULT_MAX_BATCH_ITEMS,
        gt=0,
        validation_alias="LLMDISPATCH_MAX_BATCH_ITEMS",
        description="Most requests one batch may hold.",
    )
    max_batch_bytes: int = Field(
        default=DEFAULT_MAX_BATCH_BYTES,
        gt=0,
        validation_alias="LLMDISPATCH_MAX_BATCH_BYTES",
        description="Largest batch file a submit reads, in bytes.",
    )

    openai_api_key: SecretStr | None = None
    openai_base_url: HttpUrlText | None = None
    openai_timeout: Seconds | None = None
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: HttpUrlText | None = None
    anthropic_timeout: Seconds | None = None
    google_api_key: SecretStr | None = None
    google_base_url: HttpUrlText | None = None
    google_timeout: Seconds | None = None
    azure_openai_api_key: SecretStr | None = None
    azure_openai_endpoint: HttpUrlText | None = None
    azure_openai_timeout: Seconds | None = None
    azure_openai_api_version: str | None = None
    cohere_api_key: SecretStr | None = None
    cohere_base_url: HttpUrlText | None = None
    cohere_timeout: Seconds | None = None
    ollama_api_key: SecretStr | None = None
    ollama_base_url: HttpUrlText | None = None
    ollama_timeout: Seconds | None = None

    # --- from the configuration file ---------------------------------------------
    vendors: dict[VendorName, VendorConfig] = Field(default_factory=dict)
    model_groups: dict[GroupName, Annotated[list[Deployment], Field(min_length=1)]] = Field(
        default_factory=dict
    )
    routing_rules: list[RoutingRule] = Field(default_factory=list)
    default_vendor: VendorName | None = None
    fallback_vendor: VendorName | None = None
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)
    cost_optimization: CostOptimization = Field(default_factory=CostOptimization)
    latency_optimization: LatencyOptimization = Field(default_factory=LatencyOptimization)
    least_busy: LeastBusy = Field(default_factory=LeastBusy)

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Build settings from the environment and the file, or raise one `ConfigError`."""
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise ConfigError(describe(exc, rename=ENV_NAMES)) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, the documented environment variables, `.env`, then the file."""
        env_file = (
            dotenv_settings.env_file if isinstance(dotenv_settings, DotEnvSettingsSource) else None
        )
        return (
            init_settings,
            _DocumentedEnvSource(settings_cls),
            _DocumentedDotEnvSource(settings_cls, env_file=env_file),
            _ConfigFileSource(settings_cls, init_settings, _variables(settings_cls, env_file)),
        )

    @field_validator("redis_url")
    @classmethod
    def _redis_url_scheme(cls, value: SecretStr) -> SecretStr:
        # The message must not repeat the URL: it may carry a password.
        problem = redis_url_problem(value.get_secret_value())
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("model_groups")
    @classmethod
    def _groups_list_each_deployment_once(
        cls, groups: dict[str, list[Deployment]]
    ) -> dict[str, list[Deployment]]:
        for name, deployments in groups.items():
            if len(set(deployments)) != len(deployments):
                raise ValueError(f"model group {name!r} lists a deployment twice")
        return groups

    @model_validator(mode="wrap")
    @classmethod
    def _report_every_problem(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # Field errors, dangling references and unset ${VAR}s all come out in one
        # ValidationError, so a user fixes the file in one pass.
        if isinstance(data, dict):
            data = _infer_vendor_types(data)
            references = _reference_problems(data)
        else:
            references = []
        try:
            settings = handler(data)
        except ValidationError as exc:
            errors = exc.errors()
            raise rebuild(cls.__name__, errors, references, replace=_explanations(errors)) from None
        if references:
            raise ValidationError.from_exception_data(cls.__name__, references)
        return settings

    @model_validator(mode="after")
    def _visibility_outlasts_every_call(self) -> Self:
        # A message still being worked on past the visibility timeout is delivered
        # again while the first run goes on: every call must end well before it.
        slow = sorted(
            name
            for name, vendor in self.vendors.items()
            if vendor.timeout >= self.visibility_timeout_s
        )
        if slow:
            raise ValueError(
                f"LLMDISPATCH_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s} s) must exceed "
                f"the timeout of every vendor; raise it or lower timeout_s of: {', '.join(slow)}"
            )
        return self

    @model_validator(mode="after")
    def _complete_vendors_from_environment(self) -> Self:
        merged = dict(self.vendors)
        listed_in_file = bool(merged)
        for spec in ENV_VENDORS:
            from_env = _env_vendor_values(self, spec)
            named = [name for name in _standard_names(spec) if name in merged]
            for name in named:
                existing = merged[name]
                missing = {k: v for k, v in from_env.items() if getattr(existing, k) is None}
                merged[name] = existing.model_copy(update=missing)
            defines = bool(from_env.get("api_key") or from_env.get("base_url"))
            if not named and not listed_in_file and defines:
                merged[spec.name] = VendorConfig(type=spec.type, **from_env)
        # Frozen model: set the resolved view once, while it is being built.
        object.__setattr__(self, "vendors", merged)
        self._register_secrets()
        return self

    def _register_secrets(self) -> None:
        for secret in redis_url_secrets(self.redis_url.get_secret_value()):
            register_secret(secret)
        for vendor in self.vendors.values():
            for secret in vendor.secret_values():
                register_secret(secret)

    @property
    def max_stream_s(self) -> float:
        """The longest a stream may run in all, however steadily it sends: most of the
        visibility timeout, so its message is acknowledged before it comes back."""
        return self.visibility_timeout_s * STREAM_SHARE_OF_VISIBILITY

    def enabled_vendors(self) -> dict[str, VendorConfig]:
        """The vendors that may receive traffic, by name."""
        return {name: vendor for name, vendor in self.vendors.items() if vendor.enabled}

    def redacted(self) -> dict[str, Any]:
        """A JSON-ready view for printing: secrets masked, resolved vendors included."""
        return self.model_dump(mode="json")


# How each environment-backed field is spelled in the environment, for messages.
ENV_NAMES: dict[str, str] = {
    name: (field.validation_alias if isinstance(field.validation_alias, str) else name.upper())
    for name, field in Settings.model_fields.items()
    if name not in FILE_FIELDS
}


def key_hint(vendor: str) -> str:
    """Where an operator sets `vendor`'s key: its environment variable, else its config entry."""
    for spec in ENV_VENDORS:
        if spec.name == vendor:
            return ENV_NAMES[spec.key_field]
    return f"vendors.{vendor}.api_key"


def _standard_names(spec: EnvVendor) -> list[str]:
    """The file entry names that take `spec`'s variables: its own, and its type's aliases
    (an entry named `google` takes the GOOGLE_* variables as `gemini` does)."""
    aliases = [alias for alias, kind in VENDOR_TYPE_ALIASES.items() if kind is spec.type]
    return [spec.name, *aliases]


def _env_vendor_values(settings: Settings, spec: EnvVendor) -> dict[str, Any]:
    values = {
        "api_key": getattr(settings, spec.key_field),
        "base_url": getattr(settings, spec.base_url_field),
        "timeout_s": getattr(settings, spec.timeout_field),
    }
    if spec.type is VendorType.AZURE:
        values["api_version"] = settings.azure_openai_api_version
    return {key: value for key, value in values.items() if value is not None}


class _DocumentedEnvSource(EnvSettingsSource):
    """Reads only the documented variables, so an unrelated `VENDORS` is never parsed."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name in FILE_FIELDS:
            return None, field_name, False
        return super().get_field_value(field, field_name)


class _DocumentedDotEnvSource(DotEnvSettingsSource):
    """`.env`, read as the environment is: the documented variables, and nothing else."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name in FILE_FIELDS:
            return None, field_name, False
        return super().get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        # DotEnvSettingsSource would pass every other line on as an extra field, which
        # `extra="forbid"` refuses: compose's FLOWER_BASIC_AUTH is no setting of ours.
        return EnvSettingsSource.__call__(self)


def _variables(settings_cls: type[BaseSettings], env_file: Any) -> dict[str, str]:
    """What `${VAR}` and LLMDISPATCH_CONFIG are looked up in: the environment, then `.env`."""
    dotenv = DotEnvSettingsSource(settings_cls, env_file=env_file, case_sensitive=True)
    found = {name: value for name, value in dotenv.env_vars.items() if value}
    return found | {name: value for name, value in os.environ.items() if value}


@dataclass(frozen=True)
class _Misplaced:
    """Stands for an environment-only key found in the file."""

    env_name: str


class _ConfigFileSource(PydanticBaseSettingsSource):
    """The file named by `LLMDISPATCH_CONFIG` (or `config_file=`), with `${VAR}` expanded
    from `variables` (the environment over `.env`)."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        init: PydanticBaseSettingsSource,
        variables: Mapping[str, str],
    ):
        super().__init__(settings_cls)
        kwargs = init.init_kwargs if isinstance(init, InitSettingsSource) else {}
        self._variables = variables
        self._path = (
            kwargs.get("config_file")
            or kwargs.get("LLMDISPATCH_CONFIG")
            or variables.get("LLMDISPATCH_CONFIG")
            or None
        )

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ returns the whole file at once

    def __call__(self) -> dict[str, Any]:
        if self._path is None:
            return {}
        path = Path(self._path)
        try:
            data = expand_variables(read_config_file(path), self._variables)
        except RecursionError:
            # A YAML alias used inside its own anchor (`a: &x [*x]`) is a value without end.
            raise ConfigError(
                [f"LLMDISPATCH_CONFIG ({path}): nested too deeply, or an alias holds itself"]
            ) from None
        return {
            key: (_Misplaced(ENV_NAMES[key]) if key in ENV_NAMES else value)
            for key, value in data.items()
        }


def _explanations(errors: list[Any]) -> dict[int, InitErrorDetails]:
    """Clearer messages for unset variables, misplaced keys and unknown top-level keys."""
    replace: dict[int, InitErrorDetails] = {}
    for index, error in enumerate(errors):
        value, loc = error.get("input"), error["loc"]
        if isinstance(value, Unresolved):
            message = (
                f"environment variable {value.variable} is not set or empty "
                f"(set it, or give a default with ${{{value.variable}:-default}})"
            )
        elif isinstance(value, _Misplaced):
            message = "found in the configuration file; set it in the environment instead"
        elif error["type"] == "extra_forbidden" and len(loc) == 1:
            message = f"unknown key {loc[0]!r}; accepted keys: {', '.join(sorted(FILE_FIELDS))}"
        else:
            continue
        replace[index] = custom_error("config", loc, message)
    return replace


def _infer_vendor_types(data: dict[str, Any]) -> dict[str, Any]:
    """A vendor named after a built-in type (`openai:`) needs no `type:` line."""
    vendors = data.get("vendors")
    if not isinstance(vendors, Mapping):
        return data
    known = {member.value for member in VendorType} | VENDOR_TYPE_ALIASES.keys()
    filled = {
        name: (
            {"type": name, **entry}
            if isinstance(entry, Mapping) and "type" not in entry and name in known
            else entry
        )
        for name, entry in vendors.items()
    }
    return {**data, "vendors": filled}


def _reference_problems(data: Mapping[str, Any]) -> list[InitErrorDetails]:
    """Names that point at no vendor, and endpoints a vendor type cannot do without."""
    vendors = data.get("vendors")
    vendors = vendors if isinstance(vendors, Mapping) else {}
    # Mirrors _complete_vendors_from_environment: env vendors only when the file lists none.
    names = set(vendors) or {
        spec.name
        for spec in ENV_VENDORS
        if data.get(spec.key_field) or data.get(spec.base_url_field)
    }
    # A YAML key such as `off:` is a boolean: show names as text, never compare types.
    known = ", ".join(sorted(str(name) for name in names)) or "none"
    problems: list[InitErrorDetails] = []

    def check(name: Any, loc: tuple[int | str, ...]) -> None:
        if isinstance(name, str) and name not in names:
            problems.append(
                custom_error(
                    "unknown_vendor", loc, f"unknown vendor {name!r} (configured: {known})"
                )
            )

    for key in ("default_vendor", "fallback_vendor"):
        check(data.get(key), (key,))
    rules = data.get("routing_rules")
    for index, rule in enumerate(rules if isinstance(rules, list) else []):
        if isinstance(rule, Mapping):
            check(rule.get("vendor"), ("routing_rules", index, "vendor"))
    groups = data.get("model_groups")
    for group, deployments in (groups if isinstance(groups, Mapping) else {}).items():
        for index, deployment in enumerate(deployments if isinstance(deployments, list) else []):
            if isinstance(deployment, Mapping):
                check(deployment.get("vendor"), ("model_groups", group, index, "vendor"))
    for section, table in (
        ("cost_optimization", "vendor_costs"),
        ("latency_optimization", "latency_weights"),
    ):
        entry = data.get(section)
        mapping = entry.get(table) if isinstance(entry, Mapping) else None
        for name in mapping if isinstance(mapping, Mapping) else ():
            check(name, (section, table, name))

    problems.extend(_missing_endpoints(data, vendors))
    return problems


def _missing_endpoints(
    data: Mapping[str, Any], vendors: Mapping[str, Any]
) -> list[InitErrorDetails]:
    """Vendor types with no public default URL must be given one, in the file or the env."""
    problems: list[InitErrorDetails] = []
    env_endpoints = {spec.name for spec in ENV_VENDORS if data.get(spec.base_url_field)}
    for name, entry in vendors.items():
        kind = entry.get("type") if isinstance(entry, Mapping) else None
        if (
            isinstance(kind, str)
            and kind in TYPES_NEEDING_BASE_URL
            and not entry.get("base_url")
            and name not in env_endpoints
        ):
            problems.append(
                custom_error(
                    "missing_base_url",
                    ("vendors", name, "base_url"),
                    f"is required for type {kind!r}",
                )
            )
    for spec in ENV_VENDORS:
        if (
            spec.type in TYPES_NEEDING_BASE_URL
            and not vendors
            and data.get(spec.key_field)
            and not data.get(spec.base_url_field)
        ):
            problems.append(
                custom_error(
                    "missing_base_url",
                    (spec.base_url_field,),
                    f"is required when {ENV_NAMES[spec.key_field]} is set",
                )
            )
    return problems
