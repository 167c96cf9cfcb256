"""Soak: 50,000 jobs through two worker processes; their memory and Redis's over time.

Two of our workers, started the product's way (`celery -A workers.app worker
--pool threads -c 500`, the `llmdispatch worker` default, as `bench/batches.py`
starts them), consume `llm.<vendor>` and `llm.<vendor>.batch` of the stand-in
vendor server (`producer.cli.tools.standin`, its own process) answering after
`--latency` (0.05 s). Every process runs with LLMDISPATCH_JOB_TTL_S =
`--job-ttl` (30 s), so ended jobs expire within the run.

- Baseline: once both workers answer a ping, a warm-up (`--warmup` jobs, half
  `Client.submit`, half one batch) runs to its end; when its job and batch keys
  have expired, Redis's `used_memory` and key count and each worker's RSS are
  recorded.
- Load: half the jobs are `Client.submit` calls from `--producers` threads,
  as fast as they go (the interactive lane); the other half `submit_batch`
  calls of 5,000, each sent once the one before is half ended (the batch lane
  is fed for the whole run, and no more than about a batch and a half waits
  in Redis at once). A sampler records every second each worker's RSS
  (VmRSS of the process and any children), Redis `used_memory` and key
  count, and the jobs ended (`Client.stats().total_requests`).
- After: every job must have succeeded (statistics, each batch's counts, the
  records not yet expired); once every job and batch key has expired, Redis's
  memory and keys are recorded again, the keys left grouped by pattern.

The figures: worker RSS at the baseline, at 10/50/100 % of the jobs ended, its
peak and its growth from 10 % to 100 % (flat means near zero); Redis
used_memory at the baseline, its peak, after the TTL, and after / baseline.
Every wait has a timeout, the run a budget, and every process is stopped.

    .venv/bin/python bench/soak.py                          # 50,000 jobs
    .venv/bin/python bench/soak.py --jobs 5000 --job-ttl 10 # a quick run
    .venv/bin/python bench/soak.py --csv /tmp/soak.csv      # the samples too
"""

from __future__ import annotations

import argparse
import csv
import functools
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import celery
import redis
from batches import (
    DEFAULT_CONCURRENCY,
    QUEUES,
    VENDOR,
    configure,
    prompts,
    start_ours,
)
from queue_harness import Bench, Process, machine, run_within_budget, running_bench, wait_for
from queue_io import MockProcess

from dispatcher import Settings
from dispatcher.broker.celery_config import celery_settings
from dispatcher.models import BatchCounts
from producer.cli.tools.standin import raise_open_file_limit
from producer.client import Client

DEFAULT_BUDGET_S = 1500.0
BATCH_SIZE = 5_000
# Poll the job store at most this often while waiting on a count or on expiry.
POLL_S = 0.2
SAMPLE_EVERY_S = 1.0
STARTUP_TIMEOUT_S = 60.0
# Redis expires keys in a background cycle: allow this much beyond the TTL.
EXPIRY_MARGIN_S = 120.0
# Any id we issue (job, batch): stands for every one in a key pattern.
ANY_ID = "0" * 32
MIB = 1024 * 1024
# Key names shown as patterns: ids, uuids and numbers (minutes) replaced.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX_ID = re.compile(r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")
_NUMBER = re.compile(r"(?<=:)\d+(?=:|$)")


# --- what is measured --------------------------------------------------------------------


