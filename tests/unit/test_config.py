"""`dispatcher.config.settings.Settings` and the sections of `dispatcher.config.schema`."""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from dispatcher.config.policies import RetryPolicy
from dispatcher.config.schema import DEFAULT_BASE_URLS, AuthConfig, VendorConfig, VendorType
from dispatcher.config.settings import DEFAULT_KEY_PREFIX, DEFAULT_REDIS_URL, Settings
from dispatcher.errors import ConfigError
from dispatcher.models import Deployment
from dispatcher.redaction import MASK, redact
from dispatcher.routing.matching import serves

WriteConfig = Callable[..., Path]


@pytest.fixture
def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WriteConfig:
    """Write a config file into tmp_path and point LLMDISPATCH_CONFIG at it."""

    def write(text: str, name: str = "llmdispatch.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        monkeypatch.setenv("LLMDISPATCH_CONFIG", str(path))
        return path

    return write


def load_problems(**overrides: Any) -> list[str]:
    """The problems of the ConfigError that Settings.load() must raise."""
    with pytest.raises(ConfigError) as caught:
        Settings.load(**overrides)
    return caught.value.problems


def fresh_secret(label: str) -> str:
    """A secret no other test registered, shaped so no redaction pattern matches it alone."""
    return f"zq{label}{uuid.uuid4().hex}"


# --- environment --------------------------------------------------------------------------


def test_without_environment_or_file_settings_use_defaults_and_have_no_vendors() -> None:
    settings = Settings.load()

    assert settings.redis_url.get_secret_value() == DEFAULT_REDIS_URL
    assert settings.key_prefix == DEFAULT_KEY_PREFIX
    assert settings.config_file is None
    assert settings.vendors == {}
    assert settings.routing_rules == []
    assert settings.default_vendor is None
    assert settings.retry_policy == RetryPolicy()


def test_redis_url_and_key_prefix_come_from_their_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "rediss://cache.internal:6380/2")
    monkeypatch.setenv("LLMDISPATCH_KEY_PREFIX", "staging-1")

    settings = Settings.load()

    assert settings.redis_url.get_secret_value() == "rediss://cache.internal:6380/2"
    assert settings.key_prefix == "staging-1"


@pytest.mark.parametrize(
    ("prefix", "vendor_name", "vendor_type"),
    [
        ("OPENAI", "openai", VendorType.OPENAI),
        ("ANTHROPIC", "anthropic", VendorType.ANTHROPIC),
        ("GOOGLE", "gemini", VendorType.GEMINI),
        ("COHERE", "cohere", VendorType.COHERE),
        ("OLLAMA", "ollama", VendorType.OLLAMA),
    ],
)
def test_each_vendor_key_base_url_and_timeout_define_a_vendor_under_its_standard_name(
    monkeypatch: pytest.MonkeyPatch, prefix: str, vendor_name: str, vendor_type: VendorType
) -> None:
    monkeypatch.setenv(f"{prefix}_API_KEY", f"key-for-{vendor_name}")
    monkeypatch.setenv(f"{prefix}_BASE_URL", f"https://{vendor_name}.proxy.example/v1")
    monkeypatch.setenv(f"{prefix}_TIMEOUT", "12.5")

    settings = Settings.load()

    assert list(settings.vendors) == [vendor_name]
    vendor = settings.vendors[vendor_name]
    assert vendor.type == vendor_type
    assert vendor.api_key is not None
    assert vendor.api_key.get_secret_value() == f"key-for-{vendor_name}"
    assert vendor.base_url == f"https://{vendor_name}.proxy.example/v1"
    assert vendor.timeout_s == 12.5


def test_azure_key_endpoint_and_api_version_define_the_azure_vendor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-key-123")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://myres.openai.azure.com")
    monkeypatch.setenv("AZURE_OPENAI_API_VERSION", "2024-06-01")

    vendor = Settings.load().vendors["azure"]

    assert vendor.type == VendorType.AZURE
    assert vendor.api_key is not None
    assert vendor.api_key.get_secret_value() == "azure-key-123"
    assert vendor.base_url == "https://myres.openai.azure.com"
    assert vendor.endpoint == "https://myres.openai.azure.com"
    assert vendor.api_version == "2024-06-01"


