"""I/O-bound jobs through the queue: calls to a mock vendor with 0.5 s latency, against bare Celery.

(b) N jobs (default 10,000) for an `openai_compatible` vendor whose base URL is
    the stand-in vendor server (`producer.cli.tools.standin`, its own process), which
    waits `--latency` (0.5 s) before answering each completion. Our worker
    (`celery -A workers.app worker --pool threads -c C`, C = 600 by default)
    runs them: each task thread hands the call to the worker's one event loop
    thread (httpx.AsyncClient) and writes the result. Side by side, through
    the same private Redis, mock server, pool and concurrency: N bare Celery
    tasks (`bench/bare_celery.py`), each making the same single POST (same
    body, same Bearer key) with a synchronous `httpx.Client` per worker
    thread (one keep-alive connection each), and reading its JSON.

Calls in flight are counted by the mock server itself: this script serves the
mock app (`producer.cli.tools.standin.create_app`) with one extra middleware that
counts completions being answered, and a `/__inflight` route to read the count
(`--serve-mock`). The latency ideal is N x latency / C: every slot always busy.
Each side: a fresh worker, a warm-up of C jobs (every thread and connection
used once; it also proves the worker is ready), then N jobs sent from this
process, one thread, as fast as it can, while the worker runs them. Wall time
runs from the first send to the end of the last job (the job record's
`finished_at`, or the bare worker's clock); CPU is summed over this process
(the producer), the worker and redis-server; the mock server's CPU is shown
apart (it stands for the vendor).

Every wait has a timeout, the whole run a budget, and every process is stopped.

    .venv/bin/python bench/queue_io.py                        # 10,000 jobs, -c 600
    .venv/bin/python bench/queue_io.py --jobs 1000            # a quick run
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aiohttp import web
from bare_celery import (
    HTTP_TASK,
    QUEUE,
    SETTINGS_ENV,
    make_app,
    read_done,
)
from queue_harness import (
    Bench,
    CpuSnapshot,
    Measurement,
    Process,
    ServerProcess,
    machine,
    our_client,
    our_worker_app,
    run_within_budget,
    running_bench,
    wait_for,
)
from what_if_workers import VARIANTS

from dispatcher import Request
from dispatcher.vendors.openai import chat_body
from producer.cli.tools.standin import StandInOptions, create_app, raise_open_file_limit

API_KEY = "sk-bench-0123456789abcdef"
VENDOR = "mockhttp"
MODEL = "mock-echo"
REQUEST: dict[str, Any] = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Say hello to the mock"}],
}
VENDOR_TIMEOUT_S = 60
STARTUP_TIMEOUT_S = 20.0
DEFAULT_BUDGET_S = 290.0
TARGET_WALL_RATIO = 1.3
TARGET_IN_FLIGHT = 500


# --- the mock server, with calls in flight counted -----------------------------------


@dataclass
class InFlight:
    """Completions being answered now, the most at once, and how many were answered."""

    now: int = 0
    most: int = 0
    served: int = 0

    def reset(self) -> None:
        self.most, self.served = self.now, 0


def serve_mock(latency_s: float, port: int) -> None:
    """The stand-in vendor server (`create_app`), plus an in-flight counter at `/__inflight`."""
    counter = InFlight()

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path != "/v1/chat/completions":
            return await handler(request)  # type: ignore[no-any-return]
        counter.now += 1
        counter.most = max(counter.most, counter.now)
        try:
            return await handler(request)  # type: ignore[no-any-return]
        finally:
            counter.now -= 1
            counter.served += 1

    async def read(request: web.Request) -> web.Response:
        return web.json_response(
            {"now": counter.now, "most": counter.most, "served": counter.served}
        )

    async def reset(request: web.Request) -> web.Response:
        counter.reset()
        return web.json_response({})

    async def main() -> None:
        options = StandInOptions.model_validate(
            {"behaviour": {"time_to_first_token_s": latency_s}, "api_key": API_KEY}
        )
        app = create_app(options)
        app.middlewares.append(count)
        app.router.add_get("/__inflight", read)
        app.router.add_post("/__inflight/reset", reset)
        # As StandInServer.start does: no access log, cancellation on hang-up, a deep backlog.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        print(f"mock listening on http://127.0.0.1:{runner.addresses[0][1]}/v1", flush=True)
        await asyncio.Event().wait()  # until the benchmark terminates this process

    raise_open_file_limit()
    asyncio.run(main())


class MockProcess(ServerProcess):
    """The mock server subprocess: its URL, its in-flight counter and its CPU."""

    def __init__(self, latency_s: float) -> None:
        args = [sys.executable, __file__, "--serve-mock", "--latency", str(latency_s)]
        super().__init__(args, STARTUP_TIMEOUT_S)

    def in_flight(self) -> dict[str, int]:
        data: dict[str, int] = self.get_json("/__inflight")
        return data

    def reset(self) -> None:
        self.post("/__inflight/reset")


# --- the two sides ---------------------------------------------------------------------


def finish(
    result: Measurement, mock: MockProcess, mock_cpu_before: float, served: int
) -> Measurement:
    """Add what the mock server saw to a side's measurement."""
    seen = mock.in_flight()
    result.extra["most_in_flight"] = seen["most"]
    result.extra["mock_cpu_s"] = mock.cpu_s() - mock_cpu_before
    if seen["served"] < served:
        raise RuntimeError(f"the mock answered {seen['served']} calls, expected {served}")
    return result


