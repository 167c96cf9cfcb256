"""How much load the stand-in vendor server takes: requests per second, and open streams held.

The server runs as its own process (the real `llmdispatch mock-server` console
script), so client and server do not share one event loop or one core:

(a) throughput: a fixed number of non-streamed completions from N concurrent
    keep-alive clients, against the mock and, for context, against a bare aiohttp
    handler returning a fixed body of the same size (also its own process). The
    ratio mock/bare is the cost of the mock's own work: auth, body parsing,
    composing the reply, JSON.
(b) concurrency: S streams opened at once against a mock paced at D seconds
    between K chunks; every stream must finish with the exact text. Reports the
    most streams open at one time, and wall time against the ideal (K - 1) * D.

Server CPU is read from /proc, so a figure can be told apart from a saturated
client. Every phase is bounded by a timeout and the servers are always stopped.

    .venv/bin/python bench/mock_server_capacity.py               # the defaults below
    .venv/bin/python bench/mock_server_capacity.py --requests 5000 --streams 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from producer.cli.tools.standin import raise_open_file_limit

SCRIPT = Path(sys.executable).parent / "llmdispatch"
PROMPT = "Say hello to the mock"
REPLY = "echo: " + PROMPT
BODY = {"model": "mock-echo", "messages": [{"role": "user", "content": PROMPT}]}
STREAM_BODY = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
# Bounds so the benchmark always stops by itself.
STARTUP_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
DEFAULT_BUDGET_S = 110.0
WARMUP_REQUESTS = 1_000


# --- the baseline server: a bare handler, nothing else -----------------------------------


def serve_baseline(port: int) -> None:
    """A bare aiohttp app answering every POST with one fixed completion body."""
    body = json.dumps(
        {
            "id": "chatcmpl-baseline",
            "object": "chat.completion",
            "created": 1760000000,
            "model": "mock-echo",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "logprobs": None,
                    "message": {
                        "role": "assistant",
                        "content": REPLY,
                        "refusal": None,
                        "annotations": [],
                    },
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
        },
        separators=(",", ":"),
    ).encode()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        print(f"baseline listening on http://127.0.0.1:{runner.addresses[0][1]}/v1", flush=True)
        await asyncio.Event().wait()  # until the benchmark terminates this process

    raise_open_file_limit()
    asyncio.run(main())


# --- server processes -------------------------------------------------------------------


@dataclass
class ServerProcess:
    """A server subprocess and the base URL it printed."""

    process: asyncio.subprocess.Process
    url: str

    def cpu_seconds(self) -> float | None:
        """User + system CPU the server has used so far (Linux /proc), or None."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def start_server(*args: str) -> ServerProcess:
    """Start a server that prints its URL on its first line; wait (bounded) for that line."""
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"{args[0]} printed no URL within {STARTUP_TIMEOUT_S:g} s") from None
    match = re.search(rb"http://[\d.]+:\d+/v1", line)
    if match is None:
        process.kill()
        await process.wait()
        raise RuntimeError(f"{args[0]} did not start: {line!r}")
    return ServerProcess(process, match.group().decode())


def mock_server_command(*options: str) -> list[str]:
    return [str(SCRIPT), "mock-server", "--port", "0", *options]


def baseline_command() -> list[str]:
    return [sys.executable, __file__, "--serve-baseline"]


# --- (a) throughput ---------------------------------------------------------------------


@dataclass
class Throughput:
    requests: int
    seconds: float
    latencies_ms: list[float]
    server_cpu_s: float | None
    client_cpu_s: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def server_cpu_us(self) -> float | None:
        """Server CPU per request, in microseconds: the figure a saturated client cannot hide."""
        if self.server_cpu_s is None:
            return None
        return self.server_cpu_s / self.requests * 1e6

    def describe(self) -> str:
        latencies = sorted(self.latencies_ms)
        p50 = statistics.median(latencies)
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        cpu = (
            f", server CPU {self.server_cpu_s / self.seconds:.0%} of one core, "
            f"{self.server_cpu_us:.0f} us/request"
            if self.server_cpu_s is not None
            else ""
        )
        cpu += f", client CPU {self.client_cpu_s / self.seconds:.0%}"
        return (
            f"{self.requests} requests in {self.seconds:.2f} s = {self.per_second:,.0f} req/s "
            f"(latency p50 {p50:.2f} ms, p99 {p99:.2f} ms{cpu})"
        )


async def measure_throughput(server: ServerProcess, requests: int, concurrency: int) -> Throughput:
    """`requests` completions from `concurrency` keep-alive clients, after a warm-up."""
    url = f"{server.url}/chat/completions"
    payload = json.dumps(BODY).encode()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def run(count: int, latencies: list[float]) -> None:
            remaining = count

            async def client() -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    started = time.perf_counter()
                    async with session.post(url, data=payload, headers=headers) as response:
                        body = await response.read()
                    if response.status != 200 or REPLY.encode() not in body:
                        raise RuntimeError(f"unexpected answer {response.status}: {body[:200]!r}")
                    latencies.append((time.perf_counter() - started) * 1000.0)

            await asyncio.gather(*(client() for _ in range(concurrency)))

        await run(WARMUP_REQUESTS, [])
        latencies: list[float] = []
        cpu_before, client_before = server.cpu_seconds(), time.process_time()
        started = time.perf_counter()
        await run(requests, latencies)
        seconds = time.perf_counter() - started
        cpu_after, client_cpu = server.cpu_seconds(), time.process_time() - client_before
    cpu = cpu_after - cpu_before if cpu_after is not None and cpu_before is not None else None
    return Throughput(requests, seconds, latencies, cpu, client_cpu)