def test_azure_key_without_an_endpoint_is_reported_because_azure_has_no_default_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A file entry of type azure without base_url is refused at start-up; the same
    # vendor built from the environment alone must not load with no endpoint at all.
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-key-123")

    problems = load_problems()

    assert any("AZURE_OPENAI_ENDPOINT" in p or p.startswith("vendors.azure") for p in problems)


def test_ollama_base_url_alone_defines_the_ollama_vendor_without_a_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OLLAMA_BASE_URL", "http://gpu-box:11434")

    vendor = Settings.load().vendors["ollama"]

    assert vendor.type == VendorType.OLLAMA
    assert vendor.api_key is None
    assert vendor.endpoint == "http://gpu-box:11434"


def test_a_timeout_alone_in_the_environment_does_not_define_a_vendor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_TIMEOUT", "30")

    settings = Settings.load()

    assert settings.vendors == {}
    assert settings.openai_timeout == 30.0


def test_empty_environment_values_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "")
    monkeypatch.setenv("REDIS_URL", "")

    settings = Settings.load()

    assert settings.vendors == {}
    assert settings.redis_url.get_secret_value() == DEFAULT_REDIS_URL


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VENDORS", "{not: [valid json"),
        ("ROUTING_RULES", "[{'vendor': "),
        ("DEFAULT_VENDOR", "ghost"),
        ("RETRY_POLICY", "garbage"),
    ],
)
def test_unrelated_environment_variables_named_like_file_keys_are_ignored(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    settings = Settings.load()

    assert settings.vendors == {}
    assert settings.routing_rules == []
    assert settings.default_vendor is None
    assert settings.retry_policy == RetryPolicy()


def test_file_vendor_takes_missing_values_from_the_environment_and_keeps_its_own(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "env-openai-key")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://env.example/v1")
    monkeypatch.setenv("OPENAI_TIMEOUT", "30")
    write_config(
        """
        vendors:
          openai:
            timeout_s: 5
            rpm: 100
        """
    )

    vendor = Settings.load().vendors["openai"]

    assert vendor.type == VendorType.OPENAI
    assert vendor.api_key is not None
    assert vendor.api_key.get_secret_value() == "env-openai-key"
    assert vendor.base_url == "https://env.example/v1"
    assert vendor.timeout_s == 5.0
    assert vendor.rpm == 100


def test_file_api_key_and_base_url_win_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "env-anthropic-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "https://env.example")
    monkeypatch.setenv("ANTHROPIC_TIMEOUT", "30")
    write_config(
        """
        vendors:
          anthropic:
            api_key: file-anthropic-key
            base_url: https://file.example
        """
    )

    vendor = Settings.load().vendors["anthropic"]

    assert vendor.api_key is not None
    assert vendor.api_key.get_secret_value() == "file-anthropic-key"
    assert vendor.base_url == "https://file.example"
    assert vendor.timeout_s == 30.0


def test_file_azure_entry_takes_endpoint_and_api_version_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig
) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://myres.openai.azure.com")
    monkeypatch.setenv("AZURE_OPENAI_API_VERSION", "2024-06-01")
    write_config(
        """
        vendors:
          azure:
            rpm: 60
        """
    )

    vendor = Settings.load().vendors["azure"]

    assert vendor.type == VendorType.AZURE
    assert vendor.base_url == "https://myres.openai.azure.com"
    assert vendor.api_version == "2024-06-01"
    assert vendor.rpm == 60


def test_a_vendor_defined_only_by_the_environment_may_be_named_in_the_file(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig
) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", "google-key-123")
    write_config(
        """
        default_vendor: gemini
        routing_rules:
          - condition: {model_pattern: "gemini-*"}
            vendor: gemini
        """
    )

    settings = Settings.load()

    assert settings.default_vendor == "gemini"
    assert settings.routing_rules[0].vendor == "gemini"
    assert settings.vendors["gemini"].type == VendorType.GEMINI


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("OPENAI_TIMEOUT", "-1", "OPENAI_TIMEOUT: must be greater than 0"),
        ("ANTHROPIC_TIMEOUT", "0", "ANTHROPIC_TIMEOUT: must be greater than 0"),
        (
            "LLMDISPATCH_KEY_PREFIX",
            "has space",
            "LLMDISPATCH_KEY_PREFIX: String should match pattern '^[A-Za-z0-9_-]{1,32}$'",
        ),
        (
            "OPENAI_BASE_URL",
            "ftp://files.example",
            "OPENAI_BASE_URL: String should match pattern '^https?://[^\\s/]+'",
        ),
    ],
)
def test_a_bad_environment_value_is_reported_under_its_variable_name(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)

    assert load_problems() == [expected]


