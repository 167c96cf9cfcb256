"""Every time bound holds over real HTTP, through the worker's own transport.

A reply trickled a byte at a time never outlives the vendor's `timeout_s`:
the transport's timeouts bound each read; the vendor client bounds the call.
A job's deadline cuts its call in flight, on a real worker.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp import web

from dispatcher import DeadlineExceeded, JobEventKind, JobStatus, Message, Request, VendorTimeout
from dispatcher.config.schema import VendorConfig
from dispatcher.vendors import build_vendor
from producer import Client
from tests.integration.stack import running_stack
from tests.standins.server import ThreadedServer
from workers.http_transport import vendor_http_client

pytestmark = pytest.mark.integration

REPLY = (
    b'{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,'
    b'"total_tokens":2}}'
)


def trickling_vendor(byte_every_s: float) -> web.Application:
    """An OpenAI-format server that sends its reply one byte at a time."""

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(REPLY)
        await response.prepare(request)
        for index in range(len(REPLY)):
            await response.write(REPLY[index : index + 1])
            await asyncio.sleep(byte_every_s)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


def openai_at(url: str, timeout_s: float) -> VendorConfig:
    return VendorConfig(
        type="openai", base_url=f"{url}/v1", api_key="k-0123456789abcdef", timeout_s=timeout_s
    )


REQUEST = Request(model="gpt-4o-mini", messages=[Message(role="user", content="hi")])


async def test_a_reply_trickled_a_byte_at_a_time_is_cut_at_the_calls_timeout() -> None:
    # Every byte arrives well within a read timeout; the whole reply would take ~10 s.
    with ThreadedServer(trickling_vendor(byte_every_s=0.05)) as server:
        config = openai_at(server.url, timeout_s=1)
        async with vendor_http_client(config) as client:
            vendor = build_vendor("openai", config, client)
            started = time.monotonic()
            with pytest.raises(VendorTimeout, match=r"no whole answer within 1 s \(timeout_s\)"):
                await vendor.complete(REQUEST)
        # Bounded by the timeout, not by the reply's 10 s (a generous margin for a busy CI).
        assert time.monotonic() - started < 5


async def test_a_reply_within_the_timeout_is_whole() -> None:
    with ThreadedServer(trickling_vendor(byte_every_s=0.0)) as server:
        config = openai_at(server.url, timeout_s=10)
        async with vendor_http_client(config) as client:
            reply = await build_vendor("openai", config, client).complete(REQUEST)
        assert reply.content == "hi"


@pytest.mark.timeout(240)
def test_a_jobs_deadline_cuts_its_call_in_flight_on_a_real_worker(tmp_path: Path) -> None:
    # The stand-in answers after 30 s, the vendor's own timeout is 60 s: only the job's
    # 4 s deadline can end the call before either.
    with running_stack(tmp_path) as stack:
        stack.configure(
            {
                "vendors": {
                    "primary": {
                        "type": "openai",
                        "base_url": "{url}/v1",
                        "api_key": "${OPENAI_API_KEY}",
                        "timeout_s": 60,
                    }
                },
                "default_vendor": "primary",
            },
            OPENAI_API_KEY="sk-deadline-test-0123456789",
            LLMDISPATCH_HEALTH_CHECK_INTERVAL_S="0",
        )
        stack.start_worker(["llm.primary"], concurrency=4)
        with stack.environment(), Client.from_env() as client:
            prompt = "[fault:slow:30000 deadline-1]"
            job_id = client.submit(
                {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}],
                 "timeout_s": 4}
            )  # fmt: skip
            with pytest.raises(DeadlineExceeded):
                client.wait(job_id, timeout_s=60)
            record = client.get(job_id)

    assert record.status is JobStatus.FAILED
    assert record.error is not None
    assert record.error.kind == "deadline_exceeded"
    assert "passed during its call to primary; the call was cut" in record.error.message
    assert record.finished_at is not None
    # Cut at the deadline, long before the reply (30 s) or the vendor's timeout (60 s).
    assert (record.finished_at - record.created_at).total_seconds() < 20
    assert [e.kind for e in record.events].count(JobEventKind.RETRY) == 0