# --- (b) open streams -------------------------------------------------------------------


@dataclass
class StreamRun:
    streams: int
    completed: int
    max_open: int
    seconds: float
    ideal_s: float
    first_byte_ms: list[float]
    body_s: list[float]
    server_cpu_s: float | None
    client_cpu_s: float

    def describe(self) -> str:
        first = sorted(self.first_byte_ms)
        body = sorted(self.body_s)
        cpu = (
            f"; server CPU {self.server_cpu_s:.2f} s "
            f"({self.server_cpu_s / self.streams * 1e6:.0f} us/stream)"
            if self.server_cpu_s is not None
            else ""
        )
        cpu += f", client CPU {self.client_cpu_s:.2f} s"
        return (
            f"{self.completed}/{self.streams} streams complete with the exact text; "
            f"at most {self.max_open} open at once; wall {self.seconds:.2f} s vs ideal "
            f"{self.ideal_s:.2f} s (x{self.seconds / self.ideal_s:.2f}); first byte p50 "
            f"{statistics.median(first):.0f} ms, max {first[-1]:.0f} ms; first byte to [DONE] "
            f"p50 {statistics.median(body):.2f} s, max {body[-1]:.2f} s{cpu}"
        )


async def measure_streams(
    server: ServerProcess, streams: int, chunk_delay_s: float, chunks: int
) -> StreamRun:
    """Open `streams` streams at once, each on its own connection, and read them to the end."""
    url = f"{server.url}/chat/completions"
    payload = json.dumps(STREAM_BODY).encode()
    headers = {"Content-Type": "application/json"}
    open_now = max_open = completed = 0
    first_byte_ms: list[float] = []
    body_s: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30.0, sock_read=30.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> None:
            nonlocal open_now, max_open, completed
            started = time.perf_counter()
            async with session.post(url, data=payload, headers=headers) as response:
                open_now += 1
                max_open = max(max_open, open_now)
                first_byte = time.perf_counter()
                first_byte_ms.append((first_byte - started) * 1000.0)
                text, done = [], False
                try:
                    async for raw in response.content:
                        line = raw.decode().strip()
                        if line == "data: [DONE]":
                            done = True
                        elif line.startswith("data: "):
                            for choice in json.loads(line[6:])["choices"]:
                                text.append(choice["delta"].get("content") or "")
                finally:
                    open_now -= 1
            body_s.append(time.perf_counter() - first_byte)
            if done and "".join(text) == REPLY:
                completed += 1

        cpu_before, client_before = server.cpu_seconds(), time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(streams)))
        seconds = time.perf_counter() - started
        cpu_after, client_cpu = server.cpu_seconds(), time.process_time() - client_before
    cpu = cpu_after - cpu_before if cpu_after is not None and cpu_before is not None else None
    ideal = (chunks - 1) * chunk_delay_s
    return StreamRun(
        streams, completed, max_open, seconds, ideal, first_byte_ms, body_s, cpu, client_cpu
    )


# --- the run ----------------------------------------------------------------------------


async def with_server(command: list[str], work: Callable[[ServerProcess], Awaitable[Any]]) -> Any:
    server = await start_server(*command)
    try:
        return await work(server)
    finally:
        await server.stop()


async def benchmark(args: argparse.Namespace) -> None:
    print(
        f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"aiohttp {aiohttp.__version__}; client and each server are separate processes"
    )
    n, c = args.requests, args.concurrency
    print(f"\n(a) throughput: {n} non-streamed completions, {c} concurrent keep-alive clients")
    bare = await with_server(baseline_command(), lambda s: measure_throughput(s, n, c))
    print(f"  bare aiohttp handler: {bare.describe()}")
    mock = await with_server(mock_server_command(), lambda s: measure_throughput(s, n, c))
    print(f"  mock server:          {mock.describe()}")
    print(f"  mock / bare:          {mock.per_second / bare.per_second:.2f} of the throughput")
    if mock.server_cpu_us is not None and bare.server_cpu_us is not None:
        print(f"{'':24}{mock.server_cpu_us / bare.server_cpu_us:.2f}x the server CPU per request")

    s, d, k = args.streams, args.chunk_delay, args.chunks
    print(f"\n(b) concurrency: {s} streams at once, {k} chunks, {d:g} s between chunks")
    options = ("--chunk-delay", str(d), "--chunk-count", str(k))
    streams = await with_server(
        mock_server_command(*options), lambda srv: measure_streams(srv, s, d, k)
    )
    print(f"  mock server:          {streams.describe()}")
    if streams.completed != s:
        raise SystemExit(f"only {streams.completed} of {s} streams completed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="for (a); default 20000")
    parser.add_argument("--concurrency", type=int, default=64, help="for (a); default 64")
    parser.add_argument("--streams", type=int, default=2_000, help="for (b); default 2000")
    parser.add_argument("--chunk-delay", type=float, default=0.5, help="for (b); default 0.5 s")
    parser.add_argument("--chunks", type=int, default=5, help="for (b); default 5")
    parser.add_argument(
        "--budget", type=float, default=DEFAULT_BUDGET_S, help="give up after this many seconds"
    )
    parser.add_argument("--serve-baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.port)
        return
    raise_open_file_limit()
    started = time.perf_counter()

    async def bounded() -> None:
        async with asyncio.timeout(args.budget):
            await benchmark(args)

    try:
        asyncio.run(bounded())
    except TimeoutError:
        raise SystemExit(f"gave up: the benchmark took longer than {args.budget:g} s") from None
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
