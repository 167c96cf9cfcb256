"""`docker-compose.yml`, checked without a Docker engine.

The file must validate against the Compose Specification's JSON schema (vendored in
`tests/data/`), every command our image runs must be a real `llmdispatch` invocation,
every variable it needs must be in `.env.example`, and the configuration the
containers load must be valid.
"""

from __future__ import annotations

import json
import random
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from dispatcher import Settings
from dispatcher.config.settings import ENV_NAMES
from dispatcher.errors import NoRoute
from dispatcher.models import CircuitState, Message, Request
from dispatcher.routing.router import LiveState, VendorState, route
from producer.cli.root import app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DEPLOY_CONFIG = ROOT / "deploy" / "llmdispatch.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
SCHEMA_FILE = ROOT / "tests" / "data" / "compose-spec.json"
OUR_IMAGE = "llmdispatcher:local"
# Variables the deploy config reads besides the documented ones: toggles and the mock's key.
DEPLOY_TOGGLES = ("OPENAI_ENABLED", "ANTHROPIC_ENABLED", "MOCK_API_KEY", "MOCK_VENDOR_URL")
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt}; $$ escapes.
_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+])?")
_ENV_LINE = re.compile(r"^(#\s*)?([A-Z_][A-Z0-9_]*)=", re.MULTILINE)

runner = CliRunner()
HI = [Message(role="user", content="hi")]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def _our_services() -> dict[str, dict[str, Any]]:
    """The services that run our image (and so the `llmdispatch` entrypoint)."""
    return {
        name: service
        for name, service in _compose()["services"].items()
        if service.get("image") == OUR_IMAGE or "build" in service
    }


def _worker_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in _our_services().items()
        if shlex.split(service["command"])[0] == "worker"
    }


def _worker_vendors(service: dict[str, Any]) -> list[str]:
    args = shlex.split(service["command"])
    return args[args.index("--vendors") + 1].split(",")


def _references(data: Any) -> dict[str, str]:
    """Each `${VAR}` in the string values of `data` -> its operator ('' when it has none).

    Both compose and our config expand values only, so comments do not count.
    """
    if isinstance(data, dict):
        return {k: v for value in data.values() for k, v in _references(value).items()}
    if isinstance(data, list):
        return {k: v for item in data for k, v in _references(item).items()}
    if not isinstance(data, str):
        return {}
    return {
        match.group(1): match.group(2) or ""
        for match in _REFERENCE.finditer(data)
        if match.group(1)
    }


def _env_example() -> tuple[set[str], set[str]]:
    """(variables set in .env.example, variables it mentions, set or commented out)."""
    lines = _ENV_LINE.findall(ENV_EXAMPLE.read_text())
    return {name for comment, name in lines if not comment}, {name for _, name in lines}


@pytest.fixture
def deploy_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The containers' view: the deploy config, with none of its toggles set."""
    monkeypatch.setenv("LLMDISPATCH_CONFIG", str(DEPLOY_CONFIG))
    for name in DEPLOY_TOGGLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_vendored_schema_is_the_compose_specification() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["title"] == "Compose Specification"
    assert "services" in schema["properties"]
    jsonschema.Draft201909Validator.check_schema(schema)


def test_compose_file_validates_against_the_compose_schema() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(_compose())
    ]
    assert errors == []


def test_compose_schema_rejects_a_misspelt_service_key() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    broken = _compose()
    broken["services"]["redis"]["healthchek"] = broken["services"]["redis"].pop("healthcheck")
    assert not jsonschema.Draft201909Validator(schema).is_valid(broken)


def test_compose_file_has_no_obsolete_version_key() -> None:
    assert "version" not in _compose()


def test_image_entrypoint_is_the_cli_the_commands_are_written_for() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["llmdispatch"]' in dockerfile
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    assert re.search(r"^USER (?!root)\S+$", dockerfile, re.MULTILINE)


def test_every_service_of_our_image_runs_an_existing_subcommand_with_valid_options() -> None:
    services = _our_services()
    assert {"mock-vendor", "worker-mock", "flower"} <= set(services)
    for name, service in services.items():
        args = shlex.split(service["command"])
        # --help is eager: the options before it are still parsed, so a wrong one fails.
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, f"{name}: {result.output}"
        assert f"llmdispatch {args[0]}" in result.output, name


