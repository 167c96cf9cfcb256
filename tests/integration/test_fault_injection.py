"""The fault-injection suite: kill workers, restart Redis, make vendors flaky.

Every scenario runs on a private real Redis with real `celery worker`
processes and the HTTP stand-in vendors, and checks the same promises:
every job ends exactly once (one result or one typed error), nothing stays
queued or running, and the statistics equal what the job records say.
Each scenario prints one `FAULTS` line with its figures (jobs, faults
injected, results, lost, duplicated, seconds), the figures RELIABILITY.md
records.
"""

from __future__ import annotations

import base64
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from dispatcher import JobEventKind, JobRecord, JobStatus, Request
from dispatcher.broker.celery_wire import priority_lists
from dispatcher.broker.messages import RUN_JOBS_TASK, RUN_QUEUED_TASK
from dispatcher.errors import DispatcherError, StoreUnavailable
from dispatcher.models import StreamEvent, StreamEventType
from producer import Client, text_of
from producer.cli.tools.embedded_redis import EmbeddedRedis
from tests.integration.stack import Stack, two_vendors, wait_for
from tests.standins.server import standin_server

pytestmark = pytest.mark.integration

KEY = "sk-faults-test-0123456789abcdef"
PREFIX = "itest"
VENDORS = ("primary", "backup")
QUEUES = [f"llm.{v}{lane}" for v in VENDORS for lane in ("", ".batch")]
WAIT_REASONS = ("waiting ", "every vendor of the route is cooling down")
OUTAGE_S = 3.0  # how long Redis stays down in the restart scenario
TERMINAL_EVENTS = {JobEventKind.SUCCEEDED, JobEventKind.FAILED, JobEventKind.CANCELLED}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack whose Redis keeps its data across a restart (AOF), as in production."""
    with (
        EmbeddedRedis(appendonly=True) as server,
        standin_server() as standin,
    ):
        running = Stack(server, standin, tmp_path)
        try:
            yield running
        finally:
            running.stop()


def configure(
    stack: Stack, *, timeout_s: float = 5, retry_delay_s: float = 0.2, **env: str
) -> Client:
    stack.configure(
        two_vendors(
            timeout_s=timeout_s,
            primary_headers={"x-vendor": "primary"},
            backup_headers={"x-vendor": "backup"},
            fallback_vendor="backup",
            retry_policy={"max_retries": 2, "backoff": "fixed", "initial_delay_s": retry_delay_s},
            circuit_breaker={"failure_threshold": 1000, "reset_timeout_s": 1.0},
        ),
        **{
            "OPENAI_API_KEY": KEY,
            "LLMDISPATCH_VISIBILITY_TIMEOUT_S": "8",
            "LLMDISPATCH_HEALTH_CHECK_INTERVAL_S": "0",
            **env,
        },
    )
    with stack.environment():
        return Client.from_env()


def items(count: int, tag: str) -> list[dict[str, Any]]:
    return as_items(f"{tag}{i}" for i in range(count))


def items_failing_once(count: int, tag: str, every: int) -> dict[str, int]:
    """The prompts of `count` items, every `every`-th failing its first call (a 500).

    Each prompt, in input order, with the vendor calls it takes: 2 when it fails once.
    """
    return {
        f"{tag}{i}" + (f" [fault:500@1 {tag}-{i}]" if i % every == 0 else ""): (
            2 if i % every == 0 else 1
        )
        for i in range(count)
    }


def single(prompt: str) -> Request:
    return Request(model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}])


def wait_ended(client: Client, job_id: str, timeout_s: float = 120) -> JobRecord:
    """The job's record once it has ended, however it ended."""
    with suppress(DispatcherError):
        client.wait(job_id, timeout_s=timeout_s)
    return client.get(job_id)


