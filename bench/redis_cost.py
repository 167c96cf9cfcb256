"""What one job, and one batch item, costs Redis: commands, bytes, CPU and memory.

The figures an operator sizes a deployment with (docs/capacity.md). Through a
private Redis, one real worker (the product's app, threads pool) and the
in-process mock vendor (no HTTP, so only the dispatcher's own Redis traffic
counts), this runs N single submits and then one batch of N items, and reads
Redis's own counters before and after each: `INFO commandstats` (calls per
command), `INFO stats` (network bytes in and out), `INFO cpu` (Redis's CPU
seconds) and `INFO memory` (memory held once every job has ended, before the
job TTL expires them). The worker's task events (Flower) are counted too, as
they are on by default.

    .venv/bin/python bench/redis_cost.py              # N = 2,000
    .venv/bin/python bench/redis_cost.py --jobs 5000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from queue_harness import machine, running_bench, wait_for

from producer import Client

WORKER_CONCURRENCY = 200


def counters(client: Any) -> dict[str, Any]:
    """Redis's own counters now."""
    stats = client.info("commandstats")
    calls = Counter({name.removeprefix("cmdstat_"): v["calls"] for name, v in stats.items()})
    info = client.info()
    return {
        "calls": calls,
        "in": info["total_net_input_bytes"],
        "out": info["total_net_output_bytes"],
        "cpu": info["used_cpu_sys"] + info["used_cpu_user"],
        "memory": info["used_memory"],
    }


def delta(before: dict[str, Any], after: dict[str, Any], n: int) -> dict[str, Any]:
    calls = after["calls"] - before["calls"]
    return {
        "commands": sum(calls.values()) / n,
        "top": [(name, count / n) for name, count in calls.most_common(8)],
        "bytes_in": (after["in"] - before["in"]) / n,
        "bytes_out": (after["out"] - before["out"]) / n,
        "cpu_us": (after["cpu"] - before["cpu"]) / n * 1e6,
        "memory": (after["memory"] - before["memory"]) / n,
    }


def report(what: str, figures: dict[str, Any]) -> None:
    print(f"{what}:")
    print(
        f"  Redis commands {figures['commands']:.1f}, bytes in {figures['bytes_in']:.0f}, "
        f"out {figures['bytes_out']:.0f}, Redis CPU {figures['cpu_us']:.0f} us, "
        f"memory held until the TTL {figures['memory']:.0f} B"
    )
    print("  most called: " + ", ".join(f"{n} {c:.1f}" for n, c in figures["top"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2_000)
    args = parser.parse_args()
    n = args.jobs
    with tempfile.TemporaryDirectory() as workdir, running_bench(Path(workdir)) as bench:
        bench.configure(
            {"vendors": {"mock": {"type": "mock", "models": ["*"]}}},
            LLMDISPATCH_HEALTH_CHECK_INTERVAL_S="0",
            LLMDISPATCH_SWEEP_INTERVAL_S="0",
        )
        worker = bench.start_worker(
            "workers.app",
            "llm.mock,llm.mock.batch",
            concurrency=WORKER_CONCURRENCY,
            name="w1",
            loglevel="INFO",
        )
        wait_for(lambda: " ready." in worker.log_tail(), 60, "the worker", [worker])
        raw = bench.redis.client()
        with Client.from_env() as client:
            client.send({"model": "m", "messages": [{"role": "user", "content": "warm"}]})
            prompt = [{"role": "user", "content": "a prompt of about this many words, " * 4}]

            start = counters(raw)
            for _ in range(n):
                client.submit({"model": "m", "messages": prompt})
            wait_for(lambda: client.stats().total_requests >= n + 1, 300, "the jobs", [worker])
            time.sleep(0.5)  # the last task events
            singles = delta(start, counters(raw), n)

            start = counters(raw)
            batch_id = client.submit_batch([{"model": "m", "messages": prompt}] * n)
            client.wait_batch(batch_id, timeout_s=300)
            time.sleep(0.5)
            items = delta(start, counters(raw), n)
    print(machine())
    print(f"{n:,} jobs each way; worker -c {WORKER_CONCURRENCY}, mock vendor in process")
    report("per single job (submit, bell, claim, finish, stats, task events)", singles)
    report("per batch item", items)


if __name__ == "__main__":
    main()