def test_every_worker_command_starts_celery_on_its_vendors_queues(
    deploy_environment: pytest.MonkeyPatch,
) -> None:
    # With every real vendor enabled, as a user of its profile would set it in .env.
    deploy_environment.setenv("OPENAI_ENABLED", "true")
    deploy_environment.setenv("ANTHROPIC_ENABLED", "true")
    deploy_environment.setenv("BEDROCK_ENABLED", "true")
    workers = _worker_services()
    assert {"worker-mock", "worker-openai", "worker-anthropic", "worker-bedrock"} <= set(workers)
    for name, service in workers.items():
        result = runner.invoke(app, [*shlex.split(service["command"]), "--print"])
        assert result.exit_code == 0, f"{name}: {result.output}"
        queues = shlex.split(result.output)[shlex.split(result.output).index("-Q") + 1]
        for vendor in _worker_vendors(service):
            assert f"llm.{vendor}" in queues.split(","), name


def test_every_worker_sits_behind_a_profile_and_the_mock_ones_serve_stand_ins_only(
    deploy_environment: pytest.MonkeyPatch,
) -> None:
    settings = Settings.load()
    enabled = set(settings.enabled_vendors())
    for name, service in _worker_services().items():
        vendors = set(_worker_vendors(service))
        assert service.get("profiles"), f"{name} would start on every `docker compose up`"
        if service["profiles"] == ["mock"]:
            assert all(settings.vendors[v].is_stand_in for v in vendors), name
            assert vendors <= enabled, f"{name} would exit 3 with the shipped .env"
        else:
            assert not vendors & enabled, f"{name} serves a vendor enabled without asking"


def test_the_shipped_env_example_runs_the_mock_stack() -> None:
    assert re.search(r"^COMPOSE_PROFILES=mock$", ENV_EXAMPLE.read_text(), re.MULTILINE)


def test_every_vendor_in_the_deploy_config_has_a_worker() -> None:
    configured = set(yaml.safe_load(DEPLOY_CONFIG.read_text())["vendors"])
    served = {v for service in _worker_services().values() for v in _worker_vendors(service)}
    assert served == configured


def test_compose_variables_without_a_default_are_set_in_env_example() -> None:
    references = _references(_compose())
    needed = {name for name, operator in references.items() if operator not in {"-", ":-"}}
    assert "FLOWER_BASIC_AUTH" in needed
    set_names, mentioned = _env_example()
    assert needed <= set_names
    assert set(references) <= mentioned


def test_env_example_mentions_every_variable_the_containers_read() -> None:
    _, mentioned = _env_example()
    # docker-compose.yml sets these two itself, so .env cannot change them.
    documented = set(ENV_NAMES.values()) - {"REDIS_URL", "LLMDISPATCH_CONFIG"}
    assert documented <= mentioned
    assert set(_references(yaml.safe_load(DEPLOY_CONFIG.read_text()))) <= mentioned


def test_env_example_holds_no_real_secret() -> None:
    text = ENV_EXAMPLE.read_text()
    assert not re.search(r"^[A-Z_]*API_KEY=\S", text, re.MULTILINE)
    assert not re.search(r"sk-[A-Za-z0-9]{16,}", text)


def test_redis_persists_with_aof_on_a_named_volume() -> None:
    compose = _compose()
    redis = compose["services"]["redis"]
    command = shlex.split(redis["command"])
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert "redis-data:/data" in redis["volumes"]
    assert "redis-data" in compose["volumes"]
    assert "redis-cli" in redis["healthcheck"]["test"]
    assert "ports" not in redis


def test_our_services_reach_the_stack_redis_once_it_is_healthy() -> None:
    for name, service in _our_services().items():
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0", name
        assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
        assert service["env_file"] == [{"path": ".env", "required": False}], name


def test_flower_requires_basic_auth_from_the_environment() -> None:
    flower = _compose()["services"]["flower"]
    value = flower["environment"]["FLOWER_BASIC_AUTH"]
    assert _references(value) == {"FLOWER_BASIC_AUTH": ":?"}
    assert "--basic-auth" not in flower["command"]
    assert flower["ports"] == ["${FLOWER_HOST:-127.0.0.1}:5555:5555"], "this machine only"
    assert "healthcheck" in flower


def test_env_example_ships_no_working_flower_password() -> None:
    # Empty: compose's ${FLOWER_BASIC_AUTH:?...} then refuses to start the stack.
    assert re.search(r"^FLOWER_BASIC_AUTH=$", ENV_EXAMPLE.read_text(), re.MULTILINE)


