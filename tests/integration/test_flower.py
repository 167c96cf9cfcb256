"""Real Flower against the test Redis sees our workers and tasks by name."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher import Message, Request
from dispatcher.messages import RUN_JOB_TASK
from producer import Client
from tests.integration.stack import ROOT, Stack, running_stack, wait_for

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


FLOWER_USER, FLOWER_PASSWORD = "ops", "flower-test-password-42"


def _get(url: str) -> Any:
    token = base64.b64encode(f"{FLOWER_USER}:{FLOWER_PASSWORD}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback only
            return json.load(answer)
    except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
        return None


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path) as running:
        running.configure(
            {
                "vendors": {
                    "primary": {
                        "type": "openai",
                        "base_url": "{url}/v1",
                        "api_key": "${OPENAI_API_KEY}",
                    }
                }
            },
            OPENAI_API_KEY="sk-flower-test-0123456789",
        )
        yield running


def test_flower_lists_the_worker_and_a_finished_task_by_name(stack: Stack, tmp_path: Path) -> None:
    port = _free_port()
    log = (tmp_path / "flower.log").open("wb")
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers.app", "flower",
         f"--port={port}", "--address=127.0.0.1",
         f"--basic-auth={FLOWER_USER}:{FLOWER_PASSWORD}"],
        env=stack.env, cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=log,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _get(f"{base}/api/workers") is not None, 60, "Flower to answer")
        anonymous = urllib.request.Request(f"{base}/api/workers")  # noqa: S310
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(anonymous, timeout=5)  # noqa: S310
        assert refused.value.code == 401
        stack.start_worker(["llm.primary"], name="seen")
        with stack.environment():
            client = Client.from_env()
        job_id = client.submit(
            Request(model="gpt-4o-mini", messages=[Message(role="user", content="hi")])
        )
        client.wait(job_id, timeout_s=30)

        workers = wait_for(
            lambda: (
                (w := _get(f"{base}/api/workers?refresh=1")) and any("seen@" in n for n in w) and w
            ),
            60,
            "Flower to list the worker",
        )
        assert any(name.startswith("seen@") for name in workers)

        def finished_task() -> dict[str, Any] | None:
            tasks = _get(f"{base}/api/tasks") or {}
            return next(
                (
                    t
                    for t in tasks.values()
                    if t.get("name") == RUN_JOB_TASK and t.get("state") == "SUCCESS"
                ),
                None,
            )

        task = wait_for(finished_task, 60, "Flower to show the finished task")
        assert job_id in str(task.get("args"))
        assert "hi" not in str(task.get("args"))  # the prompt never travels in a message
        assert "sk-flower-test" not in json.dumps(task)
    finally:
        flower.terminate()
        flower.wait(timeout=30)
        log.close()


def test_llmdispatch_flower_requires_the_basic_auth_set_in_its_environment(
    stack: Stack, tmp_path: Path
) -> None:
    # As docker-compose.yml starts it: `llmdispatch flower`, the password in FLOWER_BASIC_AUTH.
    port = _free_port()
    script = Path(sys.executable).parent / "llmdispatch"
    with (tmp_path / "flower.log").open("wb") as log:
        flower = subprocess.Popen(
            [str(script), "flower", "--port", str(port), "--address", "127.0.0.1"],
            env={**stack.env, "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}"},
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(lambda: _get(f"{base}/api/workers") is not None, 60, "Flower to answer")

            def status(headers: dict[str, str]) -> int:
                request = urllib.request.Request(f"{base}/api/workers", headers=headers)  # noqa: S310
                try:
                    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
                        return int(answer.status)
                except urllib.error.HTTPError as exc:
                    return exc.code

            wrong = base64.b64encode(f"{FLOWER_USER}:not-the-password".encode()).decode()
            right = base64.b64encode(f"{FLOWER_USER}:{FLOWER_PASSWORD}".encode()).decode()
            assert status({}) == 401
            assert status({"Authorization": f"Basic {wrong}"}) == 401
            assert status({"Authorization": f"Basic {right}"}) == 200
        finally:
            flower.terminate()
            flower.wait(timeout=30)
    assert FLOWER_PASSWORD not in (tmp_path / "flower.log").read_text(errors="replace")
