"""The installed `llmdispatch` console script runs as its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "llmdispatch"


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "")}
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={**base, **env},
        timeout=60,
        check=False,
    )


def test_console_script_is_installed_and_reports_its_version() -> None:
    result = _run("--version", env={})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("llmdispatch ")


def test_config_check_validates_a_yaml_file_with_variables(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "vendors:\n"
        "  mock: {type: mock, rpm: '${MOCK_RPM:-600}'}\n"
        "  ollama: {base_url: '${OLLAMA_URL}'}\n"
        "default_vendor: mock\n"
    )
    result = _run(
        "config",
        "check",
        "--json",
        env={"LLMDISPATCH_CONFIG": str(config), "OLLAMA_URL": "http://127.0.0.1:11434"},
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["vendors"]["mock"]["rpm"] == 600
    assert summary["vendors"]["ollama"]["endpoint"] == "http://127.0.0.1:11434"


def test_config_check_exits_3_with_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        '{"vendors": {"mock": {"type": "mock", "weight": -1}}, "default_vendor": "x"}'
    )
    result = _run("config", "check", env={"LLMDISPATCH_CONFIG": str(config)})
    assert result.returncode == 3
    assert "vendors.mock.weight: must be greater than or equal to 0" in result.stderr
    assert "default_vendor: unknown vendor 'x' (configured: mock)" in result.stderr
