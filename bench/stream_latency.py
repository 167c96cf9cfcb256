"""Streaming latency: chunk delivery under 200 concurrent streams, and time to first token.

(1) Chunk delivery. The stand-in vendor server (`llmdispatch mock-server`, its own
    process) streams every reply as K chunks (default 60) paced D seconds apart
    (default 0.05 s) after a first-byte latency L (default 0.3 s). Our worker
    (`celery -A workers.app worker -Q llm.mock --pool threads -c C`, C >= N) runs
    N streaming jobs at once (default 200) and publishes every delta; this
    process, not the worker, submits them and follows all N with
    `AsyncClient.stream` in one `asyncio.gather`. A chunk's latency is the
    moment this process receives it minus its `emitted_at` (when the worker
    received the vendor's bytes); both are `time.time()` on the same machine.
    Baseline, in the same run and through the same private Redis: a bare
    redis-py publisher process (one asyncio task per stream, one `PUBLISH` per
    chunk, the send time embedded in a message of the same shape) and, in this
    process, N bare `redis.asyncio` subscribers (`pubsub.listen()` and
    `json.loads`), at the same rate (N streams x K chunks, D apart) and count;
    its connections are opened before the clock starts. Before measuring, the
    worker runs the same N jobs once (warm threads and connections). Also shown:
    whether the worker kept the vendor's pace (gaps between chunks at the
    worker), and the latency while all N streams ran (no job starting or ending).
(2) Time to first token, queue empty and worker idle: J jobs one after the
    other (default 50), each timed from the `Client.submit()` call to the first
    chunk `Client.stream()` yields, and read to its end before the next starts;
    alternating with J direct calls to the same mock server (one keep-alive
    `httpx.Client`, `stream=True`, timed to the first SSE event with content).
    Both sides get the same latency L. The dispatcher's time is also split into
    submit, pickup, the worker's vendor call and delivery (from the job record
    and the chunk's `emitted_at`).

CPU time of every process (from /proc) is printed next to the figures, and the
CPU used meanwhile by processes outside the benchmark, so a busy machine shows.
Every wait has a timeout, the whole run a budget, and every process started is
stopped.

    .venv/bin/python bench/stream_latency.py                          # the defaults above
    .venv/bin/python bench/stream_latency.py --streams 20 --ttft-jobs 5   # a quick run
    .venv/bin/python bench/stream_latency.py --chunk-delay 0.1    # 200 streams, half the rate
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import platform
import select
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import redis
import redis.asyncio
import yaml

from dispatcher import Message, Request, Role, Settings
from dispatcher.models import StreamEvent, StreamEventType
from dispatcher.vendors.mock import split_into_chunks
from producer import AsyncClient, Client
from producer.cli.tools.embedded_redis import EmbeddedRedis
from producer.cli.tools.standin import raise_open_file_limit
from producer.connections import REDIS_MAX_CONNECTIONS, redis_pool_options

ROOT = Path(__file__).resolve().parents[1]
LLMDISPATCH = Path(sys.executable).parent / "llmdispatch"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PREFIX = "bstream"
VENDOR = "mock"
QUEUE = f"llm.{VENDOR}"
MODEL = "mock-echo"
BARE_CHANNEL = "bare:stream:{}"
TAP_STOP = "bench:tap:stop"
# The tap hears the jobs whose id starts with 0 or 1: about one in eight.
TAP_PATTERN = f"{PREFIX}:job:[01]*:chunks"
LOOP_PROBE_S = 0.005
SHORT_PROMPT = "hi"  # "echo: hi": two chunks, so a time-to-first-token job ends quickly
VENDOR_TIMEOUT_S = 30
STALL_TIMEOUT_S = 10
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
PHASE_TIMEOUT_S = 60.0
DEFAULT_BUDGET_S = 170.0
WARMUP_TTFT = 3
PAUSE_BETWEEN_JOBS_S = 0.05
# Cores' worth of CPU used by processes outside the benchmark above which a phase is flagged.
NOISY_LOAD = 0.1
TARGET_ADDED_P99_MS = 10.0
TARGET_TTFT_OVERHEAD_MS = 20.0


# --- processes, CPU, figures ----------------------------------------------------------


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` (every thread), from /proc; 0 once gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_s() -> float:
    """CPU seconds every core has been busy (all processes), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of `values`."""
    ordered = sorted(values)
    rank = max(1, round(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def spread(values_ms: Sequence[float]) -> str:
    return (
        f"p50 {percentile(values_ms, 0.5):.2f} ms, p99 {percentile(values_ms, 0.99):.2f} ms, "
        f"max {max(values_ms):.2f} ms"
    )


def machine(redis_client: redis.Redis) -> str:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    import celery  # noqa: PLC0415

    server = redis_client.info("server")["redis_version"]
    return (
        f"{os.cpu_count()} CPUs ({model or platform.machine()}), Linux {platform.release()}, "
        f"Python {sys.version.split()[0]}, Celery {celery.__version__}, "
        f"redis-py {redis.__version__}, httpx {httpx.__version__}, redis-server {server}"
    )


@dataclass
class Child:
    """A subprocess this benchmark started, its output file, and its CPU time."""

    name: str
    process: subprocess.Popen[bytes]
    output: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_s(self) -> float:
        return process_cpu_s(self.pid)

    def check_running(self) -> None:
        if self.process.poll() is not None:
            tail = self.output.read_text(errors="replace")[-3000:] if self.output.exists() else ""
            raise RuntimeError(f"{self.name} exited with code {self.process.returncode}:\n{tail}")

    def stop(self) -> None:
        """SIGTERM (a Celery warm shutdown), then SIGKILL if it does not end in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)


