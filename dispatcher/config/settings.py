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

The sections are in `schema.py`, the environment, `.env` and file sources in
`sources.py`, and the checks that span several fields in `checks.py`.
"""

from __future__ import annotations

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
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from dispatcher.config.checks import infer_vendor_types, reference_problems
from dispatcher.config.policies import (
    CircuitBreaker,
    CostOptimization,
    LatencyOptimization,
    LeastBusy,
    RetryPolicy,
    RoutingRule,
)
from dispatcher.config.problems import describe, rebuild
from dispatcher.config.redis_address import redis_url_problem, redis_url_secrets
from dispatcher.config.schema import VENDOR_TYPE_ALIASES, HttpUrlText, VendorConfig, VendorType
from dispatcher.config.server import ServerConfig, parse_key_list
from dispatcher.config.sources import (
    ENV_VENDORS,
    ConfigFileSource,
    DocumentedDotEnvSource,
    DocumentedEnvSource,
    EnvVendor,
    env_names,
    explain_source_errors,
    read_variables,
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
    # AWS's own names, as its SDKs read them: a Bedrock API key and the endpoint override.
    server_api_keys: SecretStr | None = Field(
        default=None,
        validation_alias="LLMDISPATCH_SERVER_API_KEYS",
        description="The HTTP front's keys as key:tenant,key:tenant (beside server.api_keys).",
    )
    aws_bearer_token_bedrock: SecretStr | None = None
    aws_endpoint_url_bedrock_runtime: HttpUrlText | None = None
    bedrock_timeout: Seconds | None = None

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
    server: ServerConfig = Field(default_factory=ServerConfig)

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
            DocumentedEnvSource(settings_cls),
            DocumentedDotEnvSource(settings_cls, env_file=env_file),
            ConfigFileSource(settings_cls, init_settings, read_variables(settings_cls, env_file)),
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
            data = infer_vendor_types(data)
            references = reference_problems(data, env_names(cls))
        else:
            references = []
        try:
            settings = handler(data)
        except ValidationError as exc:
            errors = exc.errors()
            raise rebuild(
                cls.__name__, errors, references, replace=explain_source_errors(errors)
            ) from None
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
        self._add_server_keys_from_environment()
        self._register_secrets()
        return self

    def _add_server_keys_from_environment(self) -> None:
        if self.server_api_keys is None:
            return
        try:
            extra = parse_key_list(self.server_api_keys.get_secret_value())
        except (ValueError, ValidationError) as exc:
            problem = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            problem = problem.removeprefix("Value error, ")
            raise ValueError(f"LLMDISPATCH_SERVER_API_KEYS: {problem}") from None
        merged = ServerConfig.model_validate(
            {**self.server.model_dump(), "api_keys": [*self.server.api_keys, *extra]}
        )
        object.__setattr__(self, "server", merged)

    def _register_secrets(self) -> None:
        for secret in redis_url_secrets(self.redis_url.get_secret_value()):
            register_secret(secret)
        for vendor in self.vendors.values():
            for secret in vendor.secret_values():
                register_secret(secret)
        for entry in self.server.api_keys:
            register_secret(entry.key.get_secret_value())

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
ENV_NAMES: dict[str, str] = dict(env_names(Settings))


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