def as_items(prompts: Iterable[str]) -> list[dict[str, Any]]:
    return [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": p}]} for p in prompts]


def prompts_seen(stack: Stack) -> Counter[str]:
    """How many calls the stand-ins received for each last user message."""
    return Counter(r["body"]["messages"][-1]["content"] for r in stack.received())


def terminal_events(record: JobRecord) -> list[JobEventKind]:
    return [e.kind for e in record.events if e.kind in TERMINAL_EVENTS]


def assert_nothing_left(stack: Stack, client: Client, timeout_s: float = 40) -> int:
    """No message waits in a queue, no job counts as running, no unacknowledged message can act.

    A message whose acknowledgement was lost with its connection (a Redis
    restart) stays unacknowledged until the visibility timeout brings it back;
    such a copy may remain only when every job it names has ended, so that it
    will be skipped. Returns how many such copies there are.
    """
    raw = stack.redis.client(decode_responses=True)

    def leftovers() -> list[str]:
        left = [f"{queue} holds messages" for queue in QUEUES if raw.llen(queue)]
        left += [
            f"{vendor} counts running jobs"
            for vendor in VENDORS
            if raw.zcard(f"{PREFIX}:vendor:{vendor}:running")
        ]
        for job_id in unacked_job_ids(raw):
            if not client.get(job_id).status.is_terminal:
                left.append(f"an unacknowledged message for job {job_id}, which has not ended")
        return left

    try:
        wait_for(lambda: not leftovers(), timeout_s, "no message or job to be left over")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {leftovers()[:5]}") from None
    return int(raw.hlen("unacked"))


def message_job_ids(raw: Any) -> set[str]:
    """The job ids named by every message in any queue (priority lists too) or unacknowledged."""
    ids = set(unacked_job_ids(raw))
    for key in raw.scan_iter("llm.*"):
        if raw.type(key) == "list":
            for entry in raw.lrange(key, 0, -1):
                ids.update(job_ids_of(json.loads(entry), raw))
    return ids


def job_ids_of(message: dict[str, Any], raw: Any) -> list[str]:
    """The jobs a message runs: its own, a batch message's, or those a bell took."""
    task = message["headers"]["task"]
    if task == RUN_QUEUED_TASK:
        taken = raw.hget(f"{PREFIX}:taken", message["headers"]["id"])
        return taken.split() if taken else []
    args = json.loads(base64.b64decode(message["body"]))[0]
    return list(args[2]) if task == RUN_JOBS_TASK else [args[0]]


def unacked_job_ids(raw: Any) -> list[str]:
    """The job ids named by every message in kombu's `unacked` hash."""
    return [
        job_id for entry in raw.hvals("unacked") for job_id in job_ids_of(json.loads(entry)[0], raw)
    ]


def assert_stats_equal_records(client: Client, records: list[JobRecord]) -> None:
    stats = client.stats()
    by_status = Counter(r.status for r in records)
    ended = len(records) - by_status[JobStatus.CANCELLED]
    assert stats.total_requests == ended
    assert stats.successful_requests == by_status[JobStatus.SUCCEEDED]
    assert stats.failed_requests == by_status[JobStatus.FAILED]
    assert stats.prompt_tokens == sum(r.usage.prompt_tokens for r in records if r.usage)
    assert stats.completion_tokens == sum(r.usage.completion_tokens for r in records if r.usage)
    # Retries after a vendor's error; waits for a cooling-down vendor or a rate limit are
    # RETRY events too, but not retries in the statistics.
    retries = sum(
        1
        for r in records
        for e in r.events
        if e.kind is JobEventKind.RETRY and not (e.reason or "").startswith(WAIT_REASONS)
    )
    assert stats.retries == retries
    for name, vendor in stats.vendor_stats.items():
        succeeded_here = sum(
            1 for r in records if r.response is not None and r.response.vendor == name
        )
        assert vendor.successes == succeeded_here, name


def report(scenario: str, **figures: object) -> None:
    print(f"FAULTS {scenario} {json.dumps(figures)}")


def test_a_worker_killed_mid_batch_of_2000_leaves_every_item_ended_once(stack: Stack) -> None:
    client = configure(stack, LLMDISPATCH_BATCH_WINDOW="4")
    started = time.monotonic()
    first = stack.start_worker(QUEUES, concurrency=50, name="w1")
    batch_id = client.submit_batch(items(2000, "kill"))
    wait_for(lambda: client.batch_status(batch_id).counts.succeeded >= 400, 90, "400 items done")
    first.kill()
    running_at_kill = client.batch_status(batch_id).counts.running
    stack.start_worker(QUEUES, concurrency=50, name="w2")
    record = client.wait_batch(batch_id, timeout_s=180)
    elapsed = time.monotonic() - started

    results = client.batch_results(batch_id)
    assert (record.counts.succeeded, record.counts.total) == (2000, 2000)
    assert [r.response.content if r.response else None for r in results] == [
        f"echo: kill{i}" for i in range(2000)
    ]
    records = [client.get(r.job_id) for r in results]
    assert len({r.job_id for r in records}) == 2000
    assert all(terminal_events(r) == [JobEventKind.SUCCEEDED] for r in records)
    seen = prompts_seen(stack)
    repeated = [p for p, n in seen.items() if n > 1]
    assert all(seen[f"kill{i}"] >= 1 for i in range(2000))
    assert running_at_kill > 0, "the kill should catch items mid-call"
    assert len(repeated) <= running_at_kill, "only the calls cut off by the kill run twice"
    assert_stats_equal_records(client, records)
    assert assert_nothing_left(stack, client) == 0
    report(
        "worker-sigkill",
        jobs=2000,
        faults=f"SIGKILL with {running_at_kill} running",
        succeeded=record.counts.succeeded,
        lost=0,
        duplicated_results=0,
        vendor_calls_repeated=len(repeated),
        seconds=round(elapsed, 1),
    )


def test_a_worker_killed_while_its_bells_hold_a_backlog_of_submits_ends_every_job_once(
    stack: Stack,
) -> None:
    client = configure(stack)
    prompts = [f"bell{i}" for i in range(600)]
    job_ids = [client.submit(single(prompt)) for prompt in prompts]  # a backlog, no worker yet
    raw = stack.redis.client(decode_responses=True)
    assert raw.zcard(f"{PREFIX}:ready:llm.primary") == 600
    started = time.monotonic()
    first = stack.start_worker(QUEUES, concurrency=20, name="w1")
    wait_for(lambda: client.stats().successful_requests >= 150, 90, "150 jobs done")
    first.kill()
    taken_at_kill = sum(len(ids.split()) for ids in raw.hvals(f"{PREFIX}:taken"))
    second = stack.start_worker(QUEUES, concurrency=20, name="w2")
    records = [wait_ended(client, job_id) for job_id in job_ids]
    elapsed = time.monotonic() - started

    assert [r.response.content if r.response else None for r in records] == [
        f"echo: {p}" for p in prompts
    ]
    assert all(terminal_events(r) == [JobEventKind.SUCCEEDED] for r in records)
    assert all(r.attempt == 0 for r in records)  # each ran by its bell, none sent again
    seen = prompts_seen(stack)
    repeated = [p for p, n in seen.items() if n > 1]
    assert all(seen[p] >= 1 for p in prompts)
    assert taken_at_kill > 0, "the kill should catch bells holding jobs"
    assert len(repeated) <= taken_at_kill, "only the calls the kill cut off run twice"
    bells = sum(  # each one that ended; the first worker's last ones never did
        len(re.findall(rf"{re.escape(RUN_QUEUED_TASK)}\[\S+\] succeeded", w.log_text()))
        for w in (first, second)
    )
    assert bells < 600 / 5, f"{bells} bells for 600 jobs: they should go out many to a bell"
    assert_stats_equal_records(client, records)
    assert assert_nothing_left(stack, client) == 0
    assert raw.hlen(f"{PREFIX}:taken") == 0
    report(
        "worker-sigkill-submits",
        jobs=600,
        faults=f"SIGKILL with {taken_at_kill} jobs taken by its bells",
        succeeded=len(records),
        bells=bells,
        vendor_calls_repeated=len(repeated),
        seconds=round(elapsed, 1),
    )


def test_a_worker_stopped_by_sigterm_mid_batch_finishes_its_calls_and_hands_over_the_rest(
    stack: Stack,
) -> None:
    # A rolling restart: warm shutdown lets running calls end, and puts back what waits.
    client = configure(stack, LLMDISPATCH_BATCH_WINDOW="4")
    first = stack.start_worker(QUEUES, concurrency=50, name="w1")
    expected = items_failing_once(2000, "term", 10)  # retries wait as countdowns at the stop
    batch_id = client.submit_batch(as_items(expected))
    wait_for(lambda: client.batch_status(batch_id).counts.succeeded >= 400, 90, "400 items done")
    running_at_stop = client.batch_status(batch_id).counts.running
    first.stop()
    assert first.process.returncode == 0, "a warm shutdown"
    stack.start_worker(QUEUES, concurrency=50, name="w2")
    record = client.wait_batch(batch_id, timeout_s=120)

    assert (record.counts.succeeded, record.counts.total) == (2000, 2000)
    records = [client.get(r.job_id) for r in client.batch_results(batch_id)]
    assert all(terminal_events(r) == [JobEventKind.SUCCEEDED] for r in records)
    seen = prompts_seen(stack)
    repeated = sum(max(0, seen[p] - n) for p, n in expected.items())
    assert all(seen[p] >= n for p, n in expected.items())
    assert repeated == 0, "a warm shutdown cuts no call short"
    assert_stats_equal_records(client, records)
    assert assert_nothing_left(stack, client) == 0
    report(
        "worker-sigterm",
        jobs=2000,
        faults=f"SIGTERM (warm shutdown) with {running_at_stop} running; 200 items fail once",
        succeeded=record.counts.succeeded,
        lost=0,
        duplicated_results=0,
        vendor_calls_repeated=repeated,
    )


def test_a_redis_restart_mid_batch_loses_nothing_and_producers_fail_fast(stack: Stack) -> None:
    # A visibility timeout far longer than the test: nothing may wait for it to come back.
    client = configure(
        stack,
        retry_delay_s=2.0,
        LLMDISPATCH_BATCH_WINDOW="4",
        LLMDISPATCH_VISIBILITY_TIMEOUT_S="600",
        # The sweeper finds a message the broker lost within seconds, not minutes.
        LLMDISPATCH_SWEEP_INTERVAL_S="1",
        LLMDISPATCH_SWEEP_GRACE_S="3",
    )
    stack.start_worker(QUEUES, concurrency=50, name="w1")
    started = time.monotonic()
    # Every fifth item fails once, so retries wait as countdown messages when Redis goes.
    expected_calls = items_failing_once(2000, "restart", 5)
    batch_id = client.submit_batch(as_items(expected_calls))
    wait_for(lambda: client.batch_status(batch_id).counts.succeeded >= 300, 90, "300 items done")

    stack.redis.stop(forget_port=False)
    outage_started = time.monotonic()
    probe = Request(model="gpt-4o-mini", messages=[{"role": "user", "content": "while down"}])
    for call in (
        lambda: client.submit(probe),
        lambda: client.batch_status(batch_id),
        lambda: client.wait_batch(batch_id, timeout_s=60),
    ):
        began = time.monotonic()
        with pytest.raises(DispatcherError) as caught:
            call()
        assert time.monotonic() - began < 10, "a producer must not hang while Redis is down"
        assert "redis" in str(caught.value).lower()
        assert KEY not in str(caught.value)
    worker_log = stack.workers[0].log
    wait_for(
        lambda: "Redis stopped answering" in worker_log.read_text(errors="replace"),
        30,
        "the worker to notice the outage",
    )
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))  # the fault's length
    stack.redis.start()
    outage_s = time.monotonic() - outage_started

    # kombu's Redis transport takes a message off its queue with BRPOP. One that Redis
    # serves just as it shuts down is gone with the reply (about 1 run in 10 under
    # load, for one item): the sweeper finds its job queued with no message anywhere
    # and sends it again (docs/guarantees.md, Reliability).
    record = client.wait_batch(batch_id, timeout_s=60)
    elapsed = time.monotonic() - started
    results = client.batch_results(batch_id)
    assert record.counts.succeeded == 2000
    assert [r.response.content if r.response else None for r in results] == [
        f"echo: {prompt}" for prompt in expected_calls
    ]
    records = [client.get(r.job_id) for r in results]
    assert all(terminal_events(r) == [JobEventKind.SUCCEEDED] for r in records)
    assert_stats_equal_records(client, records)
    left_unacked = assert_nothing_left(stack, client)
    requeued = [r for r in records if any(e.kind is JobEventKind.REQUEUED for e in r.events)]
    seen = prompts_seen(stack)
    restored = re.findall(r"restored (\d+) countdown", stack.workers[0].log_text())
    report(
        "redis-restart",
        jobs=2000,
        faults=f"Redis stopped for {outage_s:.1f} s, restarted from AOF; 400 items fail once",
        succeeded=record.counts.succeeded,
        lost_by_the_broker_and_sent_again=len(requeued),
        duplicated_results=0,
        vendor_calls_repeated=sum(max(0, seen[p] - n) for p, n in expected_calls.items()),
        countdowns_restored=sum(int(n) for n in restored),
        unacked_copies_of_ended_jobs=left_unacked,
        seconds=round(elapsed, 1),
    )