@dataclass
class Cpu:
    """CPU seconds so far: this process, each child, Redis, and the whole machine."""

    wall: float
    this: float
    children: dict[str, float]
    machine: float

    @classmethod
    def take(cls, children: dict[str, int]) -> Cpu:
        return cls(
            time.perf_counter(),
            time.process_time(),
            {name: process_cpu_s(pid) for name, pid in children.items()},
            machine_busy_s(),
        )

    def since(
        self,
        before: Cpu,
        this_name: str,
        extra: dict[str, float] | None = None,
        unseen_s: float = 0.0,
        items: int = 0,
    ) -> str:
        """CPU of each process between `before` and now, and the load of everything else.

        `extra`: CPU seconds of processes not in `children`, shown; `unseen_s`: CPU
        seconds of ours that are not shown (a child's start-up), left out of "other";
        `items`: also show each process's CPU per item (chunk) in microseconds.
        """
        wall = self.wall - before.wall
        used = {this_name: self.this - before.this}
        used |= {n: self.children[n] - before.children.get(n, 0.0) for n in self.children}
        used |= extra or {}
        ours = sum(used.values()) + unseen_s
        other = max(0.0, (self.machine - before.machine) - ours) / wall
        noisy = " NOISY: other processes were busy" if other > NOISY_LOAD else ""
        parts = ", ".join(f"{name} {seconds / wall:.2f}" for name, seconds in used.items())
        text = f"cores busy over {wall:.1f} s: {parts}; other load {other:.2f}{noisy}"
        if items:
            each = ", ".join(f"{name} {cpu / items * 1e6:,.0f}" for name, cpu in used.items())
            text += f"\n    CPU per chunk, us: {each}"
        return text


