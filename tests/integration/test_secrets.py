"""No API key and no Redis password anywhere, after a full run with failures.

Every vendor kind the stand-in speaks gets its own long random key, set the
ways a user sets them: implied by a standard environment variable, named in
the YAML file with `${VAR}`, or written in the file. Some keys have no
well-known shape (`zq...`), and one travels in a header name no pattern knows,
so only the registered-secret layer of `dispatcher.redaction` can mask them.
Then a mixed run goes through a real `celery worker` logging at DEBUG, with
vendors that echo our request headers back in their error bodies, and
everything the run left behind is searched: every Redis key name and value,
the worker's log, the producer's log records, the raw Celery messages and
Flower's API and pages.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from dispatcher import DispatcherError, JobEventKind, JobStatus, Message, Request
from dispatcher.broker.messages import RUN_JOB_TASK, RUN_JOBS_TASK, RUN_QUEUED_TASK
from dispatcher.models import JobError
from dispatcher.redaction import MASK
from producer import Client, text_of
from producer.cli.tools.embedded_redis import EmbeddedRedis, free_port
from tests.integration.stack import Flower, Stack, running_flower, wait_for
from tests.standins.server import standin_server

pytestmark = pytest.mark.integration

# Key prefix, then the random part whose every fragment must stay hidden too.
KEY_PARTS: dict[str, tuple[str, str]] = {
    "openai": ("sk-test-", secrets.token_hex(16)),
    "azure": ("zq", secrets.token_hex(20)),
    "anthropic": ("sk-ant-api03-", secrets.token_hex(20)),
    "gemini": ("AIza", secrets.token_hex(18)),
    "cohere": ("zq", secrets.token_hex(20)),
    # Long enough that the second echo of it straddles the length limit of an error message.
    "ollama": ("zq", secrets.token_hex(32)),
    "ollama-query": ("zq", secrets.token_hex(20)),
    "compat": ("zq", secrets.token_hex(20)),
    "flaky": ("zq", secrets.token_hex(20)),
    "dead": ("zq", secrets.token_hex(20)),
}
KEYS = {name: prefix + rest for name, (prefix, rest) in KEY_PARTS.items()}
REDIS_PASSWORD = "pw" + secrets.token_hex(16)
# Custom header values the configuration sets (one written in the file, one from the
# environment): secrets too, though no name or shape says so.
HEADER_SECRETS = {
    "x-org-id": "org-HIDDEN-" + secrets.token_hex(8),
    "x-api-secret": "hs" + secrets.token_hex(16),
}
# A fragment this long of a random hex string turns up by chance in a few
# megabytes of text with a probability of about 1e-7.
FRAGMENT_CHARS = 12

MODELS = {
    "openai": "gpt-4o-mini",
    "azure": "my-gpt4o-deployment",
    "anthropic": "claude-3-5-haiku-latest",
    "gemini": "gemini-2.0-flash",
    "cohere": "command-r",
    "ollama": "llama3.2",
    "ollama-query": "llama3.2",
    "compat": "qwen2.5",
}
LIVE = list(MODELS)
STREAMING = ["openai", "azure", "anthropic", "gemini", "cohere", "ollama", "compat"]
VENDORS = [*LIVE, "flaky", "dead"]
QUEUES = [q for name in VENDORS for q in (f"llm.{name}", f"llm.{name}.batch")]
# Where each vendor carries its key, as the stand-in recorded it.
KEY_PLACES = {
    "openai": ("headers", "authorization"),
    "azure": ("headers", "api-key"),
    "anthropic": ("headers", "x-api-key"),
    "gemini": ("headers", "x-goog-api-key"),
    "cohere": ("headers", "authorization"),
    "ollama": ("headers", "x-ollama-token"),
    "ollama-query": ("query", "key"),
    "compat": ("headers", "authorization"),
    "flaky": ("headers", "authorization"),
}
FLOWER_USER, FLOWER_PASSWORD = "ops", "flower-secrets-test-password"
JOB_TIMEOUT_S = 30.0


def config(dead_port: int) -> dict[str, Any]:
    """Every vendor kind; keys from the environment, from `${VAR}`, and written in the file."""
    base: dict[str, Any] = {"models": ["*"], "timeout_s": 5}
    return {
        "vendors": {
            # Standard names take their key from OPENAI_API_KEY, AZURE_OPENAI_API_KEY, ...
            "openai": {**base, "base_url": "{url}/v1"},
            "azure": {**base, "base_url": "{url}"},
            "gemini": {**base, "base_url": "{url}"},
            "cohere": {**base, "base_url": "{url}"},
            "anthropic": {**base, "base_url": "{url}", "api_key": "${ANTHROPIC_API_KEY}"},
            "flaky": {
                **base,
                "type": "openai",
                "base_url": "{url}/v1",
                "api_key": "${FLAKY_API_KEY}",
                "headers": {
                    "x-fake-fault": "500,echo-headers",
                    "x-org-id": HEADER_SECRETS["x-org-id"],
                    "x-api-secret": "${HDR_SECRET}",
                },
            },
            # A header no redaction pattern knows: only the registered secret masks it.
            "ollama": {
                **base,
                "base_url": "{url}",
                "api_key": KEYS["ollama"],
                "auth": {"scheme": "header", "header_name": "X-Ollama-Token"},
            },
            "ollama-query": {
                **base,
                "type": "ollama",
                "base_url": "{url}",
                "api_key": KEYS["ollama-query"],
                "auth": {"scheme": "query", "query_param": "key"},
            },
            "compat": {
                **base,
                "type": "openai_compatible",
                "base_url": "{url}/v1",
                "api_key": KEYS["compat"],
            },
            "dead": {
                **base,
                "type": "ollama",
                "base_url": f"http://127.0.0.1:{dead_port}",
                "api_key": KEYS["dead"],
                "auth": {"scheme": "query", "query_param": "key"},
            },
        },
        "model_groups": {
            "smart": [
                {"vendor": "flaky", "model": "gpt-4o"},
                {"vendor": "compat", "model": "llama-3-70b"},
            ]
        },
        "default_vendor": "openai",
        "retry_policy": {"max_retries": 1, "backoff": "fixed", "initial_delay_s": 0.2},
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose private Redis requires a password (one run serves every check)."""
    with (
        EmbeddedRedis(password=REDIS_PASSWORD) as server,
        standin_server() as standin,
    ):
        running = Stack(server, standin, tmp_path_factory.mktemp("secrets"))
        running.configure(
            config(free_port()),
            OPENAI_API_KEY=KEYS["openai"],
            AZURE_OPENAI_API_KEY=KEYS["azure"],
            GOOGLE_API_KEY=KEYS["gemini"],
            COHERE_API_KEY=KEYS["cohere"],
            ANTHROPIC_API_KEY=KEYS["anthropic"],
            FLAKY_API_KEY=KEYS["flaky"],
            HDR_SECRET=HEADER_SECRETS["x-api-secret"],
            LLMDISPATCH_HEALTH_CHECK_INTERVAL_S="0",
        )
        try:
            yield running
        finally:
            running.stop()


