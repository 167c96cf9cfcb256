"""A configuration that cannot work stops everything at start, in one line, before "ready".

A custom vendor factory that cannot be imported fails `config check`, makes
`llmdispatch worker` refuse to start, and stops a `celery worker` started
directly, before it takes a single message.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.stack import Stack, running_stack

pytestmark = pytest.mark.integration

LLMDISPATCH = Path(sys.executable).parent / "llmdispatch"
EXIT_TIMEOUT_S = 60.0
PROBLEM = "vendors.custom.type: cannot import 'no_such_vendor_module'"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path) as running:
        running.configure(
            {
                "vendors": {
                    "mock": {"type": "mock"},
                    "custom": {"type": "no_such_vendor_module:Factory", "models": ["*"]},
                },
                "default_vendor": "mock",
            },
            LLMDISPATCH_HEALTH_CHECK_INTERVAL_S="0",
        )
        yield running


def run(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        env=stack.env,
        cwd=stack.workdir,
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT_S,
        check=False,
    )


def test_config_check_refuses_a_factory_that_cannot_be_imported(stack: Stack) -> None:
    result = run(stack, str(LLMDISPATCH), "config", "check")

    assert result.returncode == 3, result.stdout + result.stderr
    assert PROBLEM in result.stderr
    assert "Traceback" not in result.stderr


def test_llmdispatch_worker_refuses_to_start_for_it(stack: Stack) -> None:
    result = run(stack, str(LLMDISPATCH), "worker", "--vendors", "custom", "--print")

    assert result.returncode == 3, result.stdout + result.stderr
    assert PROBLEM in result.stderr


def test_a_celery_worker_started_directly_stops_before_ready_with_one_line(stack: Stack) -> None:
    log = stack.workdir / "worker.log"
    args = [
        sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", "llm.custom",
        "--pool", "threads", "-c", "2", "--without-gossip", "--without-mingle",
        "--logfile", str(log),
    ]  # fmt: skip
    stack.env["LLMDISPATCH_WORKER_VENDORS"] = "custom"

    result = run(stack, *args)

    text = log.read_text() if log.exists() else ""
    assert result.returncode == 3, text + result.stderr
    assert " ready." not in text
    critical = [line for line in text.splitlines() if "CRITICAL" in line]
    assert len(critical) == 1, text
    assert f"cannot start: {PROBLEM}" in critical[0]