def wait_for_line(child: Child, text: str) -> None:
    """Wait (bounded) until `child` has printed a line holding `text`."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while text not in child.output.read_text(errors="replace"):
        child.check_running()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{child.name} did not print {text!r} in {STARTUP_TIMEOUT_S:g} s")
        time.sleep(0.02)


class LoopProbe:
    """How late this process's event loop wakes a sleeper, and its garbage collections."""

    def __init__(self) -> None:
        self.late_ms: list[float] = []
        self.pauses_ms: list[tuple[int, float]] = []
        self._gc_started = 0.0

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            pause = (time.perf_counter() - self._gc_started) * 1000.0
            self.pauses_ms.append((info["generation"], pause))

    async def _tick(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(LOOP_PROBE_S)
            self.late_ms.append((time.perf_counter() - started - LOOP_PROBE_S) * 1000.0)

    @contextmanager
    def running(self) -> Iterator[None]:
        task = asyncio.get_running_loop().create_task(self._tick())
        gc.callbacks.append(self._on_gc)
        try:
            yield
        finally:
            gc.callbacks.remove(self._on_gc)
            task.cancel()

    def describe(self) -> str:
        late = spread(self.late_ms) if self.late_ms else "no samples"
        pauses = [ms for _, ms in self.pauses_ms]
        full = sum(1 for generation, _ in self.pauses_ms if generation == 2)
        gcs = (
            f"{len(pauses)} collections ({full} full), longest {max(pauses):.1f} ms, "
            f"total {sum(pauses):.0f} ms"
            if pauses
            else "none"
        )
        return f"this process: event loop late by {late}; garbage collections: {gcs}"


class Stack:
    """A private Redis, the configuration, the mock server and the worker; all stopped at exit."""

    def __init__(self, workdir: Path, redis_server: EmbeddedRedis) -> None:
        self.workdir = workdir
        self.redis = redis_server
        self.children: list[Child] = []
        self.env: dict[str, str] = {}

    @property
    def redis_pid(self) -> int:
        pid = self.redis.pid
        if pid is None:
            raise RuntimeError("the private Redis is not running")
        return pid

    def start(self, name: str, args: list[str], **env: str) -> Child:
        output = self.workdir / f"{name}.out"
        with output.open("wb") as sink:
            process = subprocess.Popen(  # noqa: S603 - our interpreter and our arguments
                args,
                env={**(self.env or os.environ), **env},
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        child = Child(name, process, output)
        self.children.append(child)
        return child

    def start_mock(self, latency_s: float, chunk_delay_s: float, chunks: int) -> tuple[Child, str]:
        """`llmdispatch mock-server` on a free port; waits (bounded) for the URL it prints."""
        args = [
            str(LLMDISPATCH), "mock-server", "--port", "0", "--latency", str(latency_s),
            "--chunk-delay", str(chunk_delay_s), "--chunk-count", str(chunks),
        ]  # fmt: skip
        process = subprocess.Popen(  # noqa: S603 - our own script
            args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=ROOT
        )
        child = Child("mock", process, self.workdir / "mock.out")
        self.children.append(child)
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], STARTUP_TIMEOUT_S)
        line = process.stdout.readline().decode() if ready else ""
        url = next((w for w in line.split() if w.startswith("http://") and w.endswith("/v1")), "")
        if not url:
            raise RuntimeError(f"the mock server did not start: {line!r}")
        return child, url

    def configure(self, mock_url: str) -> None:
        """The dispatcher's configuration file and environment, here and for the worker."""
        vendor = {
            "type": "openai_compatible",
            "base_url": mock_url,
            "models": ["*"],
            "timeout_s": VENDOR_TIMEOUT_S,
            "stall_timeout_s": STALL_TIMEOUT_S,
        }
        path = self.workdir / "llmdispatch.yaml"
        path.write_text(yaml.safe_dump({"vendors": {VENDOR: vendor}, "default_vendor": VENDOR}))
        settings = {
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": self.redis.url,
            "LLMDISPATCH_CONFIG": str(path),
            "LLMDISPATCH_KEY_PREFIX": PREFIX,
            "LLMDISPATCH_VISIBILITY_TIMEOUT_S": str(VENDOR_TIMEOUT_S * 10),
        }
        os.environ.update(settings)
        self.env = {**os.environ, **settings}

    def start_worker(self, concurrency: int) -> Child:
        """`celery -A workers.app worker -Q llm.mock --pool threads -c concurrency`."""
        args = [
            sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", QUEUE,
            "--pool", "threads", "-c", str(concurrency), "-n", "bench-stream@%h",
            "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
            "--logfile", str(self.workdir / "worker.log"),
        ]  # fmt: skip
        return self.start("worker", args)

    def stop_all(self) -> None:
        for child in reversed(self.children):
            child.stop()


@contextmanager
def running_stack() -> Iterator[Stack]:
    with (
        tempfile.TemporaryDirectory(prefix="llmd-stream-bench-") as tmp,
        EmbeddedRedis() as redis_server,
    ):
        stack = Stack(Path(tmp), redis_server)
        try:
            yield stack
        finally:
            stack.stop_all()


def prompt_for(chunks: int) -> str:
    """A prompt whose reply ("echo: " + prompt) has `chunks` words: one chunk each."""
    return " ".join(f"word{i}" for i in range(1, chunks))


def request(prompt: str) -> Request:
    return Request(model=MODEL, messages=[Message(role=Role.USER, content=prompt)], stream=True)


# --- (1) chunk delivery: the bare baseline ----------------------------------------------


