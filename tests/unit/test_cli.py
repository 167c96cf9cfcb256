"""`llmdispatch` parses, calls the library and prints; exit codes scripts can rely on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dispatcher import __version__
from producer.cli import EXIT_CONFIG_INVALID, app

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


def test_config_check_reports_an_unreadable_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMDISPATCH_CONFIG", str(tmp_path / "missing.yaml"))
    result = runner.invoke(app, ["config", "check"])
    assert result.exit_code == EXIT_CONFIG_INVALID
    assert "file not found" in result.stderr
