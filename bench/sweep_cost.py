"""What one sweeper pass costs, with a backlog in the lane it must read.

A private redis-server holds a lane of `--messages` real Celery messages (sent
with `send_task` and our Celery settings, as the producer sends them) and
`--unacked` of them moved into kombu's `unacked` hash (delivered, not yet
acknowledged), plus `--overdue` queued jobs past their grace whose message is
nowhere. Then the sweeper runs two passes (the first makes them suspects, the
second sends them again), timed in this process; Redis's own time for the
MULTI/EXEC that reads the lane comes from `INFO commandstats`. Baseline in the
same run: a bare `LRANGE` of the same lane plus `HVALS unacked`, one round
trip, no decoding.

    .venv/bin/python bench/sweep_cost.py
    .venv/bin/python bench/sweep_cost.py --messages 1000 --overdue 10
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import celery

from dispatcher.broker.celery_config import celery_priority, celery_settings
from dispatcher.broker.celery_wire import priority_lists
from dispatcher.broker.messages import RUN_JOB_TASK, RunJob
from dispatcher.config.settings import Settings
from dispatcher.models import DEFAULT_PRIORITY, Request, Route
from dispatcher.runner.sweeper import Sweeper
from dispatcher.state.store import JobStore
from producer.cli.tools.embedded_redis import EmbeddedRedis
from workers.queued_messages import present_jobs

LANE = "llm.openai"
GRACE_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument("--unacked", type=int, default=500)
    parser.add_argument("--overdue", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("dispatcher.runner.sweeper").setLevel(logging.ERROR)  # its line per pass
    with EmbeddedRedis() as server:
        run(server, args)


def run(server: EmbeddedRedis, args: argparse.Namespace) -> None:
    client = server.client()
    app = celery.Celery("sweep-cost")
    app.conf.update(celery_settings(Settings.model_validate({"redis_url": server.url})))
    route = Route(vendor="openai", model="gpt-4o-mini", queue=LANE)
    request = Request.model_validate(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    )
    clock = [time.time()]
    store = JobStore(client, "bench", now=lambda: clock[0])
    for _ in range(args.messages):
        message = RunJob(store.new_job_id(), vendor="openai")
        app.send_task(
            RUN_JOB_TASK,
            args=message.as_args(),
            queue=LANE,
            priority=celery_priority(DEFAULT_PRIORITY),
        )
    lists = [name for name in priority_lists(LANE) if client.llen(name)]
    for n in range(args.unacked):  # as kombu records a delivered message
        raw = client.rpop(lists[0])
        client.hset("unacked", f"tag-{n}", b'[' + raw + b', "", "' + LANE.encode() + b'"]')
    sent: list[RunJob] = []
    sweeper = Sweeper(
        store,
        grace_s=GRACE_S,
        suspect_ttl_s=90.0,
        find_messages=lambda lanes, ids: present_jobs(client, store.ready, lanes, ids),
        send=lambda message, queue, priority, delay: sent.append(message),
        send_jobs=lambda message, queue: None,
    )
    passes, bare, redis_us = [], [], []
    for _ in range(args.rounds):
        for _ in range(args.overdue):
            store.create(store.new_job_id(), request, route)
        clock[0] += GRACE_S + 1
        for _ in range(2):
            before = exec_usec(client)
            began = time.perf_counter()
            report = sweeper.sweep()
            passes.append(time.perf_counter() - began)
            redis_us.append(exec_usec(client) - before)
            clock[0] += 30
        assert len(report.requeued) == args.overdue, report
        began = time.perf_counter()
        pipe = client.pipeline(transaction=True)
        for name in priority_lists(LANE):
            pipe.lrange(name, 0, -1)
        pipe.hvals("unacked")
        pipe.execute()
        bare.append(time.perf_counter() - began)
        client.delete(store.keys.waiting())  # the requeued ones would be judged again
    p50 = statistics.median(passes) * 1000
    base = statistics.median(bare) * 1000
    queued = sum(client.llen(name) for name in priority_lists(LANE))
    print(
        f"lane {queued} messages + {args.unacked} unacked, {args.overdue} overdue jobs, "
        f"{len(passes)} passes"
    )
    print(f"sweeper pass: p50 {p50:.1f} ms, max {max(passes) * 1000:.1f} ms")
    print(f"bare MULTI LRANGE + HVALS: p50 {base:.1f} ms  -> pass / bare {p50 / base:.1f}x")
    print(f"Redis time for the pass's commands: p50 {statistics.median(redis_us) / 1000:.1f} ms")
    print(f"messages sent again: {len(sent)} (expected {args.overdue * args.rounds})")


def exec_usec(client: object) -> int:
    """Redis's total time in commands so far, in µs (all commands, INFO commandstats)."""
    stats = client.info("commandstats")  # type: ignore[attr-defined]
    return sum(int(v["usec"]) for v in stats.values())


if __name__ == "__main__":
    main()