def bare_publish(url: str, streams: int, chunks: int, delay_s: float) -> None:
    """The baseline's publisher process: `streams` channels, `chunks` messages each, then done.

    Stream i starts i * delay_s / streams after the first, so messages leave at an even
    rate of streams / delay_s; the send time goes into each message as `emitted_at`.
    Prints one JSON line: the CPU this process used, and how late it was against schedule.
    """

    async def main() -> dict[str, Any]:
        client = redis.asyncio.Redis.from_url(url, max_connections=streams + 16)
        # Open one connection per stream before the clock starts, as the worker has them.
        for _ in range(2):
            await asyncio.gather(*(client.publish("bare:warm-up", "") for _ in range(streams)))
        lags: list[float] = []
        first = time.time() + 0.2
        cpu = time.process_time()

        async def one(index: int) -> None:
            start = first + index * delay_s / streams
            channel = BARE_CHANNEL.format(index)
            job_id = uuid.uuid4().hex
            for seq in range(1, chunks + 1):
                due = start + (seq - 1) * delay_s
                await asyncio.sleep(max(0.0, due - time.time()))
                now = time.time()
                lags.append(now - due)
                event = {
                    "seq": seq,
                    "type": "chunk",
                    "job_id": job_id,
                    "attempt": 0,
                    "delta": f" word{seq}",
                    "emitted_at": now,
                }
                await client.publish(channel, json.dumps(event, separators=(",", ":")))
            done = {"seq": chunks + 1, "type": "done", "job_id": job_id, "finish_reason": "stop"}
            await client.publish(channel, json.dumps(done, separators=(",", ":")))

        await asyncio.gather(*(one(i) for i in range(streams)))
        used = time.process_time() - cpu
        await client.aclose()
        lags_ms = [lag * 1000.0 for lag in lags]
        return {
            "cpu_s": used,
            "total_cpu_s": time.process_time(),  # with the interpreter's start-up
            "late_p50_ms": percentile(lags_ms, 0.5),
            "late_p99_ms": percentile(lags_ms, 0.99),
        }

    print(json.dumps(asyncio.run(main())), flush=True)


def tap(url: str, pattern: str, output: Path) -> None:
    """A bare subscriber process on a sample of the jobs' channels (`PSUBSCRIBE pattern`).

    Notes when each message reached it; on a message on `TAP_STOP`, writes the
    notes to `output` as JSON ([[job_id, seq, received_at], ...]) and exits.
    """
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub()
    pubsub.psubscribe(pattern)
    pubsub.subscribe(TAP_STOP)
    confirmed = 0
    heard: list[tuple[float, bytes]] = []
    deadline = time.monotonic() + 4 * PHASE_TIMEOUT_S
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1.0)
        if message is None:
            continue
        now = time.time()
        if message["type"] == "pmessage":
            heard.append((now, message["data"]))
        elif message["type"] in ("psubscribe", "subscribe"):
            confirmed += 1
            if confirmed == 2:
                print("ready", flush=True)
        elif message["type"] == "message":
            break
    rows = []
    for at, data in heard:  # decoded after the run, not while it listens
        event = json.loads(data)
        rows.append([event["job_id"], event["seq"], at])
    output.write_text(json.dumps(rows))
    pubsub.close()
    client.close()


@dataclass
class Delivery:
    """Per-chunk latencies of one side, and what else the phase showed."""

    label: str
    latencies_ms: list[float]
    streams_ok: int
    streams: int
    seconds: float
    cpu: str
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        rate = len(self.latencies_ms) / self.seconds if self.seconds else 0.0
        lines = [
            f"  {self.label}: {len(self.latencies_ms)} chunks, "
            f"{self.streams_ok}/{self.streams} streams complete, "
            f"{rate:,.0f} chunks/s over {self.seconds:.2f} s",
            f"    latency {spread(self.latencies_ms)}",
            f"    {self.cpu}",
        ]
        lines += [f"    {note}" for note in self.notes]
        return "\n".join(lines)