# Faults for the flaky-vendor scenario, each as `[fault:...]` markers take them:
# `@N` fails the first N calls carrying the marker; without it, every call fails.
TRANSIENT_FAULTS = (
    "429@1,retry-after:1",
    "500@2",
    "529@1",
    "slow:4500@1",  # past the vendors' 3 s timeout
)
STREAM_FAULTS = ("midstream-drop@1", "midstream-error@1")
LASTING_FAULTS = ("500", "529")  # every call, on every vendor: the job fails, typed
FLAKY_JOBS, FLAKY_SHARE, LASTING_SHARE = 600, 0.3, 0.1


def flaky_plan(rng: random.Random) -> list[tuple[bool, str | None, bool]]:
    """For each job: streamed?, the fault it carries (30 % do), and whether it lasts."""
    plan = []
    for _ in range(FLAKY_JOBS):
        stream = rng.random() < 0.4
        if rng.random() >= FLAKY_SHARE:
            plan.append((stream, None, False))
        elif rng.random() < LASTING_SHARE:
            plan.append((stream, rng.choice(LASTING_FAULTS), True))
        else:
            choices = TRANSIENT_FAULTS + (STREAM_FAULTS if stream else ())
            plan.append((stream, rng.choice(choices), False))
    return plan


def test_with_30_percent_of_calls_failing_every_job_ends_once_and_stats_match(
    stack: Stack,
) -> None:
    # 3 s: a healthy call on a busy machine never comes near it; the slow fault passes it.
    client = configure(stack, timeout_s=3)
    for name in ("w1", "w2"):
        stack.start_worker(QUEUES, concurrency=50, name=name)
    plan = flaky_plan(random.Random(9))
    started = time.monotonic()
    jobs = []
    for i, (stream, fault, _) in enumerate(plan):
        marker = f" [fault:{fault} flaky-{i}]" if fault else ""
        jobs.append(
            client.submit(
                Request(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": f"flaky{i}{marker}"}],
                    stream=stream,
                )
            )
        )
    for job_id in jobs:
        wait_for(lambda j=job_id: client.get(j).status.is_terminal, 120, f"job {job_id} to end")
    elapsed = time.monotonic() - started

    records = [client.get(j) for j in jobs]
    assert all(len(terminal_events(r)) == 1 for r in records), "each job ends exactly once"
    lasting = {i for i, (_, _, lasts) in enumerate(plan) if lasts}
    failed = {i for i, r in enumerate(records) if r.status is JobStatus.FAILED}
    assert failed == lasting, "exactly the jobs whose faults never clear fail"
    for i in failed:
        error = records[i].error
        assert error is not None, i
        assert error.kind == "unavailable", (i, error)
    for i, record in enumerate(records):
        if i not in failed:
            assert record.response is not None
            content = record.response.content
            assert content.startswith(f"echo: flaky{i}"), (i, content)
    faulted = [r for r, (_, fault, _) in zip(records, plan, strict=True) if fault]
    assert sum(r.attempts > 1 for r in faulted) == len(faulted), "every fault cost a retry"
    assert_stats_equal_records(client, records)
    assert assert_nothing_left(stack, client) == 0
    calls = len(stack.received())
    report(
        "flaky-vendors",
        jobs=FLAKY_JOBS,
        faults=f"{len(faulted)} jobs with faults ({len(lasting)} lasting), "
        f"{calls - FLAKY_JOBS} failed calls of {calls}",
        succeeded=FLAKY_JOBS - len(failed),
        failed_typed=len(failed),
        lost=0,
        duplicated_results=0,
        seconds=round(elapsed, 1),
    )


