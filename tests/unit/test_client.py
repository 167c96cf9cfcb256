"""The producer client, its asyncio twin and the job commands, on fakeredis with a fake sender."""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from typer.testing import CliRunner

import producer
import producer.cli.jobs
import producer.cli.root
import producer.client
import producer.shortcuts
from dispatcher import (
    ConfigError,
    Deployment,
    InvalidRequest,
    JobCancelled,
    JobNotFound,
    JobStatus,
    NoRoute,
    Request,
    Response,
    Settings,
    StoreUnavailable,
    VendorAuthError,
)
from dispatcher.broker.celery_config import celery_priority
from dispatcher.broker.celery_wire import queue_list
from dispatcher.broker.messages import RunJob, RunQueued
from dispatcher.broker.ready_queue import Bell
from dispatcher.config.policies import LeastBusy
from dispatcher.models import HealthStatus, Stats, VendorStats
from dispatcher.state.store import WAIT_SLICE_S, JobStore
from dispatcher.vendors.base import Health
from producer import AsyncClient, Client
from producer.celery_sender import CelerySender
from producer.cli.root import app
from producer.connections import REDIS_MAX_CONNECTIONS, REDIS_SOCKET_TIMEOUT_S

PROMPT = "a very secret prompt 7c1e"
PREFIX = "llmd"
# Generous bounds: a wait that works returns in milliseconds.
PROMPTLY_S = 5.0
runner = CliRunner()


class Recorder:
    """A `send` that records every message; optionally finishes the job, as a worker would."""

    def __init__(self, server: fakeredis.FakeServer, *, finish: bool = False) -> None:
        self.sent: list[tuple[RunJob, str, int]] = []
        self.finish = finish
        self.store = JobStore(fakeredis.FakeRedis(server=server), PREFIX)

    def __call__(self, message: RunJob, queue: str, priority: int) -> None:
        self.sent.append((message, queue, priority))
        if self.finish:
            self.store.finish(message.job_id, JobStatus.SUCCEEDED, vendor="openai", response=REPLY)


REPLY = Response(content="hello there", model="gpt-4o-mini", vendor="openai")


@pytest.fixture
def settings() -> Settings:
    return Settings.load(openai_api_key="sk-test-0123456789", anthropic_api_key="sk-ant-01234567")


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def fake_redis(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def sender(server: fakeredis.FakeServer) -> Recorder:
    return Recorder(server)


@pytest.fixture
def client(settings: Settings, fake_redis: fakeredis.FakeRedis, sender: Recorder) -> Client:
    return Client(settings, redis_client=fake_redis, send=sender, rng=random.Random(0))


@pytest.fixture
def worker(server: fakeredis.FakeServer) -> JobStore:
    """The job store as a worker process sees it: its own connection to the same Redis."""
    return JobStore(fakeredis.FakeRedis(server=server), PREFIX)


def request_dict(**overrides: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}], **overrides}


def finish_once_waiting(
    fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch, finish: Callable[[], object]
) -> threading.Thread:
    """Run `finish` in another thread as soon as a waiter blocks on a done list."""
    blocked = threading.Event()
    blmove = fake_redis.blmove

    def blmove_and_tell(*args: Any, **kwargs: Any) -> Any:
        blocked.set()
        return blmove(*args, **kwargs)

    monkeypatch.setattr(fake_redis, "blmove", blmove_and_tell)
    thread = threading.Thread(target=lambda: blocked.wait(PROMPTLY_S) and finish(), daemon=True)
    thread.start()
    return thread


# --- submit ---------------------------------------------------------------------------


def test_submit_writes_the_job_and_sends_one_message_without_the_prompt(
    client: Client, sender: Recorder
) -> None:
    job_id = client.submit(Request.model_validate(request_dict(priority=7)))
    record = client.get(job_id)
    assert record.status is JobStatus.QUEUED
    assert record.route is not None
    assert record.route.vendor == "openai"
    assert sender.sent == [(RunJob(job_id, vendor="openai"), "llm.openai", 7)]
    assert PROMPT not in json.dumps(sender.sent[0][0].as_args())