async def bare_delivery(stack: Stack, args: argparse.Namespace) -> Delivery:
    """N bare subscribers here, one bare publisher process; latency per message."""
    n, k = args.streams, args.chunks
    client = redis.asyncio.Redis.from_url(stack.redis.url, max_connections=n + 16)
    pubsubs = [client.pubsub() for _ in range(n)]
    await asyncio.gather(*(p.subscribe(BARE_CHANNEL.format(i)) for i, p in enumerate(pubsubs)))
    latencies: list[float] = []
    received: list[float] = []
    complete = 0

    async def listen(pubsub: redis.asyncio.client.PubSub) -> None:
        nonlocal complete
        count = 0
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            now = time.time()
            event = json.loads(message["data"])
            if event["type"] == "done":
                complete += count == k
                return
            count += 1
            latencies.append(now - event["emitted_at"])
            received.append(now)

    children = {"redis": stack.redis_pid}
    before = Cpu.take(children)
    command = [sys.executable, __file__, "--bare-publish", stack.redis.url, "--streams", str(n)]
    command += ["--chunks", str(k), "--chunk-delay", str(args.chunk_delay)]
    publisher = stack.start("bare-publisher", command)
    try:
        await asyncio.wait_for(asyncio.gather(*(listen(p) for p in pubsubs)), PHASE_TIMEOUT_S)
        after = Cpu.take(children)
        await asyncio.to_thread(publisher.process.wait, STOP_TIMEOUT_S)
    finally:
        for pubsub in pubsubs:
            await pubsub.aclose()
        await client.aclose()
    summary = json.loads(publisher.output.read_text().strip().splitlines()[-1])
    # The publisher has exited by now: its CPU comes from what it printed.
    cpu = after.since(
        before,
        "subscribers",
        {"publisher": summary["cpu_s"]},
        unseen_s=summary["total_cpu_s"] - summary["cpu_s"],
        items=len(latencies),
    )
    return Delivery(
        "bare PUBLISH -> SUBSCRIBE",
        [latency * 1000.0 for latency in latencies],
        complete,
        n,
        max(received) - min(received),
        cpu,
        [
            f"publisher behind schedule: p50 {summary['late_p50_ms']:.2f} ms, "
            f"p99 {summary['late_p99_ms']:.2f} ms"
        ],
    )


# --- (1) chunk delivery through the dispatcher --------------------------------------------


@dataclass
class Followed:
    """What one subscriber kept of its stream: little, so that the benchmark's own objects
    do not add garbage collections to the consumer process it measures."""

    job_id: str
    opened_at: float
    chunks: list[tuple[int, float, float]] = field(default_factory=list)  # seq, emitted, received
    parts: list[str] = field(default_factory=list)  # the text since the last reset
    seqs_in_order: bool = True
    last: str = ""

    @property
    def text(self) -> str:
        return "".join(self.parts)


async def follow(client: AsyncClient, job_id: str) -> Followed:
    followed = Followed(job_id, time.time())
    seq = 0
    async for event in client.stream(job_id):
        received = time.time()
        followed.seqs_in_order &= event.seq == seq + 1
        seq = event.seq
        followed.last = event.type.value
        if event.type is StreamEventType.RESET:
            followed.parts.clear()
        elif event.type is StreamEventType.CHUNK and event.emitted_at is not None:
            followed.chunks.append((event.seq, event.emitted_at, received))
            followed.parts.append(event.delta or "")
    return followed


@asynccontextmanager
async def consumer_client(streams: int) -> AsyncIterator[AsyncClient]:
    """`AsyncClient.from_env()`; past 200 streams, with a Redis pool holding one per stream.

    Every `stream()` holds a pooled connection for its PubSub; the default pool has 256.
    """
    if streams + 56 <= REDIS_MAX_CONNECTIONS:
        client = AsyncClient.from_env()
    else:
        settings = Settings.load()
        options = {**redis_pool_options(), "max_connections": streams + 56}
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            settings.redis_url.get_secret_value(), **options
        )
        client = AsyncClient(settings, redis_client=redis.asyncio.Redis.from_pool(pool))
    try:
        yield client
    finally:
        await client.aclose()
        if streams + 56 > REDIS_MAX_CONNECTIONS:
            await client.redis.aclose()


async def our_delivery(
    stack: Stack, worker: Child, mock: Child, args: argparse.Namespace
) -> Delivery:
    """N streaming jobs through the worker, followed here; latency per chunk."""
    n, k = args.streams, args.chunks
    prompt = prompt_for(k)
    reply = f"echo: {prompt}"
    children = {"worker": worker.pid, "mock": mock.pid, "redis": stack.redis_pid}
    async with consumer_client(n) as client:
        # Warm-up: the same N jobs, waited for, not followed: the worker's threads, its
        # connections to the mock server and to Redis are all open before measuring.
        warm = [await client.submit(request(prompt)) for _ in range(n)]
        await asyncio.wait_for(
            asyncio.gather(*(client.wait(j, PHASE_TIMEOUT_S) for j in warm)), PHASE_TIMEOUT_S
        )
        tapped_file = stack.workdir / "tap.json"
        tap_child = stack.start(
            "tap", [sys.executable, __file__, "--tap", stack.redis.url, str(tapped_file)]
        )
        await asyncio.to_thread(wait_for_line, tap_child, "ready")
        children["tap"] = tap_child.pid
        probe = LoopProbe()
        before = Cpu.take(children)
        with probe.running():
            tasks = []
            for _ in range(n):
                job_id = await client.submit(request(prompt))
                tasks.append(asyncio.create_task(follow(client, job_id)))
            submitted = time.perf_counter() - before.wall
            followed = await asyncio.wait_for(asyncio.gather(*tasks), PHASE_TIMEOUT_S)
            after = Cpu.take(children)
        await client.redis.publish(TAP_STOP, "")
        await asyncio.to_thread(tap_child.process.wait, STOP_TIMEOUT_S)
        tapped = {(job, seq): at for job, seq, at in json.loads(tapped_file.read_text())}
    delivery = analyse(followed, tapped, args, reply)
    delivery.cpu = after.since(before, "consumers", items=len(delivery.latencies_ms))
    delivery.notes.insert(0, f"all {n} submitted after {submitted:.2f} s")
    delivery.notes.append(probe.describe())
    return delivery


