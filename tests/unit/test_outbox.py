"""The outbox: every message reaches its queue's list, in the caller's transaction when given one.

Each test runs on fakeredis and (marked integration) on the private redis-server.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from dispatcher.broker.celery_config import celery_priority
from dispatcher.broker.celery_wire import job_ids_in, queue_list
from dispatcher.broker.messages import (
    RUN_JOB_TASK,
    RUN_JOBS_TASK,
    RUN_QUEUED_TASK,
    RunJob,
    RunJobs,
)
from dispatcher.broker.outbox import Outbox
from dispatcher.broker.ready_queue import ReadyQueue
from dispatcher.state.keys import Keys

LANE = "llm.openai"
BATCH_LANE = "llm.openai.batch"


@pytest.fixture
def outbox(fake_or_real_redis: redis.Redis) -> Outbox:
    return Outbox(fake_or_real_redis, ReadyQueue(fake_or_real_redis, Keys("outbox-test")))


def messages_on(client: redis.Redis, name: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.lrange(name, 0, -1)]


def test_a_submitted_job_joins_its_lane_with_one_bell_in_the_callers_transaction(
    outbox: Outbox,
) -> None:
    pipe = outbox.redis.pipeline(transaction=True)
    outbox.queue_job(pipe, "j1", LANE, priority=5)
    outbox.queue_job(pipe, "j2", LANE, priority=5)
    bell_list = queue_list(LANE, celery_priority(5))
    assert outbox.redis.llen(bell_list) == 0  # nothing before EXEC

    pipe.execute()

    [bell] = messages_on(outbox.redis, bell_list)
    assert bell["headers"]["task"] == RUN_QUEUED_TASK
    assert bell["properties"]["priority"] == celery_priority(5)
    ready = outbox.redis.zrange(outbox.ready.keys.ready(LANE), 0, -1)
    assert ready == [b"j1", b"j2"]


def test_a_delayed_job_message_carries_its_eta_on_its_priority_list(outbox: Outbox) -> None:
    before = datetime.now(UTC)
    outbox.send_job(RunJob("a" * 32, attempt=1, vendor="openai"), LANE, 8, delay_s=20)

    [message] = messages_on(outbox.redis, queue_list(LANE, celery_priority(8)))
    assert message["headers"]["task"] == RUN_JOB_TASK
    eta = datetime.fromisoformat(message["headers"]["eta"])
    assert before + timedelta(seconds=19) < eta < datetime.now(UTC) + timedelta(seconds=21)
    assert job_ids_in(json.dumps(message)) == ["a" * 32]


def test_a_job_message_without_a_delay_has_no_eta(outbox: Outbox) -> None:
    outbox.send_job(RunJob("b" * 32, vendor="openai"), LANE, 0)

    [message] = messages_on(outbox.redis, queue_list(LANE, celery_priority(0)))
    assert message["headers"]["eta"] is None


def test_batch_messages_go_in_the_given_pipeline_or_at_once(outbox: Outbox) -> None:
    first = RunJobs("openai", "c" * 32, ("j1", "j2"), 4, 4)
    pipe = outbox.redis.pipeline(transaction=True)
    outbox.send_jobs(first, BATCH_LANE, pipe)
    assert outbox.redis.llen(BATCH_LANE) == 0
    pipe.execute()
    outbox.send_jobs(RunJobs("openai", "c" * 32, ("j3",)), BATCH_LANE)

    sent = messages_on(outbox.redis, BATCH_LANE)
    assert [m["headers"]["task"] for m in sent] == [RUN_JOBS_TASK, RUN_JOBS_TASK]
    assert sorted(job_id for m in sent for job_id in job_ids_in(json.dumps(m))) == [
        "j1",
        "j2",
        "j3",
    ]


def test_ring_sends_a_bell_even_when_one_is_pending(outbox: Outbox) -> None:
    pipe = outbox.redis.pipeline(transaction=True)
    outbox.queue_job(pipe, "j1", LANE, priority=9)
    pipe.execute()

    outbox.ring(LANE, celery_priority(9))

    bells = messages_on(outbox.redis, queue_list(LANE, celery_priority(9)))
    assert [b["headers"]["task"] for b in bells] == [RUN_QUEUED_TASK, RUN_QUEUED_TASK]
    assert bells[0]["headers"]["id"] != bells[1]["headers"]["id"]


def test_with_a_publisher_job_and_batch_messages_go_through_it(
    fake_or_real_redis: redis.Redis,
) -> None:
    published: list[tuple[Any, ...]] = []
    outbox = Outbox(
        fake_or_real_redis,
        ReadyQueue(fake_or_real_redis, Keys("outbox-test")),
        publish=lambda *sent: published.append(sent),
    )
    assert not outbox.in_transaction

    outbox.send_job(RunJob("d" * 32, vendor="openai"), LANE, 2, delay_s=1.5)
    outbox.send_jobs(RunJobs("openai", "e" * 32, ("j1",)), BATCH_LANE)

    assert published == [
        (RUN_JOB_TASK, RunJob("d" * 32, vendor="openai").as_args(), LANE, celery_priority(2), 1.5),
        (RUN_JOBS_TASK, RunJobs("openai", "e" * 32, ("j1",)).as_args(), BATCH_LANE, 0, 0.0),
    ]
    assert fake_or_real_redis.keys("llm.*") == []