# --- the file -----------------------------------------------------------------------------

EQUIVALENT_YAML = """
vendors:
  openai:
    api_key: file-key-0001
    rpm: 500
    models: ["gpt-4o*"]
    prices:
      gpt-4o: {input_per_mtok: 2.5, output_per_mtok: 10}
  local:
    type: openai_compatible
    base_url: http://localhost:8000/v1
    auth: {scheme: header, header_name: X-Key}
model_groups:
  smart:
    - {vendor: openai, model: gpt-4o}
    - {vendor: local, model: llama3}
routing_rules:
  - name: short
    condition: {model_pattern: "gpt-*", max_tokens: 1000}
    vendor: local
    priority: 5
default_vendor: openai
fallback_vendor: local
retry_policy: {max_retries: 5, backoff: exponential, initial_delay_s: 1, max_delay_s: 30}
cost_optimization: {enabled: true, max_cost_usd: 0.5, vendor_costs: {local: 0}}
latency_optimization: {enabled: true, max_latency_ms: 2000, latency_weights: {openai: 1.5}}
"""

EQUIVALENT_JSON: dict[str, Any] = {
    "vendors": {
        "openai": {
            "api_key": "file-key-0001",
            "rpm": 500,
            "models": ["gpt-4o*"],
            "prices": {"gpt-4o": {"input_per_mtok": 2.5, "output_per_mtok": 10}},
        },
        "local": {
            "type": "openai_compatible",
            "base_url": "http://localhost:8000/v1",
            "auth": {"scheme": "header", "header_name": "X-Key"},
        },
    },
    "model_groups": {
        "smart": [
            {"vendor": "openai", "model": "gpt-4o"},
            {"vendor": "local", "model": "llama3"},
        ]
    },
    "routing_rules": [
        {
            "name": "short",
            "condition": {"model_pattern": "gpt-*", "max_tokens": 1000},
            "vendor": "local",
            "priority": 5,
        }
    ],
    "default_vendor": "openai",
    "fallback_vendor": "local",
    "retry_policy": {
        "max_retries": 5,
        "backoff": "exponential",
        "initial_delay_s": 1,
        "max_delay_s": 30,
    },
    "cost_optimization": {"enabled": True, "max_cost_usd": 0.5, "vendor_costs": {"local": 0}},
    "latency_optimization": {
        "enabled": True,
        "max_latency_ms": 2000,
        "latency_weights": {"openai": 1.5},
    },
}


def test_a_yaml_file_and_the_equivalent_json_file_give_equal_settings(
    write_config: WriteConfig,
) -> None:
    write_config(EQUIVALENT_YAML, "llmdispatch.yaml")
    from_yaml = Settings.load()
    write_config(json.dumps(EQUIVALENT_JSON), "llmdispatch.json")
    from_json = Settings.load()

    assert from_yaml.model_dump(exclude={"config_file"}) == from_json.model_dump(
        exclude={"config_file"}
    )
    assert from_json.config_file is not None
    assert from_json.config_file.suffix == ".json"
    assert from_yaml.vendors["local"].auth == AuthConfig(scheme="header", header_name="X-Key")
    assert from_yaml.model_groups["smart"][1] == Deployment(vendor="local", model="llama3")
    assert from_yaml.retry_policy.max_delay_s == 30.0
    assert from_yaml.latency_optimization.latency_weights == {"openai": 1.5}


def test_the_file_may_be_given_as_a_keyword_instead_of_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("default_vendor: mock\nvendors:\n  mock: {}\n", encoding="utf-8")

    settings = Settings.load(config_file=path)

    assert settings.default_vendor == "mock"
    assert settings.vendors["mock"].type == VendorType.MOCK


def test_a_missing_config_file_is_a_config_error_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nope.yaml"
    monkeypatch.setenv("LLMDISPATCH_CONFIG", str(missing))

    assert load_problems() == [f"LLMDISPATCH_CONFIG ({missing}): file not found"]


