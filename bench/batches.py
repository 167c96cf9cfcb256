"""Batches: submitting, draining, pacing by a rate limit, and interactive jobs beside them.

Each part runs its baseline in the same run, through the same private Redis:

(a) submit: `Client.submit_batch` of N prompts (default 10,000), against one
    `send_task` (Celery's apply_async) per prompt from this process, and
    against N `Client.submit` calls. Target: the batch under 2 s.
(b) drain: an N-prompt batch against the stand-in vendor server (its own process)
    with `--latency` (0.5 s), against bare Celery with one task per prompt
    making the same single httpx POST (`bench/bare_celery.py`, -c 600, as in
    `bench/queue_io.py`). Wall time from the first send to the last item's end.
    Target: at least 2x faster than bare Celery.
(c) paced: a batch of `--paced-jobs` prompts for a vendor with an `rpm` limit
    that binds (default 6,000 rpm = 100/s, burst 60), mock latency 0.05 s.
    Target: wall time within 1.2 x N / limit.
(d) lanes: one interactive job every `--probe-every` seconds while an N-item
    batch drains on the same vendor and worker, against the same probes with
    nothing else queued; the queue wait (submit to claim) of each probe, from
    its record. Target: p99 under 250 ms.

Our worker is the product's (`celery -A workers.app worker --pool threads -c
500`, the `llmdispatch worker` default) consuming `llm.<vendor>` and
`llm.<vendor>.batch`. Every wait has a timeout, the run a budget, and every
process is stopped.

    .venv/bin/python bench/batches.py                  # every part
    .venv/bin/python bench/batches.py --parts a d      # some parts
    .venv/bin/python bench/batches.py --jobs 2000      # a quick run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bare_celery import HTTP_TASK, QUEUE, make_app
from queue_harness import (
    Bench,
    CpuSnapshot,
    Measurement,
    Process,
    machine,
    percentile,
    run_within_budget,
    running_bench,
    wait_for,
)
from queue_io import API_KEY, MockProcess, run_bare

from dispatcher import Settings
from dispatcher.broker.celery_config import celery_settings
from producer.cli.tools.standin import raise_open_file_limit
from producer.client import Client

VENDOR = "mockhttp"
QUEUES = f"llm.{VENDOR},llm.{VENDOR}.batch"
DEFAULT_CONCURRENCY = 500
BARE_CONCURRENCY = 600
VENDOR_TIMEOUT_S = 60
DEFAULT_BUDGET_S = 600.0
TARGET_SUBMIT_S = 2.0
TARGET_SPEEDUP = 2.0
TARGET_PACED_RATIO = 1.2
TARGET_LANE_P99_MS = 250.0


def prompts(count: int, tag: str) -> list[dict[str, Any]]:
    return [
        {"model": "mock-echo", "messages": [{"role": "user", "content": f"{tag} prompt {i}"}]}
        for i in range(count)
    ]


# Worker settings a run may override (--batch-window).
OVERRIDES: dict[str, str] = {}


def configure(
    bench: Bench, mock: MockProcess, *, env: Mapping[str, str] | None = None, **vendor_extra: Any
) -> None:
    """One `openai_compatible` vendor on the mock server; `env` adds worker settings."""
    vendor = {
        "type": "openai_compatible",
        "base_url": mock.url,
        "api_key": "${BENCH_MOCK_API_KEY}",
        "timeout_s": VENDOR_TIMEOUT_S,
        "models": ["*"],
        **vendor_extra,
    }
    bench.configure(
        {"vendors": {VENDOR: vendor}},
        BENCH_MOCK_API_KEY=API_KEY,
        LLMDISPATCH_VISIBILITY_TIMEOUT_S=str(VENDOR_TIMEOUT_S * 10),
        LLMDISPATCH_HEALTH_CHECK_INTERVAL_S="0",
        **OVERRIDES,
        **(env or {}),
    )


def start_ours(bench: Bench, args: argparse.Namespace, name: str) -> Process:
    worker = bench.start_worker(
        "workers.app", QUEUES, concurrency=DEFAULT_CONCURRENCY, name=name, loglevel=args.loglevel
    )
    return worker


def warm_up(client: Client, worker: Process, count: int, timeout_s: float) -> None:
    """A small batch first: threads, connections and scripts ready, the worker proven up."""
    batch_id = client.submit_batch(prompts(count, "warm"))
    wait_for(lambda: client.batch_status(batch_id).done, timeout_s, "the warm-up", [worker])


def finished_at(client: Client, batch_id: str) -> float:
    record = client.batch_status(batch_id)
    assert record.finished_at is not None
    return record.finished_at.timestamp()


# --- (a) submit ------------------------------------------------------------------------


def part_a(bench: Bench, mock: MockProcess, args: argparse.Namespace) -> str:
    n = args.jobs
    configure(bench, mock)
    settings = Settings.load()
    client = Client(settings)
    requests = prompts(n, "a")
    try:
        client.submit_batch(requests[:100])  # imports, scripts, connections
        started = time.perf_counter()
        client.submit_batch(requests)
        batch_s = time.perf_counter() - started
        bench.redis.client().flushall()

        sender = make_app("defaults", bench.redis.url)
        sender.conf.update(celery_settings(settings))
        sender.send_task(HTTP_TASK, args=["x"], queue=QUEUE)
        started = time.perf_counter()
        for _ in range(n):
            sender.send_task(HTTP_TASK, args=[f"{mock.url}/chat/completions", {}, ""], queue=QUEUE)
        apply_s = time.perf_counter() - started
        sender.close()
        bench.redis.client().flushall()

        client.submit(requests[0])
        started = time.perf_counter()
        for request in requests:
            client.submit(request)
        submit_s = time.perf_counter() - started
        bench.redis.client().flushall()
    finally:
        client.close()
    met = "met" if batch_s < TARGET_SUBMIT_S else "MISSED"
    return (
        f"(a) submitting {n} prompts:\n"
        f"  submit_batch          {batch_s:6.2f} s = {n / batch_s:8,.0f} prompts/s\n"
        f"  send_task per prompt  {apply_s:6.2f} s = {n / apply_s:8,.0f} prompts/s "
        f"(submit_batch {apply_s / batch_s:.1f}x faster)\n"
        f"  Client.submit each    {submit_s:6.2f} s = {n / submit_s:8,.0f} prompts/s "
        f"(submit_batch {submit_s / batch_s:.1f}x faster)\n"
        f"  target: under {TARGET_SUBMIT_S:g} s: {met} ({batch_s:.2f} s)"
    )


# --- (b) drain -------------------------------------------------------------------------


def run_batch(
    bench: Bench, client: Client, worker: Process, n: int, timeout_s: float
) -> Measurement:
    """One N-item batch; wall from the first send to the last item's end; CPU up to then."""
    before = CpuSnapshot.take(worker, bench.redis_pid)
    batch_id = client.submit_batch(prompts(n, "b"))
    submit_s = time.time() - before.wall
    wait_for(lambda: client.batch_status(batch_id).done, timeout_s, f"{n} items", [worker])
    after = CpuSnapshot.take(worker, bench.redis_pid)
    record = client.batch_status(batch_id)
    if record.counts.succeeded != n:
        raise RuntimeError(f"batch items did not all succeed: {record.counts}")
    return Measurement.between(
        "ours (batch)", n, before, after, ended_at=finished_at(client, batch_id), submit_s=submit_s
    )