def status_kb(pid: int, name: str) -> int:
    """A number of /proc/<pid>/status (VmRSS, VmHWM in kB; Threads); 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it (a prefork pool's children; none with threads)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def rss_kb(pid: int, name: str = "VmRSS") -> int:
    """The resident memory of `pid` and its children, in kB."""
    return sum(status_kb(each, name) for each in process_tree(pid))


def key_pattern(key: bytes | str) -> str:
    """A key name with its ids and numbers replaced: `bench:job:{id}:events`."""
    text = key.decode(errors="replace") if isinstance(key, bytes) else key
    text = _UUID.sub("{uuid}", text)
    text = _HEX_ID.sub("{id}", text)
    return _NUMBER.sub("{n}", text)


def key_patterns(client: redis.Redis) -> tuple[Counter[str], Counter[str]]:
    """Every key in Redis by pattern: how many, and their bytes (MEMORY USAGE)."""
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for key in client.scan_iter(count=1000):
        pattern = key_pattern(key)
        counts[pattern] += 1
        sizes[pattern] += int(client.memory_usage(key) or 0)
    return counts, sizes


@dataclass(frozen=True)
class Snapshot:
    """Redis memory and keys, and each worker's RSS, at one moment."""

    used_memory: int
    dataset: int
    clients: int
    connections: int
    keys: int
    patterns: Counter[str]
    pattern_bytes: Counter[str]
    rss_kb: tuple[int, ...]
    threads: tuple[int, ...]

    @classmethod
    def take(cls, client: redis.Redis, workers: Sequence[Process]) -> Snapshot:
        memory = client.info("memory")
        patterns, pattern_bytes = key_patterns(client)
        return cls(
            int(memory["used_memory"]),
            int(memory["used_memory_dataset"]),
            int(memory.get("mem_clients_normal", 0)),
            int(client.info("clients")["connected_clients"]),
            int(client.dbsize()),
            patterns,
            pattern_bytes,
            tuple(rss_kb(worker.pid) for worker in workers),
            tuple(rss_kb(worker.pid, "Threads") for worker in workers),
        )


@dataclass(frozen=True)
class Sample:
    """One second of the run: jobs ended, each worker's RSS, Redis memory and keys."""

    t_s: float
    phase: str
    done: int
    rss_kb: tuple[int, ...]
    used_memory: int
    keys: int


@dataclass
class Sampler:
    """Takes a `Sample` every second from a thread of its own, until stopped."""

    client: Client
    redis: redis.Redis
    workers: Sequence[Process]
    done_before: int
    started: float = field(default_factory=time.monotonic)
    phase: str = "load"
    samples: list[Sample] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def take(self) -> Sample:
        done = self.client.stats().total_requests - self.done_before
        sample = Sample(
            time.monotonic() - self.started,
            self.phase,
            done,
            tuple(rss_kb(worker.pid) for worker in self.workers),
            int(self.redis.info("memory")["used_memory"]),
            int(self.redis.dbsize()),
        )
        self.samples.append(sample)
        return sample

    def _run(self) -> None:
        try:
            while not self._stop.wait(SAMPLE_EVERY_S):
                self.take()
        except BaseException as exc:  # reported by the main thread
            self.errors.append(exc)

    def start(self) -> None:
        self.take()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def first_at(self, done: int) -> Sample:
        """The first sample of the load with at least `done` jobs ended."""
        return next(s for s in self.samples if s.phase == "load" and s.done >= done)

    def write_csv(self, path: Path, names: Sequence[str]) -> None:
        with path.open("w", newline="") as out:
            writer = csv.writer(out)
            rss_columns = [f"{name}_rss_kb" for name in names]
            writer.writerow(
                ["t_s", "phase", "jobs_done", *rss_columns, "redis_used_memory", "keys"]
            )
            for s in self.samples:
                row = [f"{s.t_s:.1f}", s.phase, s.done, *s.rss_kb, s.used_memory, s.keys]
                writer.writerow(row)


# --- the stack ----------------------------------------------------------------------------


def wait_until_answering(settings: Settings, workers: Sequence[Process]) -> None:
    """Until every worker answers a control ping: its consumers are up."""
    app = celery.Celery("soak-ping", set_as_current=False)
    app.conf.update(celery_settings(settings))
    names = {worker.name for worker in workers}

    def answered() -> bool:
        replies = app.control.ping(timeout=0.5) or []
        return names <= {node.split("@", 1)[0] for reply in replies for node in reply}

    try:
        wait_for(answered, STARTUP_TIMEOUT_S, "both workers to answer a ping", workers)
    finally:
        app.close()


def job_and_batch_keys(client: Client) -> int:
    """How many job and batch keys (records, events, done lists, streams) are left."""
    keys = client.store.keys
    patterns = [keys.job(ANY_ID).replace(ANY_ID, "*"), keys.batch(ANY_ID).replace(ANY_ID, "*")]
    return sum(1 for pattern in patterns for _ in client.redis.scan_iter(pattern, count=1000))


def wait_until_expired(
    client: Client, workers: Sequence[Process], ttl_s: int, since: float | None = None
) -> float:
    """Until every job and batch key has expired; the seconds since `since` (or the call)."""
    started = time.monotonic() if since is None else since
    wait_for(
        lambda: job_and_batch_keys(client) == 0,
        ttl_s + EXPIRY_MARGIN_S,
        "every job and batch key to expire",
        workers,
        poll_s=POLL_S,
    )
    return time.monotonic() - started


