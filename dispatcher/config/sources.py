"""Where settings come from besides keyword arguments: the environment, `.env` and the file.

Each source reads only what is ours: the documented environment variables (in
the environment, then in `.env`), and the configuration file's sections
(`FILE_FIELDS`), with `${VAR}` expanded. A key of the wrong kind (an
environment-only setting in the file) is marked, so validation can say where it
belongs. `env_names` spells each environment-backed field as an operator types it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
)

from dispatcher.config.file import Unresolved, expand_variables, read_config_file
from dispatcher.config.problems import custom_error
from dispatcher.config.schema import VendorType
from dispatcher.errors import ConfigError

__all__ = [
    "ENV_VENDORS",
    "FILE_FIELDS",
    "ConfigFileSource",
    "DocumentedDotEnvSource",
    "DocumentedEnvSource",
    "EnvVendor",
    "env_names",
    "explain_source_errors",
    "read_variables",
]


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
    EnvVendor(
        "bedrock",
        VendorType.BEDROCK,
        "aws_bearer_token_bedrock",
        "aws_endpoint_url_bedrock_runtime",
        "bedrock_timeout",
    ),
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
    "server",
)


@cache
def env_names(settings_cls: type[BaseSettings]) -> Mapping[str, str]:
    """How each environment-backed field of `settings_cls` is spelled in the environment."""
    return {
        name: (field.validation_alias if isinstance(field.validation_alias, str) else name.upper())
        for name, field in settings_cls.model_fields.items()
        if name not in FILE_FIELDS
    }


class DocumentedEnvSource(EnvSettingsSource):
    """Reads only the documented variables, so an unrelated `VENDORS` is never parsed."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name in FILE_FIELDS:
            return None, field_name, False
        return super().get_field_value(field, field_name)


class DocumentedDotEnvSource(DotEnvSettingsSource):
    """`.env`, read as the environment is: the documented variables, and nothing else."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name in FILE_FIELDS:
            return None, field_name, False
        return super().get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        # DotEnvSettingsSource would pass every other line on as an extra field, which
        # `extra="forbid"` refuses: compose's FLOWER_BASIC_AUTH is no setting of ours.
        return EnvSettingsSource.__call__(self)


def read_variables(settings_cls: type[BaseSettings], env_file: Any) -> dict[str, str]:
    """What `${VAR}` and LLMDISPATCH_CONFIG are looked up in: the environment, then `.env`."""
    dotenv = DotEnvSettingsSource(settings_cls, env_file=env_file, case_sensitive=True)
    found = {name: value for name, value in dotenv.env_vars.items() if value}
    return found | {name: value for name, value in os.environ.items() if value}


@dataclass(frozen=True)
class _Misplaced:
    """Stands for an environment-only key found in the file."""

    env_name: str


class ConfigFileSource(PydanticBaseSettingsSource):
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
        misplaced = env_names(self.settings_cls)
        return {
            key: (_Misplaced(misplaced[key]) if key in misplaced else value)
            for key, value in data.items()
        }


def explain_source_errors(errors: list[Any]) -> dict[int, InitErrorDetails]:
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