def part_b(bench: Bench, mock: MockProcess, args: argparse.Namespace) -> str:
    n = args.jobs
    configure(bench, mock)
    bare_args = argparse.Namespace(
        jobs=n, concurrency=BARE_CONCURRENCY, timeout=args.timeout, loglevel=args.loglevel
    )
    bare = run_bare(bench, mock, "defaults", bare_args)
    worker = start_ours(bench, args, "ours-b")
    client = Client(Settings.load())
    try:
        warm_up(client, worker, 500, args.timeout)
        mock.reset()
        mock_cpu = mock.cpu_s()
        ours = run_batch(bench, client, worker, n, args.timeout)
        ours.extra["most_in_flight"] = mock.in_flight()["most"]
        ours.extra["mock_cpu_s"] = mock.cpu_s() - mock_cpu
    finally:
        client.close()
        bench.stop(worker)
        bench.redis.client().flushall()
    speedup = bare.projected_wall_s / ours.wall_s
    met = "met" if speedup >= TARGET_SPEEDUP else "MISSED"
    return (
        f"(b) draining {n} prompts, mock latency {args.latency:g} s:\n"
        f"  {bare.label:<22} {bare.describe(bare.extra['mock_cpu_s'])}; "
        f"at most {bare.extra['most_in_flight']} calls in flight\n"
        f"  {ours.label:<22} {ours.describe(ours.extra['mock_cpu_s'])}; "
        f"at most {ours.extra['most_in_flight']} calls in flight\n"
        f"  batch / bare: {speedup:.2f}x faster, {ours.cpu_us / bare.cpu_us:.2f}x the CPU per prompt\n"
        f"  target: at least {TARGET_SPEEDUP:g}x faster than bare Celery: {met} ({speedup:.2f}x)"
    )


