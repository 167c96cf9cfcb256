"""How long a big batch's submit blocks Redis for everyone else.

Redis runs a transaction whole: while it runs, every other client waits. A
probe process PINGs the private Redis every millisecond, on its own connection
(a process of its own, so the producer's Python work cannot delay it),
while this process submits one N-item batch (default 50,000; no worker, so
nothing else touches Redis), and reports the probe's longest and 99th-percentile
round trips and the submit's wall time. Two variants, alternating, side by side:

- `chunked`: as shipped, `ITEMS_PER_TRANSACTION` items per MULTI/EXEC, then the
  batch comes into being in a last one;
- `whole`: the batch in one MULTI/EXEC (the earlier behaviour), for comparison.

Target: no probe round trip over 50 ms with `chunked`.

    .venv/bin/python bench/batch_write_block.py
    .venv/bin/python bench/batch_write_block.py --items 20000 --rounds 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import multiprocessing.synchronize

from dispatcher import Settings, batch_store
from producer import Client
from producer.cli.tools.embedded_redis import EmbeddedRedis

PROBE_EVERY_S = 0.001


def probe(url: str, stop: multiprocessing.synchronize.Event, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """PING until `stop`, then put the round trips (ms) on `out`."""
    import redis  # noqa: PLC0415 - in the probe's own process

    client = redis.Redis.from_url(url)
    client.ping()
    times = []
    while not stop.is_set():
        started = time.perf_counter()
        client.ping()
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(PROBE_EVERY_S)
    out.put(times)


def one_submit(server: EmbeddedRedis, items: int, per_transaction: int) -> tuple[float, float, float]:
    """(max probe ms, p99 probe ms, submit s) for one batch written `per_transaction` at a time."""
    server.client().flushdb()
    batch_store.ITEMS_PER_TRANSACTION = per_transaction
    settings = Settings.load(
        redis_url=server.url, vendors={"mock": {"type": "mock"}}, max_batch_items=max(items, 1)
    )
    requests = [
        {"model": "m", "messages": [{"role": "user", "content": f"prompt number {i}"}]}
        for i in range(items)
    ]
    context = multiprocessing.get_context("spawn")
    stop, out = context.Event(), context.Queue()
    prober = context.Process(target=probe, args=(server.url, stop, out))
    with Client(settings) as client:
        client.stats()  # connected, scripts loaded, before the probe starts
        prober.start()
        time.sleep(1.0)
        started = time.perf_counter()
        client.submit_batch(requests)
        elapsed = time.perf_counter() - started
        time.sleep(0.2)
        stop.set()
        times: list[float] = sorted(out.get(timeout=60))
        prober.join(timeout=60)
    return times[-1], times[int(len(times) * 0.99)], elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--half", action="store_true", help="also half the chunk size")
    args = parser.parse_args()
    shipped = batch_store.ITEMS_PER_TRANSACTION
    variants = {"chunked": shipped, "whole": 10**9, **({"half": shipped // 2} if args.half else {})}
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}
    with EmbeddedRedis() as server:
        for _ in range(args.rounds):
            for name, per_transaction in variants.items():
                results[name].append(one_submit(server, args.items, per_transaction))
    print(f"{args.items:,} items per batch, {args.rounds} rounds; chunked = {shipped:,} per MULTI")
    for name, rows in results.items():
        worst = max(r[0] for r in rows)
        p99 = statistics.median(r[1] for r in rows)
        wall = statistics.median(r[2] for r in rows)
        print(
            f"  {name:<8} longest PING {worst:7.1f} ms   p99 PING {p99:6.2f} ms   "
            f"submit {wall:5.2f} s (median)   per round: "
            + ", ".join(f"{r[0]:.0f} ms" for r in rows)
        )


if __name__ == "__main__":
    main()
