"""The sweeper's reader of kombu's Redis lists, against messages Celery and kombu wrote.

Marked integration: it needs the private redis-server (no worker process).
"""

from __future__ import annotations

from collections.abc import Iterator

import celery
import pytest
from kombu import Queue

from dispatcher.broker.celery_config import celery_priority, celery_settings
from dispatcher.broker.celery_wire import TaskMessages, job_ids_in, priority_lists
from dispatcher.broker.messages import (
    RUN_JOB_TASK,
    RUN_JOBS_TASK,
    RUN_QUEUED_TASK,
    RunJob,
    RunJobs,
    RunQueued,
)
from dispatcher.broker.ready_queue import Bell, ReadyQueue
from dispatcher.config.settings import Settings
from dispatcher.models import DEFAULT_PRIORITY
from dispatcher.state.store import Keys
from producer.cli.tools.embedded_redis import EmbeddedRedis
from workers.queued_messages import present_jobs

pytestmark = pytest.mark.integration

JOB = "a" * 32
URGENT = "b" * 32
ITEMS = ("c" * 32, "d" * 32)


READY_PREFIX = "qm-test"


@pytest.fixture
def ready(redis_server: EmbeddedRedis) -> ReadyQueue:
    return ReadyQueue(redis_server.client(), Keys(READY_PREFIX))


def bell(lane: str = "llm.openai", priority: int = 3) -> Bell:
    args = RunQueued(lane, lane.removeprefix("llm."), priority).as_args()
    return Bell(*TaskMessages().encode(RUN_QUEUED_TASK, args, lane, priority))


def submit_ready(ready: ReadyQueue, job_ids: list[str], lane: str = "llm.openai") -> None:
    """As a submit queues its job: the lane's ready set, and a bell unless one is pending."""
    for job_id in job_ids:
        pipe = ready.redis.pipeline(transaction=True)
        ready.enqueue(pipe, job_id, lane, 3, bell(lane))
        pipe.execute()


@pytest.fixture
def app(redis_server: EmbeddedRedis) -> Iterator[celery.Celery]:
    server = redis_server.client()
    server.flushdb()
    settings = Settings.model_validate({"redis_url": redis_server.url})
    app = celery.Celery("queued-messages-test")
    app.conf.update(celery_settings(settings))
    yield app
    app.close()
    server.flushdb()


def send_three(app: celery.Celery) -> None:
    app.send_task(
        RUN_JOB_TASK,
        args=RunJob(JOB, vendor="openai").as_args(),
        queue="llm.openai",
        priority=celery_priority(DEFAULT_PRIORITY),
    )
    app.send_task(
        RUN_JOB_TASK,
        args=RunJob(URGENT, 2, vendor="openai").as_args(),
        queue="llm.openai",
        priority=celery_priority(9),
    )
    app.send_task(
        RUN_JOBS_TASK, args=RunJobs("openai", "e" * 32, ITEMS).as_args(), queue="llm.openai.batch"
    )


def test_every_job_named_in_the_lanes_priority_lists_is_found(
    app: celery.Celery, redis_server: EmbeddedRedis, ready: ReadyQueue
) -> None:
    send_three(app)
    client = redis_server.client()

    both = present_jobs(client, ready, ["llm.openai", "llm.openai.batch"])
    interactive = present_jobs(client, ready, ["llm.openai"])

    assert both.job_ids == {JOB, URGENT, *ITEMS}
    assert both.unscanned == frozenset()
    assert interactive.job_ids == {JOB, URGENT}
    # Celery put the default-priority one in a priority list of its own.
    assert sum(client.llen(name) for name in priority_lists("llm.openai")[1:]) == 1


def test_a_delivered_unacknowledged_message_is_found_in_kombus_unacked_hash(
    app: celery.Celery, redis_server: EmbeddedRedis, ready: ReadyQueue
) -> None:
    send_three(app)
    client = redis_server.client()
    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue(Queue("llm.openai.batch"))
        delivered = queue.get(timeout=5)  # kombu records it in `unacked`, unacknowledged
        assert client.llen("llm.openai.batch") == 0
        assert client.hlen("unacked") == 1

        found = present_jobs(client, ready, ["llm.openai.batch"])

        assert found.job_ids == set(ITEMS)
        delivered.ack()
        queue.close()
    assert present_jobs(client, ready, ["llm.openai.batch"]).job_ids == frozenset()


def test_a_lane_longer_than_the_scan_limit_is_not_read(
    app: celery.Celery, redis_server: EmbeddedRedis, ready: ReadyQueue
) -> None:
    send_three(app)

    found = present_jobs(
        redis_server.client(), ready, ["llm.openai", "llm.openai.batch"], scan_limit=1
    )

    assert found.unscanned == {"llm.openai"}
    assert found.job_ids == set(ITEMS)


def test_jobs_in_a_ready_set_and_those_a_live_bell_took_are_present(
    app: celery.Celery, redis_server: EmbeddedRedis, ready: ReadyQueue
) -> None:
    client = redis_server.client()
    submit_ready(ready, [JOB, URGENT])
    assert client.llen("llm.openai\x06\x163") == 1  # one bell for both

    found = present_jobs(client, ready, ["llm.openai"], [JOB, URGENT, ITEMS[0]])
    assert found.job_ids == {JOB, URGENT}
    assert found.unrung == {}  # the bell is queued

    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue(Queue("llm.openai"))
        delivered = queue.get(timeout=5)  # the bell, now unacknowledged
        task_id = delivered.headers["id"]
        taken = ready.take("llm.openai", 3, task_id, bell(), limit=1)
        assert taken.job_ids == [JOB]  # first come, first taken

        during = present_jobs(client, ready, ["llm.openai"], [JOB, URGENT])
        assert during.job_ids == {JOB, URGENT}  # one taken by a live bell, one still ready
        assert during.stale_takes == frozenset()
        delivered.ack()  # acknowledged without letting its takings go: a dead bell
        queue.close()
    for name in priority_lists("llm.openai"):
        client.delete(name)  # and the next bell lost as well

    after = present_jobs(client, ready, ["llm.openai"], [JOB, URGENT])
    assert after.job_ids == {URGENT}
    assert after.stale_takes == {task_id}
    assert after.unrung == {"llm.openai": 3}  # URGENT waits with no bell anywhere


def test_anything_that_is_not_one_of_our_messages_names_no_job() -> None:
    assert job_ids_in(b"not json") == []
    assert job_ids_in(b'{"headers": {"task": "other.task"}, "body": "W10="}') == []
    assert job_ids_in(b'{"headers": {"task": "dispatch.run_job"}, "body": "%%%"}') == []