def wait_or_give_up(
    count: Callable[[], int], target: int, worker: Process, timeout_s: float
) -> bool:
    """Wait until `count()` reaches `target`: True, or False when `timeout_s` passed first."""
    try:
        wait_for(lambda: count() >= target, timeout_s, f"{target} jobs", [worker])
    except TimeoutError:
        return False
    return True


def run_ours(bench: Bench, mock: MockProcess, args: argparse.Namespace) -> Measurement:
    """N jobs through Client.submit and our worker; the end is the last record's finished_at.

    Jobs still unfinished after `--timeout` are left: the figures are then those of
    the jobs that ended, marked as a partial run.
    """
    jobs, c = args.jobs, args.concurrency
    worker = bench.start_worker(
        our_worker_app(args.what_if),
        f"llm.{VENDOR}",
        concurrency=c,
        name="ours",
        loglevel=args.loglevel,
    )
    try:
        with our_client(args.what_if) as client:
            stats_key = client.store.keys.stats()

            def ended() -> int:
                return int(client.redis.hget(stats_key, "t:requests") or 0)

            for _ in range(c):
                client.submit(REQUEST)
            wait_for(lambda: ended() >= c, args.timeout, "our warm-up", [worker])
            mock.reset()
            mock_cpu = mock.cpu_s()
            ids: list[str] = []
            before = CpuSnapshot.take(worker, bench.redis_pid)
            for _ in range(jobs):
                ids.append(client.submit(REQUEST))
            submit_s = time.time() - before.wall
            complete = wait_or_give_up(ended, c + jobs, worker, args.timeout - submit_s)
            after = CpuSnapshot.take(worker, bench.redis_pid)
            pipe = client.redis.pipeline(transaction=False)
            for job_id in ids:
                pipe.hmget(client.store.keys.job(job_id), "status", "started_at", "finished_at")
            rows = [row for row in pipe.execute() if row[2] is not None]
            failures = int(client.redis.hget(stats_key, "t:failures") or 0)
        statuses = Counter(row[0].decode() for row in rows)
        if failures or set(statuses) - {"succeeded"}:
            raise RuntimeError(f"jobs failed: {dict(statuses)}; worker log:\n{worker.log_tail()}")
        ended_at = max(float(row[2]) for row in rows) if complete else after.wall
        label = "ours" if args.what_if is None else f"ours, what-if {args.what_if}"
        result = Measurement.between(
            label, len(rows), before, after, ended_at=ended_at, submit_s=submit_s, sent=jobs
        )
        result.extra["store_in_flight"] = most_overlapping(
            [(float(row[1]), float(row[2])) for row in rows]
        )
        return finish(result, mock, mock_cpu, len(rows))
    finally:
        bench.stop(worker)
        bench.redis.client().flushall()


