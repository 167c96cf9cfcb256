"""`llmdispatch demo` from a clean environment: nothing on REDIS_URL, no API key.

The demo runs as the installed console script, in its own process, in a short
mode; afterwards nothing it started may still listen, and nothing it made may be
left in the temporary directory.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "llmdispatch"
DEMO_TIMEOUT_S = 180.0


ROOT = Path(__file__).resolve().parents[2]


def as_a_terminal_starts_it() -> None:
    """In the child, before it runs: SIGINT as a terminal's foreground job has it.

    A shell starting these tests in the background (`make test &`, nohup, some CI
    runners) makes them ignore SIGINT, children included, and a Python started with
    SIGINT ignored never raises KeyboardInterrupt: no Ctrl-C could reach the demo.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def clean_env(tmp_path: Path) -> dict[str, str]:
    """PATH and HOME only, a private TMPDIR, and a Redis URL where nothing listens (port 1)."""
    temporary = tmp_path / "tmp"
    temporary.mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "TMPDIR": str(temporary),
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }


def left_behind(tmp_path: Path) -> list[str]:
    """What the demo left in its temporary directory."""
    return sorted(path.name for path in (tmp_path / "tmp").iterdir())


def run_demo(script: Path, prompts: int, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run `script demo --prompts N` to its end: its exit code and its whole output."""
    result = subprocess.run(
        [str(script), "demo", "--prompts", str(prompts)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def ports_in(text: str) -> set[int]:
    """Every loopback port the demo announced (Redis, mock vendor, Flower)."""
    return {int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", text)}


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_the_demo_runs_a_batch_streams_a_reply_prints_stats_and_stops_everything(
    tmp_path: Path,
) -> None:
    code, out = run_demo(SCRIPT, 60, clean_env(tmp_path), tmp_path)
    assert code == 0, out
    assert "REDIS_URL not reachable; started a private redis-server" in out
    assert re.search(r"batch [0-9a-f]{32}: 60 succeeded, 0 failed, 0 cancelled of 60", out)
    assert "first result, demo-1: echo: Tell me about queues (1)" in out
    assert "streaming one reply: echo: Stream me a short reply about resumable streams" in out
    assert re.search(r"\(all\)\s+61\s+100\.0", out), "the statistics table counts every job"
    ports = ports_in(out)
    assert len(ports) == 3, out
    assert not [port for port in ports if listening(port)], "every process was stopped"
    assert left_behind(tmp_path) == []


def test_ctrl_c_stops_a_kept_demo_and_everything_it_started(tmp_path: Path) -> None:
    log = tmp_path / "demo.out"
    with log.open("w") as out:
        demo = subprocess.Popen(
            [str(SCRIPT), "demo", "--prompts", "10", "--keep"],
            env=clean_env(tmp_path),
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # so a failed test can stop everything the demo started
            preexec_fn=as_a_terminal_starts_it,  # noqa: PLW1509 - no threads to race in the child
        )
    try:
        deadline = time.monotonic() + DEMO_TIMEOUT_S
        while "Ctrl-C stops it" not in log.read_text():
            assert demo.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the demo never came up"
            time.sleep(0.1)
        ports = ports_in(log.read_text())
        assert len(ports) == 3
        assert all(listening(port) for port in ports), "kept up until Ctrl-C"

        assert left_behind(tmp_path), "its logs and configuration while it runs"

        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0, "Ctrl-C is how a kept demo ends"
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(timeout=30)
    assert "stopped: every process the demo started has been stopped" in log.read_text()
    assert not [port for port in ports if listening(port)]
    assert left_behind(tmp_path) == []


def test_a_demo_that_fails_to_start_says_why_stops_what_it_started_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    # Read once Redis and the mock vendor are up: the worker's settings are invalid.
    env = {**clean_env(tmp_path), "LLMDISPATCH_VISIBILITY_TIMEOUT_S": "soon"}
    code, out = run_demo(SCRIPT, 5, env, tmp_path)
    assert code == 1, out
    assert "demo: could not start: invalid configuration" in out
    assert "LLMDISPATCH_VISIBILITY_TIMEOUT_S" in out
    assert "Traceback" not in out
    ports = ports_in(out)
    assert len(ports) == 2, "Redis and the mock vendor had started"
    assert not [port for port in ports if listening(port)]
    assert left_behind(tmp_path) == []


def test_ctrl_c_ends_make_demo_without_a_make_error(tmp_path: Path) -> None:
    log = tmp_path / "make.out"
    # make runs uv: it keeps this environment's cache, certificates and proxies.
    env = {**os.environ, **clean_env(tmp_path), "HOME": os.environ.get("HOME", str(tmp_path))}
    # The environment these tests run in.
    args = ["make", "--no-print-directory", "demo", f"VENV={sys.prefix}"]
    with log.open("w") as out:
        make = subprocess.Popen(
            [*args, "DEMO_ARGS=--prompts 5 --keep"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal's job is
            preexec_fn=as_a_terminal_starts_it,  # noqa: PLW1509 - no threads to race in the child
        )
    try:
        deadline = time.monotonic() + DEMO_TIMEOUT_S
        while "Ctrl-C stops it" not in log.read_text():
            assert make.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the demo never came up"
            time.sleep(0.1)
        os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        make.wait(timeout=60)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(timeout=30)
    text = log.read_text()
    assert "stopped: every process the demo started has been stopped" in text
    assert "make: ***" not in text, text
    # (uv, which make runs first, keeps a lock file of its own there.)
    assert [name for name in left_behind(tmp_path) if name.startswith("llmd-")] == []