def test_variables_in_file_values_are_expanded_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig
) -> None:
    monkeypatch.setenv("LLMD_TEST_KEY", "expanded-key-42")
    monkeypatch.setenv("LLMD_TEST_HOST", "llm.internal")
    monkeypatch.setenv("LLMD_TEST_RPM", "60")
    write_config(
        """
        vendors:
          local:
            type: openai_compatible
            api_key: ${LLMD_TEST_KEY}
            base_url: https://${LLMD_TEST_HOST}:8443/v1
            rpm: ${LLMD_TEST_RPM}
        """
    )

    vendor = Settings.load().vendors["local"]

    assert vendor.api_key is not None
    assert vendor.api_key.get_secret_value() == "expanded-key-42"
    assert vendor.base_url == "https://llm.internal:8443/v1"
    assert vendor.rpm == 60


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "http://localhost:8000/v1"),
        ("", "http://localhost:8000/v1"),
        ("https://set.example", "https://set.example"),
    ],
    ids=["unset-gives-default", "empty-gives-default", "set-value-wins"],
)
def test_a_default_applies_only_when_the_variable_is_unset_or_empty(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig, value: str | None, expected: str
) -> None:
    if value is None:
        monkeypatch.delenv("LLMD_TEST_URL", raising=False)
    else:
        monkeypatch.setenv("LLMD_TEST_URL", value)
    write_config(
        """
        vendors:
          local:
            type: openai_compatible
            base_url: ${LLMD_TEST_URL:-http://localhost:8000/v1}
        """
    )

    assert Settings.load().vendors["local"].base_url == expected


def test_a_double_dollar_brace_in_the_file_is_a_literal_dollar_brace(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig
) -> None:
    monkeypatch.setenv("LLMD_TEST_TEMPLATE", "should-not-appear")
    write_config(
        """
        vendors:
          mock:
            headers:
              X-Template: "$${LLMD_TEST_TEMPLATE}"
        """
    )

    headers = Settings.load().vendors["mock"].headers

    assert headers == {"X-Template": "${LLMD_TEST_TEMPLATE}"}


def test_an_environment_value_with_yaml_syntax_stays_one_string(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig
) -> None:
    monkeypatch.setenv("LLMD_TEST_NOTE", "a: b\n- c\nvendors: {evil: {type: mock}}")
    write_config(
        """
        vendors:
          mock:
            headers:
              X-Note: ${LLMD_TEST_NOTE}
        """
    )

    settings = Settings.load()

    assert list(settings.vendors) == ["mock"]
    assert settings.vendors["mock"].headers == {
        "X-Note": "a: b\n- c\nvendors: {evil: {type: mock}}"
    }


# --- every problem at once ----------------------------------------------------------------

ACCEPTED_TOP_LEVEL_KEYS = (
    "circuit_breaker, cost_optimization, default_vendor, fallback_vendor, "
    "latency_optimization, least_busy, model_groups, retry_policy, routing_rules, server, vendors"
)
ACCEPTED_VENDOR_FIELDS = (
    "api_key, api_version, auth, base_url, capabilities, connect_timeout_s, enabled, headers, "
    "health_check, health_check_model, max_tokens_field, model_limits, models, prices, priority, "
    "region, rpm, rpm_burst, stall_timeout_s, stand_in, tenant_limit, timeout_s, tpm, tpm_burst, "
    "type, weight"
)


def test_every_problem_in_the_file_and_environment_is_reported_in_one_error(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig
) -> None:
    monkeypatch.setenv("OPENAI_TIMEOUT", "-1")
    monkeypatch.delenv("LLMD_TEST_UNSET", raising=False)
    write_config(
        """
        vendors:
          openai:
            rpm: 0
            colour: blue
          local:
            type: openai_compatible
            base_url: http://localhost:8000/v1
            api_key: ${LLMD_TEST_UNSET}
        routing_rules:
          - vendor: ghost
        default_vendor: phantom
        retry_policy:
          initial_delay_s: 5
          max_delay_s: 1
        retries: 3
        """
    )

    problems = load_problems()

    assert sorted(problems) == sorted(
        [
            "OPENAI_TIMEOUT: must be greater than 0",
            "vendors.openai.rpm: must be greater than 0",
            f"vendors.openai.colour: unknown field 'colour' for VendorConfig; "
            f"accepted fields: {ACCEPTED_VENDOR_FIELDS}",
            "vendors.local.api_key: environment variable LLMD_TEST_UNSET is not set or empty "
            "(set it, or give a default with ${LLMD_TEST_UNSET:-default})",
            "routing_rules[0].vendor: unknown vendor 'ghost' (configured: local, openai)",
            "default_vendor: unknown vendor 'phantom' (configured: local, openai)",
            "retry_policy: max_delay_s (1.0) must be at least initial_delay_s (5.0)",
            f"retries: unknown key 'retries'; accepted keys: {ACCEPTED_TOP_LEVEL_KEYS}",
        ]
    )


