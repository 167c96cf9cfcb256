"""What the queue benchmarks share: processes, their CPU time, waiting, and figures.

Like `tests/integration/stack.py`, everything is a real process: a private
`redis-server` (`EmbeddedRedis`), `celery worker` subprocesses, and waits are
always on a condition with a timeout. CPU time comes from `/proc/<pid>/stat`
(user + system, all threads) for subprocesses and from `time.process_time()`
for this process, which is the producer.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from what_if_workers import NO_EVENTS

from dispatcher import Settings
from producer.celery_sender import CelerySender
from producer.cli.tools.embedded_redis import EmbeddedRedis
from producer.client import Client

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POLL_S = 0.02
# Cores' worth of CPU used by processes outside the benchmark above which a side is flagged.
NOISY_LOAD = 0.1
STOP_TIMEOUT_S = 20.0


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` (every thread), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def wait_for(
    condition: Callable[[], Any],
    timeout_s: float,
    what: str,
    alive: Sequence[Process] = (),
    *,
    poll_s: float = POLL_S,
) -> Any:
    """Poll `condition` every `poll_s` until it returns something truthy; give up after `timeout_s`.

    Fails at once when one of the `alive` processes exits meanwhile.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        for process in alive:
            process.check_running()
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of `values`."""
    ordered = sorted(values)
    rank = max(1, round(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def machine() -> str:
    """One line about the machine the figures come from."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import celery  # noqa: PLC0415
    import httpx  # noqa: PLC0415
    import redis  # noqa: PLC0415

    return (
        f"{os.cpu_count()} CPUs ({model or platform.machine()}), Linux {platform.release()}, "
        f"Python {sys.version.split()[0]}, Celery {celery.__version__}, "
        f"redis-py {redis.__version__}, httpx {httpx.__version__}"
    )


@dataclass
class Process:
    """A subprocess, its log, and its CPU time."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_s(self) -> float:
        return process_cpu_s(self.pid)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the log and of what the process printed."""
        texts = [
            path.read_text(errors="replace")[-chars:]
            for path in (self.log, self.log.with_suffix(".out"))
            if path.exists()
        ]
        return "\n".join(text for text in texts if text.strip())

    def check_running(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with code {self.process.returncode}:\n{self.log_tail()}"
            )

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
class CpuSnapshot:
    """Wall clock and CPU seconds: the producer (this process), a worker, Redis, the machine."""

    wall: float
    producer: float
    worker: float
    redis: float
    machine: float

    @classmethod
    def take(cls, worker: Process, redis_pid: int) -> CpuSnapshot:
        return cls(
            time.time(),
            time.process_time(),
            worker.cpu_s(),
            process_cpu_s(redis_pid),
            machine_busy_s(),
        )


def machine_busy_s() -> float:
    """CPU seconds every core of the machine has been busy (all processes), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


@dataclass
class Measurement:
    """One side of a comparison: jobs sent and ended, how long they took, the CPU they cost.

    `jobs` is how many ended; `sent` how many the producer sent. They differ only
    in a run cut short by its timeout: the producer's CPU is then shared over the
    jobs it sent, the worker's and Redis's over the jobs that ended.
    """

    label: str
    jobs: int
    sent: int
    wall_s: float
    producer_cpu_s: float
    worker_cpu_s: float
    redis_cpu_s: float
    machine_cpu_s: float
    span_s: float
    submit_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def between(
        cls,
        label: str,
        jobs: int,
        before: CpuSnapshot,
        after: CpuSnapshot,
        *,
        ended_at: float,
        submit_s: float,
        sent: int | None = None,
    ) -> Measurement:
        """From `before` to the last job's end (`ended_at`, epoch seconds); CPU up to `after`."""
        return cls(
            label,
            jobs,
            jobs if sent is None else sent,
            ended_at - before.wall,
            after.producer - before.producer,
            after.worker - before.worker,
            after.redis - before.redis,
            after.machine - before.machine,
            after.wall - before.wall,
            submit_s,
        )

    @property
    def complete(self) -> bool:
        return self.jobs >= self.sent

    @property
    def per_second(self) -> float:
        return self.jobs / self.wall_s

    @property
    def projected_wall_s(self) -> float:
        """The wall time of every job sent: measured, or at the measured rate if cut short."""
        return self.wall_s if self.complete else self.sent / self.per_second

    @property
    def producer_us(self) -> float:
        return self.producer_cpu_s / self.sent * 1e6

    @property
    def worker_us(self) -> float:
        return self.worker_cpu_s / self.jobs * 1e6

    @property
    def redis_us(self) -> float:
        return self.redis_cpu_s / self.jobs * 1e6

    @property
    def cpu_us(self) -> float:
        """CPU per job summed over the producer, the worker and Redis."""
        return self.producer_us + self.worker_us + self.redis_us

    def other_load(self, known_cpu_s: float = 0.0) -> float:
        """Cores' worth of CPU other processes used meanwhile (not ours, not `known_cpu_s`)."""
        ours = self.producer_cpu_s + self.worker_cpu_s + self.redis_cpu_s + known_cpu_s
        return max(0.0, self.machine_cpu_s - ours) / self.span_s

    def describe(self, known_cpu_s: float = 0.0) -> str:
        """The figures on one line; `known_cpu_s`: CPU of other processes of the benchmark."""
        other = self.other_load(known_cpu_s)
        noisy = " (NOISY: other processes were busy)" if other > NOISY_LOAD else ""
        return (
            f"{self.jobs} jobs in {self.wall_s:.2f} s = {self.per_second:,.0f} jobs/s; "
            f"CPU {self.cpu_us:,.0f} us/job (producer {self.producer_us:,.0f}, "
            f"worker {self.worker_us:,.0f}, redis {self.redis_us:,.0f}); "
            f"all sent after {self.submit_s:.2f} s; other load {other:.2f} cores{noisy}"
        )


