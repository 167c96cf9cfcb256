"""`llmdispatch` parses, calls the library and prints; exit codes scripts can rely on."""

from __future__ import annotations

import ast
import json
import os
import shlex
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dispatcher import __version__
from producer.cli.root import EXIT_CONFIG_INVALID, EXIT_USAGE, app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
KEY = "sk-cli-test-0123456789abcdef"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "llmdispatch.yaml"
    path.write_text(text)
    return path


def test_version_prints_the_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"llmdispatch {__version__}"


def test_config_check_prints_the_resolved_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _write(
        tmp_path,
        "vendors:\n"
        "  openai: {weight: 3}\n"
        "  local: {type: openai_compatible, base_url: 'http://127.0.0.1:8000/v1',"
        " models: ['llama*']}\n"
        "model_groups:\n  chat: [{vendor: openai, model: gpt-4o}, {vendor: local, model: llama3}]\n"
        "routing_rules:\n  - {name: cheap, condition: {max_tokens: 100}, vendor: local}\n"
        "default_vendor: openai\n",
    )
    monkeypatch.setenv("LLMDISPATCH_CONFIG", str(config))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    result = runner.invoke(app, ["config", "check"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "configuration is valid" in out
    assert "openai" in out
    assert "local" in out
    assert "chat: openai/gpt-4o -> local/llama3" in out
    assert "cheap" in out
    assert "default vendor:  openai" in out
    assert KEY not in out


def test_config_check_json_masks_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("REDIS_URL", "redis://:cli-redis-password-1@127.0.0.1:6390/2")
    result = runner.invoke(app, ["config", "check", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["vendors"]["openai"]["api_key"] == "set"
    assert summary["vendors"]["openai"]["endpoint"] == "https://api.openai.com/v1"
    assert summary["redis_url"] == "redis://:***@127.0.0.1:6390/2"
    assert KEY not in result.output
    assert "cli-redis-password-1" not in result.output


def test_config_check_lists_every_problem_and_exits_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _write(tmp_path, "vendors:\n  openai: {rpm: 0, api_key: '" + KEY + "'}\nbogus: 1\n")
    monkeypatch.setenv("LLMDISPATCH_CONFIG", str(config))
    result = runner.invoke(app, ["config", "check"])
    assert result.exit_code == EXIT_CONFIG_INVALID
    assert "vendors.openai.rpm: must be greater than 0" in result.stderr
    assert "bogus: unknown key 'bogus'" in result.stderr
    assert KEY not in result.output


@pytest.mark.parametrize(
    "config_text",
    ["", "vendors:\n  openai: {enabled: false, api_key: 'sk-x-0123456789abcdef'}\n"],
    ids=["no vendor", "every vendor disabled"],
)
def test_config_check_refuses_a_configuration_that_can_route_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config_text: str
) -> None:
    monkeypatch.setenv("LLMDISPATCH_CONFIG", str(_write(tmp_path, config_text)))
    result = runner.invoke(app, ["config", "check"])
    assert result.exit_code == EXIT_CONFIG_INVALID, result.output
    assert "no vendor is enabled" in result.stderr
    assert "OPENAI_API_KEY" in result.stderr


def test_config_check_reports_an_unreadable_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMDISPATCH_CONFIG", str(tmp_path / "missing.yaml"))
    result = runner.invoke(app, ["config", "check"])
    assert result.exit_code == EXIT_CONFIG_INVALID
    assert "file not found" in result.stderr


# --- worker and flower ------------------------------------------------------------------

VENDORS_YAML = (
    "vendors:\n  alpha: {type: mock}\n  beta: {type: mock}\n  spare: {type: mock, enabled: false}\n"
)
CELERY = [sys.executable, "-m", "celery", "-A", "workers.app"]


@pytest.fixture
def vendors_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMDISPATCH_CONFIG", str(_write(tmp_path, VENDORS_YAML)))


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str], dict[str, str]]]:
    """Record the `os.execvpe` calls instead of replacing the test process."""
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(os, "execvpe", lambda file, argv, env: calls.append((file, argv, env)))
    return calls


@pytest.mark.usefixtures("vendors_config")
def test_worker_print_consumes_the_queues_of_the_vendors_named() -> None:
    result = runner.invoke(
        app,
        ["worker", "--vendors", "beta, alpha,beta", "-n", "b@%h", "--print", "--", "-O", "fair"],
    )
    assert result.exit_code == 0, result.output
    assert shlex.split(result.stdout) == [
        "LLMDISPATCH_WORKER_VENDORS=beta,alpha",
        *CELERY,
        "worker",
        "-Q",
        "llm.beta,llm.beta.batch,llm.alpha,llm.alpha.batch",
        "--pool",
        "threads",
        "--concurrency",
        "500",
        "--loglevel",
        "info",
        "--hostname",
        "b@%h",
        "-O",
        "fair",
    ]


@pytest.mark.usefixtures("vendors_config")
def test_worker_defaults_to_every_enabled_vendor() -> None:
    result = runner.invoke(app, ["worker", "--dry-run", "-c", "50", "--pool", "solo"])
    assert result.exit_code == 0, result.output
    words = shlex.split(result.stdout)
    assert words[0] == "LLMDISPATCH_WORKER_VENDORS=alpha,beta"
    assert words[words.index("-Q") + 1] == "llm.alpha,llm.alpha.batch,llm.beta,llm.beta.batch"
    assert words[words.index("--concurrency") + 1] == "50"
    assert words[words.index("--pool") + 1] == "solo"