def analyse(
    followed: list[Followed],
    tapped: dict[tuple[str, int], float],
    args: argparse.Namespace,
    reply: str,
) -> Delivery:
    """Latency per chunk, and what shows where it comes from; CPU is filled in by the caller."""
    n, k = args.streams, args.chunks
    latencies: list[float] = []
    received: list[float] = []
    gaps: list[float] = []
    spans: list[float] = []
    timed: list[tuple[float, float]] = []  # (emitted_at, latency in ms) of every chunk
    to_tap: list[float] = []
    tap_to_us: list[float] = []
    firsts: list[float] = []
    lasts: list[float] = []
    complete = replayed = events = 0
    pieces = split_into_chunks(reply, k)
    for one in followed:
        ended = one.last == StreamEventType.DONE.value and one.seqs_in_order
        # Exact: the vendor's text, in order, once. A worker that falls behind joins
        # deltas into fewer events, so the count of events may be below k.
        complete += ended and one.text == reply
        carried = deltas_per_event(one.parts, pieces) if len(one.parts) == len(one.chunks) else []
        for index, (seq, emitted_at, at) in enumerate(one.chunks):
            events += 1
            # An event that carries several vendor deltas is counted once for each, at
            # the latency of its oldest (its emitted_at is the first delta's).
            weight = carried[index] if index < len(carried) else 1
            latencies.extend([(at - emitted_at) * 1000.0] * weight)
            timed.append((emitted_at, latencies[-1]))
            tapped_at = tapped.get((one.job_id, seq))
            if tapped_at is not None:
                to_tap.append((tapped_at - emitted_at) * 1000.0)
                tap_to_us.append((at - tapped_at) * 1000.0)
            received.append(at)
            replayed += emitted_at < one.opened_at
        emitted = [emitted_at for _, emitted_at, _ in one.chunks]
        gaps += [(b - a) * 1000.0 for a, b in itertools.pairwise(emitted)]
        if emitted:
            spans.append((emitted[-1] - emitted[0]) * 1000.0)
            firsts.append(emitted[0])
            lasts.append(emitted[-1])
    # While every stream was running: after the last one started, before the first one ended.
    steady = [ms for at, ms in timed if max(firsts) <= at <= min(lasts)] if firsts else []
    steady_text = (
        f"{len(steady)} chunks, latency {spread(steady)}"
        if steady
        else "none (the first stream ended before the last one started)"
    )
    moments = sorted([(at, 1) for at in firsts] + [(at, -1) for at in lasts])
    running = most = 0
    for _, step in moments:
        running += step
        most = max(most, running)
    notes = [
        f"{len(latencies)} vendor deltas reached the subscribers as {events} events "
        "(deltas that arrive while the worker's previous write is in flight are joined)",
        f"most streams running at once {most}",
        f"gaps between chunks at the worker (paced {args.chunk_delay * 1000:.0f} ms): "
        f"{spread(gaps)}",
        f"first to last chunk at the worker (ideal {(k - 1) * args.chunk_delay * 1000:.0f} ms): "
        f"{spread(spans)}",
        f"while all {n} streams were running (no job starting or ending): {steady_text}",
    ]
    if to_tap:
        jobs = len({job for job, _ in tapped})
        notes += [
            f"split, on the {len(to_tap)} chunks of the {jobs} jobs a bare subscriber process "
            "also heard:",
            f"  worker emitted -> bare subscriber received: {spread(to_tap)}",
            f"  bare subscriber received -> AsyncClient.stream yielded: {spread(tap_to_us)}",
        ]
    if replayed:
        notes.append(f"{replayed} chunks were emitted before their subscriber opened (replayed)")
    return Delivery(
        "dispatcher (worker -> AsyncClient.stream)",
        latencies,
        complete,
        n,
        max(received) - min(received),
        "",
        notes,
    )