def test_the_configuration_is_mounted_read_only_not_baked_into_the_image() -> None:
    for name, service in _our_services().items():
        config = service["environment"]["LLMDISPATCH_CONFIG"]
        assert f"./deploy/llmdispatch.yaml:{config}:ro" in service["volumes"], name
    dockerfile = (ROOT / "Dockerfile").read_text()
    copies = re.findall(r"^COPY .*$", dockerfile, re.MULTILINE)
    assert copies
    assert not [line for line in copies if "deploy" in line]


def test_worker_services_can_be_scaled() -> None:
    workers = _worker_services()
    for name, service in workers.items():
        assert "container_name" not in service, name
        assert "ports" not in service, name
        assert "hostname" not in service, name
    assert workers["worker-openai"]["profiles"] == ["openai"]
    assert workers["worker-anthropic"]["profiles"] == ["anthropic"]
    assert workers["worker-bedrock"]["profiles"] == ["bedrock"]
    assert workers["worker-mock"]["profiles"] == ["mock"]


def test_deploy_config_loads_with_only_the_mock_vendors_enabled(
    deploy_environment: pytest.MonkeyPatch,
) -> None:
    settings = Settings.load()
    assert set(settings.vendors) == {"mock", "mockhttp", "openai", "anthropic", "bedrock"}
    assert set(settings.enabled_vendors()) == {"mock", "mockhttp"}
    mockhttp = settings.vendors["mockhttp"]
    assert mockhttp.endpoint == "http://mock-vendor:8900/v1"
    assert mockhttp.api_key is not None
    assert mockhttp.api_key.get_secret_value() == "mock-key"


def test_deploy_config_enables_a_real_vendor_with_its_key_from_the_environment(
    deploy_environment: pytest.MonkeyPatch,
) -> None:
    deploy_environment.setenv("OPENAI_ENABLED", "true")
    deploy_environment.setenv("OPENAI_API_KEY", "sk-compose-test")
    settings = Settings.load()
    assert set(settings.enabled_vendors()) == {"mock", "mockhttp", "openai"}
    openai = settings.vendors["openai"]
    assert openai.api_key is not None
    assert openai.api_key.get_secret_value() == "sk-compose-test"


def test_with_real_vendors_enabled_no_request_can_reach_a_mock(
    deploy_environment: pytest.MonkeyPatch,
) -> None:
    deploy_environment.setenv("OPENAI_ENABLED", "true")
    deploy_environment.setenv("ANTHROPIC_ENABLED", "true")
    deploy_environment.setenv("OPENAI_API_KEY", "sk-compose-test")
    settings = Settings.load()

    for model, vendor in [("gpt-4o-mini", "openai"), ("claude-3-5-haiku-latest", "anthropic")]:
        for seed in range(20):
            chosen = route(Request(model=model, messages=HI), settings, rng=random.Random(seed))
            assert (chosen.vendor, chosen.fallbacks) == (vendor, []), model
    with pytest.raises(NoRoute):  # a model no real vendor serves: refused, never echoed
        route(Request(model="llama-3", messages=HI), settings, rng=random.Random(0))
    down = LiveState(vendors={"openai": VendorState(circuit=CircuitState.OPEN)})
    with pytest.raises(NoRoute):  # an outage is refused, never echoed
        route(Request(model="gpt-4o-mini", messages=HI), settings, down, random.Random(0))


def test_with_no_real_vendor_enabled_the_mocks_answer_any_model(
    deploy_environment: pytest.MonkeyPatch,
) -> None:
    chosen = route(Request(model="llama-3", messages=HI), Settings.load(), rng=random.Random(0))
    assert chosen.vendor in {"mock", "mockhttp"}


def test_the_api_service_serves_the_front_on_loopback_with_keys_from_env() -> None:
    api = _compose()["services"]["api"]
    assert api["profiles"] == ["api"]
    command = shlex.split(api["command"])
    assert command[0] == "serve"
    assert command[command.index("--host") + 1] == "0.0.0.0"  # noqa: S104 - inside the container
    assert api["ports"] == ["${API_HOST:-127.0.0.1}:8000:8000"], "this machine only"
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    # No key in the file: .env carries them, and without any `serve` exits, saying why.
    assert "LLMDISPATCH_SERVER_API_KEYS" not in api["environment"]
    assert re.search(r"^# LLMDISPATCH_SERVER_API_KEYS=$", ENV_EXAMPLE.read_text(), re.MULTILINE)
