"""What callers import: the client (submit, get, wait, stream, ...); the CLI is `producer.cli`.

`submit`, `get`, `wait` and `cancel` use a default `Client` built from the
environment on first use; build a `Client` (or, in asyncio code, an
`AsyncClient`) yourself to choose its settings or share its connections.
`text_of(events)` is the reply a stream's events spell.
"""

from producer.async_client import AsyncClient
from producer.client import Client, cancel, default_client, get, submit, text_of, wait

__all__ = [
    "AsyncClient",
    "Client",
    "cancel",
    "default_client",
    "get",
    "submit",
    "text_of",
    "wait",
]
