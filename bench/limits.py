"""Shared rate limits: what one limiter acquire costs, and how exactly 2 and 4 workers keep a limit.

(1) Cost. Against a private redis-server, from this process: N calls of
    `RateLimiter.acquire` on 1 and on 3 buckets (one EVALSHA round trip each),
    beside two baselines in the same run: a bare `PING` and an `EVALSHA` of a
    script that returns at once (the floor for any atomic Lua step). Then the
    same for the job's claim, `JobStore.claim`, without buckets and with the 2
    buckets of an rpm + tpm vendor: what limits add to the round trip a job pays
    anyway. Microseconds per call (wall, sequential) and round trips per call.
(2) Accuracy. 2, then 4, `celery worker` processes (threads, -c 20 each) drain a
    backlog of jobs for one vendor limited to `--rpm` (burst `--burst`), served by
    the stand-in vendor server in this process (which records when each request
    arrives, after `--latency`). Over a `--window` s window from the first
    arrival: requests that arrived, against the most the limit allows (rate x
    window + burst), and the rate achieved after the burst, against the limit.

    .venv/bin/python bench/limits.py                  # about 70 s
    .venv/bin/python bench/limits.py --calls 2000 --window 10
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aiohttp import web
from queue_harness import Bench, machine, run_within_budget, running_bench, wait_for

from dispatcher import Message, Request, Route
from dispatcher.state.ratelimit import RateLimiter
from dispatcher.state.store import Bucket, JobStore
from producer import Client
from producer.cli.tools.standin import StandInOptions, create_app

DEFAULT_BUDGET_S = 170.0
CONCURRENCY = 20
REQUEST = Request(model="mock-echo", messages=[Message(role="user", content="hi")])


def per_call_us(call: Callable[[], object], calls: int) -> list[float]:
    """Wall microseconds of each of `calls` sequential calls, after 200 untimed ones."""
    for _ in range(200):
        call()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1e6)
    return times


def describe(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[int(0.99 * (len(ordered) - 1))]
    return f"p50 {statistics.median(times):6.1f} us, p99 {p99:6.1f} us"


def cost(bench: Bench, calls: int) -> None:
    """(1): microseconds and round trips per acquire and per claim, beside baselines."""
    client = bench.redis.client()
    limiter = RateLimiter(client)
    store = JobStore(client, "costbench")
    nothing = client.register_script("return 1")

    def bucket(index: int) -> Bucket:  # never short: the cost of a successful take
        return Bucket(f"costbench:limit:v{index}:rpm", "rpm", 1e9, 1e9, 1.0)

    one, three = [bucket(0)], [bucket(i) for i in range(3)]
    rows = [
        ("PING (a bare round trip)", 1, per_call_us(client.ping, calls)),
        ("EVALSHA 'return 1'", 1, per_call_us(nothing, calls)),
        ("RateLimiter.acquire, 1 bucket", 1, per_call_us(lambda: limiter.acquire(one), calls)),
        ("RateLimiter.acquire, 3 buckets", 1, per_call_us(lambda: limiter.acquire(three), calls)),
    ]
    route = Route(vendor="v0", model="mock-echo", queue="llm.v0")
    two = [
        Bucket("costbench:limit:v0:all:rpm", "rpm", 1e9, 1e9, 1.0),
        Bucket("costbench:limit:v0:all:tpm", "tpm", 1e9, 1e9, 100.0),
    ]

    def claim(buckets: list[Bucket]) -> Callable[[], object]:
        def run() -> object:
            job_id = store.new_job_id()
            store.create(job_id, REQUEST, route)  # not timed apart: the same on both rows
            return store.claim(job_id, 0, "v0", buckets, horizon_s=60.0)

        return run

    rows += [
        ("create + claim, no limits", 2, per_call_us(claim([]), calls)),
        ("create + claim, rpm + tpm buckets", 2, per_call_us(claim(two), calls)),
    ]
    print(f"\n(1) cost: {calls} sequential calls each, this process -> private redis-server")
    for label, trips, times in rows:
        print(f"  {label:<36} {trips} round trip{'s' if trips > 1 else ' '}  {describe(times)}")
    ping, plain = statistics.median(rows[0][2]), statistics.median(rows[1][2])
    acquire = statistics.median(rows[2][2])
    with_limits, without = statistics.median(rows[5][2]), statistics.median(rows[4][2])
    print(
        f"  acquire = {acquire / ping:.2f}x a PING, {acquire / plain:.2f}x an empty script; "
        f"limits add {with_limits - without:+.1f} us to a job's claim"
    )
    client.flushall()


class Arrivals:
    """The stand-in vendor server in a thread of this process, noting when requests arrive."""

    def __init__(self, latency_s: float) -> None:
        self.times: list[float] = []
        options = StandInOptions.model_validate(
            {"behaviour": {"time_to_first_token_s": latency_s}}
        )
        self.app = create_app(options)

        @web.middleware
        async def note(request: web.Request, handler: Callable) -> web.StreamResponse:  # type: ignore[type-arg]
            if request.path.endswith("/chat/completions"):
                self.times.append(time.time())
            return await handler(request)

        self.app.middlewares.append(note)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self.thread.start()
        if not ready.wait(10):
            raise RuntimeError("the mock server did not start")

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        runner = web.AppRunner(self.app)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def accuracy(bench: Bench, workers: int, args: argparse.Namespace, mock: Arrivals) -> str:
    """(2) with `workers` worker processes: arrivals in the window against the limit."""
    mock.times.clear()
    vendor = f"lim{workers}"
    bench.configure(
        {
            "vendors": {
                vendor: {
                    "type": "openai_compatible",
                    "base_url": mock.url,
                    "rpm": args.rpm,
                    "rpm_burst": args.burst,
                }
            },
            "default_vendor": vendor,
        },
        LLMDISPATCH_HEALTH_CHECK_INTERVAL_S="0",
    )
    started = [
        bench.start_worker(
            "workers.app",
            f"llm.{vendor}",
            concurrency=CONCURRENCY,
            name=f"{vendor}-{i}",
            loglevel="INFO",  # for its " ready." line
        )
        for i in range(workers)
    ]
    backlog = int(args.rpm * (args.window + 10) / 60.0) + args.burst + 50
    try:
        for worker in started:
            wait_for(lambda w=worker: " ready." in w.log_tail(), 60, f"{worker.name}", [worker])  # type: ignore[misc]
        with Client.from_env() as client:
            for _ in range(backlog):
                client.submit(REQUEST)
            wait_for(lambda: bool(mock.times), 60, "the first request", started)
            first = mock.times[0]
            end = first + args.window
            wait_for(lambda: time.time() > end + 1.0, args.window + 10, "the window", started)
        arrived = sum(1 for t in mock.times if first <= t < end)
        allowed = args.rpm * args.window / 60.0 + args.burst
        rate = (arrived - args.burst) * 60.0 / args.window
        return (
            f"  {workers} workers: {arrived} requests in {args.window:g} s "
            f"(at most {allowed:g} allowed: {arrived / allowed:.3f} of it); after the burst "
            f"{rate:.0f} rpm = {rate / args.rpm:.3f} of the {args.rpm} rpm limit; "
            f"backlog {backlog}, {len(mock.times)} calls in all"
        )
    finally:
        for worker in started:
            bench.stop(worker)
        bench.redis.client().flushall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5_000, help="for (1); default 5000")
    parser.add_argument("--rpm", type=int, default=1_200, help="the limit in (2); default 1200")
    parser.add_argument("--burst", type=int, default=20, help="its burst; default 20")
    parser.add_argument("--window", type=float, default=20.0, help="seconds; default 20")
    parser.add_argument("--latency", type=float, default=0.05, help="mock latency; 0.05 s")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S)
    args = parser.parse_args()

    def benchmark() -> None:
        print(f"machine: {machine()}")
        with (
            tempfile.TemporaryDirectory(prefix="llmd-bench-") as tmp,
            running_bench(Path(tmp)) as bench,
        ):
            cost(bench, args.calls)
            mock = Arrivals(args.latency)
            print(
                f"\n(2) accuracy: limit {args.rpm} rpm, burst {args.burst}; workers --pool threads "
                f"-c {CONCURRENCY}; mock latency {args.latency:g} s; window {args.window:g} s"
            )
            for workers in (2, 4):
                print(accuracy(bench, workers, args, mock))

    run_within_budget(args.budget, benchmark)


if __name__ == "__main__":
    main()
