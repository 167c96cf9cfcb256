"""The floor under any HTTP front: a bare pass-through proxy, the baseline of bench/http_front.py.

A raw ASGI app on uvicorn (uvloop and httptools, as `llmdispatch serve` runs)
that forwards each request's body to the mock over one shared aiohttp session
and answers the mock's reply unchanged, streamed replies chunk by chunk. No
framework, no validation, no queue, no Redis: whatever it adds to the SDK's
latency at 200 concurrent on these two cores, any HTTP front in Python adds at
least. Run by the benchmark as

    python bench/bare_proxy.py --port PORT --upstream http://127.0.0.1:MOCK/v1
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn

Scope = dict[str, Any]


class BareProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/").removesuffix("/v1")
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    connector = aiohttp.TCPConnector(limit=0)
                    self.session = aiohttp.ClientSession(connector=connector)
                    await send({"type": "lifespan.startup.complete"})
            if self.session is not None:
                await self.session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        assert self.session is not None
        async with self.session.request(
            scope["method"],
            self.upstream + scope["path"],
            data=body,
            headers={"content-type": "application/json", "authorization": "Bearer unused"},
        ) as reply:
            headers = [(b"content-type", reply.headers["content-type"].encode())]
            await send({"type": "http.response.start", "status": reply.status, "headers": headers})
            async for chunk in reply.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the mock's base URL, .../v1")
    args = parser.parse_args()
    uvicorn.run(
        BareProxy(args.upstream),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