def most_overlapping(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one time (a job between started_at and finished_at)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def run_bare(bench: Bench, mock: MockProcess, mode: str, args: argparse.Namespace) -> Measurement:
    """N bare tasks, one httpx POST each; the end is the bare worker's last completion."""
    jobs, c = args.jobs, args.concurrency
    worker = bench.start_worker(
        "bare_celery",
        QUEUE,
        concurrency=c,
        name=f"bare-{mode}",
        loglevel=args.loglevel,
        **{SETTINGS_ENV: mode},
    )
    sender = make_app(mode, bench.redis.url)
    counts = bench.redis.client()
    request = Request.model_validate(REQUEST)
    body = chat_body(request, MODEL, stream=False, max_tokens_field="max_tokens")
    call = (f"{mock.url}/chat/completions", body, API_KEY)
    try:

        def finished() -> int:
            ok, failed, _ = read_done(counts)
            return ok + failed

        for _ in range(c):
            sender.send_task(HTTP_TASK, args=call, queue=QUEUE)
        wait_for(lambda: finished() >= c, args.timeout, "bare warm-up", [worker])
        mock.reset()
        mock_cpu = mock.cpu_s()
        before = CpuSnapshot.take(worker, bench.redis_pid)
        for _ in range(jobs):
            sender.send_task(HTTP_TASK, args=call, queue=QUEUE)
        submit_s = time.time() - before.wall
        complete = wait_or_give_up(finished, c + jobs, worker, args.timeout - submit_s)
        after = CpuSnapshot.take(worker, bench.redis_pid)
        ok, failed, last = read_done(counts)
        if failed:
            raise RuntimeError(f"{failed} bare tasks failed; worker log:\n{worker.log_tail()}")
        result = Measurement.between(
            f"bare Celery ({mode})",
            ok - c,
            before,
            after,
            ended_at=last if complete else after.wall,
            submit_s=submit_s,
            sent=jobs,
        )
        return finish(result, mock, mock_cpu, ok - c)
    finally:
        sender.close()
        counts.close()
        bench.stop(worker)
        bench.redis.client().flushall()


# --- the run ----------------------------------------------------------------------------


def describe(result: Measurement, ideal_s: float, latency_s: float) -> str:
    partial = (
        f"\n{'':8}PARTIAL: only {result.jobs} of {result.sent} ended within the timeout; "
        f"all {result.sent} would take ~{result.projected_wall_s:.0f} s at this rate"
        if not result.complete
        else ""
    )
    mock_us = result.extra["mock_cpu_s"] / result.jobs * 1e6
    store = result.extra.get("store_in_flight")
    store_text = f" ({store} started and unfinished at once per the job store)" if store else ""
    mean = result.per_second * latency_s  # Little's law: rate x time each call is open
    return (
        f"{result.describe(result.extra['mock_cpu_s'])}{partial}\n"
        f"{'':8}calls in flight at the mock: at most "
        f"{result.extra['most_in_flight']}, on average {mean:.0f} (jobs/s x latency)"
        f"{store_text}; {result.projected_wall_s / ideal_s:.2f}x the latency ideal; "
        f"mock server CPU {mock_us:,.0f} us/call"
    )


def benchmark(args: argparse.Namespace) -> None:
    print(f"machine: {machine()}")
    n, c, latency = args.jobs, args.concurrency, args.latency
    ideal = n * latency / c
    mock = MockProcess(latency)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="llmd-bench-") as tmp,
            running_bench(Path(tmp)) as bench,
        ):
            vendor = {
                "type": "openai_compatible",
                "base_url": mock.url,
                "api_key": "${BENCH_MOCK_API_KEY}",
                "timeout_s": VENDOR_TIMEOUT_S,
                "models": ["*"],
            }
            bench.configure(
                {"vendors": {VENDOR: vendor}},
                BENCH_MOCK_API_KEY=API_KEY,
                LLMDISPATCH_VISIBILITY_TIMEOUT_S=str(VENDOR_TIMEOUT_S * 10),
            )
            print(
                f"\n(b) I/O-bound: {n} jobs, mock vendor over HTTP with {latency:g} s latency; "
                f"worker --pool threads -c {c}, log level {args.loglevel}; {c} warm-up jobs "
                f"first; latency ideal {n} x {latency:g} s / {c} = {ideal:.2f} s"
            )
            sides = []
            for mode in args.bare:
                bare = run_bare(bench, mock, mode, args)
                print(f"  {bare.label:<26} {describe(bare, ideal, latency)}")
                sides.append(bare)
            ours = run_ours(bench, mock, args)
            print(f"  {ours.label:<26} {describe(ours, ideal, latency)}")
            for bare in sides:
                ratio = ours.projected_wall_s / bare.projected_wall_s
                print(
                    f"  {ours.label} / {bare.label}: {ratio:.2f}x the wall time, "
                    f"{ours.cpu_us / bare.cpu_us:.2f}x the CPU per job"
                )
            verdicts = []
            if sides:
                worst = max(ours.projected_wall_s / bare.projected_wall_s for bare in sides)
                met = worst <= TARGET_WALL_RATIO
                verdict = "met" if met else "MISSED"
                verdicts.append(f"wall <= {TARGET_WALL_RATIO}x bare: {verdict} ({worst:.2f}x)")
            most = ours.extra["most_in_flight"]
            met = most >= TARGET_IN_FLIGHT
            verdicts.append(
                f">= {TARGET_IN_FLIGHT} calls in flight: {'met' if met else 'MISSED'} ({most})"
            )
            print(f"  targets: {'; '.join(verdicts)}")
    finally:
        mock.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per side; default 10000")
    parser.add_argument("--concurrency", type=int, default=600, help="worker -c; default 600")
    parser.add_argument("--latency", type=float, default=0.5, help="mock latency; default 0.5 s")
    parser.add_argument(
        "--bare",
        nargs="*",
        default=["defaults"],
        choices=["defaults", "dispatcher"],
        help="bare Celery settings to compare with; default: defaults",
    )
    parser.add_argument("--loglevel", default="WARNING", help="the workers' --loglevel")
    parser.add_argument(
        "--timeout", type=float, default=150.0, help="per side, from the first send; default 150 s"
    )
    parser.add_argument(
        "--budget", type=float, default=DEFAULT_BUDGET_S, help="give up after this many seconds"
    )
    parser.add_argument(
        "--what-if",
        choices=VARIANTS,
        help="run our side with a product change applied (bench/what_if_workers.py)",
    )
    parser.add_argument("--serve-mock", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_mock:
        serve_mock(args.latency, 0)
        return
    raise_open_file_limit()

    run_within_budget(args.budget, lambda: benchmark(args))


if __name__ == "__main__":
    main()