def test_submit_validates_a_dict_and_routes_to_its_preferred_vendor(
    client: Client, sender: Recorder
) -> None:
    job_id = client.submit(request_dict(model="claude-3-5-haiku", vendor="anthropic"))
    assert sender.sent == [(RunJob(job_id, vendor="anthropic"), "llm.anthropic", 5)]


def test_submit_takes_one_redis_round_trip(
    client: Client, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.submit(request_dict())  # also reads the vendors' circuits: once a second at most
    trips: list[str] = []
    execute = redis.client.Pipeline.execute
    monkeypatch.setattr(fake_redis, "execute_command", lambda *a, **k: trips.append(a[0]))
    monkeypatch.setattr(
        redis.client.Pipeline, "execute", lambda self, *a: trips.append("pipeline") or execute(self)
    )
    client.submit(request_dict())
    assert trips == ["pipeline"]


def test_submit_routes_around_a_vendor_whose_circuit_workers_opened(
    settings: Settings, fake_redis: fakeredis.FakeRedis, sender: Recorder, worker: JobStore
) -> None:
    grouped = settings.model_copy(
        update={
            "model_groups": {
                "smart": [
                    Deployment(vendor="openai", model="gpt-4o"),
                    Deployment(vendor="anthropic", model="claude-3-5-sonnet-latest"),
                ]
            }
        }
    )
    client = Client(grouped, redis_client=fake_redis, send=sender, live_state_ttl_s=0.0)
    assert sender.sent == []
    first = client.submit(request_dict(model="smart"))

    assert worker.circuits.trip("openai", failure_threshold=1, keep_s=60) == "open"
    second = client.submit(request_dict(model="smart"))

    assert [(m.job_id, queue) for m, queue, _ in sender.sent] == [
        (first, "llm.openai"),
        (second, "llm.anthropic"),
    ]
    route = client.get(second).route
    assert route is not None
    assert (route.vendor, route.reason) == (
        "anthropic",
        "first available member of the model group",
    )


def test_submit_leaves_out_a_vendor_whose_last_health_check_was_unhealthy(
    settings: Settings, fake_redis: fakeredis.FakeRedis, sender: Recorder, worker: JobStore
) -> None:
    client = Client(settings, redis_client=fake_redis, send=sender, live_state_ttl_s=0.0)
    down = Health(status=HealthStatus.UNHEALTHY, detail="could not reach the vendor")
    worker.health.save("openai", down, ttl_s=60)

    with pytest.raises(NoRoute, match="openai: unhealthy: could not reach the vendor"):
        client.submit(request_dict(vendor="openai", model="gpt-4o-mini"))

    worker.health.save("openai", Health(status=HealthStatus.HEALTHY), ttl_s=60)
    client.submit(request_dict(vendor="openai", model="gpt-4o-mini"))
    assert [queue for _, queue, _ in sender.sent] == ["llm.openai"]


def test_submit_with_least_busy_routing_counts_what_workers_are_running(
    settings: Settings, fake_redis: fakeredis.FakeRedis, sender: Recorder, worker: JobStore
) -> None:
    both = [
        Deployment(vendor="openai", model="gpt-4o"),
        Deployment(vendor="anthropic", model="claude-3-5-haiku"),
    ]
    busy = settings.model_copy(
        update={"model_groups": {"smart": both}, "least_busy": LeastBusy(enabled=True)}
    )
    client = Client(busy, redis_client=fake_redis, send=sender, live_state_ttl_s=0.0)
    first = client.submit(request_dict(model="smart"))
    assert worker.claim(first, 0, "openai").verdict == "ok"  # now running on openai

    second = client.submit(request_dict(model="smart"))

    assert [queue for _, queue, _ in sender.sent] == ["llm.openai", "llm.anthropic"]
    route = client.get(second).route
    assert route is not None
    assert route.reason == "least busy"


def test_an_invalid_request_names_every_field_and_writes_and_sends_nothing(
    client: Client, fake_redis: fakeredis.FakeRedis, sender: Recorder
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        client.submit({"model": "gpt-4o-mini", "messages": [], "max_tokens": 0})
    assert "messages:" in str(raised.value)
    assert "max_tokens: must be greater than 0" in str(raised.value)
    assert fake_redis.keys("*") == []
    assert sender.sent == []


def test_a_request_no_vendor_serves_raises_no_route_and_writes_nothing(
    client: Client, fake_redis: fakeredis.FakeRedis, sender: Recorder
) -> None:
    with pytest.raises(NoRoute):
        client.submit(request_dict(model="no-such-model"))
    assert fake_redis.keys("*") == []
    assert sender.sent == []


def test_a_message_that_cannot_be_sent_fails_its_job_and_the_error_reaches_the_caller(
    settings: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    tried: list[str] = []

    def broken(message: RunJob, queue: str, priority: int) -> None:
        tried.append(message.job_id)
        raise ConnectionError("broker down")

    client = Client(settings, redis_client=fake_redis, send=broken)
    with pytest.raises(ConnectionError, match="broker down"):
        client.submit(request_dict())
    record = client.get(tried[0])
    assert record.status is JobStatus.FAILED
    assert record.error is not None
    assert "could not queue the job on llm.openai" in record.error.message


def test_a_broker_outage_at_send_names_the_job_it_wrote_and_marked_failed(
    settings: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    def broken(message: RunJob, queue: str, priority: int) -> None:
        raise redis.ConnectionError("Connection refused")

    client = Client(settings, redis_client=fake_redis, send=broken)
    with pytest.raises(
        StoreUnavailable, match="written but not queued, and is marked failed"
    ) as caught:
        client.submit(request_dict())
    job_id = caught.value.job_id
    assert job_id is not None
    assert client.get(job_id).status is JobStatus.FAILED


# --- get, wait, send, cancel, stats ----------------------------------------------------------


@pytest.mark.parametrize("job_id", ["0" * 32, "not-a-job-id", "../llmd:stats"])
def test_get_of_an_unknown_or_malformed_id_raises_job_not_found(
    client: Client, job_id: str
) -> None:
    with pytest.raises(JobNotFound):
        client.get(job_id)
    with pytest.raises(JobNotFound):
        client.wait(job_id, timeout_s=0)


def test_wait_returns_promptly_when_another_process_finishes_the_job(
    client: Client,
    worker: JobStore,
    fake_redis: fakeredis.FakeRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = client.submit(request_dict())
    finisher = finish_once_waiting(
        fake_redis,
        monkeypatch,
        lambda: worker.finish(job_id, JobStatus.SUCCEEDED, vendor="openai", response=REPLY),
    )
    started = time.monotonic()
    assert client.wait(job_id, timeout_s=30) == REPLY
    assert time.monotonic() - started < PROMPTLY_S
    finisher.join(PROMPTLY_S)


def test_wait_raises_the_typed_error_the_job_failed_with(client: Client, worker: JobStore) -> None:
    job_id = client.submit(request_dict())
    error = VendorAuthError("the key was refused", vendor="openai", status_code=401)
    worker.finish(job_id, JobStatus.FAILED, vendor="openai", error=error)
    with pytest.raises(VendorAuthError, match="the key was refused") as raised:
        client.wait(job_id, timeout_s=PROMPTLY_S)
    assert (raised.value.job_id, raised.value.vendor, raised.value.status_code) == (
        job_id,
        "openai",
        401,
    )


def test_cancel_ends_a_job_once_and_its_waiters_get_job_cancelled(client: Client) -> None:
    job_id = client.submit(request_dict())
    assert client.cancel(job_id) is True
    assert client.cancel(job_id) is False
    assert client.get(job_id).status is JobStatus.CANCELLED
    with pytest.raises(JobCancelled):
        client.wait(job_id, timeout_s=PROMPTLY_S)
    with pytest.raises(JobNotFound):
        client.cancel("f" * 32)


def test_wait_raises_timeout_error_naming_the_job_that_has_not_ended(client: Client) -> None:
    job_id = client.submit(request_dict())
    with pytest.raises(TimeoutError, match=job_id):
        client.wait(job_id, timeout_s=0.05)


def test_send_submits_and_waits_for_the_reply(
    settings: Settings, fake_redis: fakeredis.FakeRedis, server: fakeredis.FakeServer
) -> None:
    client = Client(settings, redis_client=fake_redis, send=Recorder(server, finish=True))
    assert client.send(request_dict(), timeout_s=PROMPTLY_S) == REPLY


def test_stats_count_the_jobs_that_ended(client: Client, worker: JobStore) -> None:
    done, failed, _ = (client.submit(request_dict()) for _ in range(3))
    worker.finish(done, JobStatus.SUCCEEDED, vendor="openai", response=REPLY)
    worker.finish(failed, JobStatus.FAILED, vendor="openai", error=VendorAuthError("no"))
    stats = client.stats()
    assert (stats.total_requests, stats.successful_requests, stats.failed_requests) == (2, 1, 1)
    assert stats.vendor_stats["openai"].requests == 2


def test_vendors_lists_the_enabled_vendors(client: Client) -> None:
    assert client.vendors() == ["openai", "anthropic"]


# --- connections and defaults ----------------------------------------------------------------


def test_the_default_redis_client_has_a_sized_pool_and_timeouts(settings: Settings) -> None:
    with Client(settings, send=lambda *_: None) as client:
        pool = client.redis.connection_pool
        assert isinstance(pool, redis.BlockingConnectionPool)
        assert pool.max_connections == REDIS_MAX_CONNECTIONS
        assert pool.connection_kwargs["socket_timeout"] > WAIT_SLICE_S
        assert pool.connection_kwargs["socket_connect_timeout"] is not None
    assert REDIS_SOCKET_TIMEOUT_S > WAIT_SLICE_S


def test_an_unreachable_redis_fails_fast_with_a_store_error() -> None:
    settings = Settings.load(openai_api_key="sk-test-0123456789", redis_url="redis://127.0.0.1:1/0")
    with (
        Client(settings, send=lambda *_: None) as client,
        pytest.raises(StoreUnavailable) as caught,
    ):
        client.get("0" * 32)
    assert isinstance(caught.value.__cause__, redis.ConnectionError)


def test_the_default_sender_sends_by_task_name_on_a_private_celery_app(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender = CelerySender(settings)
    app = sender.app
    assert sender.app is app
    assert app.conf.task_serializer == "json"
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(app, "send_task", lambda *a, **k: calls.append((a, k)))
    sender(RunJob("a" * 32, attempt=1), "llm.openai", 3)
    # Celery's Redis transport serves low numbers first; our 9 is the most urgent.
    assert calls == [
        (
            ("dispatch.run_job",),
            {"args": ["a" * 32, 1, 0, 0, ""], "queue": "llm.openai", "priority": 6},
        )
    ]
    sender.close()


def test_with_sent_events_a_submit_publishes_its_job_through_celery(
    settings: Settings, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: list[tuple[Any, ...]] = []
    monkeypatch.setattr(CelerySender, "publish", lambda _self, *sent: published.append(sent))
    eventful = settings.model_copy(update={"sent_events": True})
    with Client(eventful, redis_client=fake_redis, rng=random.Random(0)) as client:
        job_id = client.submit(request_dict(priority=2))
        record = client.get(job_id)

    queue = record.route.queue if record.route else ""
    message = RunJob(job_id, vendor=record.route.vendor if record.route else "")
    assert published == [("dispatch.run_job", message.as_args(), queue, 7, 0.0)]
    assert record.status is JobStatus.QUEUED
    assert fake_redis.keys(f"{PREFIX}:ready:*") == []  # no ready set: Celery carries it


def test_module_level_helpers_use_one_client_built_from_the_environment(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[Client] = []
    monkeypatch.setattr(producer.shortcuts, "_DEFAULT", producer.shortcuts._DefaultClient())
    monkeypatch.setattr(Client, "from_env", classmethod(lambda cls: built.append(client) or client))
    job_id = producer.submit(request_dict())
    assert producer.get(job_id).status is JobStatus.QUEUED
    assert producer.cancel(job_id) is True
    with pytest.raises(JobCancelled):
        producer.wait(job_id, timeout_s=PROMPTLY_S)
    assert producer.default_client() is client
    assert built == [client]


# --- AsyncClient -----------------------------------------------------------------------


@pytest.fixture
async def async_client(
    settings: Settings,
    server: fakeredis.FakeServer,
    fake_redis: fakeredis.FakeRedis,
    sender: Recorder,
) -> AsyncIterator[AsyncClient]:
    async_redis = fakeredis.FakeAsyncRedis(server=server)
    async with AsyncClient(
        settings, redis_client=async_redis, sync_redis_client=fake_redis, send=sender
    ) as client:
        yield client
    await async_redis.aclose()


async def test_async_client_submits_reads_and_waits(
    async_client: AsyncClient, worker: JobStore, sender: Recorder
) -> None:
    job_id = await async_client.submit(request_dict())
    assert sender.sent == [(RunJob(job_id, vendor="openai"), "llm.openai", 5)]
    assert (await async_client.get(job_id)).status is JobStatus.QUEUED
    finisher = threading.Thread(
        target=worker.finish,
        args=(job_id, JobStatus.SUCCEEDED),
        kwargs={"vendor": "openai", "response": REPLY},
    )
    finisher.start()
    assert await async_client.wait(job_id, timeout_s=PROMPTLY_S) == REPLY
    finisher.join(PROMPTLY_S)
    assert (await async_client.stats()).successful_requests == 1


async def test_async_client_raises_as_the_sync_client_does(
    async_client: AsyncClient, worker: JobStore
) -> None:
    with pytest.raises(JobNotFound):
        await async_client.get("not-a-job-id")
    failed, cancelled, running = [await async_client.submit(request_dict()) for _ in range(3)]
    worker.finish(failed, JobStatus.FAILED, vendor="openai", error=VendorAuthError("refused"))
    with pytest.raises(VendorAuthError, match="refused"):
        await async_client.wait(failed, timeout_s=PROMPTLY_S)
    assert await async_client.cancel(cancelled) is True
    with pytest.raises(JobCancelled):
        await async_client.wait(cancelled, timeout_s=PROMPTLY_S)
    with pytest.raises(TimeoutError, match=running):
        await async_client.wait(running, timeout_s=0.05)
    with pytest.raises(JobNotFound, match="not a job id"):
        await async_client.wait("not-a-job-id", timeout_s=PROMPTLY_S)
    with pytest.raises(JobNotFound, match="never existed"):
        await async_client.wait("0" * 32, timeout_s=PROMPTLY_S)


async def test_async_submit_writes_the_job_and_its_ready_entry_in_one_transaction(
    settings: Settings, server: fakeredis.FakeServer, fake_redis: fakeredis.FakeRedis
) -> None:
    # No custom send: the job, its lane's ready entry and the bell go in one MULTI/EXEC,
    # through the asyncio client, as Client.submit writes them through the blocking one.
    async_redis = fakeredis.FakeAsyncRedis(server=server)
    async with AsyncClient(
        settings, redis_client=async_redis, sync_redis_client=fake_redis
    ) as ours:
        assert ours.sync.submits_in_one_write
        job_id = await ours.submit(request_dict())
        record = await ours.get(job_id)
        assert (record.status, record.route.vendor) == (JobStatus.QUEUED, "openai")
        ready = ours.sync.outbox.ready.keys.ready("llm.openai")
        bells = queue_list("llm.openai", celery_priority(5))
        assert fake_redis.zrange(ready, 0, -1) == [job_id.encode()]
        assert fake_redis.llen(bells) == 1  # the lane's bell
        # A second submit while the bell is pending rings no second one.
        second = await ours.submit(request_dict())
        assert fake_redis.zrange(ready, 0, -1) == [job_id.encode(), second.encode()]
        assert fake_redis.llen(bells) == 1
    await async_redis.aclose()


# --- the job commands ---------------------------------------------------------------------


@pytest.fixture
def cli_client(client: Client, monkeypatch: pytest.MonkeyPatch) -> Client:
    monkeypatch.setattr(producer.cli.root, "make_client", lambda: client)
    return client


def test_cli_submit_prints_the_job_id(cli_client: Client, sender: Recorder) -> None:
    result = runner.invoke(app, ["submit", PROMPT, "--model", "gpt-4o-mini", "--priority", "2"])
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip()
    assert sender.sent == [(RunJob(job_id, vendor="openai"), "llm.openai", 2)]
    assert cli_client.get(job_id).request.messages[0].content == PROMPT


def test_cli_submit_reads_a_json_request_and_applies_options(
    cli_client: Client, sender: Recorder, tmp_path: Path
) -> None:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request_dict(model="gpt-4o")))
    result = runner.invoke(app, ["submit", "--file", str(path), "--max-tokens", "50"])
    assert result.exit_code == 0, result.output
    request = cli_client.get(result.stdout.strip()).request
    assert (request.model, request.max_tokens) == ("gpt-4o", 50)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "hi"], "--model"),
        (["submit"], "PROMPT"),
        (["submit", "hi", "--model", "gpt-4o", "--max-tokens", "0"], "max_tokens"),
    ],
)
def test_cli_usage_errors_exit_2(
    cli_client: Client, sender: Recorder, args: list[str], message: str
) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == producer.cli.root.EXIT_USAGE
    assert message in result.stderr
    assert sender.sent == []


def test_cli_get_prints_the_record_and_exits_4_for_an_unknown_job(cli_client: Client) -> None:
    job_id = cli_client.submit(request_dict())
    result = runner.invoke(app, ["get", job_id, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "queued"
    assert "status:   queued" in runner.invoke(app, ["get", job_id]).stdout
    missing = runner.invoke(app, ["get", "0" * 32])
    assert missing.exit_code == producer.cli.root.EXIT_NOT_FOUND
    assert "no job" in missing.stderr


def test_cli_wait_prints_the_reply_or_exits_1_or_5(cli_client: Client, worker: JobStore) -> None:
    done, failed, running = (cli_client.submit(request_dict()) for _ in range(3))
    worker.finish(done, JobStatus.SUCCEEDED, vendor="openai", response=REPLY)
    worker.finish(failed, JobStatus.FAILED, vendor="openai", error=VendorAuthError("refused"))
    ok = runner.invoke(app, ["wait", done])
    assert (ok.exit_code, ok.stdout.strip()) == (0, "hello there")
    assert runner.invoke(app, ["wait", failed]).exit_code == producer.cli.root.EXIT_JOB_FAILED
    late = runner.invoke(app, ["wait", running, "--timeout", "0.05"])
    assert late.exit_code == producer.cli.root.EXIT_TIMEOUT
    assert running in late.stderr


def test_cli_send_prints_the_reply(
    settings: Settings,
    fake_redis: fakeredis.FakeRedis,
    server: fakeredis.FakeServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = Client(settings, redis_client=fake_redis, send=Recorder(server, finish=True))
    monkeypatch.setattr(producer.cli.root, "make_client", lambda: client)
    result = runner.invoke(app, ["send", PROMPT, "--model", "gpt-4o-mini", "--timeout", "5"])
    assert (result.exit_code, result.stdout.strip()) == (0, "hello there")


def test_cli_cancel_and_stats(cli_client: Client, worker: JobStore) -> None:
    job_id = cli_client.submit(request_dict())
    assert "cancelled job" in runner.invoke(app, ["cancel", job_id]).stdout
    assert "already ended" in runner.invoke(app, ["cancel", job_id]).stdout
    other = cli_client.submit(request_dict())
    worker.finish(other, JobStatus.SUCCEEDED, vendor="openai", response=REPLY)
    table = runner.invoke(app, ["stats"])
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[0].split()[:3] == ["vendor", "jobs", "ok"]
    assert any(line.split()[:3] == ["openai", "1", "100.0"] for line in table.stdout.splitlines())
    stats = json.loads(runner.invoke(app, ["stats", "--json"]).stdout)
    assert (stats["successful_requests"], stats["cancelled_requests"]) == (1, 1)


def test_cli_stats_show_cost_and_unpriced_calls_per_vendor() -> None:
    stats = Stats(
        total_requests=3,
        successful_requests=3,
        total_cost_usd=0.5,
        unpriced_calls=2,
        vendor_stats={
            "local": VendorStats(requests=2, successes=2, unpriced_calls=2),
            "openai": VendorStats(requests=1, successes=1, total_cost_usd=0.5),
        },
    )

    lines = producer.cli.jobs.stats_text(stats).splitlines()

    assert lines[0].split()[-3:] == ["cost", "$", "unpriced"]
    local, openai = lines[2].split(), lines[3].split()
    assert (local[0], local[-2:]) == ("local", ["0.000000", "2"])
    assert (openai[0], openai[-2:]) == ("openai", ["0.500000", "0"])
    assert "cost $0.500000 (without 2 unpriced calls: configure `prices`)" in lines[-1]


def test_cli_exits_3_for_invalid_configuration_and_6_for_an_unreachable_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def invalid() -> Client:
        raise ConfigError(["vendors.openai.rpm: must be greater than 0"])

    monkeypatch.setattr(producer.cli.root, "make_client", invalid)
    result = runner.invoke(app, ["stats"])
    assert (result.exit_code, result.stderr.count("rpm")) == (
        producer.cli.root.EXIT_CONFIG_INVALID,
        1,
    )
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(producer.cli.root, "make_client", Client.from_env)
    result = runner.invoke(app, ["get", "0" * 32])
    assert result.exit_code == producer.cli.root.EXIT_UNAVAILABLE
    assert "REDIS_URL" in result.stderr


# --- the default sender: the job and its message in one transaction -------------------


def test_a_submit_writes_the_job_its_ready_entry_and_a_bell_in_one_transaction(
    settings: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    direct = Client(settings, redis_client=fake_redis, rng=random.Random(0))
    executed: list[bool] = []
    pipeline = fake_redis.pipeline

    def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = pipeline(*args, **kwargs)
        execute = pipe.execute
        pipe.execute = lambda *a, **k: executed.append(True) or execute(*a, **k)
        return pipe

    fake_redis.pipeline = counting_pipeline  # type: ignore[method-assign]
    direct._live = producer.client.LiveState()  # the live state is read on its own schedule
    direct._live_read_at = time.monotonic()

    job_id = direct.submit(request_dict(priority=9))
    second = direct.submit(request_dict(priority=9))

    assert executed == [True, True]  # one round trip each
    [queue] = fake_redis.keys("llm.*")
    assert queue == b"llm.openai"  # our most urgent priority is Celery's 0: the plain list
    [raw] = fake_redis.lrange(queue, 0, -1)  # one bell for both: the first one rang it
    message = json.loads(raw)
    assert message["headers"]["task"] == "dispatch.run_queued"
    assert message["properties"]["delivery_info"] == {"exchange": "", "routing_key": "llm.openai"}
    body = json.loads(base64.b64decode(message["body"]))
    assert body[0] == RunQueued("llm.openai", "openai", 0).as_args()
    ready = fake_redis.zrange(f"{PREFIX}:ready:llm.openai", 0, -1)
    assert ready == [job_id.encode(), second.encode()]  # in order of arrival
    assert fake_redis.exists(f"{PREFIX}:bell:llm.openai:0")
    assert direct.get(job_id).status is JobStatus.QUEUED
    assert fake_redis.zscore(f"{PREFIX}:waiting", job_id) is not None
    direct.close()


def test_a_more_urgent_submit_rings_a_bell_of_its_own_and_is_taken_first(
    settings: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    direct = Client(settings, redis_client=fake_redis, rng=random.Random(0))
    direct._live = producer.client.LiveState()
    direct._live_read_at = time.monotonic()

    routine = [direct.submit(request_dict()) for _ in range(2)]
    urgent = direct.submit(request_dict(priority=9))

    lists = {name.decode(): fake_redis.llen(name) for name in fake_redis.keys("llm.*")}
    assert lists == {"llm.openai": 1, "llm.openai\x06\x163": 1}  # two bells: one per priority
    bell = Bell("llm.openai", "{}")
    taken = direct.store.ready.take("llm.openai", 0, "a-bell", bell, limit=2)
    assert taken.job_ids == [urgent, routine[0]]
    direct.close()


def test_a_submit_whose_transaction_fails_writes_nothing_and_names_the_job(
    settings: Settings, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct = Client(settings, redis_client=fake_redis, rng=random.Random(0))
    direct._live = producer.client.LiveState()
    direct._live_read_at = time.monotonic()
    monkeypatch.setattr(
        redis.client.Pipeline,
        "execute",
        lambda self, *a, **k: (_ for _ in ()).throw(redis.ConnectionError("connection reset")),
    )

    with pytest.raises(StoreUnavailable) as caught:
        direct.submit(request_dict())

    assert caught.value.job_id is not None
    assert "may have been queued" in str(caught.value)
    monkeypatch.undo()
    assert fake_redis.dbsize() == 0
    direct.close()
