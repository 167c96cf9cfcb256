"""The library internals we touch, exercised on the real libraries (docs/private-internals.md).

Each test here fails when a release of kombu, Celery or httpx-aiohttp changes a
private part our code relies on, before the change can break delivery in a worker.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import kombu
import pytest
import redis
from aiohttp import web
from celery.worker.consumer import Consumer
from kombu.transport import redis as kombu_redis

from dispatcher.config.schema import VendorConfig
from producer.cli.tools.embedded_redis import EmbeddedRedis
from tests.standins.server import ThreadedServer
from workers.http_transport import PairsAiohttpTransport, vendor_http_client
from workers.kombu_patches.consumer import UNDELIVERED, RestoringConsumer, keep_undelivered

pytestmark = pytest.mark.integration


class _RefusingPipeline:
    """A pipeline whose commands queue and whose `execute` finds Redis gone."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self

    def execute(self) -> None:
        raise redis.ConnectionError("Redis went away")


def test_a_popped_message_whose_record_fails_goes_back_to_its_queue_on_kombus_transport(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    keep_undelivered(kombu_redis.QoS)  # as a worker's app does (it may have, here too)
    client = redis_server.client()
    client.flushdb()
    with kombu.Connection(redis_server.url) as connection:
        queue = connection.SimpleQueue("llm.kept")
        queue.put({"job": "a"})
        qos = connection.default_channel.qos

        @contextmanager
        def refusing(pipe: Any = None) -> Iterator[_RefusingPipeline]:
            yield _RefusingPipeline()

        monkeypatch.setattr(qos, "pipe_or_acquire", refusing)
        with pytest.raises(redis.ConnectionError):
            queue.get(timeout=5)  # popped by kombu, then its unacked record fails
        monkeypatch.undo()
        assert client.llen("llm.kept") == 0, "popped: in no list now"
        assert len(UNDELIVERED) == 1

        UNDELIVERED.redo(connection)  # kombu's own `_do_restore_message`, on `message._raw`

        assert len(UNDELIVERED) == 0
        assert client.llen("llm.kept") == 1
        payload = json.loads(client.lindex("llm.kept", 0) or b"")
        assert payload["properties"]["delivery_info"]["redelivered"] is True
        again = queue.get(timeout=5)
        assert again.payload == {"job": "a"}
        again.ack()
        queue.close()
    client.flushdb()


def test_celerys_consumer_still_flushes_events_through_the_hook_we_override() -> None:
    # RestoringConsumer paces `_flush_events`; Celery must still call it, with no arguments.
    assert list(inspect.signature(Consumer._flush_events).parameters) == ["self"]
    assert "_flush_events" in inspect.getsource(Consumer.__init__)
    assert RestoringConsumer._flush_events is not Consumer._flush_events


def _echo_app() -> web.Application:
    async def echo(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = [[name, value] for name, value in request.headers.items()]
        return web.json_response(
            {"method": request.method, "body": body.decode(), "headers": headers},
            headers={"x-reply": "one", "X-Multi": "a"},
        )

    async def chunks(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for word in ("alpha ", "beta ", "gamma"):
            await response.write(word.encode())
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_get("/chunks", chunks)
    return app


async def test_the_workers_transport_sends_headers_bodies_and_streams_through_aiohttp() -> None:
    with ThreadedServer(_echo_app()) as server:
        client = vendor_http_client(VendorConfig(type="openai", base_url=f"{server.url}/v1"))
        # The transport under test, not httpx's default one (httpx keeps it private).
        assert isinstance(client._transport, PairsAiohttpTransport)
        async with client:
            reply = await client.post(
                f"{server.url}/echo",
                content=b'{"q": 1}',
                headers=[("X-Dup", "1"), ("X-Dup", "2"), ("Authorization", "Bearer k")],
            )
            assert reply.status_code == 200
            assert reply.headers["x-reply"] == "one"
            sent = reply.json()
            assert sent["body"] == '{"q": 1}'
            assert ["X-Dup", "1"] in sent["headers"]
            assert ["X-Dup", "2"] in sent["headers"]
            assert ["Authorization", "Bearer k"] in sent["headers"]

            async def streamed_body() -> Any:
                yield b"part-1,"
                yield b"part-2"

            reply = await client.post(f"{server.url}/echo", content=streamed_body())
            assert reply.json()["body"] == "part-1,part-2"

            async with client.stream("GET", f"{server.url}/chunks") as streamed:
                text = "".join([chunk async for chunk in streamed.aiter_text()])
            assert text == "alpha beta gamma"


async def test_the_workers_transport_maps_aiohttp_failures_to_httpx_errors() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/slow", slow)
    with ThreadedServer(app) as server:
        config = VendorConfig(type="openai", base_url=f"{server.url}/v1", timeout_s=0.3)
        async with vendor_http_client(config) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get(f"{server.url}/slow")
        closed_port = server.port
    async with vendor_http_client(VendorConfig(type="openai")) as client:
        # httpx-aiohttp 0.2 maps a refused connection to ConnectTimeout: a transport error
        # all the same, which the vendor client turns into a retryable failure.
        with pytest.raises(httpx.TransportError):
            await client.get(f"http://127.0.0.1:{closed_port}/gone")
