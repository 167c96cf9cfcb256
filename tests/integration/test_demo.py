"""`llmdispatch demo` from a clean environment: nothing on REDIS_URL, no API key.

The demo runs as the installed console script, in its own process, in a short
mode; afterwards nothing it started may still listen.
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


def clean_env(tmp_path: Path) -> dict[str, str]:
    """PATH and HOME only, and a Redis URL where nothing listens (port 1)."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }


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
    result = subprocess.run(
        [str(SCRIPT), "demo", "--prompts", "60"],
        capture_output=True,
        text=True,
        env=clean_env(tmp_path),
        cwd=tmp_path,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "REDIS_URL not reachable; started a private redis-server" in out
    assert re.search(r"batch [0-9a-f]{32}: 60 succeeded, 0 failed, 0 cancelled of 60", out)
    assert "first result, demo-1: echo: Tell me about queues (1)" in out
    assert "streaming one reply: echo: Stream me a short reply about resumable streams" in out
    assert re.search(r"\(all\)\s+61\s+100\.0", out), "the statistics table counts every job"
    ports = ports_in(out)
    assert len(ports) == 3, out
    assert not [port for port in ports if listening(port)], "every process was stopped"


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

        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 130
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(timeout=30)
    assert "stopped: every process the demo started has been stopped" in log.read_text()
    assert not [port for port in ports if listening(port)]