def test_config_error_message_counts_and_lists_every_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_TIMEOUT", "-1")
    monkeypatch.setenv("COHERE_TIMEOUT", "0")

    with pytest.raises(ConfigError) as caught:
        Settings.load()

    assert str(caught.value) == (
        "invalid configuration (2 problems):\n"
        "  OPENAI_TIMEOUT: must be greater than 0\n"
        "  COHERE_TIMEOUT: must be greater than 0"
    )


def test_an_unknown_top_level_key_is_reported_with_the_accepted_keys(
    write_config: WriteConfig,
) -> None:
    write_config("vendor:\n  openai: {}\n")

    assert load_problems() == [
        f"vendor: unknown key 'vendor'; accepted keys: {ACCEPTED_TOP_LEVEL_KEYS}"
    ]


@pytest.mark.parametrize(
    ("file_key", "env_name"),
    [
        ("redis_url", "REDIS_URL"),
        ("key_prefix", "LLMDISPATCH_KEY_PREFIX"),
        ("openai_api_key", "OPENAI_API_KEY"),
    ],
)
def test_an_environment_only_key_in_the_file_is_reported_with_its_variable_name(
    write_config: WriteConfig, file_key: str, env_name: str
) -> None:
    write_config(f"{file_key}: some-value\n")

    assert load_problems() == [
        f"{env_name}: found in the configuration file; set it in the environment instead"
    ]


def test_a_vendor_named_after_a_builtin_type_needs_no_type_line(
    write_config: WriteConfig,
) -> None:
    write_config("vendors:\n  anthropic:\n    api_key: file-key-123\n")

    vendor = Settings.load().vendors["anthropic"]

    assert vendor.type == VendorType.ANTHROPIC
    assert vendor.endpoint == DEFAULT_BASE_URLS[VendorType.ANTHROPIC]


def test_a_vendor_with_another_name_and_no_type_line_is_reported(
    write_config: WriteConfig,
) -> None:
    write_config("vendors:\n  mine:\n    base_url: https://mine.example\n")

    assert load_problems() == ["vendors.mine.type: is required"]


def test_a_custom_factory_type_is_accepted(write_config: WriteConfig) -> None:
    write_config("vendors:\n  inhouse:\n    type: acme.llm_client:Factory\n")

    vendor = Settings.load().vendors["inhouse"]

    assert vendor.type == "acme.llm_client:Factory"
    assert not vendor.is_builtin
    assert vendor.endpoint is None
    assert serves(vendor, "anything-at-all")


def test_a_bad_vendor_type_is_one_clear_problem(write_config: WriteConfig) -> None:
    write_config("vendors:\n  openai:\n    type: opneai\n")

    assert load_problems() == [
        "vendors.openai.type: must be one of anthropic, azure, bedrock, cohere, gemini, google, "
        "mock, ollama, openai, openai_compatible, or a custom factory written "
        "'package.module:Factory'"
    ]


@pytest.mark.parametrize("bad_type", ["[azure]", "{name: azure}"])
def test_a_vendor_type_that_is_not_a_string_is_a_config_error_not_a_crash(
    write_config: WriteConfig, bad_type: str
) -> None:
    write_config(f"vendors:\n  mine:\n    type: {bad_type}\n")

    problems = load_problems()

    assert any(p.startswith("vendors.mine.type:") for p in problems)


def test_a_non_string_top_level_key_is_a_config_error_not_a_crash(
    write_config: WriteConfig,
) -> None:
    write_config("1: one\nvendors: {}\n")

    problems = load_problems()

    assert len(problems) == 1


@pytest.mark.parametrize("vendor_type", ["azure", "openai_compatible"])
def test_a_vendor_type_without_a_default_url_needs_a_base_url(
    write_config: WriteConfig, vendor_type: str
) -> None:
    write_config(f"vendors:\n  mine:\n    type: {vendor_type}\n    api_key: k-123456789\n")

    assert load_problems() == [f"vendors.mine.base_url: is required for type '{vendor_type}'"]