@contextmanager
def producer_log() -> Iterator[list[str]]:
    """Every record logged in this process at DEBUG and above, formatted with tracebacks."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Keep(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def page(flower: Flower, path: str) -> bytes:
    """Flower's page or API answer at `path` as it sent it; empty unless it answered 2xx."""
    body: str | None = flower.get(path, text=True)[1]
    return (body or "").encode()


def prompt(text: str) -> list[Message]:
    return [Message(role="user", content=text)]


def on(vendor: str, text: str, **fields: Any) -> Request:
    """A request pinned to `vendor`, with no fallback."""
    return Request(
        model=MODELS[vendor], messages=prompt(text), vendor=vendor, allow_fallback=False, **fields
    )


def end(client: Client, job_id: str) -> JobStatus:
    """Wait for the job to end, however it ends."""
    with suppress(DispatcherError):
        client.wait(job_id, timeout_s=JOB_TIMEOUT_S)
    return client.get(job_id).status


def retried(client: Client, job_id: str) -> bool:
    return any(event.kind is JobEventKind.RETRY for event in client.get(job_id).events)


def flower_tasks_ended(flower: Flower, job_ids: list[str]) -> dict[str, Any] | None:
    """Flower's tasks, once it shows a finished task for each of `job_ids`."""
    tasks: dict[str, Any] = flower.get("/api/tasks")[1] or {}
    finished = {
        job_id
        for task in tasks.values()
        for job_id in job_ids
        # A job's own message names it in its args; a bell in its result.
        if task.get("state") == "SUCCESS"
        and job_id in str(task.get("args")) + str(task.get("result"))
    }
    return tasks if finished == set(job_ids) else None


def queued_messages(db: redis.Redis) -> dict[str, bytes]:
    """Every message waiting in a `llm.*` queue list (any priority), raw and body decoded."""
    found: dict[str, bytes] = {}
    for key in db.scan_iter(match=b"llm.*"):
        if db.type(key) != b"list":
            continue
        for index, raw in enumerate(db.lrange(key, 0, -1)):
            found[f"message {key!r}[{index}]"] = raw
            body = json.loads(raw)["body"]
            found[f"message {key!r}[{index}] body"] = base64.b64decode(body)
    return found