def deltas_per_event(parts: list[str], pieces: list[str]) -> list[int]:
    """How many of the vendor's `pieces`, in order, each event's text is made of."""
    counts: list[int] = []
    index = 0
    for part in parts:
        text, count = "", 0
        while len(text) < len(part) and index < len(pieces):
            text += pieces[index]
            index += 1
            count += 1
        counts.append(max(1, count) if text == part else 1)
    return counts


# --- (2) time to first token ----------------------------------------------------------


@dataclass
class FirstToken:
    direct_ms: list[float] = field(default_factory=list)
    ours_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    pickup_ms: list[float] = field(default_factory=list)
    vendor_ms: list[float] = field(default_factory=list)
    delivery_ms: list[float] = field(default_factory=list)
    queued_before: int = 0


def direct_first_token(http: httpx.Client, url: str) -> float:
    """Seconds from sending the request to the first SSE event with content; reads to the end."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": SHORT_PROMPT}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = None
    with http.stream("POST", f"{url}/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if first is None and line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or []
                if any((c.get("delta") or {}).get("content") for c in choices):
                    first = time.perf_counter()
    if first is None:
        raise RuntimeError("the mock server's stream had no content")
    return first - started


def queued_messages(client: Client) -> int:
    """Messages waiting in the worker's queue (kombu keeps one list per priority step)."""
    names = client.redis.keys(f"{QUEUE}*")
    return sum(int(client.redis.llen(name)) for name in names if not name.endswith(b"unacked"))


def our_first_token(client: Client, times: FirstToken | None) -> float:
    """Seconds from calling submit() to the first chunk stream() yields; reads to the end."""
    wall = time.time()
    started = time.perf_counter()
    job_id = client.submit(request(SHORT_PROMPT))
    submitted = time.time()
    first: StreamEvent | None = None
    elapsed = received = 0.0
    events = []
    for event in client.stream(job_id, start_timeout_s=PHASE_TIMEOUT_S):
        if first is None and event.type is StreamEventType.CHUNK:
            elapsed, received, first = time.perf_counter() - started, time.time(), event
        events.append(event)
    if first is None or first.emitted_at is None or events[-1].type is not StreamEventType.DONE:
        raise RuntimeError(f"job {job_id} did not stream a chunk and done: {events!r}")
    if times is not None:
        record = client.get(job_id)
        assert record.started_at is not None
        started_at = record.started_at.timestamp()
        times.submit_ms.append((submitted - wall) * 1000.0)
        times.pickup_ms.append((started_at - submitted) * 1000.0)
        times.vendor_ms.append((first.emitted_at - started_at) * 1000.0)
        times.delivery_ms.append((received - first.emitted_at) * 1000.0)
    return elapsed


def first_tokens(url: str, jobs: int) -> FirstToken:
    """`jobs` direct calls and `jobs` dispatcher jobs, alternating, one at a time."""
    times = FirstToken()
    with httpx.Client(timeout=VENDOR_TIMEOUT_S) as http, Client.from_env() as client:
        for _ in range(WARMUP_TTFT):
            direct_first_token(http, url)
            our_first_token(client, None)
        for _ in range(jobs):
            time.sleep(PAUSE_BETWEEN_JOBS_S)
            times.direct_ms.append(direct_first_token(http, url) * 1000.0)
            time.sleep(PAUSE_BETWEEN_JOBS_S)  # the worker acknowledges the last job meanwhile
            times.queued_before += queued_messages(client)
            times.ours_ms.append(our_first_token(client, times) * 1000.0)
    return times