def test_a_model_group_listing_a_deployment_twice_is_reported(write_config: WriteConfig) -> None:
    write_config(
        """
        vendors:
          openai: {}
        model_groups:
          smart:
            - {vendor: openai, model: gpt-4o}
            - {vendor: openai, model: gpt-4o}
        """
    )

    assert load_problems() == ["model_groups: model group 'smart' lists a deployment twice"]


@pytest.mark.parametrize(
    ("scheme", "needed"),
    [("header", "header_name"), ("query", "query_param"), ("basic", "username")],
)
def test_an_auth_scheme_without_its_parameter_is_reported(
    write_config: WriteConfig, scheme: str, needed: str
) -> None:
    write_config(f"vendors:\n  mock:\n    auth: {{scheme: {scheme}}}\n")

    assert load_problems() == [f"vendors.mock.auth: scheme '{scheme}' needs {needed}"]


def test_unknown_vendors_are_reported_wherever_a_vendor_is_named(
    write_config: WriteConfig,
) -> None:
    write_config(
        """
        fallback_vendor: a
        model_groups:
          g:
            - {vendor: b, model: m}
        cost_optimization:
          vendor_costs: {c: 1}
        latency_optimization:
          latency_weights: {d: 1}
        """
    )

    assert sorted(load_problems()) == sorted(
        [
            "fallback_vendor: unknown vendor 'a' (configured: none)",
            "model_groups.g[0].vendor: unknown vendor 'b' (configured: none)",
            "cost_optimization.vendor_costs.c: unknown vendor 'c' (configured: none)",
            "latency_optimization.latency_weights.d: unknown vendor 'd' (configured: none)",
        ]
    )


# --- secrets ------------------------------------------------------------------------------


def test_config_error_text_never_contains_the_api_key(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig
) -> None:
    key = fresh_secret("openai")
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("OPENAI_TIMEOUT", "-1")
    write_config(
        """
        vendors:
          openai:
            rpm: 0
            api_kee: oops
        routing_rules:
          - vendor: ghost
        """
    )

    with pytest.raises(ConfigError) as caught:
        Settings.load()

    error = caught.value
    assert len(error.problems) == 4
    assert key not in str(error)
    assert key not in repr(error)
    assert key not in json.dumps(error.to_dict())


def test_settings_repr_and_json_dump_never_contain_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = fresh_secret("openai")
    password = fresh_secret("redis")
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("REDIS_URL", f"redis://:{password}@cache.internal:6379/0")

    settings = Settings.load()

    assert settings.vendors["openai"].api_key is not None
    assert settings.vendors["openai"].api_key.get_secret_value() == key
    for text in (
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        json.dumps(settings.redacted()),
    ):
        assert key not in text
        assert password not in text


def test_loading_registers_the_api_key_so_redact_masks_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = fresh_secret("openai")
    text = f"the vendor rejected {key} today"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    assert redact(text) == text  # nothing but the registry could mask this value

    Settings.load()

    assert redact(text) == f"the vendor rejected {MASK} today"


def test_loading_registers_an_api_key_given_in_the_file(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig
) -> None:
    key = fresh_secret("file")
    monkeypatch.setenv("LLMD_TEST_SECRET", key)
    write_config("vendors:\n  anthropic:\n    api_key: ${LLMD_TEST_SECRET}\n")

    Settings.load()

    assert redact(f"echo {key}") == f"echo {MASK}"