# A streamed reply slow enough to be cut in the middle: 300 ms between its words.
STREAM_PROMPT = "one two three four five six seven eight nine ten"


class Follower(threading.Thread):
    """A subscriber reading a job's stream, reconnecting after the last seq it saw.

    That is what a consumer in production does with `stream(job_id, after=seq)`
    when Redis goes away under it (`StoreUnavailable`).
    """

    def __init__(self, client: Client, job_id: str, redis_server: EmbeddedRedis) -> None:
        super().__init__(daemon=True)
        self.client, self.job_id, self.redis_server = client, job_id, redis_server
        self.events: list[StreamEvent] = []
        self.reconnects = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while True:
                after = self.events[-1].seq if self.events else 0
                try:
                    for event in self.client.stream(self.job_id, after=after, start_timeout_s=60):
                        self.events.append(event)
                    return
                except StoreUnavailable:
                    self.reconnects += 1
                    wait_for(self._redis_answers, 60, "Redis to answer the subscriber again")
        except BaseException as exc:
            self.error = exc

    def _redis_answers(self) -> bool:
        try:
            return bool(self.redis_server.client(socket_timeout=1).ping())
        except OSError:
            return False
        except Exception:
            return False

    def chunks(self) -> int:
        return sum(event.type is StreamEventType.CHUNK for event in self.events)

    def finish(self) -> list[StreamEvent]:
        self.join(timeout=90)
        assert not self.is_alive(), "the subscriber never saw the end"
        assert self.error is None, self.error
        return self.events


