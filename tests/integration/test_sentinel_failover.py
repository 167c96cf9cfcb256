"""Redis failover under Sentinel: the primary dies mid-batch, a replica takes over.

A real primary, one replica (`--replicaof`) and three sentinels (quorum 2)
run on loopback (`tests.integration.sentinel_group`); the stack's every
process is pointed at them by `REDIS_URL=redis+sentinel://...` alone. A real
worker runs a batch against the HTTP stand-in vendor, each call taking
`LATENCY_MS`; the primary is SIGKILLed while calls are in flight. The test
then checks what docs/operations.md ("Redis failover with Sentinel") promises: the
sentinels promote the replica, producers get `StoreUnavailable` during the
switch (never a hang) and work after it, and the batch completes with every
item ended exactly once: one result each, in order, counted once in the
statistics. A vendor call cut off by the failover may be made again (its
result is still written once), so the stand-in may see such a prompt twice,
never more. A stream cut by the failover starts over on the new primary, and
its subscriber, resuming after the last event it saw, reads the whole reply.
The same holds with every server and sentinel behind TLS and a password.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import trustme

from dispatcher import JobEventKind, JobRecord, JobStatus, Request
from dispatcher.errors import StoreUnavailable
from dispatcher.models import StreamEvent, StreamEventType
from producer import Client, text_of
from producer.cli.tools.embedded_redis import TlsFiles
from tests.integration.sentinel_group import SentinelGroup, Server
from tests.integration.stack import Stack, running_stack, wait_for

pytestmark = pytest.mark.integration

KEY = "sk-failover-test-0123456789abcdef"
PREFIX = "itest"
VENDOR = "primary"
QUEUES = [f"llm.{VENDOR}", f"llm.{VENDOR}.batch"]
ITEMS = 400
# Each call takes this long, so a window of calls is in flight when the primary dies.
LATENCY_MS = 400
# Items done before the kill: the batch is under way, most of it still to run.
DONE_BEFORE_KILL = 60
# Generous bounds for a busy 2-core machine; a failover takes a few seconds.
PROMOTION_TIMEOUT_S = 60.0
BATCH_TIMEOUT_S = 150.0
# A producer call during the switch must end (return or raise) within this.
PRODUCER_BOUND_S = 10.0
TERMINAL_EVENTS = {JobEventKind.SUCCEEDED, JobEventKind.FAILED, JobEventKind.CANCELLED}
# URL-special characters, percent-encoded in REDIS_URL.
DATA_PASSWORD = "data:pa/ss@word-0123"
SENTINEL_PASSWORD = "watch%pass,word-4567"
# Streamed a word at a time, 300 ms apart: the stream is mid-way when the primary dies.
STREAM_PROMPT = "one two three four five six seven eight nine ten eleven twelve"


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    with SentinelGroup(tmp_path / "redis") as running:
        yield running


@pytest.fixture
def tls_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A group that speaks only TLS (a fresh CA's certificate for 127.0.0.1), with a
    password on the servers and another on the sentinels."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(cert=tmp_path / "s.pem", key=tmp_path / "s.key", ca=tmp_path / "ca.pem")
    server.cert_chain_pems[0].write_to_path(str(files.cert))
    server.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.ca))
    with SentinelGroup(
        tmp_path / "redis", password=DATA_PASSWORD, sentinel_password=SENTINEL_PASSWORD, tls=files
    ) as running:
        yield running


@pytest.fixture
def stack(tmp_path: Path, group: SentinelGroup) -> Iterator[Stack]:
    # The stack's own Redis stays idle: REDIS_URL names the sentinels (`configure`).
    with running_stack(tmp_path) as running:
        yield running


def configure(stack: Stack, group: SentinelGroup) -> Client:
    stack.configure(
        {
            "vendors": {
                VENDOR: {
                    "type": "openai",
                    "base_url": "{url}/v1",
                    "models": ["gpt-*"],
                    "timeout_s": 10,
                    "api_key": "${OPENAI_API_KEY}",
                    "headers": {"x-fake-fault": f"slow:{LATENCY_MS}"},
                }
            },
            "default_vendor": VENDOR,
            "retry_policy": {"max_retries": 2, "backoff": "fixed", "initial_delay_s": 0.2},
        },
        OPENAI_API_KEY=KEY,
        REDIS_URL=group.url,
        # Two messages of 50 items in flight: the batch takes several seconds.
        LLMDISPATCH_BATCH_WINDOW="2",
        # Far longer than the test: nothing may wait for a redelivery.
        LLMDISPATCH_VISIBILITY_TIMEOUT_S="600",
        # A message lost with the old primary is found and sent again within seconds.
        LLMDISPATCH_SWEEP_INTERVAL_S="1",
        LLMDISPATCH_SWEEP_GRACE_S="3",
        LLMDISPATCH_HEALTH_CHECK_INTERVAL_S="0",
    )
    with stack.environment():
        return Client.from_env()


def prompt(i: int) -> str:
    return f"failover{i}"


def terminal_events(record: JobRecord) -> list[JobEventKind]:
    return [e.kind for e in record.events if e.kind in TERMINAL_EVENTS]


def prompts_seen(stack: Stack) -> Counter[str]:
    """How many calls the stand-in received for each last user message."""
    return Counter(r["body"]["messages"][-1]["content"] for r in stack.received())


def producer_calls_until_one_succeeds(client: Client, batch_id: str) -> list[str]:
    """Read the batch's status again and again from the moment of the kill until a read
    succeeds; the message of each `StoreUnavailable` met (any other error fails the test).
    Every call must end within PRODUCER_BOUND_S."""
    errors: list[str] = []
    deadline = time.monotonic() + PROMOTION_TIMEOUT_S
    while time.monotonic() < deadline:
        began = time.monotonic()
        try:
            client.batch_status(batch_id)
        except StoreUnavailable as exc:
            errors.append(str(exc))
        else:
            return errors
        finally:
            took = time.monotonic() - began
            assert took < PRODUCER_BOUND_S, f"a producer call took {took:.1f} s"
        time.sleep(0.1)
    raise AssertionError(f"no producer call succeeded within {PROMOTION_TIMEOUT_S:g} s")


def leftovers(primary: redis.Redis) -> list[str]:
    """Messages still queued, or jobs still counted as running, on the (new) primary."""
    left = [f"{queue} holds messages" for queue in QUEUES if primary.llen(queue)]
    if primary.zcard(f"{PREFIX}:vendor:{VENDOR}:running"):
        left.append("jobs still count as running")
    return left


def report(**figures: Any) -> None:
    print(f"FAULTS sentinel-failover {json.dumps(figures)}")


@pytest.mark.timeout(300)
def test_a_primary_killed_mid_batch_fails_over_and_every_item_ends_once(
    group: SentinelGroup, stack: Stack
) -> None:
    client = configure(stack, group)
    worker = stack.start_worker(QUEUES, concurrency=50, name="w1")
    started = time.monotonic()
    batch_id = client.submit_batch(
        [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt(i)}]}
         for i in range(ITEMS)]
    )  # fmt: skip
    wait_for(
        lambda: client.batch_status(batch_id).counts.succeeded >= DONE_BEFORE_KILL,
        90,
        f"{DONE_BEFORE_KILL} items done",
    )
    before = client.batch_status(batch_id).counts
    old: Server | None = group.primary
    assert old is not None
    old.kill()
    killed_at = time.monotonic()
    assert before.succeeded < ITEMS, "the kill should come mid-batch"

    # During the switch a producer fails fast and clearly, then works again by itself.
    errors = producer_calls_until_one_succeeds(client, batch_id)
    producer_back_s = time.monotonic() - killed_at
    new = group.wait_for_promotion(old, PROMOTION_TIMEOUT_S)
    promoted_s = time.monotonic() - killed_at
    assert errors, "a producer call right after the kill should meet the outage"
    assert all("is unreachable" in e and KEY not in e for e in errors), errors[0]
    probe_id = client.submit(
        Request(model="gpt-4o-mini", messages=[{"role": "user", "content": "after failover"}])
    )

    record = client.wait_batch(batch_id, timeout_s=BATCH_TIMEOUT_S)
    elapsed = time.monotonic() - started
    probe = client.wait(probe_id, timeout_s=60)

    # Every item once: one result each, in input order, one terminal event, counted once.
    assert (record.counts.succeeded, record.counts.total) == (ITEMS, ITEMS)
    results = client.batch_results(batch_id)
    assert [r.response.content if r.response else None for r in results] == [
        f"echo: {prompt(i)}" for i in range(ITEMS)
    ]
    records = [client.get(r.job_id) for r in results]
    assert len({r.job_id for r in records}) == ITEMS
    assert all(r.status is JobStatus.SUCCEEDED for r in records)
    assert all(terminal_events(r) == [JobEventKind.SUCCEEDED] for r in records)
    assert probe.content == "echo: after failover"
    stats = client.stats()
    assert stats.total_requests == ITEMS + 1
    assert stats.successful_requests == ITEMS + 1
    assert stats.failed_requests == 0

    # The stand-in saw every prompt; only calls cut off by the failover were made again.
    seen = prompts_seen(stack)
    repeated = sorted(p for p in (prompt(i) for i in range(ITEMS)) if seen[p] > 1)
    assert all(seen[prompt(i)] >= 1 for i in range(ITEMS))
    assert max(seen[prompt(i)] for i in range(ITEMS)) <= 2
    assert len(repeated) <= ITEMS - before.succeeded

    # The replica was promoted; the old primary is gone; the worker rode it out as an outage.
    assert new in group.replicas
    assert group.role(new) == "master"
    assert not old.running()
    assert "Redis stopped answering" in worker.log_text()
    primary = group.client_of(new)
    try:
        wait_for(lambda: not leftovers(primary), 40, "no message or running job left over")
    finally:
        primary.close()
    requeued = [r for r in records if any(e.kind is JobEventKind.REQUEUED for e in r.events)]
    report(
        jobs=ITEMS,
        faults=f"primary SIGKILLed with {before.succeeded} of {ITEMS} items done",
        promoted_after_s=round(promoted_s, 1),
        producer_back_after_s=round(producer_back_s, 1),
        producer_errors_during_switch=len(errors),
        succeeded=record.counts.succeeded,
        duplicated_results=0,
        vendor_calls_repeated=len(repeated),
        lost_by_the_broker_and_sent_again=len(requeued),
        seconds=round(elapsed, 1),
    )


class Follower(threading.Thread):
    """A subscriber reading a job's stream, resuming after the last seq it saw.

    That is what a consumer in production does with `stream(job_id, after=seq)`
    when Redis goes away under it (`StoreUnavailable`): here, until the
    sentinels have promoted a replica.
    """

    def __init__(self, client: Client, job_id: str) -> None:
        super().__init__(daemon=True)
        self.client, self.job_id = client, job_id
        self.events: list[StreamEvent] = []
        self.resumed = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        deadline = time.monotonic() + PROMOTION_TIMEOUT_S + 60
        try:
            while time.monotonic() < deadline:
                after = self.events[-1].seq if self.events else 0
                try:
                    for event in self.client.stream(self.job_id, after=after, start_timeout_s=60):
                        self.events.append(event)
                    return
                except StoreUnavailable:
                    self.resumed += 1
                    time.sleep(0.2)
            raise AssertionError("the stream never ended")
        except BaseException as exc:
            self.error = exc

    def chunks(self) -> int:
        return sum(event.type is StreamEventType.CHUNK for event in self.events)

    def finish(self) -> list[StreamEvent]:
        self.join(timeout=PROMOTION_TIMEOUT_S + 90)
        assert not self.is_alive(), "the subscriber never saw the end"
        assert self.error is None, self.error
        return self.events


@pytest.mark.timeout(300)
def test_a_stream_cut_by_a_failover_starts_over_and_its_subscriber_reads_the_whole_reply(
    group: SentinelGroup, stack: Stack
) -> None:
    client = configure(stack, group)
    worker = stack.start_worker(QUEUES, concurrency=10, name="w1")
    content = f"{STREAM_PROMPT} [fault:stall:300 failover]"
    job_id = client.submit(
        Request(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": content}],
            stream=True,
            allow_fallback=False,
        )
    )
    follower = Follower(client, job_id)
    follower.start()
    wait_for(lambda: follower.chunks() >= 3, 60, "three chunks of the stream")
    old = group.primary
    assert old is not None
    old.kill()
    wait_for(lambda: follower.resumed >= 1, 30, "the subscriber to lose the primary")
    group.wait_for_promotion(old, PROMOTION_TIMEOUT_S)

    events = follower.finish()
    seqs = [event.seq for event in events]
    assert seqs == sorted(set(seqs)), "no event twice, in order"
    assert events[-1].type is StreamEventType.DONE
    assert [e.type for e in events].count(StreamEventType.RESET) == 1, "one run cut, one reset"
    assert text_of(events) == f"echo: {content}"
    record = client.get(job_id)
    assert terminal_events(record) == [JobEventKind.SUCCEEDED], "the failover is not the vendor's"
    assert record.response is not None
    assert record.response.content == f"echo: {content}"
    assert "Redis stopped answering" in worker.log_text()


@pytest.mark.timeout(300)
def test_over_tls_with_passwords_jobs_run_before_and_after_a_failover(
    tls_group: SentinelGroup, tmp_path: Path
) -> None:
    with running_stack(tmp_path) as stack:  # its own Redis stays idle, as above
        client = configure(stack, tls_group)
        worker = stack.start_worker(QUEUES, concurrency=10, name="w1")
        question = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "before"}]}
        assert client.wait(client.submit(question), timeout_s=60).content == "echo: before"

        old = tls_group.primary
        assert old is not None
        old.kill()
        tls_group.wait_for_promotion(old, PROMOTION_TIMEOUT_S)
        after = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "after"}]}
        job_id = wait_for(lambda: submitted(client, after), 60, "a submit to succeed")
        # Its bell went to the new primary: the worker's broker connection (kombu's
        # Sentinel transport, over TLS) found it there.
        assert client.wait(job_id, timeout_s=60).content == "echo: after"
        log = worker.log_text()
        assert DATA_PASSWORD not in log
        assert SENTINEL_PASSWORD not in log


def submitted(client: Client, request: dict[str, Any]) -> str | None:
    """The job id of a submit, or None while Redis is unreachable."""
    try:
        return client.submit(request)
    except StoreUnavailable:
        return None