def test_a_redis_password_never_appears_in_the_error_for_a_bad_scheme(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    password = fresh_secret("redis")
    monkeypatch.setenv("REDIS_URL", f"http://:{password}@cache.internal")

    with pytest.raises(ConfigError) as caught:
        Settings.load()

    assert caught.value.problems == [
        "REDIS_URL: must start with one of redis://, rediss://, unix://, "
        "redis+sentinel://, rediss+sentinel://"
    ]
    assert password not in str(caught.value)
    assert password not in json.dumps(caught.value.to_dict())


def test_loading_registers_the_redis_password_so_redact_masks_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    password = fresh_secret("redis")
    text = f"AUTH {password} refused"
    monkeypatch.setenv("REDIS_URL", f"redis://default:{password}@cache.internal:6379/0")
    assert redact(text) == text

    Settings.load()

    assert redact(text) == f"AUTH {MASK} refused"


# --- config_schema ------------------------------------------------------------------------


@pytest.mark.parametrize("vendor_type", sorted(DEFAULT_BASE_URLS))
def test_vendor_endpoint_falls_back_to_the_public_default_url_of_its_type(
    vendor_type: VendorType,
) -> None:
    assert VendorConfig(type=vendor_type).endpoint == DEFAULT_BASE_URLS[vendor_type]


def test_vendor_endpoint_prefers_the_configured_base_url() -> None:
    vendor = VendorConfig(type="openai", base_url="https://proxy.example/v1")

    assert vendor.endpoint == "https://proxy.example/v1"


def test_openai_default_endpoint_is_the_public_api() -> None:
    assert VendorConfig(type="openai").endpoint == "https://api.openai.com/v1"


@pytest.mark.parametrize("vendor_type", ["azure", "openai_compatible", "pkg.mod:Factory"])
def test_vendor_endpoint_is_none_for_types_without_a_public_url(vendor_type: str) -> None:
    assert VendorConfig(type=vendor_type).endpoint is None


def test_retry_policy_refuses_a_max_delay_below_the_initial_delay() -> None:
    with pytest.raises(ValidationError, match="max_delay_s"):
        RetryPolicy(initial_delay_s=2.0, max_delay_s=1.0)

    assert RetryPolicy(initial_delay_s=2.0, max_delay_s=2.0).max_delay_s == 2.0


def test_auth_config_header_scheme_needs_a_header_name() -> None:
    with pytest.raises(ValidationError, match="scheme 'header' needs header_name"):
        AuthConfig(scheme="header")

    assert AuthConfig(scheme="header", header_name="X-Api-Key").header_name == "X-Api-Key"


def test_a_file_that_lists_vendors_gets_no_extra_vendor_from_an_environment_key(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-key-for-primary-0123")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-unused-0123456789")
    write_config(
        """
        vendors:
          primary:
            type: openai
            api_key: ${OPENAI_API_KEY}
        """
    )
    settings = Settings.load()
    assert list(settings.vendors) == ["primary"]
    key = settings.vendors["primary"].api_key
    assert key is not None
    assert key.get_secret_value() == "sk-env-key-for-primary-0123"


def test_a_reference_to_an_environment_only_vendor_is_refused_when_the_file_lists_vendors(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-key-0123456789")
    write_config(
        """
        vendors:
          primary: {type: openai}
        fallback_vendor: anthropic
        """
    )
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    assert caught.value.problems == [
        "fallback_vendor: unknown vendor 'anthropic' (configured: primary)"
    ]


def test_a_vendor_named_off_in_yaml_is_a_clear_problem_not_a_crash(
    write_config: WriteConfig,
) -> None:
    write_config(
        """
        vendors:
          off: {type: mock}
        """
    )
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    assert caught.value.problems == [
        # pydantic-core reports the boolean key False as 0 in the error location.
        "vendors[0]: this name must be a valid string; YAML reads off/on/yes/no and "
        "numbers as other types, so quote such names ('off')"
    ]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://:pw-secret-0123@localhost:99999/0", "Port out of range"),
        ("redis://:pw-secret-0123@localhost:-1/0", "Port could not be cast"),
        (
            "rediss://:pw-secret-0123@cache:6380/0?ssl_cert_reqs=CERT_REQUIRED",
            "Invalid SSL Certificate Requirements Flag",
        ),
        ("redis://:pw-secret-0123@cache:6379/0?colour=blue", "unexpected keyword argument"),
        ("redis://:pw-secret-0123@cache:6379/zero", "the database must be a number"),
        ("redis://:pw-secret-0123@cache:6379/0?socket_timeout=soon", "socket_timeout"),
    ],
)
def test_a_redis_url_redis_py_cannot_use_is_refused_whole_without_repeating_it(
    monkeypatch: pytest.MonkeyPatch, url: str, problem: str
) -> None:
    monkeypatch.setenv("REDIS_URL", url)

    [message] = load_problems()

    assert message.startswith("REDIS_URL: ")
    assert problem in message
    assert "pw-secret-0123" not in message


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "redis://:p%40ss@cache.internal:6380/15",
        "rediss://cache:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem",
        "unix:///run/redis.sock?db=2",
        "redis://[::1]:6379",
    ],
)
def test_usable_redis_urls_pass(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("REDIS_URL", url)

    assert Settings.load().redis_url.get_secret_value() == url
