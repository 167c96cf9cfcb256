"""The HTTP front's added latency and CPU: OpenAI's SDK straight to the mock, and through
`llmdispatch serve` -> queue -> worker -> the same mock, side by side in one run.

The client is OpenAI's own async SDK on its aiohttp backend (`openai[aiohttp]`,
`DefaultAioHttpClient`: its default httpx client collapses near 45 requests/s at
this concurrency on these machines and would measure itself). The stand-in
vendor (`llmdispatch mock-server`, its own process) answers after --latency
seconds (0.5 by default).

(1) Chats: C concurrent clients (200) send N requests (2,000) in rounds that
    alternate between the two sides: straight to the mock, and to the front
    (`llmdispatch serve`, one uvicorn process) whose worker (`celery -A
    workers.app worker --pool threads -c W`) calls the mock. Added latency is
    the front's percentile minus the direct one. CPU per request of the whole
    path is the front's, the worker's and Redis's CPU over the requests; the
    same path without the front (`AsyncClient.submit` + `wait` from this
    process at the same concurrency: today's per-job cost of submit + worker)
    is measured in the same run for the ratio.
(2) Streams: S concurrent streams (200), each a reply of 10 chunks paced
    --chunk-delay apart: time to first token and the gap between chunks, in
    rounds alternating between the sides as the chats do.

The floor: a bare pass-through proxy (bench/bare_proxy.py: a raw ASGI app on the
same uvicorn, forwarding to the mock over one aiohttp session, no framework, no
queue) is measured the same way in every round. What it adds, any HTTP front
written in Python adds at least on the same machine.

Targets (issue 23): added p50 <= 10 ms and p99 <= 50 ms for chats; time to
first token at most +25 ms at p99 for streams; CPU per request of the whole
path no more than 2x submit + worker.

    .venv/bin/python bench/http_front.py                      # the defaults above
    .venv/bin/python bench/http_front.py --requests 400 --streams 50   # a quick run
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
from openai import DefaultAioHttpClient
from queue_harness import Bench, Process, ServerProcess, percentile, process_cpu_s, running_bench

from dispatcher import Request
from producer import AsyncClient
from producer.cli.tools.embedded_redis import free_port
from producer.cli.tools.standin import raise_open_file_limit

LLMDISPATCH = Path(sys.executable).parent / "llmdispatch"
KEY = "bench-front-key-0123456789abcdef"
MODEL = "mock-echo"
PROMPT = "one two three four five six seven eight"  # the stream's reply: 10 words
STARTUP_TIMEOUT_S = 60.0
TARGETS = {"p50": 10.0, "p99": 50.0, "ttft_p99": 25.0, "cpu_ratio": 2.0}


@dataclass
class Side:
    """One side's latencies (seconds) and the CPU of the processes on its path."""

    name: str
    latencies: list[float]
    cpu_s: float
    count: int
    parts: list[float] = field(default_factory=lambda: [0.0] * 5)

    def part_us(self, index: int) -> float:
        return self.parts[index] / self.count * 1e6

    def ms(self, fraction: float) -> float:
        return percentile(self.latencies, fraction) * 1000

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.count * 1e6


@dataclass
class FrontStack:
    """A private Redis, the mock, one worker for it and one `llmdispatch serve`."""

    bench: Bench
    mock: ServerProcess
    worker: Process
    front: Process
    front_url: str


@contextmanager
def front_stack(
    latency: float, chunk_delay: float, worker_concurrency: int = 400, front_workers: int = 1
) -> Iterator[FrontStack]:
    """The stack the front's benchmarks measure; every process stopped afterwards."""
    with tempfile.TemporaryDirectory() as tmp, running_bench(Path(tmp)) as bench:
        mock = ServerProcess(
            [str(LLMDISPATCH), "mock-server", "--port", "0", "--latency", str(latency),
             "--chunk-delay", str(chunk_delay)],
            STARTUP_TIMEOUT_S,
        )  # fmt: skip
        try:
            config = {
                "vendors": {"mock": {"type": "openai_compatible", "stand_in": True,
                                     "base_url": mock.url, "models": ["*"], "timeout_s": 60}},
                "default_vendor": "mock",
            }  # fmt: skip
            bench.configure(config, LLMDISPATCH_SERVER_API_KEYS=f"{KEY}:bench")
            worker = bench.start_worker(
                "workers.app", "llm.mock", concurrency=worker_concurrency, name="w1"
            )
            port = free_port()
            front = start_front(bench, port, front_workers)
            yield FrontStack(bench, mock, worker, front, f"http://127.0.0.1:{port}")
        finally:
            mock.stop()


