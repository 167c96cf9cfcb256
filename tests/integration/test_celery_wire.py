"""The task message a submit writes itself is the one Celery's `send_task` would write.

Marked integration where it needs the private redis-server, to capture a real
`send_task`.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any

import celery
import pytest
from kombu.transport.redis import Channel

from dispatcher.broker.celery_config import celery_priority, celery_settings
from dispatcher.broker.celery_wire import (
    PRIORITY_SEP,
    PRIORITY_STEPS,
    UNACKED_KEY,
    TaskMessages,
    priority_lists,
    queue_list,
)
from dispatcher.broker.messages import RUN_JOB_TASK, RUN_JOBS_TASK, RunJob, RunJobs
from dispatcher.config.settings import Settings
from producer.cli.tools.embedded_redis import EmbeddedRedis

pytestmark = pytest.mark.integration

# Fresh for every message, or for every process.
VARYING_HEADERS = {"id", "root_id", "origin"}
VARYING_PROPERTIES = {"correlation_id", "reply_to", "delivery_tag"}


def test_the_priority_lists_and_the_unacked_hash_are_kombus() -> None:
    assert Channel.sep == PRIORITY_SEP
    assert list(PRIORITY_STEPS) == list(Channel.priority_steps)
    assert Channel.unacked_key == UNACKED_KEY
    channel = object.__new__(Channel)  # _q_for_pri reads only class attributes
    for priority in range(10):
        assert queue_list("llm.x", priority) == Channel._q_for_pri(channel, "llm.x", priority)
    assert priority_lists("llm.x") == [
        Channel._q_for_pri(channel, "llm.x", step) for step in Channel.priority_steps
    ]


def test_a_long_argument_list_is_shown_cut_as_celery_cuts_it() -> None:
    _, raw = TaskMessages().encode(RUN_JOB_TASK, ["x" * 2000], "llm.x", 4)
    message = json.loads(raw)
    assert len(message["headers"]["argsrepr"]) == 1024
    assert json.loads(base64.b64decode(message["body"]))[0] == ["x" * 2000]


def without_varying(message: dict[str, Any]) -> dict[str, Any]:
    headers = {k: v for k, v in message["headers"].items() if k not in VARYING_HEADERS}
    properties = {k: v for k, v in message["properties"].items() if k not in VARYING_PROPERTIES}
    return {**message, "headers": headers, "properties": properties}


@pytest.mark.integration
@pytest.mark.parametrize("priority", [0, 5, 9])
def test_the_message_matches_send_tasks_field_for_field(
    redis_server: EmbeddedRedis, priority: int
) -> None:
    client = redis_server.client()
    client.flushdb()
    app = celery.Celery("wire-test", set_as_current=False)
    app.conf.update(celery_settings(Settings.model_validate({"redis_url": redis_server.url})))
    args = RunJob("a" * 32, vendor="openai").as_args()
    try:
        app.send_task(
            RUN_JOB_TASK, args=args, queue="llm.openai", priority=celery_priority(priority)
        )
        [celery_list] = client.keys("llm.openai*")
        [theirs] = client.lrange(celery_list, 0, -1)
    finally:
        app.close()
        client.flushdb()

    name, ours = TaskMessages().encode(RUN_JOB_TASK, args, "llm.openai", celery_priority(priority))

    assert name.encode() == celery_list
    mine, real = json.loads(ours), json.loads(theirs)
    assert without_varying(mine) == without_varying(real)
    assert set(mine["headers"]) == set(real["headers"])
    assert set(mine["properties"]) == set(real["properties"])
    assert (
        mine["headers"]["id"] == mine["headers"]["root_id"] == mine["properties"]["correlation_id"]
    )
    _, again = TaskMessages().encode(RUN_JOB_TASK, args, "llm.openai", 4)
    assert json.loads(again)["properties"]["delivery_tag"] != mine["properties"]["delivery_tag"]


@pytest.mark.integration
def test_a_batch_message_matches_send_tasks_without_a_priority(redis_server: EmbeddedRedis) -> None:
    client = redis_server.client()
    client.flushdb()
    app = celery.Celery("wire-test", set_as_current=False)
    app.conf.update(celery_settings(Settings.model_validate({"redis_url": redis_server.url})))
    args = RunJobs("openai", "b" * 32, ("a" * 32, "c" * 32), 16, 16).as_args()
    try:
        app.send_task(RUN_JOBS_TASK, args=args, queue="llm.openai.batch")
        [theirs] = client.lrange("llm.openai.batch", 0, -1)
    finally:
        app.close()
        client.flushdb()

    name, ours = TaskMessages().encode(RUN_JOBS_TASK, args, "llm.openai.batch", 0)

    assert name == "llm.openai.batch"
    assert without_varying(json.loads(ours)) == without_varying(json.loads(theirs))


@pytest.mark.integration
def test_a_delayed_job_message_matches_send_tasks_countdown(redis_server: EmbeddedRedis) -> None:
    client = redis_server.client()
    client.flushdb()
    app = celery.Celery("wire-test", set_as_current=False)
    app.conf.update(celery_settings(Settings.model_validate({"redis_url": redis_server.url})))
    message = RunJob("a" * 32, attempt=2, retry=1, vendor="openai")
    priority = celery_priority(7)
    try:
        app.send_task(
            RUN_JOB_TASK,
            args=message.as_args(),
            queue="llm.openai",
            priority=priority,
            countdown=30,
        )
        [celery_list] = client.keys("llm.openai*")
        [theirs] = client.lrange(celery_list, 0, -1)
    finally:
        app.close()
        client.flushdb()

    name, ours = TaskMessages().run_job(message, "llm.openai", priority, delay_s=30)

    assert name.encode() == celery_list
    mine, real = json.loads(ours), json.loads(theirs)
    eta_mine = datetime.fromisoformat(mine["headers"].pop("eta"))
    eta_real = datetime.fromisoformat(real["headers"].pop("eta"))
    assert eta_mine.utcoffset() == eta_real.utcoffset() == timedelta(0)
    assert abs(eta_mine - eta_real) < timedelta(seconds=10)  # each "now + 30 s"
    assert without_varying(mine) == without_varying(real)
    _, undelayed = TaskMessages().run_job(message, "llm.openai", priority)
    assert json.loads(undelayed)["headers"]["eta"] is None