@pytest.mark.usefixtures("vendors_config")
@pytest.mark.parametrize(
    ("vendors", "message"),
    [
        ("alpha,nope", "unknown vendor 'nope' (configured: alpha, beta, spare)"),
        ("spare", "disabled vendor 'spare' (enabled: alpha, beta)"),
    ],
)
def test_worker_exits_3_for_a_vendor_it_cannot_serve(
    vendors: str, message: str, execs: list[tuple[str, list[str], dict[str, str]]]
) -> None:
    result = runner.invoke(app, ["worker", "--vendors", vendors])
    assert result.exit_code == EXIT_CONFIG_INVALID
    assert message in result.stderr
    assert execs == []


def test_worker_exits_3_when_no_vendor_is_enabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _write(tmp_path, "vendors:\n  alpha: {type: mock, enabled: false}\n")
    monkeypatch.setenv("LLMDISPATCH_CONFIG", str(config))
    result = runner.invoke(app, ["worker", "--print"])
    assert result.exit_code == EXIT_CONFIG_INVALID
    assert "no vendor is enabled" in result.stderr


@pytest.mark.usefixtures("vendors_config")
def test_worker_replaces_the_process_with_celery_and_names_its_vendors_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, execs: list[tuple[str, list[str], dict[str, str]]]
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6390/3")
    result = runner.invoke(app, ["worker", "--vendors", "alpha"])
    assert result.exit_code == 0, result.output
    [(file, argv, env)] = execs
    assert (file, argv[: len(CELERY) + 3]) == (
        sys.executable,
        [*CELERY, "worker", "-Q", "llm.alpha,llm.alpha.batch"],
    )
    assert env["LLMDISPATCH_WORKER_VENDORS"] == "alpha"
    assert env["REDIS_URL"] == "redis://127.0.0.1:6390/3"


def test_flower_print_masks_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    args = ["flower", "--port", "6001", "--address", "10.0.0.5", "--basic-auth", "ops:pw-77"]
    result = runner.invoke(app, [*args, "--print"])
    assert result.exit_code == 0, result.output
    assert shlex.split(result.stdout) == [
        "FLOWER_BASIC_AUTH=ops:***",
        *CELERY,
        "flower",
        "--port=6001",
        "--address=10.0.0.5",
    ]
    assert "pw-77" not in result.output


def test_flower_hands_the_password_over_in_its_environment_not_its_arguments(
    monkeypatch: pytest.MonkeyPatch, execs: list[tuple[str, list[str], dict[str, str]]]
) -> None:
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "ops:pw-77,viewer:pw-78")
    result = runner.invoke(app, ["flower"])
    assert result.exit_code == 0, result.output
    [(file, argv, env)] = execs
    assert file == sys.executable
    assert argv == [*CELERY, "flower", "--port=5555", "--address=127.0.0.1"]
    assert env["FLOWER_BASIC_AUTH"] == "ops:pw-77,viewer:pw-78"
    masked = runner.invoke(app, ["flower", "--print"]).stdout
    assert "FLOWER_BASIC_AUTH='ops:***,viewer:***'" in masked
    assert "pw-7" not in masked


def test_flower_without_basic_auth_warns_that_its_api_stays_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    result = runner.invoke(app, ["flower", "--print"])
    assert result.exit_code == 0, result.output
    assert shlex.split(result.stdout) == [
        *CELERY,
        "flower",
        "--port=5555",
        "--address=127.0.0.1",
    ]
    assert "FLOWER_UNAUTHENTICATED_API" in result.stderr


@pytest.mark.parametrize("address", ["0.0.0.0", "10.0.0.5", "::", "flower.internal"])  # noqa: S104
def test_flower_refuses_to_listen_beyond_loopback_without_basic_auth(
    monkeypatch: pytest.MonkeyPatch,
    execs: list[tuple[str, list[str], dict[str, str]]],
    address: str,
) -> None:
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    result = runner.invoke(app, ["flower", "--address", address])
    assert result.exit_code == EXIT_USAGE, result.output
    assert f"refusing to start Flower on {address} without --basic-auth" in result.stderr
    assert execs == []


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_flower_without_basic_auth_may_listen_on_loopback(
    monkeypatch: pytest.MonkeyPatch,
    execs: list[tuple[str, list[str], dict[str, str]]],
    address: str,
) -> None:
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    result = runner.invoke(app, ["flower", "--address", address])
    assert result.exit_code == 0, result.output
    assert len(execs) == 1


@pytest.mark.parametrize("value", ["ops", "ops:", ":pw", "ops:pw,viewer"])
def test_flower_rejects_basic_auth_that_is_not_user_and_password(value: str) -> None:
    result = runner.invoke(app, ["flower", "--basic-auth", value, "--print"])
    assert result.exit_code == EXIT_USAGE
    assert "user:password" in result.stderr


def test_cli_modules_below_the_app_never_import_it() -> None:
    """`producer.cli.root` imports the command modules, so none of them may import it back."""
    for path in sorted((ROOT / "producer").glob("cli_*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{alias.name}" for alias in node.names]
                names.append(str(node.module))
            else:
                continue
            assert "producer.cli.root" not in names, f"{path.name} imports producer.cli.root"


@pytest.mark.timeout(60)
def test_submit_from_an_endless_file_is_refused_without_reading_it_all() -> None:
    result = runner.invoke(app, ["submit", "--file", "/dev/zero", "--model", "m"])
    assert result.exit_code == EXIT_USAGE, result.output
    assert "/dev/zero is larger than" in result.output
    assert "not one request" in result.output