def start_stream(client: Client, stack: Stack, tag: str) -> tuple[str, str, Follower]:
    content = f"{STREAM_PROMPT} [fault:stall:300 {tag}]"
    job_id = client.submit(
        Request(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": content}],
            stream=True,
            allow_fallback=False,
        )
    )
    follower = Follower(client, job_id, stack.redis)
    follower.start()
    wait_for(lambda: follower.chunks() >= 3, 30, "three chunks of the stream")
    return job_id, f"echo: {content}", follower


def assert_stream_whole(events: list[StreamEvent], reply: str) -> None:
    seqs = [event.seq for event in events]
    assert seqs == sorted(set(seqs)), "no event twice, in order"
    assert events[-1].type is StreamEventType.DONE
    assert [e.type for e in events].count(StreamEventType.RESET) == 1
    assert text_of(events) == reply


def test_a_stream_cut_by_a_worker_kill_starts_over_with_one_reset(stack: Stack) -> None:
    client = configure(stack)
    first = stack.start_worker(QUEUES, concurrency=10, name="w1")
    job_id, reply, follower = start_stream(client, stack, "kill")
    first.kill()
    stack.start_worker(QUEUES, concurrency=10, name="w2")
    assert_stream_whole(follower.finish(), reply)
    assert terminal_events(client.get(job_id)) == [JobEventKind.SUCCEEDED]