def everything_in(db: redis.Redis) -> dict[str, bytes]:
    """Every key name and every value of every type, as bytes."""
    found: dict[str, bytes] = {}
    for key in db.scan_iter(count=1000):
        found[f"key name {key!r}"] = key
        kind = db.type(key)
        parts: list[bytes]
        if kind == b"string":
            parts = [db.get(key) or b""]
        elif kind == b"hash":
            parts = [b for pair in db.hgetall(key).items() for b in pair]
        elif kind == b"list":
            parts = db.lrange(key, 0, -1)
        elif kind == b"set":
            parts = list(db.smembers(key))
        elif kind == b"zset":
            parts = [member for member, _ in db.zrange(key, 0, -1, withscores=True)]
        elif kind == b"stream":
            parts = [
                b
                for entry_id, fields in db.xrange(key)
                for b in (entry_id, *(x for pair in fields.items() for x in pair))
            ]
        else:  # the key expired between SCAN and TYPE
            continue
        found[f"value of {key!r} ({kind.decode()})"] = b"\n".join(parts)
    return found


def needles() -> list[tuple[str, bytes]]:
    """Each secret, and every fragment of a key's random part long enough to be telling."""
    found = [(f"{name} key", key.encode()) for name, key in KEYS.items()]
    found.append(("Redis password", REDIS_PASSWORD.encode()))
    found += [
        (f"{header} header value", value.encode()) for header, value in HEADER_SECRETS.items()
    ]
    for name, (_, rest) in KEY_PARTS.items():
        found += [
            (f"{name} key fragment {i}", rest[i : i + FRAGMENT_CHARS].encode())
            for i in range(len(rest) - FRAGMENT_CHARS + 1)
        ]
    return found


def leaks(places: dict[str, bytes]) -> list[str]:
    return [
        f"{what} in {place}"
        for place, data in places.items()
        for what, needle in needles()
        if needle in data
    ]


@dataclass(frozen=True)
class Run:
    """What one run with failures left behind, and where we looked for secrets."""

    places: dict[str, bytes]
    stored: dict[str, bytes]
    mid_run: dict[str, bytes]
    errors: dict[str, JobError | None]
    fallback_events: str
    echoed: dict[str, str]
    worker_log: str
    tasks: dict[str, Any]
    flower_pages: dict[str, Any]
    produced: list[str]
    received: list[dict[str, Any]]


