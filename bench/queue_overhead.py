"""Per-job overhead of the queue, and `submit()` latency, against bare Celery in the same run.

(a) Overhead: N jobs for an instant vendor (the in-process `mock` type, zero
    latency) go through the whole dispatcher: `Client.submit` validates, routes,
    writes the job and adds it to `llm.mock`'s ready set, with a bell
    (`dispatch.run_queued`) when none is pending; our worker
    (`celery -A workers.app worker --pool threads`) takes up to 50 jobs per bell,
    claims them, calls the vendor on its event loop thread and writes each
    result and its statistics.
    Side by side, through the same private Redis with the same pool and
    concurrency: N bare Celery no-op tasks (`bench/bare_celery.py`) sent with
    `send_task`, once with Celery's default settings and once with the Celery
    settings our dispatcher uses (late acks, prefetch 1, task events).
    Each side: a fresh worker, a warm-up of 100 jobs (which also proves the
    worker is ready), then N jobs sent from this process, one thread, as fast
    as it can, while the worker runs them. Wall time runs from the first send
    to the end of the last job (its own end time: the job record's
    `finished_at`, or the bare worker's clock); CPU is summed over this process
    (the producer), the worker and redis-server for the same interval.
(c) Latency of `Client.submit()` on loopback: sequential submits with no worker
    running, after a warm-up; for context, the same for a bare `send_task`
    with our Celery settings (the publish inside every submit).

Workers log at WARNING (no line per task) unless --loglevel says otherwise.
Every wait has a timeout, the whole run a budget, and every process is stopped.

    .venv/bin/python bench/queue_overhead.py                      # the defaults below
    .venv/bin/python bench/queue_overhead.py --jobs 1000 --rounds 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bare_celery import NOOP_TASK, QUEUE, SETTINGS_ENV, make_app, read_done
from queue_harness import (
    Bench,
    CpuSnapshot,
    Measurement,
    machine,
    our_client,
    our_worker_app,
    percentile,
    run_within_budget,
    running_bench,
    wait_for,
)
from what_if_workers import VARIANTS

REQUEST: dict[str, Any] = {
    "model": "mock-echo",
    "messages": [{"role": "user", "content": "Say hello to the mock"}],
}
WARMUP_JOBS = 100
WAIT_TIMEOUT_S = 120.0
DEFAULT_BUDGET_S = 280.0
TARGET_RATE_RATIO = 0.5
TARGET_SUBMIT_P50_MS = 1.0


# --- (a) ours: the whole dispatcher ---------------------------------------------------


def run_ours(bench: Bench, jobs: int, args: argparse.Namespace) -> Measurement:
    """N jobs through Client.submit and our worker; the end is the last record's finished_at."""
    worker = bench.start_worker(
        our_worker_app(args.what_if),
        "llm.mock",
        concurrency=args.concurrency,
        name="ours",
        loglevel=args.loglevel,
    )
    try:
        with our_client(args.what_if) as client:
            stats_key = client.store.keys.stats()

            def ended() -> int:
                return int(client.redis.hget(stats_key, "t:requests") or 0)

            for _ in range(WARMUP_JOBS):
                client.submit(REQUEST)
            wait_for(lambda: ended() >= WARMUP_JOBS, WAIT_TIMEOUT_S, "our warm-up", [worker])
            ids: list[str] = []
            latencies: list[float] = []
            before = CpuSnapshot.take(worker, bench.redis_pid)
            for _ in range(jobs):
                started = time.perf_counter()
                ids.append(client.submit(REQUEST))
                latencies.append(time.perf_counter() - started)
            submit_s = time.time() - before.wall
            wait_for(
                lambda: ended() >= WARMUP_JOBS + jobs, WAIT_TIMEOUT_S, f"{jobs} jobs", [worker]
            )
            after = CpuSnapshot.take(worker, bench.redis_pid)
            pipe = client.redis.pipeline(transaction=False)
            for job_id in ids:
                pipe.hmget(client.store.keys.job(job_id), "status", "finished_at")
            rows = pipe.execute()
        statuses = Counter(row[0].decode() for row in rows)
        if statuses != {"succeeded": jobs}:
            raise RuntimeError(f"not every job succeeded: {dict(statuses)}\n{worker.log_tail()}")
        ended_at = max(float(row[1]) for row in rows)
        label = "ours" if args.what_if is None else f"ours, what-if {args.what_if}"
        result = Measurement.between(
            label, jobs, before, after, ended_at=ended_at, submit_s=submit_s
        )
        result.extra["submit_ms"] = [s * 1000.0 for s in latencies]
        return result
    finally:
        bench.stop(worker)
        bench.redis.client().flushall()


# --- (a) bare Celery no-op tasks --------------------------------------------------------


