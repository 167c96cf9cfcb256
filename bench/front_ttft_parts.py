"""Where a stream's time to first token goes through the HTTP front, for N streams at once.

Starts the same stack as bench/http_front.py (the mock at --latency, one worker,
one `llmdispatch serve`), then sends N streams at once with OpenAI's async SDK,
straight to the mock and through the front, alternating, --rounds times; and
prints the time to first token of both sides, and for the front the parts of
each stream's last round, from its job record and its first chunk's
`emitted_at`:

- submit: from the SDK's call to the job's creation (the SDK's own work, the
  request crossing to the front, the front taking it and writing the job);
- queued: the job's creation to a worker starting it;
- vendor first chunk: the start to the vendor's first text (--latency of it
  is the mock's);
- to the client: that chunk's arrival at the worker to the SDK yielding it.

    .venv/bin/python bench/front_ttft_parts.py            # 50 streams at once
    .venv/bin/python bench/front_ttft_parts.py --streams 1
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import openai
from http_front import KEY, MODEL, PROMPT, front_stack, sdk
from queue_harness import percentile

from dispatcher.models import StreamEventType
from producer import AsyncClient
from producer.cli.tools.standin import raise_open_file_limit


async def first_token(client: openai.AsyncOpenAI) -> tuple[float, float, str]:
    """(when the call was made, when its first text arrived, the job id if any)."""
    sent = time.time()
    stream = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": PROMPT}], stream=True
    )
    job_id = stream.headers.get("x-llmdispatch-job-id", "")
    first = None
    async for chunk in stream.parse():
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.time()
    assert first is not None
    return sent, first, job_id


async def measure(mock_url: str, front_url: str, streams: int, rounds: int) -> str:
    direct, via = sdk(mock_url, "unused"), sdk(f"{front_url}/v1", KEY)
    ours = AsyncClient.from_env()
    firsts: dict[str, list[float]] = {"direct": [], "front": []}
    last: list[tuple[float, float, str]] = []
    try:
        await asyncio.gather(*(first_token(c) for c in (direct, via) for _ in range(streams)))
        for _ in range(rounds):
            for side, client in (("direct", direct), ("front", via)):
                timed = await asyncio.gather(*(first_token(client) for _ in range(streams)))
                firsts[side] += [first - sent for sent, first, _ in timed]
                last = timed if side == "front" else last
                await asyncio.sleep(0.5)
        parts: dict[str, list[float]] = {
            "submit": [], "queued": [], "vendor first chunk": [], "to the client": []
        }  # fmt: skip
        for sent, first, job_id in last:
            record = await ours.get(job_id)
            events = await ours.reader.stream_events(job_id)
            chunk = next(e for e in events if e.type is StreamEventType.CHUNK and e.delta)
            assert record.started_at is not None
            assert chunk.emitted_at is not None
            created, started = record.created_at.timestamp(), record.started_at.timestamp()
            parts["submit"].append(created - sent)
            parts["queued"].append(started - created)
            parts["vendor first chunk"].append(chunk.emitted_at - started)
            parts["to the client"].append(first - chunk.emitted_at)
    finally:
        await direct.close()
        await via.close()
        await ours.aclose()

    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:7.1f}"

    lines = [f"{streams} streams at once, {rounds} rounds per side"]
    for side, values in firsts.items():
        lines.append(f"  time to first token, {side:6}: min {ms(values, 0.0)}  p50 "
                     f"{ms(values, 0.5)}  p99 {ms(values, 0.99)} ms")  # fmt: skip
    lines.append("  the front's last round, by part (p50 / p99 ms):")
    lines += [f"    {name:19} {ms(v, 0.5)} / {ms(v, 0.99)}" for name, v in parts.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--chunk-delay", type=float, default=0.05)
    args = parser.parse_args()
    raise_open_file_limit()
    with front_stack(args.latency, args.chunk_delay) as stack:
        print(f"python {sys.version.split()[0]}, openai {openai.__version__}")
        print(asyncio.run(measure(stack.mock.url, stack.front_url, args.streams, args.rounds)))


if __name__ == "__main__":
    main()