# --- (c) paced -------------------------------------------------------------------------


def part_c(bench: Bench, mock: MockProcess, args: argparse.Namespace) -> str:
    n, rpm, burst = args.paced_jobs, args.rpm, args.rpm_burst
    configure(bench, mock, rpm=rpm, rpm_burst=burst)
    worker = start_ours(bench, args, "ours-c")
    client = Client(Settings.load())
    try:
        warm_up(client, worker, burst, args.timeout)
        # The warm-up used the burst: let the bucket fill again, as for a batch arriving cold.
        time.sleep(burst / (rpm / 60.0) + 0.5)
        started = time.time()
        batch_id = client.submit_batch(prompts(n, "c"))
        wait_for(
            lambda: client.batch_status(batch_id).done, args.timeout, "the paced batch", [worker]
        )
        wall = finished_at(client, batch_id) - started
        record = client.batch_status(batch_id)
    finally:
        client.close()
        bench.stop(worker)
        bench.redis.client().flushall()
    limit_s = n / (rpm / 60.0)
    best_s = max(0.0, n - burst) / (rpm / 60.0)
    ratio = wall / limit_s
    met = "met" if ratio <= TARGET_PACED_RATIO else "MISSED"
    return (
        f"(c) {n} prompts paced by a {rpm:,} rpm limit (burst {burst}), mock latency 0.05 s:\n"
        f"  wall {wall:.2f} s; N / limit = {limit_s:.2f} s; best the bucket allows "
        f"(N - burst) / limit = {best_s:.2f} s; {record.counts.succeeded} succeeded\n"
        f"  target: within {TARGET_PACED_RATIO}x of N / limit: {met} ({ratio:.2f}x)"
    )


# --- (d) lanes -------------------------------------------------------------------------


def probe_waits(client: Client, every_s: float, until: threading.Event, most: int) -> list[float]:
    """Submit one interactive job every `every_s` until `until` is set; their queue waits (ms)."""
    ids: list[str] = []
    while not until.is_set() and len(ids) < most:
        ids.append(client.submit(prompts(1, "probe")[0]))
        until.wait(every_s)
    waits = []
    for job_id in ids:
        wait_for(lambda j=job_id: client.get(j).status.is_terminal, 60, "a probe")
        record = client.get(job_id)
        if record.queue_wait_ms is None:
            raise RuntimeError(f"probe {job_id} has no queue wait: {record.status}")
        waits.append(record.queue_wait_ms)
    return waits