def run_bare(bench: Bench, jobs: int, mode: str, args: argparse.Namespace) -> Measurement:
    """N no-op tasks sent by name; the end is the bare worker's time of its last completion."""
    worker = bench.start_worker(
        "bare_celery",
        QUEUE,
        concurrency=args.concurrency,
        name=f"bare-{mode}",
        loglevel=args.loglevel,
        **{SETTINGS_ENV: mode},
    )
    sender = make_app(mode, bench.redis.url)
    counts = bench.redis.client()
    try:

        def finished() -> int:
            ok, failed, _ = read_done(counts)
            return ok + failed

        for _ in range(WARMUP_JOBS):
            sender.send_task(NOOP_TASK, queue=QUEUE)
        wait_for(lambda: finished() >= WARMUP_JOBS, WAIT_TIMEOUT_S, "bare warm-up", [worker])
        latencies: list[float] = []
        before = CpuSnapshot.take(worker, bench.redis_pid)
        for _ in range(jobs):
            started = time.perf_counter()
            sender.send_task(NOOP_TASK, queue=QUEUE)
            latencies.append(time.perf_counter() - started)
        submit_s = time.time() - before.wall
        wait_for(
            lambda: finished() >= WARMUP_JOBS + jobs, WAIT_TIMEOUT_S, f"{jobs} tasks", [worker]
        )
        after = CpuSnapshot.take(worker, bench.redis_pid)
        _, failed, last = read_done(counts)
        if failed:
            raise RuntimeError(f"{failed} bare tasks failed; worker log:\n{worker.log_tail()}")
        result = Measurement.between(
            f"bare Celery ({mode})", jobs, before, after, ended_at=last, submit_s=submit_s
        )
        result.extra["submit_ms"] = [s * 1000.0 for s in latencies]
        return result
    finally:
        sender.close()
        counts.close()
        bench.stop(worker)
        bench.redis.client().flushall()


# --- (c) submit latency ---------------------------------------------------------------


def timed(call: Callable[[], object], count: int, warmup: int) -> list[float]:
    """Milliseconds of `count` sequential calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - started) * 1000.0)
    return latencies


def submit_latency(bench: Bench, count: int, what_if: str | None) -> dict[str, list[float]]:
    """Sequential submits and bare sends with no worker running (messages pile up, then go)."""
    results: dict[str, list[float]] = {}
    try:
        with our_client(what_if) as client:
            results["Client.submit()"] = timed(lambda: client.submit(REQUEST), count, 200)
        bench.redis.client().flushall()
        sender = make_app("dispatcher", bench.redis.url)
        try:
            results["bare send_task (our Celery settings)"] = timed(
                lambda: sender.send_task(NOOP_TASK, queue=QUEUE), count, 200
            )
        finally:
            sender.close()
    finally:
        bench.redis.client().flushall()
    return results


# --- the run ----------------------------------------------------------------------------


def describe_latency(values_ms: list[float]) -> str:
    return (
        f"p50 {statistics.median(values_ms):.3f} ms, p90 {percentile(values_ms, 0.9):.3f} ms, "
        f"p99 {percentile(values_ms, 0.99):.3f} ms, max {max(values_ms):.2f} ms"
    )


def compare(ours: Measurement, bare: Measurement) -> str:
    rate = ours.per_second / bare.per_second
    cpu = ours.cpu_us / bare.cpu_us
    return f"ours / {bare.label}: {rate:.2f} of the jobs/s, {cpu:.2f}x the CPU per job"


def benchmark(args: argparse.Namespace) -> None:
    print(f"machine: {machine()}")
    with (
        tempfile.TemporaryDirectory(prefix="llmd-bench-") as tmp,
        running_bench(Path(tmp)) as bench,
    ):
        bench.configure(
            {"vendors": {"mock": {"type": "mock"}}},
            LLMDISPATCH_VISIBILITY_TIMEOUT_S="600",
        )
        n, c = args.jobs, args.concurrency
        print(
            f"\n(a) overhead: {n} jobs, instant in-process mock vendor; worker --pool threads "
            f"-c {c}, log level {args.loglevel}; {WARMUP_JOBS} warm-up jobs first"
        )
        passed = []
        for round_no in range(1, args.rounds + 1):
            print(f"  round {round_no}:")
            defaults = run_bare(bench, n, "defaults", args)
            print(f"    {defaults.label:<32} {defaults.describe()}")
            same = run_bare(bench, n, "dispatcher", args)
            print(f"    {same.label:<32} {same.describe()}")
            ours = run_ours(bench, n, args)
            print(f"    {ours.label:<32} {ours.describe()}")
            print(f"    {compare(ours, defaults)}")
            print(f"    {compare(ours, same)}")
            under_load = ours.extra["submit_ms"]
            print(f"    submit() while the worker runs: {describe_latency(under_load)}")
            passed.append(ours.per_second / defaults.per_second >= TARGET_RATE_RATIO)
        verdict = "met" if all(passed) else "MISSED"
        print(
            f"  target: ours >= {TARGET_RATE_RATIO} of bare Celery (defaults) jobs/s in every "
            f"round: {verdict}"
        )

        print(f"\n(c) submit latency: {args.submits} sequential calls, no worker running")
        latencies = submit_latency(bench, args.submits, args.what_if)
        for label, values in latencies.items():
            print(f"  {label:<38} {describe_latency(values)}")
        p50 = statistics.median(latencies["Client.submit()"])
        verdict = "met" if p50 < TARGET_SUBMIT_P50_MS else "MISSED"
        print(f"  target: submit() p50 < {TARGET_SUBMIT_P50_MS:g} ms: {verdict} ({p50:.3f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3_000, help="jobs per side; default 3000")
    parser.add_argument("--concurrency", type=int, default=8, help="worker -c; default 8")
    parser.add_argument("--rounds", type=int, default=2, help="repeat (a); default 2")
    parser.add_argument("--submits", type=int, default=2_000, help="for (c); default 2000")
    parser.add_argument("--loglevel", default="WARNING", help="the workers' --loglevel")
    parser.add_argument(
        "--what-if",
        choices=VARIANTS,
        help="run our side with a product change applied (bench/what_if_workers.py)",
    )
    parser.add_argument(
        "--budget", type=float, default=DEFAULT_BUDGET_S, help="give up after this many seconds"
    )
    args = parser.parse_args()

    run_within_budget(args.budget, lambda: benchmark(args))


if __name__ == "__main__":
    main()
