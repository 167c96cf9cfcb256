"""Retry-After without a stall: N jobs with and without random 429s, side by side.

Two stand-in vendor servers (`producer.cli.tools.standin`), each its own process, answer
every completion after a fixed `--latency` (0.5 s): the "clean" one always
succeeds; the "429" one answers a random `--rate` (8 %) of calls 429 with
`Retry-After: --retry-after` (1 s), its failure dice seeded. One vendor, one
model (`--models` spreads the jobs over that many models of the vendor).

Each side runs on a fresh `celery worker` (`--pool threads -c C`, C = 10 by
default) with `LLMDISPATCH_WORKER_MAX_IN_FLIGHT=C`, so the worker keeps about C
calls in flight, as a deployment sized for its vendor would: the clean run is
bound by C / latency (20 jobs/s), not by this machine's CPU. After a warm-up of
C jobs, this process submits N (1,600) jobs at once and waits until each has
ended. Wall time runs from the first submit to the last job's `finished_at`.
Every job must succeed. For each side: jobs/s, calls the mock answered and how
many were 429s, the history entries per job (mean and most) and the entries
recording a wait for a cooling deployment, CPU per job (producer, worker,
Redis) and other processes' load (NOISY past 0.1 cores).

Rounds alternate the order of the sides (clean first, then 429 first, ...);
each round prints the ratio of the 429 side's wall time to the clean side's,
and the end the median over the rounds, against the target (<= 1.5x).

    .venv/bin/python bench/retry_after.py                 # 3 rounds, about 5 minutes
    .venv/bin/python bench/retry_after.py --rounds 1 --jobs 400
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aiohttp import web
from queue_harness import (
    Bench,
    CpuSnapshot,
    Measurement,
    ServerProcess,
    machine,
    our_client,
    run_within_budget,
    running_bench,
    wait_for,
)

from dispatcher.models import JobEvent, JobEventKind
from producer.cli.tools.standin import StandInOptions, create_app, raise_open_file_limit

API_KEY = "sk-bench-0123456789abcdef"
VENDOR = "mockhttp"
MODEL = "mock-echo"
VENDOR_TIMEOUT_S = 60
STARTUP_TIMEOUT_S = 20.0
DEFAULT_BUDGET_S = 900.0
TARGET_RATIO = 1.5
# What the runner writes when a job waits for a cooling deployment or vendor
# (`dispatcher.runner.after_failure`; before the deployment blocks: "... is cooling down ...").
WAIT_REASON = re.compile(r"to cool down|cooling down")


# --- the mock servers -------------------------------------------------------------------


def serve_mock(latency_s: float, rate: float, retry_after_s: float) -> None:
    """A stand-in vendor server failing `rate` of calls with 429s; `/__answered` counts replies."""
    answered: Counter[int] = Counter()

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        if request.path == "/v1/chat/completions":
            answered[response.status] += 1
        return response

    async def read(request: web.Request) -> web.Response:
        return web.json_response({str(status): n for status, n in answered.items()})

    async def reset(request: web.Request) -> web.Response:
        answered.clear()
        return web.json_response({})

    async def main() -> None:
        behaviour: dict[str, Any] = {"time_to_first_token_s": latency_s, "seed": 19}
        if rate > 0:
            behaviour |= {
                "failure_rate": rate,
                "failure_kinds": ["rate_limited"],
                "retry_after_s": retry_after_s,
            }
        options = StandInOptions.model_validate({"behaviour": behaviour, "api_key": API_KEY})
        app = create_app(options)
        app.middlewares.append(count)
        app.router.add_get("/__answered", read)
        app.router.add_post("/__answered/reset", reset)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, backlog=4096).start()
        print(f"mock listening on http://127.0.0.1:{runner.addresses[0][1]}/v1", flush=True)
        await asyncio.Event().wait()  # until the benchmark terminates this process

    raise_open_file_limit()
    asyncio.run(main())


class MockProcess(ServerProcess):
    """A mock server subprocess: its URL, what it answered, its CPU."""

    def __init__(self, latency_s: float, rate: float, retry_after_s: float) -> None:
        args = [
            sys.executable, __file__, "--serve-mock", "--latency", str(latency_s),
            "--rate", str(rate), "--retry-after", str(retry_after_s),
        ]  # fmt: skip
        super().__init__(args, STARTUP_TIMEOUT_S)

    def answered(self) -> Counter[int]:
        return Counter({int(k): v for k, v in self.get_json("/__answered").items()})

    def reset(self) -> None:
        self.post("/__answered/reset")


# --- one side ---------------------------------------------------------------------------


@dataclass
class Side:
    """One side's measurement and what its jobs' histories say."""

    name: str
    measurement: Measurement
    answered: Counter[int]
    events_mean: float
    events_most: int
    waits: int
    mock_cpu_s: float

    def describe(self) -> str:
        m = self.measurement
        calls = sum(self.answered.values())
        return (
            f"{self.name:<6} {m.describe(self.mock_cpu_s)}\n"
            f"{'':7}calls {calls} ({self.answered[429]} answered 429); history entries "
            f"per job: mean {self.events_mean:.2f}, most {self.events_most}; "
            f"waits for a cooling deployment recorded: {self.waits}"
        )


def configure(bench: Bench, mock: MockProcess, args: argparse.Namespace) -> None:
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
        LLMDISPATCH_WORKER_MAX_IN_FLIGHT=str(args.concurrency),
        LLMDISPATCH_HEALTH_CHECK_INTERVAL_S="0",
    )


def request_for(index: int, models: int) -> dict[str, Any]:
    model = MODEL if models == 1 else f"{MODEL}-{index % models}"
    return {"model": model, "messages": [{"role": "user", "content": f"Say hello {index}"}]}


def run_side(bench: Bench, name: str, mock: MockProcess, args: argparse.Namespace) -> Side:
    """N jobs through a fresh worker against `mock`; every job must succeed."""
    configure(bench, mock, args)
    c = args.concurrency
    worker = bench.start_worker(
        "workers.app", f"llm.{VENDOR}", concurrency=c, name=f"ours-{name}", loglevel=args.loglevel
    )
    try:
        with our_client(None) as client:
            store = client.store

            def ended() -> int:
                return int(client.redis.hget(store.keys.stats(), "t:requests") or 0)

            for index in range(c):
                client.submit(request_for(index, args.models))
            wait_for(lambda: ended() >= c, args.timeout, f"{name} warm-up", [worker])
            mock.reset()
            mock_cpu = mock.cpu_s()
            before = CpuSnapshot.take(worker, bench.redis_pid)
            ids = [client.submit(request_for(i, args.models)) for i in range(args.jobs)]
            submit_s = time.time() - before.wall
            wait_for(
                lambda: ended() >= c + args.jobs,
                args.timeout,
                f"{name}: {args.jobs} jobs",
                [worker],
                poll_s=0.1,
            )
            after = CpuSnapshot.take(worker, bench.redis_pid)
            pipe = client.redis.pipeline(transaction=False)
            for job_id in ids:
                pipe.hmget(store.keys.job(job_id), "status", "finished_at")
                pipe.lrange(store.keys.events(job_id), 0, -1)
            replies = pipe.execute()
        rows, histories = replies[0::2], replies[1::2]
        statuses = Counter(row[0].decode() for row in rows)
        if set(statuses) != {"succeeded"}:
            raise RuntimeError(f"{name}: jobs ended {dict(statuses)}:\n{worker.log_tail()}")
        events = [[JobEvent.model_validate_json(e) for e in h] for h in histories]
        waits = sum(
            1
            for history in events
            for e in history
            if e.kind in (JobEventKind.RETRY, JobEventKind.REROUTED)
            and WAIT_REASON.search(e.reason or "")
        )
        measurement = Measurement.between(
            name,
            len(rows),
            before,
            after,
            ended_at=max(float(row[1]) for row in rows),
            submit_s=submit_s,
        )
        return Side(
            name,
            measurement,
            mock.answered(),
            statistics.mean(len(h) for h in events),
            max(len(h) for h in events),
            waits,
            mock.cpu_s() - mock_cpu,
        )
    finally:
        bench.stop(worker)
        bench.redis.client().flushall()


# --- the run ----------------------------------------------------------------------------


def benchmark(args: argparse.Namespace) -> None:
    print(f"machine: {machine()}")
    print(
        f"{args.jobs} jobs per side, {args.models} model(s); mock latency {args.latency:g} s; "
        f"429 side: {args.rate:.0%} of calls 429 with Retry-After {args.retry_after:g} s; "
        f"worker --pool threads -c {args.concurrency}, max in flight {args.concurrency}; "
        f"clean ideal {args.jobs * args.latency / args.concurrency:.1f} s"
    )
    clean = MockProcess(args.latency, 0.0, args.retry_after)
    faulty = MockProcess(args.latency, args.rate, args.retry_after)
    ratios: list[float] = []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="llmd-bench-") as tmp,
            running_bench(Path(tmp)) as bench,
        ):
            for round_no in range(1, args.rounds + 1):
                order = [("clean", clean), ("429", faulty)]
                if round_no % 2 == 0:
                    order.reverse()
                print(f"\nround {round_no}:")
                sides = {}
                for name, mock in order:
                    side = run_side(bench, name, mock, args)
                    print(f"  {side.describe()}")
                    sides[name] = side
                ratio = sides["429"].measurement.wall_s / sides["clean"].measurement.wall_s
                ratios.append(ratio)
                print(f"  429 / clean wall time: {ratio:.2f}x")
    finally:
        clean.stop()
        faulty.stop()
    median = statistics.median(ratios)
    verdict = "met" if median <= TARGET_RATIO else "MISSED"
    print(
        f"\n429 / clean wall time by round: {', '.join(f'{r:.2f}x' for r in ratios)}; "
        f"median {median:.2f}x; target <= {TARGET_RATIO}x: {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_600, help="jobs per side; default 1600")
    parser.add_argument("--concurrency", type=int, default=10, help="worker -c; default 10")
    parser.add_argument("--latency", type=float, default=0.5, help="mock latency; default 0.5 s")
    parser.add_argument("--rate", type=float, default=0.08, help="share of 429s; default 0.08")
    parser.add_argument(
        "--retry-after", type=float, default=1.0, help="the 429s' Retry-After; default 1 s"
    )
    parser.add_argument("--models", type=int, default=1, help="models the jobs use; default 1")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both sides; default 3")
    parser.add_argument("--loglevel", default="WARNING", help="the workers' --loglevel")
    parser.add_argument(
        "--timeout", type=float, default=400.0, help="per side, from the first submit"
    )
    parser.add_argument(
        "--budget", type=float, default=DEFAULT_BUDGET_S, help="give up after this many seconds"
    )
    parser.add_argument("--serve-mock", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_mock:
        serve_mock(args.latency, args.rate, args.retry_after)
        return
    raise_open_file_limit()
    run_within_budget(args.budget, lambda: benchmark(args))


if __name__ == "__main__":
    main()