def part_d(bench: Bench, mock: MockProcess, args: argparse.Namespace) -> str:
    n = args.jobs
    configure(bench, mock)
    worker = start_ours(bench, args, "ours-d")
    client = Client(Settings.load())
    try:
        warm_up(client, worker, 500, args.timeout)
        idle = probe_waits(client, args.probe_every, threading.Event(), args.probes)
        batch_id = client.submit_batch(prompts(n, "d"))
        draining = threading.Event()
        busy = probe_waits_while(client, batch_id, args, draining)
        pending_after = client.batch_status(batch_id).counts.pending
        wait_for(lambda: client.batch_status(batch_id).done, args.timeout, "the batch", [worker])
    finally:
        client.close()
        bench.stop(worker)
        bench.redis.client().flushall()
    p99 = percentile(busy, 0.99)
    met = "met" if p99 < TARGET_LANE_P99_MS else "MISSED"

    def line(label: str, waits: list[float]) -> str:
        return (
            f"  {label:<28} {len(waits)} probes: queue wait p50 {percentile(waits, 0.5):6.1f} ms, "
            f"p99 {percentile(waits, 0.99):6.1f} ms, mean {statistics.fmean(waits):6.1f} ms"
        )

    return (
        f"(d) interactive jobs (one every {args.probe_every:g} s) while a {n}-item batch drains, "
        f"mock latency {args.latency:g} s:\n"
        f"{line('nothing else queued', idle)}\n"
        f"{line('while the batch drains', busy)}\n"
        f"  the batch still had {pending_after} items pending after the last probe\n"
        f"  target: p99 under {TARGET_LANE_P99_MS:g} ms: {met} ({p99:.1f} ms)"
    )


def probe_waits_while(
    client: Client, batch_id: str, args: argparse.Namespace, stop: threading.Event
) -> list[float]:
    """Probes from when a tenth of the batch has ended until `args.probes` were sent."""
    wait_for(
        lambda: client.batch_status(batch_id).counts.ended >= args.jobs // 10,
        args.timeout,
        "the batch to be draining",
    )
    return probe_waits(client, args.probe_every, stop, args.probes)


# --- the run ---------------------------------------------------------------------------


PARTS = {"a": part_a, "b": part_b, "c": part_c, "d": part_d}


def benchmark(args: argparse.Namespace) -> None:
    print(f"machine: {machine()}")
    mock = MockProcess(args.latency)
    paced_mock = MockProcess(0.05) if "c" in args.parts else None
    try:
        for name in args.parts:
            with (
                tempfile.TemporaryDirectory(prefix="llmd-bench-") as tmp,
                running_bench(Path(tmp)) as bench,
            ):
                source = paced_mock if name == "c" and paced_mock else mock
                print(f"\n{PARTS[name](bench, source, args)}", flush=True)
    finally:
        mock.stop()
        if paced_mock is not None:
            paced_mock.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--jobs", type=int, default=10_000, help="prompts per batch; 10000")
    parser.add_argument("--latency", type=float, default=0.5, help="mock latency; 0.5 s")
    parser.add_argument("--paced-jobs", type=int, default=2_000, help="(c) prompts; 2000")
    parser.add_argument("--rpm", type=int, default=6_000, help="(c) the limit; 6000 rpm")
    parser.add_argument("--rpm-burst", type=int, default=60, help="(c) its burst; 60")
    parser.add_argument("--probes", type=int, default=100, help="(d) probes per side; 100")
    parser.add_argument("--probe-every", type=float, default=0.1, help="(d) seconds; 0.1")
    parser.add_argument("--loglevel", default="WARNING", help="the workers' --loglevel")
    parser.add_argument("--timeout", type=float, default=180.0, help="per wait; 180 s")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="whole run")
    parser.add_argument("--batch-window", type=int, help="LLMDISPATCH_BATCH_WINDOW")
    args = parser.parse_args()
    if args.batch_window:
        OVERRIDES["LLMDISPATCH_BATCH_WINDOW"] = str(args.batch_window)
    raise_open_file_limit()
    run_within_budget(args.budget, lambda: benchmark(args))


if __name__ == "__main__":
    main()