def start_front(bench: Bench, port: int, workers: int = 1) -> Process:
    args = [str(LLMDISPATCH), "serve", "--port", str(port), "--workers", str(workers)]
    return start_server(bench, "front", port, args)


def start_bare_proxy(bench: Bench, port: int, upstream: str) -> Process:
    """The floor: a bare pass-through proxy to the mock (bench/bare_proxy.py)."""
    script = Path(__file__).with_name("bare_proxy.py")
    args = [sys.executable, str(script), "--port", str(port), "--upstream", upstream]
    return start_server(bench, "bare-proxy", port, args, ready_path="/v1/models")


def start_server(bench: Bench, name: str, port: int, args: list[str],
                 ready_path: str = "/readyz") -> Process:  # fmt: skip
    log = bench.workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our console script and our arguments
            args, env=bench.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    server = Process(name, process, log)
    bench.processes.append(server)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        server.check_running()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=2):
                return server
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not answer {ready_path}: {server.log_tail()}")


async def run_at(concurrency: int, count: int, one: Callable[[int], Awaitable[Any]]) -> None:
    """`count` calls of `one`, `concurrency` at a time."""
    next_index = iter(range(count))

    async def lane() -> None:
        for index in next_index:
            await one(index)

    await asyncio.gather(*(lane() for _ in range(concurrency)))


async def chats(client: openai.AsyncOpenAI, n: int, c: int) -> list[float]:
    latencies: list[float] = []

    async def one(index: int) -> None:
        started = time.perf_counter()
        reply = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"hello {index}"}]
        )
        latencies.append(time.perf_counter() - started)
        assert reply.choices[0].message.content == f"echo: hello {index}"

    await run_at(c, n, one)
    return latencies


async def library(client: AsyncClient, n: int, c: int) -> list[float]:
    latencies: list[float] = []

    async def one(index: int) -> None:
        started = time.perf_counter()
        request = Request(model=MODEL, messages=[{"role": "user", "content": f"hello {index}"}])
        reply = await client.wait(await client.submit(request), timeout_s=120)
        latencies.append(time.perf_counter() - started)
        assert reply.content == f"echo: hello {index}"

    await run_at(c, n, one)
    return latencies


async def streams(client: openai.AsyncOpenAI, s: int) -> tuple[list[float], list[float]]:
    """Time to first token of each stream, and every gap between two chunks."""
    firsts: list[float] = []
    gaps: list[float] = []

    async def one(index: int) -> None:
        started = time.perf_counter()
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        last = None
        text = ""
        async for chunk in stream:
            if not chunk.choices or not chunk.choices[0].delta.content:
                continue
            now = time.perf_counter()
            if last is None:
                firsts.append(now - started)
            else:
                gaps.append(now - last)
            last = now
            text += chunk.choices[0].delta.content
        assert text == f"echo: {PROMPT}", text

    await asyncio.gather(*(one(i) for i in range(s)))
    return firsts, gaps