@pytest.fixture(scope="module")
def run(stack: Stack) -> Run:
    """Jobs on every vendor kind, a batch, streams, a cancel, echoed 401s and 500s, a
    fallback and a dead vendor, with a worker at DEBUG and Flower; then every place."""
    db = redis.Redis.from_url(stack.redis.url)
    with (
        producer_log() as produced,
        running_flower(stack, user=FLOWER_USER, password=FLOWER_PASSWORD, via="celery") as flower,
    ):
        with stack.environment():
            client = Client.from_env()

        # Before any worker runs: a job per vendor, one cancelled, and a batch.
        early = {v: client.submit(on(v, f"hello {v}")) for v in LIVE}
        cancelled = client.submit(on("openai", "never runs"))
        assert client.cancel(cancelled)
        batch_id = client.submit_batch(
            [
                on("openai", "batch one"),
                on("openai", "batch two [fault:401,echo-headers item-2]"),
                on("anthropic", "batch three [fault:500@1 item-3]"),
                on("gemini", "batch four"),
            ]
        )
        messages = queued_messages(db)
        sent = b"\n".join(messages.values())
        # The submits' jobs wait in their lanes' ready sets, their bells among the messages.
        ready = {job for key in db.scan_iter("*:ready:llm.*") for job in db.zrange(key, 0, -1)}
        assert {job_id.encode() for job_id in [*early.values(), cancelled]} <= ready
        assert RUN_QUEUED_TASK.encode() in sent
        assert RUN_JOBS_TASK.encode() in sent

        worker = stack.start_worker(QUEUES, loglevel="DEBUG")

        # With the worker: 429s, streams, echoed 401s, echoed 500s then a fallback, a dead vendor.
        limited = client.submit(on("anthropic", "hi [fault:429@1 limited]"))
        limited_echo = client.submit(on("gemini", "hi [fault:429@1,echo-headers@1 limited-echo]"))
        # While the 429's retry waits its second out, the worker holds it unacknowledged.
        wait_for(
            lambda: retried(client, limited) and db.hlen("unacked"),
            JOB_TIMEOUT_S,
            "the 429's retry to wait in kombu's unacked hash",
        )
        mid_run = {f"mid-run {place}": data for place, data in everything_in(db).items()}
        mid_run["mid-run unacked message bodies"] = b"\n".join(
            base64.b64decode(json.loads(raw)[0]["body"]) for raw in db.hvals("unacked")
        )
        streamed = {
            v: text_of(client.send_streaming(on(v, f"stream {v}"), start_timeout_s=JOB_TIMEOUT_S))
            for v in STREAMING
        }
        assert streamed == {v: f"echo: stream {v}" for v in STREAMING}
        echoed = {v: client.submit(on(v, f"hi [fault:401,echo-headers auth-{v}]")) for v in LIVE}
        echoed["cohere-stream"] = client.submit(
            on("cohere", "hi [fault:401,echo-headers stream-auth]", stream=True)
        )
        fell_back = client.submit(Request(model="smart", messages=prompt("fall back")))
        down = client.submit(
            Request(
                model="llama3.2", messages=prompt("anyone?"), vendor="dead", allow_fallback=False
            )
        )

        for vendor, job_id in early.items():
            assert client.wait(job_id, timeout_s=JOB_TIMEOUT_S).vendor == vendor
        assert client.wait(fell_back, timeout_s=JOB_TIMEOUT_S).vendor == "compat"
        assert client.wait(limited, timeout_s=JOB_TIMEOUT_S).vendor == "anthropic"
        assert client.wait(limited_echo, timeout_s=JOB_TIMEOUT_S).vendor == "gemini"
        for job_id in [*echoed.values(), down]:
            assert end(client, job_id) is JobStatus.FAILED
        assert client.get(cancelled).status is JobStatus.CANCELLED
        batch = client.wait_batch(batch_id, timeout_s=JOB_TIMEOUT_S)
        assert (batch.counts.succeeded, batch.counts.failed) == (3, 1)
        errors = {name: client.get(job_id).error for name, job_id in echoed.items()}
        fallback_events = " ".join(str(e) for e in client.get(fell_back).events)

        tasks = wait_for(
            lambda: flower_tasks_ended(flower, list(echoed.values())),
            60,
            "Flower to show the echoed failures",
        )
        shown = [t for t, task in tasks.items() if "failed" in str(task.get("result"))][:6]
        shown += list(tasks)[:4]
        flower_pages = {
            f"Flower {path}": page(flower, path)
            for path in [
                "/api/tasks",
                "/api/workers",
                "/tasks",
                "/tasks/datatable?draw=1&start=0&length=500&order[0][column]=0"
                "&columns[0][data]=name&order[0][dir]=asc",
                "/workers",
                "/broker",
                *(f"/api/task/info/{task_id}" for task_id in shown),
                *(f"/task/{task_id}" for task_id in shown),
            ]
        }
        client.close()
    stack.stop()  # the worker's log is complete once it has shut down

    stored = everything_in(db)
    worker_log = worker.log_text()
    places = {
        **mid_run,
        **stored,
        **messages,
        **flower_pages,
        "worker log": worker_log.encode(),
        "producer log": "\n".join(produced).encode(),
    }
    return Run(
        places=places,
        stored=stored,
        mid_run=mid_run,
        errors=errors,
        fallback_events=fallback_events,
        echoed=echoed,
        worker_log=worker_log,
        tasks=tasks,
        flower_pages=flower_pages,
        produced=produced,
        received=stack.received(),
    )


def test_no_key_or_password_appears_in_redis_logs_messages_or_flower(run: Run) -> None:
    assert leaks(run.places) == []


def test_echoed_credentials_were_stored_and_masked(run: Run) -> None:
    for name, error in run.errors.items():
        assert error is not None, name
        assert error.kind == "auth", name
        assert "credentials received" in error.message, name
        assert MASK in error.message, name
    assert "credentials received" in run.fallback_events  # the flaky vendor's echoed 500s
    everything = b"\n".join(run.stored.values())
    assert all(job_id.encode() in everything for job_id in run.echoed.values())
    assert b"credentials received" in everything
    assert MASK.encode() in everything


def test_every_place_searched_held_what_it_should(run: Run) -> None:
    # Not vacuous: a search of empty places would find no secret either.
    assert "mid-run value of b'unacked' (hash)" in run.mid_run
    assert run.mid_run["mid-run unacked message bodies"]
    assert RUN_JOB_TASK in run.worker_log
    assert RUN_JOBS_TASK in run.worker_log
    assert RUN_QUEUED_TASK in run.worker_log
    assert "DEBUG/" in run.worker_log
    names = {task.get("name") for task in run.tasks.values()}
    assert names >= {RUN_JOB_TASK, RUN_JOBS_TASK, RUN_QUEUED_TASK}
    # Each job is a task of its own: a failed one's exception is its masked error.
    assert any(MASK in str(task.get("exception")) for task in run.tasks.values())
    assert all(run.flower_pages.values())
    assert run.produced


def test_every_vendor_received_its_key_where_its_wire_format_puts_it(run: Run) -> None:
    for vendor, (part, name) in KEY_PLACES.items():
        assert any(KEYS[vendor] in r[part].get(name, "") for r in run.received), vendor
