"""Real Flower against the test Redis sees our workers and tasks by name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dispatcher import Message, Request
from dispatcher.messages import RUN_QUEUED_TASK
from producer import Client
from tests.integration.stack import Stack, running_flower, running_stack, wait_for

pytestmark = pytest.mark.integration

FLOWER_USER, FLOWER_PASSWORD = "ops", "flower-test-password-42"


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


def test_flower_lists_the_worker_and_a_finished_task_by_name(stack: Stack) -> None:
    with running_flower(stack, user=FLOWER_USER, password=FLOWER_PASSWORD, via="celery") as flower:
        assert flower.get("/api/workers", auth=False)[0] == 401
        stack.start_worker(["llm.primary"], name="seen")
        with stack.environment():
            client = Client.from_env()
        job_id = client.submit(
            Request(model="gpt-4o-mini", messages=[Message(role="user", content="hi")])
        )
        client.wait(job_id, timeout_s=30)

        def listed() -> Any:
            status, workers = flower.get("/api/workers?refresh=1")
            return status == 200 and any("seen@" in n for n in workers) and workers

        workers = wait_for(listed, 60, "Flower to list the worker")
        assert any(name.startswith("seen@") for name in workers)

        def finished_task() -> dict[str, Any] | None:
            tasks = flower.get("/api/tasks")[1] or {}
            return next(
                (
                    t
                    for t in tasks.values()
                    if t.get("name") == RUN_QUEUED_TASK and t.get("state") == "SUCCESS"
                ),
                None,
            )

        task = wait_for(finished_task, 60, "Flower to show the finished task")
        # A submit's job goes out with its lane's bell: its args name the lane, its
        # result the jobs it ran.
        assert "llm.primary" in str(task.get("args"))
        assert job_id in str(task.get("result"))
        assert "hi" not in str(task.get("args"))  # the prompt never travels in a message
        assert "sk-flower-test" not in json.dumps(task)


def test_llmdispatch_flower_requires_the_basic_auth_set_in_its_environment(stack: Stack) -> None:
    # As docker-compose.yml starts it: `llmdispatch flower`, the password in FLOWER_BASIC_AUTH.
    with running_flower(
        stack, user=FLOWER_USER, password=FLOWER_PASSWORD, via="llmdispatch"
    ) as flower:
        assert flower.get("/api/workers", auth=False)[0] == 401
        assert replace(flower, password="not-the-password").get("/api/workers")[0] == 401
        assert flower.get("/api/workers")[0] == 200
    assert FLOWER_PASSWORD not in flower.log_text()
