"""What callers import: the client (submit, get, wait, stream, ...); the CLI is `producer.cli`.

`submit`, `get`, `wait` and `cancel` use a default `Client` built from the
environment on first use; build a `Client` (or, in asyncio code, an
`AsyncClient`) yourself to choose its settings or share its connections.
`text_of(events)` is the reply a stream's events spell, `tool_calls_of(events)`
its tool calls.
"""

from producer.async_client import AsyncClient
from producer.client import Client
from producer.shortcuts import cancel, default_client, get, submit, wait
from producer.streaming import text_of, tool_calls_of

__all__ = [
    "AsyncClient",
    "Client",
    "cancel",
    "default_client",
    "get",
    "submit",
    "text_of",
    "tool_calls_of",
    "wait",
]