@dataclass
class Bench:
    """A private Redis, a working directory, the environment every process shares."""

    redis: EmbeddedRedis
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)

    @property
    def redis_pid(self) -> int:
        pid = self.redis.pid
        if pid is None:
            raise RuntimeError("the private Redis is not running")
        return pid

    def configure(self, config: dict[str, Any], **env: str) -> None:
        """Write the dispatcher's configuration file and set the shared environment.

        The same variables are set in this process, so `Settings.load()` and
        `Client.from_env()` here see what the workers see.
        """
        path = self.workdir / "llmdispatch.yaml"
        path.write_text(yaml.safe_dump(config))
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", ""),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT), str(BENCH), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            "REDIS_URL": self.redis.url,
            "LLMDISPATCH_CONFIG": str(path),
            "LLMDISPATCH_KEY_PREFIX": "bench",
            **env,
        }
        os.environ.update({k: v for k, v in self.env.items() if k not in ("PATH", "HOME")})

    def start_worker(
        self,
        app: str,
        queue: str,
        *,
        concurrency: int,
        name: str,
        loglevel: str = "WARNING",
        **env: str,
    ) -> Process:
        """Start `celery -A app worker -Q queue --pool threads -c concurrency` (not yet warm)."""
        log = self.workdir / f"{name}.log"
        args = [
            sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queue,
            "--pool", "threads", "-c", str(concurrency), "-n", f"{name}@%h",
            "--loglevel", loglevel, "--without-gossip", "--without-mingle",
            "--logfile", str(log),
        ]  # fmt: skip
        with (self.workdir / f"{name}.out").open("wb") as output:  # tracebacks before logging
            process = subprocess.Popen(  # noqa: S603 - our interpreter and our arguments
                args,
                env={**self.env, **env},
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        worker = Process(name, process, log)
        self.processes.append(worker)
        return worker

    def stop(self, process: Process) -> None:
        process.stop()
        if process in self.processes:
            self.processes.remove(process)

    def stop_all(self) -> None:
        for process in list(self.processes):
            self.stop(process)


class ServerProcess:
    """A stand-in server run as a subprocess (`args`): the URL it prints first, its CPU.

    The server prints its base URL (`http://127.0.0.1:PORT/v1`) as its first line;
    `get_json` and `post` reach the counters it serves beside the API.
    """

    def __init__(self, args: Sequence[str], startup_timeout_s: float = 20.0) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our interpreter and our arguments
            list(args), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        assert self.process.stdout is not None
        line = b""
        deadline = time.monotonic() + startup_timeout_s
        while time.monotonic() < deadline and self.process.poll() is None and not line:
            line = self.process.stdout.readline()
        match = re.search(rb"http://[\d.]+:\d+/v1", line)
        if match is None:
            self.stop()
            raise RuntimeError(f"the stand-in server did not start: {line!r}")
        self.url = match.group().decode()
        self.root = self.url.removesuffix("/v1")

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.root}{path}", timeout=10) as answer:  # noqa: S310
            return json.load(answer)

    def post(self, path: str) -> None:
        request = urllib.request.Request(f"{self.root}{path}", method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - our loopback server
            pass

    def cpu_s(self) -> float:
        return process_cpu_s(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextmanager
def running_bench(workdir: Path) -> Iterator[Bench]:
    """A private Redis for one benchmark run; every process stopped afterwards."""
    with EmbeddedRedis() as redis_server:
        bench = Bench(redis_server, workdir)
        try:
            yield bench
        finally:
            bench.stop_all()


def our_worker_app(what_if: str | None) -> str:
    """The `-A` of our worker: the product's app, or a what-if variant of it."""
    return "workers.app" if what_if is None else f"what_if_workers:{what_if}"


@contextmanager
def our_client(what_if: str | None) -> Iterator[Client]:
    """`Client` as the product builds it from the environment; a what-if may adjust its sender."""
    settings = Settings.load()
    sender: CelerySender | None = None
    if what_if is not None and "no_events" in what_if:
        sender = CelerySender(settings)
        sender.app.conf.update(NO_EVENTS)
    client = Client(settings, send=sender)
    try:
        yield client
    finally:
        client.close()
        if sender is not None:
            sender.close()


def run_within_budget(budget_s: float, run: Callable[[], object]) -> None:
    """Run a benchmark; stop it with a clear message past `budget_s`; print its total time."""

    def out_of_time(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"gave up: the benchmark took longer than {budget_s:g} s")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.setitimer(signal.ITIMER_REAL, budget_s)
    started = time.perf_counter()
    try:
        run()
    except TimeoutError as exc:
        raise SystemExit(str(exc)) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
