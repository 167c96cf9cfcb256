"""Real Flower against the test Redis sees our workers, our messages and every job as a task."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.events.state import State

from dispatcher import Message, Request, Settings
from dispatcher.broker.celery_config import celery_settings
from dispatcher.broker.messages import RUN_QUEUED_TASK
from producer import Client
from producer.cli.tools.embedded_redis import free_port
from tests.integration.stack import (
    LLMDISPATCH_SCRIPT,
    Flower,
    Stack,
    running_flower,
    running_stack,
    wait_for,
)

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
                },
                # One retry, a second after the failure: long beside Flower's view of it.
                "retry_policy": {"max_retries": 1, "backoff": "fixed", "initial_delay_s": 1.0},
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
        # result counts what its jobs came to (each job is a task of its own too).
        assert "llm.primary" in str(task.get("args"))
        assert task.get("result") == "{'succeeded': 1}"
        assert "hi" not in str(task.get("args"))  # the prompt never travels in a message
        assert "sk-flower-test" not in json.dumps(task)


def flower_tasks(flower: Flower) -> dict[str, dict[str, Any]]:
    """Flower's /api/tasks: every task it knows, by task id."""
    tasks: dict[str, dict[str, Any]] = flower.get("/api/tasks")[1] or {}
    return tasks


@contextmanager
def recorded_events(stack: Stack) -> Iterator[list[dict[str, Any]]]:
    """Every Celery event published on the stack's broker from now on, as Flower receives them."""
    with stack.environment():
        app = Celery("flower-test-events", set_as_current=False)
        app.conf.update(celery_settings(Settings.load()))
    seen: list[dict[str, Any]] = []
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": seen.append})
        thread = threading.Thread(
            target=receiver.capture, kwargs={"limit": None, "timeout": None}, daemon=True
        )
        thread.start()
        try:
            yield seen
        finally:
            receiver.should_stop = True
            thread.join(30)


def submit(client: Client, text: str) -> str:
    return client.submit(
        Request(model="gpt-4o-mini", messages=[Message(role="user", content=text)])
    )


def test_flower_shows_every_job_as_a_task_with_its_true_state(stack: Stack) -> None:
    with (
        running_flower(stack, user=FLOWER_USER, password=FLOWER_PASSWORD, via="celery") as flower,
        recorded_events(stack) as events,
    ):
        stack.start_worker(["llm.primary"], name="jobs")
        with stack.environment():
            client = Client.from_env()

        def both_listen() -> bool:
            # Events published before a receiver subscribes are lost: probe until both hear.
            probe = submit(client, "probe")
            client.wait(probe, timeout_s=60)
            try:
                wait_for(
                    lambda: (
                        probe in flower_tasks(flower)
                        and any(e.get("uuid") == probe for e in events)
                    ),
                    10,
                    "the probe's task",
                )
            except AssertionError:
                return False
            return True

        wait_for(both_listen, 120, "Flower and the test's receiver to hear task events")
        succeeded = submit(client, "hello flower")
        failed = submit(client, "[fault:401 flower-f1] no entry")  # 401: final, no retry
        retried = submit(client, "[fault:500@1 flower-r1] again")  # 500 once, then a reply
        for job_id in (succeeded, failed, retried):
            wait_for(lambda j=job_id: client.get(j).status.is_terminal, 60, f"job {job_id} to end")

        def all_shown() -> dict[str, dict[str, Any]] | None:
            tasks = flower_tasks(flower)
            shown = {j: tasks.get(j) or {} for j in (succeeded, failed, retried)}
            states = [
                shown[succeeded].get("state"),
                shown[failed].get("state"),
                shown[retried].get("state"),
            ]
            return shown if states == ["SUCCESS", "FAILURE", "SUCCESS"] else None

        shown = wait_for(all_shown, 60, "Flower to list the three jobs, ended, under their job ids")

        ok = shown[succeeded]
        assert ok["name"] == "job.primary"
        assert ok["worker"].startswith("jobs@")
        assert "'vendor': 'primary'" in ok["result"]
        assert "'model': 'gpt-4o-mini'" in ok["result"]
        assert "'latency_ms': " in ok["result"]
        assert ok["runtime"] is not None
        assert ok["retried"] is None
        bells = flower_tasks(flower)
        assert bells[ok["parent_id"]]["name"] == RUN_QUEUED_TASK, "the message that carried it"

        bad = shown[failed]
        assert bad["name"] == "job.primary"
        assert bad["exception"].startswith("auth: ")
        assert bad["result"] is None

        again = shown[retried]
        assert again["retries"] == 1
        assert again["retried"] is not None
        assert again["retried"] < again["succeeded"]
        assert again["exception"].startswith("unavailable: "), "the retry's reason stays"

        # Flower keeps a task's latest state; the events it was built from show its path.
        def path_of(job_id: str) -> list[str]:
            state = State()
            states = []
            for event in events:
                if event.get("uuid") == job_id:
                    state.event(event)
                    states.append(state.tasks[job_id].state)
            return states

        wait_for(lambda: path_of(retried)[-1:] == ["SUCCESS"], 30, "the retried job's events")
        assert path_of(retried) == [
            "RECEIVED",
            "STARTED",
            "RETRY",
            "RECEIVED",
            "STARTED",
            "SUCCESS",
        ]
        assert path_of(succeeded) == ["RECEIVED", "STARTED", "SUCCESS"]
        assert path_of(failed) == ["RECEIVED", "STARTED", "FAILURE"]

        everything = json.dumps([shown, events])
        for secret in ("sk-flower-test", "hello flower", "no entry", "echo:"):
            assert secret not in everything, f"{secret!r} reached Flower"


def test_llmdispatch_flower_requires_the_basic_auth_set_in_its_environment(stack: Stack) -> None:
    # As docker-compose.yml starts it: `llmdispatch flower`, the password in FLOWER_BASIC_AUTH.
    with running_flower(
        stack, user=FLOWER_USER, password=FLOWER_PASSWORD, via="llmdispatch"
    ) as flower:
        assert flower.get("/api/workers", auth=False)[0] == 401
        assert replace(flower, password="not-the-password").get("/api/workers")[0] == 401
        assert flower.get("/api/workers")[0] == 200
    assert FLOWER_PASSWORD not in flower.log_text()


def test_llmdispatch_flower_refuses_a_network_address_without_basic_auth(stack: Stack) -> None:
    port = free_port()
    env = {k: v for k, v in stack.env.items() if k != "FLOWER_BASIC_AUTH"}
    result = subprocess.run(
        [str(LLMDISPATCH_SCRIPT), "flower", "--address", "0.0.0.0", "--port", str(port)],  # noqa: S104
        env=env,
        cwd=stack.workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2, result.stdout + result.stderr
    assert "refusing to start Flower on 0.0.0.0 without --basic-auth" in result.stderr
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "nothing listens there"