# --- the run ----------------------------------------------------------------------------


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def benchmark(args: argparse.Namespace) -> None:
    n, k, d, lat = args.streams, args.chunks, args.chunk_delay, args.latency
    concurrency = args.concurrency or n + 20
    with running_stack() as stack:
        print(f"machine: {machine(stack.redis.client())}")
        mock, url = stack.start_mock(lat, d, k)
        stack.configure(url)
        worker = stack.start_worker(concurrency)
        with Client.from_env() as client:
            job_id = client.submit(request(SHORT_PROMPT))
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while not client.get(job_id).status.is_terminal:
                worker.check_running()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the worker ran no job within {STARTUP_TIMEOUT_S:g} s")
                time.sleep(0.05)

        print(
            f"\n(1) chunk delivery: {n} concurrent streams x {k} chunks, {d * 1000:g} ms apart "
            f"= {n / d:,.0f} chunks/s; mock first-byte latency {lat:g} s; "
            f"worker --pool threads -c {concurrency}"
        )
        bare = asyncio.run(bare_delivery(stack, args))
        print(bare.describe())
        ours = asyncio.run(our_delivery(stack, worker, mock, args))
        print(ours.describe())
        added = {
            q: percentile(ours.latencies_ms, q) - percentile(bare.latencies_ms, q)
            for q in (0.5, 0.99)
        }
        print(f"  added by the dispatcher: p50 {added[0.5]:+.2f} ms, p99 {added[0.99]:+.2f} ms")

        j = args.ttft_jobs
        print(
            f"\n(2) time to first token, queue empty, worker idle: {j} jobs one at a time "
            f"against {j} direct httpx calls, alternating; mock latency {lat:g} s "
            f"(after {WARMUP_TTFT} warm-up calls each)"
        )
        children = {"worker": worker.pid, "mock": mock.pid, "redis": stack.redis_pid}
        before = Cpu.take(children)
        times = first_tokens(url, j)
        cpu = Cpu.take(children).since(before, "this process")
        print(f"  direct httpx -> mock:        {spread(times.direct_ms)}")
        print(f"  submit() -> first chunk:     {spread(times.ours_ms)}")
        overhead = {
            q: percentile(times.ours_ms, q) - percentile(times.direct_ms, q) for q in (0.5, 0.99)
        }
        print(f"  overhead: p50 {overhead[0.5]:+.2f} ms, p99 {overhead[0.99]:+.2f} ms")
        print(
            "  dispatcher, split (p50 / p99): "
            + "; ".join(
                f"{name} {percentile(values, 0.5):.2f} / {percentile(values, 0.99):.2f} ms"
                for name, values in (
                    ("submit() call", times.submit_ms),
                    ("submit -> job started", times.pickup_ms),
                    ("started -> first chunk at worker", times.vendor_ms),
                    ("worker -> subscriber", times.delivery_ms),
                )
            )
        )
        print(f"  messages queued when a job was submitted: {times.queued_before}")
        print(f"  {cpu}")

        print(
            f"\ntargets: added p99 per chunk < {TARGET_ADDED_P99_MS:g} ms: "
            f"{verdict(added[0.99] < TARGET_ADDED_P99_MS)} ({added[0.99]:+.2f} ms); "
            f"time-to-first-token overhead < {TARGET_TTFT_OVERHEAD_MS:g} ms: "
            f"p50 {verdict(overhead[0.5] < TARGET_TTFT_OVERHEAD_MS)} ({overhead[0.5]:+.2f} ms), "
            f"p99 {verdict(overhead[0.99] < TARGET_TTFT_OVERHEAD_MS)} ({overhead[0.99]:+.2f} ms)"
        )
        if ours.streams_ok != n or bare.streams_ok != n:
            raise SystemExit("some streams did not complete exactly: the figures are not valid")


class BudgetExceeded(Exception):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200, help="concurrent streams; 200")
    parser.add_argument("--chunks", type=int, default=60, help="chunks per stream; 60")
    parser.add_argument("--chunk-delay", type=float, default=0.05, help="seconds; 0.05")
    parser.add_argument("--latency", type=float, default=0.3, help="mock first byte, s; 0.3")
    parser.add_argument("--concurrency", type=int, default=0, help="worker -c; streams + 20")
    parser.add_argument("--ttft-jobs", type=int, default=50, help="jobs for (2); 50")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds; 170")
    parser.add_argument("--bare-publish", metavar="REDIS_URL", help=argparse.SUPPRESS)
    parser.add_argument("--tap", nargs=2, metavar=("REDIS_URL", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tap:
        tap(args.tap[0], TAP_PATTERN, Path(args.tap[1]))
        return
    if args.bare_publish:
        bare_publish(args.bare_publish, args.streams, args.chunks, args.chunk_delay)
        return
    if args.chunks < 2:
        parser.error("--chunks must be at least 2")
    raise_open_file_limit()

    def give_up(signum: int, frame: FrameType | None) -> None:
        raise BudgetExceeded(f"gave up: the benchmark took longer than {args.budget:g} s")

    signal.signal(signal.SIGALRM, give_up)
    signal.alarm(max(1, round(args.budget)))
    started = time.perf_counter()
    try:
        benchmark(args)
    except BudgetExceeded as exc:
        raise SystemExit(str(exc)) from None
    finally:
        signal.alarm(0)
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