async def stream_rounds(
    clients: list[openai.AsyncOpenAI], s: int, rounds: int
) -> list[tuple[list[float], list[float]]]:
    """`streams` on each client in turn, `rounds` times (drift hits every side alike)."""
    timed: list[tuple[list[float], list[float]]] = [([], []) for _ in clients]
    for _ in range(rounds):
        for client, pooled in zip(clients, timed, strict=True):
            firsts, gaps = await streams(client, s)
            pooled[0].extend(firsts)
            pooled[1].extend(gaps)
    return timed


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of `pid` and its living children (uvicorn's worker processes)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(k) for k in children.read_text().split()] if children.exists() else []
    return process_cpu_s(pid) + sum(tree_cpu_s(kid) for kid in kids)


class CpuOf:
    """CPU seconds of a set of processes (by pid; 0 for this process) between two reads."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.start = self.each()

    def each(self) -> list[float]:
        return [time.process_time() if p == 0 else tree_cpu_s(p) for p in self.pids]

    def spent(self, parts: list[float] | None = None) -> float:
        """The CPU spent since the start; `parts` gets each process's share added."""
        now = self.each()
        shares = [after - before for before, after in zip(self.start, now, strict=True)]
        if parts is not None:
            for index, share in enumerate(shares):
                parts[index] += share
        return sum(shares)


def sdk(base_url: str, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0,
                              http_client=DefaultAioHttpClient(), timeout=120)  # fmt: skip


async def chat_rounds(
    sdks: dict[str, openai.AsyncOpenAI],
    ours: AsyncClient,
    *,
    per_round: int,
    c: int,
    rounds: int,
    pids: dict[str, int],
    path: list[int],
    library_path: list[int],
) -> dict[str, Side]:
    """Chats on each side in turn, `rounds` times, with the CPU of the processes on its path."""
    direct, proxied, via = sdks["direct"], sdks["bare"], sdks["front"]
    mock_pid = pids["mock"]
    sides = {name: Side(name, [], 0.0, 0) for name in ("direct", "front", "library", "bare")}
    for _ in range(rounds):
        cpu = CpuOf([0, mock_pid])
        sides["direct"].latencies += await chats(direct, per_round, c)
        sides["direct"].cpu_s += cpu.spent(sides["direct"].parts)
        sides["direct"].count += per_round
        cpu = CpuOf([pids["bare"]])
        sides["bare"].latencies += await chats(proxied, per_round, c)
        sides["bare"].cpu_s += cpu.spent(sides["bare"].parts)
        sides["bare"].count += per_round
        cpu = CpuOf([*path, 0, mock_pid])  # the path, then the client and the mock
        sides["front"].latencies += await chats(via, per_round, c)
        cpu.spent(sides["front"].parts)
        sides["front"].cpu_s = sum(sides["front"].parts[: len(path)])
        sides["front"].count += per_round
        cpu = CpuOf(library_path)
        sides["library"].latencies += await library(ours, per_round, c)
        sides["library"].cpu_s += cpu.spent(sides["library"].parts)
        sides["library"].count += per_round
    return sides


async def measure(
    args: argparse.Namespace,
    mock: ServerProcess,
    front_url: str,
    *,
    path: list[int],
    library_path: list[int],
    bare: tuple[str, int],
) -> str:
    direct = sdk(mock.url, "unused")
    proxied = sdk(f"{bare[0]}/v1", "unused")
    via = sdk(f"{front_url}/v1", KEY)
    ours = AsyncClient.from_env()
    n, c = args.requests, args.concurrency
    rounds = max(1, args.rounds)
    per_round = max(c, n // rounds)
    try:
        # Warm-up: connections, threads, the worker's pools, on both sides.
        await chats(direct, c, c)
        await chats(via, c, c)
        await chats(proxied, c, c)
        await library(ours, c, c)
        sides = await chat_rounds(
            {"direct": direct, "bare": proxied, "front": via},
            ours,
            per_round=per_round,
            c=c,
            rounds=rounds,
            pids={"mock": mock.process.pid, "bare": bare[1]},
            path=path,
            library_path=library_path,
        )
        s = args.streams
        await streams(direct, min(s, 20))
        await streams(via, min(s, 20))
        await streams(proxied, min(s, 20))
        timed = await stream_rounds([direct, proxied, via], s, rounds)
        (direct_first, direct_gaps), (bare_first, _), (via_first, via_gaps) = timed
    finally:
        await direct.close()
        await proxied.close()
        await via.close()
        await ours.aclose()

    d, f, lib, b = sides["direct"], sides["front"], sides["library"], sides["bare"]
    added50, added99 = f.ms(0.5) - d.ms(0.5), f.ms(0.99) - d.ms(0.99)
    ttft = [percentile(x, q) * 1000 for x in (direct_first, via_first) for q in (0.5, 0.99)]
    bare_ttft99 = percentile(bare_first, 0.99) * 1000
    gap = [percentile(x, q) * 1000 for x in (direct_gaps, via_gaps) for q in (0.5, 0.99)]
    ratio = f.cpu_us / lib.cpu_us
    # With no overhead at all, C lanes against a mock answering in L seconds send C / L
    # requests a second: the cores that rate needs at each side's CPU per request.
    offered = c / args.latency
    need_direct = (d.part_us(0) + d.part_us(1)) * 1e-6 * offered
    need_front = sum(f.part_us(i) for i in range(5)) * 1e-6 * offered

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    return "\n".join(
        [
            f"chats: {rounds} rounds of {per_round} per side, {c} concurrent, "
            f"mock latency {args.latency} s",
            f"  direct to the mock: p50 {d.ms(0.5):.1f} ms, p99 {d.ms(0.99):.1f} ms; CPU per "
            f"request: client {d.part_us(0):,.0f} us, mock {d.part_us(1):,.0f} us",
            f"  through the front:  p50 {f.ms(0.5):.1f} ms, p99 {f.ms(0.99):.1f} ms",
            f"  added: p50 {added50:+.1f} ms (target <= {TARGETS['p50']:.0f}: "
            f"{verdict(added50 <= TARGETS['p50'])}), p99 {added99:+.1f} ms (target <= "
            f"{TARGETS['p99']:.0f}: {verdict(added99 <= TARGETS['p99'])})",
            f"  floor, a bare pass-through proxy (bench/bare_proxy.py): p50 {b.ms(0.5):.1f} ms, "
            f"p99 {b.ms(0.99):.1f} ms, added p50 {b.ms(0.5) - d.ms(0.5):+.1f} ms, p99 "
            f"{b.ms(0.99) - d.ms(0.99):+.1f} ms; its CPU per request {b.cpu_us:,.0f} us",
            f"  library (AsyncClient submit + wait): p50 {lib.ms(0.5):.1f} ms, "
            f"p99 {lib.ms(0.99):.1f} ms",
            f"  CPU per request: front path {f.cpu_us:,.0f} us (front {f.part_us(0):,.0f}, "
            f"worker {f.part_us(1):,.0f}, redis {f.part_us(2):,.0f}); library path "
            f"{lib.cpu_us:,.0f} us (submit + wait {lib.part_us(0):,.0f}, worker "
            f"{lib.part_us(1):,.0f}, redis {lib.part_us(2):,.0f}); ratio "
            f"{ratio:.2f} (target <= {TARGETS['cpu_ratio']:.0f}: "
            f"{verdict(ratio <= TARGETS['cpu_ratio'])})",
            f"  CPU the offered load needs ({c} lanes / {args.latency} s = {offered:.0f} "
            f"requests/s): direct {need_direct:.2f} cores, through the front {need_front:.2f} "
            f"cores (with its client {f.part_us(3):,.0f} us and mock {f.part_us(4):,.0f} us per "
            f"request); this machine has {os.cpu_count()}",
            f"streams: {args.streams} concurrent, {len(PROMPT.split()) + 2} chunks "
            f"{args.chunk_delay} s apart",
            f"  time to first token: direct p50 {ttft[0]:.1f} / p99 {ttft[1]:.1f} ms; front p50 "
            f"{ttft[2]:.1f} / p99 {ttft[3]:.1f} ms; added p99 {ttft[3] - ttft[1]:+.1f} ms "
            f"(target <= {TARGETS['ttft_p99']:.0f}: "
            f"{verdict(ttft[3] - ttft[1] <= TARGETS['ttft_p99'])}); the bare proxy's added p99 "
            f"{bare_ttft99 - ttft[1]:+.1f} ms",
            f"  gap between chunks: direct p50 {gap[0]:.1f} / p99 {gap[1]:.1f} ms; front p50 "
            f"{gap[2]:.1f} / p99 {gap[3]:.1f} ms",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="chats per side")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per side")
    parser.add_argument("--latency", type=float, default=0.5, help="mock seconds to first byte")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--chunk-delay", type=float, default=0.05)
    parser.add_argument("--worker-concurrency", type=int, default=400)
    parser.add_argument("--front-workers", type=int, default=1, help="serve --workers")
    args = parser.parse_args()
    raise_open_file_limit()
    with front_stack(args.latency, args.chunk_delay, args.worker_concurrency,
                     args.front_workers) as stack:  # fmt: skip
        bare_port = free_port()
        bare = start_bare_proxy(stack.bench, bare_port, stack.mock.url)
        path = [stack.front.pid, stack.worker.pid, stack.bench.redis_pid]
        library_path = [0, stack.worker.pid, stack.bench.redis_pid]
        print(
            f"python {sys.version.split()[0]}, openai {openai.__version__}, "
            f"worker -c {args.worker_concurrency}, serve --workers {args.front_workers}"
        )
        bare_side = (f"http://127.0.0.1:{bare_port}", bare.pid)
        print(asyncio.run(measure(args, stack.mock, stack.front_url, path=path,
                                  library_path=library_path, bare=bare_side)))  # fmt: skip


if __name__ == "__main__":
    main()