def test_a_stream_cut_by_a_redis_restart_starts_over_and_its_subscriber_resumes(
    stack: Stack,
) -> None:
    client = configure(stack)
    worker = stack.start_worker(QUEUES, concurrency=10, name="w1")
    job_id, reply, follower = start_stream(client, stack, "restart")
    stack.redis.stop(forget_port=False)
    wait_for(lambda: follower.reconnects >= 1, 30, "the subscriber to lose Redis")
    # Down until the worker's next chunk write meets the outage (redis-py reconnects a
    # pooled connection by itself, so a restart between two writes would go unseen).
    wait_for(lambda: "Redis stopped answering" in worker.log_text(), 30, "the worker to meet it")
    stack.redis.start()
    events = follower.finish()
    assert_stream_whole(events, reply)
    record = client.get(job_id)
    assert terminal_events(record) == [JobEventKind.SUCCEEDED], "Redis's outage is not the vendor's"
    assert record.response is not None
    assert record.response.content == reply


def test_messages_the_broker_lost_are_found_by_the_sweeper_and_sent_again(stack: Stack) -> None:
    client = configure(
        stack,
        LLMDISPATCH_BATCH_WINDOW="1",
        LLMDISPATCH_SWEEP_INTERVAL_S="0.5",
        LLMDISPATCH_SWEEP_GRACE_S="1",
    )
    probe = Request(model="gpt-4o-mini", messages=[{"role": "user", "content": "lost single"}])
    job_id = client.submit(probe)
    prompts = [f"lost item {i}" for i in range(120)]  # three chained messages of the batch
    batch_id = client.submit_batch(as_items(prompts))
    raw = stack.redis.client(decode_responses=True)
    # What a BRPOP served as Redis shut down leaves: the messages are in no list at all.
    for lane in ("llm.primary", "llm.primary.batch"):
        raw.delete(*priority_lists(lane))
    waiting = {job_id, *(r.job_id for r in client.batch_results(batch_id))}
    assert not waiting & message_job_ids(raw)
    started = time.monotonic()

    stack.start_worker(QUEUES, concurrency=20, name="w1")

    assert client.wait(job_id, timeout_s=60).content == "echo: lost single"
    record = client.wait_batch(batch_id, timeout_s=60)
    elapsed = time.monotonic() - started
    assert record.counts.succeeded == 120
    results = client.batch_results(batch_id)
    assert [r.response.content if r.response else None for r in results] == [
        f"echo: {p}" for p in prompts
    ]
    single = client.get(job_id)
    # The submit's job waited in its lane's ready set: only the bell was lost, and
    # the sweeper rang the lane again; the job kept its place and its first attempt.
    assert [e.kind for e in single.events] == [
        JobEventKind.QUEUED,
        JobEventKind.STARTED,
        JobEventKind.SUCCEEDED,
    ]
    assert (single.attempt, single.attempts) == (0, 1)
    assert "no bell; rang: llm.primary" in stack.workers[0].log_text()
    records = [client.get(r.job_id) for r in results]
    requeued = [any(e.kind is JobEventKind.REQUEUED for e in r.events) for r in records]
    assert requeued == [True] * 50 + [False] * 70  # the first message only; the chain went on
    seen = prompts_seen(stack)
    assert all(seen[p] == 1 for p in [*prompts, "lost single"]), "a job was called twice"
    assert_stats_equal_records(client, [single, *records])
    assert_nothing_left(stack, client)
    report(
        "lost-messages",
        jobs=121,
        faults="2 messages deleted from their queues before any worker ran (1 bell, 50 items)",
        succeeded=121,
        rung_again=1,
        sent_again=sum(requeued),
        vendor_calls_repeated=0,
        seconds=round(elapsed, 1),
    )