def ended(client: Client) -> int:
    """Jobs that succeeded or failed, so far (the statistics' total_requests)."""
    return int(client.redis.hget(client.store.keys.stats(), "t:requests") or 0)


def warm_up(client: Client, workers: Sequence[Process], count: int, timeout_s: float) -> None:
    """Half single jobs, half a batch: both lanes, threads and connections used once."""
    target = ended(client) + count
    singles = count // 2
    for request in prompts(singles, "warm"):
        client.submit(request)
    client.submit_batch(prompts(count - singles, "warm-batch"))
    wait_for(lambda: ended(client) >= target, timeout_s, "the warm-up", workers, poll_s=POLL_S)


# --- the load -------------------------------------------------------------------------------


@dataclass
class Load:
    """The producer threads: single submits, and batches fed one after another."""

    client: Client
    singles: list[int]
    batches: list[int]
    single_ids: list[str] = field(default_factory=list)
    batch_counts: dict[str, BatchCounts] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for i, count in enumerate(self.singles):
            self._spawn(f"single-{i}", functools.partial(self._submit_singles, i, count))
        if self.batches:
            self._spawn("batches", self._feed_batches)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                target()
            except BaseException as exc:  # reported by the main thread
                self.errors.append(exc)

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _submit_singles(self, index: int, count: int) -> None:
        for request in prompts(count, f"single-{index}"):
            if self.stop.is_set():
                return
            self.single_ids.append(self.client.submit(request))

    def _feed_batches(self) -> None:
        """Each batch once the one before is half ended; each one's counts when it ends."""
        running: dict[str, int] = {}
        for k, size in enumerate(self.batches):
            batch_id = self.client.submit_batch(prompts(size, f"batch-{k}"))
            running[batch_id] = size
            while not self.stop.is_set() and k + 1 < len(self.batches):
                self._collect(running)
                if batch_id not in running:
                    break
                if self.client.batch_status(batch_id).counts.ended >= size // 2:
                    break
                self.stop.wait(POLL_S)
        while running and not self.stop.is_set():
            self._collect(running)
            self.stop.wait(POLL_S)

    def _collect(self, running: dict[str, int]) -> None:
        """Keep the counts of batches that ended (their keys expire `job_ttl_s` later)."""
        for batch_id in list(running):
            record = self.client.batch_status(batch_id)
            if record.done:
                self.batch_counts[batch_id] = record.counts
                del running[batch_id]

    def check(self) -> None:
        if self.errors:
            raise RuntimeError(f"a producer thread failed: {self.errors[0]!r}") from self.errors[0]

    def finish(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the threads to return (each once its share is sent)."""
        deadline = time.monotonic() + timeout_s
        for thread in self.threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def halt(self) -> None:
        self.stop.set()
        self.finish(10.0)


def split(jobs: int, producers: int) -> tuple[list[int], list[int]]:
    """Half the jobs as single submits over the producers, the rest as batches of 5,000."""
    singles = jobs // 2
    per_thread = [singles // producers + (i < singles % producers) for i in range(producers)]
    in_batches = jobs - singles
    batches = [min(BATCH_SIZE, in_batches - start) for start in range(0, in_batches, BATCH_SIZE)]
    return [n for n in per_thread if n], batches


def statuses(client: Client, job_ids: Iterable[str]) -> Counter[str]:
    """The status of each job whose record has not expired yet ("expired" for the others)."""
    pipe = client.redis.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(client.store.keys.job(job_id), "status")
    return Counter(s.decode() if s else "expired" for s in pipe.execute())


def leftovers(client: Client) -> list[str]:
    """Messages still queued or unacknowledged, jobs still counted as running."""
    left = [f"{q} holds {n}" for q in QUEUES.split(",") if (n := client.redis.llen(q))]
    if unacked := client.redis.hlen("unacked"):
        left.append(f"{unacked} unacknowledged messages")
    if running := client.redis.zcard(client.store.keys.running(VENDOR)):
        left.append(f"{running} jobs counted as running")
    return left


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Result:
    """What the report needs."""

    args: argparse.Namespace
    names: list[str]
    singles: list[int]
    batches: list[int]
    baseline: Snapshot
    after: Snapshot
    sampler: Sampler
    wall_s: float
    expiry_s: float
    hwm_kb: tuple[int, ...]
    checks: list[str]
    redis_peak: int


def run_load(
    bench: Bench, client: Client, workers: Sequence[Process], args: argparse.Namespace
) -> Result:
    r = bench.redis.client()
    try:
        names = [worker.name for worker in workers]
        warm_up(client, workers, args.warmup, args.timeout)
        wait_until_expired(client, workers, args.job_ttl)
        baseline = Snapshot.take(r, workers)
        before = client.stats()
        singles, batches = split(args.jobs, args.producers)
        sampler = Sampler(client, r, workers, before.total_requests)
        load = Load(client, singles, batches)
        sampler.start()
        try:
            started = time.monotonic()
            load.start()

            def all_ended() -> bool:
                load.check()
                if sampler.errors:
                    raise RuntimeError("the sampler failed") from sampler.errors[0]
                return ended(client) - before.total_requests >= int(args.jobs)

            wait_for(all_ended, args.timeout, f"{args.jobs} jobs to end", workers, poll_s=POLL_S)
            ended_at = time.monotonic()
            wall_s = ended_at - started
            sampler.take()
            load.finish(60.0)
            load.check()
            # A message is acknowledged just after its jobs end: give the last ones a moment.
            wait_for(
                lambda: not leftovers(client),
                60.0,
                "the last acknowledgements",
                workers,
                poll_s=POLL_S,
            )
            checks = check_outcome(client, load, before.successful_requests, args.jobs)
            sampler.phase = "after"
            expiry_s = wait_until_expired(client, workers, args.job_ttl, ended_at)
            after = Snapshot.take(r, workers)
            sampler.take()
        finally:
            load.halt()
            sampler.stop()
        hwm = tuple(rss_kb(worker.pid, "VmHWM") for worker in workers)
        peak = int(r.info("memory")["used_memory_peak"])
        return Result(
            args, names, singles, batches, baseline, after, sampler, wall_s, expiry_s, hwm,
            checks, peak,
        )  # fmt: skip
    finally:
        r.close()


def check_outcome(client: Client, load: Load, succeeded_before: int, jobs: int) -> list[str]:
    """Every job succeeded: statistics, batch counts, the records not yet expired."""
    stats = client.stats()
    succeeded = stats.successful_requests - succeeded_before
    problems = []
    if succeeded != jobs or stats.failed_requests or stats.cancelled_requests:
        problems.append(
            f"statistics: {succeeded} succeeded of {jobs}, {stats.failed_requests} failed, "
            f"{stats.cancelled_requests} cancelled"
        )
    bad = [c for c in load.batch_counts.values() if c.succeeded != c.total]
    if len(load.batch_counts) != len(load.batches) or bad:
        problems.append(f"batches: {len(load.batch_counts)} ended of {len(load.batches)}; {bad}")
    found = statuses(client, load.single_ids)
    if set(found) - {"succeeded", "expired"} or len(load.single_ids) != sum(load.singles):
        problems.append(f"single jobs: {dict(found)} of {len(load.single_ids)} sent")
    if problems:
        raise RuntimeError("; ".join(problems))
    return [
        f"statistics: {succeeded:,} succeeded, {stats.failed_requests} failed, "
        f"{stats.cancelled_requests} cancelled (after the warm-up); "
        f"batches: {len(load.batch_counts)} of {len(load.batches)}, every item succeeded",
        f"single jobs' records: {found['succeeded']:,} still there, all succeeded; "
        f"{found['expired']:,} already expired; queues empty, nothing unacknowledged or running",
    ]


def mib(kb: int) -> str:
    return f"{kb / 1024:7.1f}"


def report(result: Result) -> str:
    args, sampler, base, after = result.args, result.sampler, result.baseline, result.after
    n = args.jobs
    points = [sampler.first_at(max(1, round(n * f))) for f in (0.1, 0.5, 1.0)]
    lines = [
        f"soak: {n:,} jobs ({sum(result.singles):,} Client.submit from {len(result.singles)} "
        f"threads, {sum(result.batches):,} in {len(result.batches)} submit_batch of up to "
        f"{BATCH_SIZE:,}), {len(result.names)} workers (--pool threads -c {DEFAULT_CONCURRENCY}), "
        f"mock latency {args.latency:g} s, job TTL {args.job_ttl} s, warm-up {args.warmup:,}",
        f"  all ended in {result.wall_s:.1f} s = {n / result.wall_s:,.0f} jobs/s",
        *(f"  {check}" for check in result.checks),
        "  worker RSS (MiB)  baseline     10%     50%    100%    peak   VmHWM  "
        "10%->100%  50%->100%  after TTL  threads",
    ]
    for i, name in enumerate(result.names):
        peak = max(s.rss_kb[i] for s in sampler.samples)
        at = [p.rss_kb[i] for p in points]
        lines.append(
            f"    {name:<15} {mib(base.rss_kb[i])} {mib(at[0])} {mib(at[1])} {mib(at[2])} "
            f"{mib(peak)} {mib(result.hwm_kb[i])}   {(at[2] - at[0]) / 1024:+6.1f}     "
            f"{(at[2] - at[1]) / 1024:+6.1f}    {mib(after.rss_kb[i])}  "
            f"{base.threads[i]} -> {after.threads[i]}"
        )
    lines.append(
        "    (10/50/100 %: the first sample with that share of the jobs ended, at "
        + ", ".join(f"{p.t_s:.0f} s" for p in points)
        + " into the load)"
    )
    sampled_peak = max(s.used_memory for s in sampler.samples)
    lines += [
        f"  Redis used_memory: baseline {base.used_memory / MIB:.2f} MiB ({base.used_memory:,} B), "
        f"peak {sampled_peak / MIB:.2f} MiB sampled ({result.redis_peak / MIB:.2f} MiB "
        f"used_memory_peak), after TTL {after.used_memory / MIB:.2f} MiB "
        f"({after.used_memory:,} B); after / baseline {after.used_memory / base.used_memory:.3f}",
        f"    of which dataset {base.dataset:,} -> {after.dataset:,} B, "
        f"client buffers {base.clients:,} -> {after.clients:,} B "
        f"({base.connections} -> {after.connections} connections)",
        f"  keys: baseline {base.keys}, peak {max(s.keys for s in sampler.samples):,} sampled, "
        f"after TTL {after.keys}; every job and batch key gone {result.expiry_s:.1f} s after "
        f"the last job ended",
        "  keys left after TTL, by pattern: baseline count (bytes) -> after count (bytes)",
    ]
    for pattern in sorted(set(base.patterns) | set(after.patterns)):
        lines.append(
            f"    {pattern:<46} {base.patterns[pattern]:>3} ({base.pattern_bytes[pattern]:>6,})"
            f" -> {after.patterns[pattern]:>3} ({after.pattern_bytes[pattern]:>6,})"
        )
    return "\n".join(lines)


def benchmark(args: argparse.Namespace) -> None:
    print(f"machine: {machine()}", flush=True)
    os.environ["LLMDISPATCH_JOB_TTL_S"] = str(args.job_ttl)  # the mock's process too
    mock = MockProcess(args.latency)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="llmd-soak-") as tmp,
            running_bench(Path(tmp)) as bench,
        ):
            configure(bench, mock, env={"LLMDISPATCH_JOB_TTL_S": str(args.job_ttl)})
            workers = [start_ours(bench, args, f"soak{i + 1}") for i in range(args.workers)]
            settings = Settings.load()
            wait_until_answering(settings, workers)
            client = Client(settings)
            try:
                result = run_load(bench, client, workers, args)
            finally:
                client.close()
            print(report(result), flush=True)
            if args.csv:
                result.sampler.write_csv(args.csv, result.names)
                print(f"  samples: {args.csv}")
    finally:
        mock.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=50_000, help="jobs; default 50000")
    parser.add_argument("--latency", type=float, default=0.05, help="mock latency; 0.05 s")
    parser.add_argument("--workers", type=int, default=2, help="worker processes; default 2")
    parser.add_argument("--job-ttl", type=int, default=30, help="LLMDISPATCH_JOB_TTL_S; 30 s")
    parser.add_argument("--producers", type=int, default=4, help="Client.submit threads; 4")
    parser.add_argument("--warmup", type=int, default=1_000, help="warm-up jobs; default 1000")
    parser.add_argument("--csv", type=Path, help="write the samples (one a second) here")
    parser.add_argument("--loglevel", default="WARNING", help="the workers' --loglevel")
    parser.add_argument("--timeout", type=float, default=900.0, help="per wait; 900 s")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="whole run; 1500 s")
    args = parser.parse_args()
    raise_open_file_limit()
    run_within_budget(args.budget, lambda: benchmark(args))


if __name__ == "__main__":
    main()
