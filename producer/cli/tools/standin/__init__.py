"""The stand-in vendor: one loopback server speaking every vendor's wire format.

Used by `llmdispatch demo`, `llmdispatch mock-server`, the benchmarks and the
tests. `server` serves it (one asyncio loop) with `options`, `api` handles its requests,
`replies` makes its deterministic answers, `faults` reads the one fault
vocabulary (the `x-fake-fault` header and `[fault:...]` prompt markers), and
`openai`, `anthropic`, `gemini`, `ollama`, `cohere`, `bedrock` speak one wire format each.
"""

from producer.cli.tools.standin.faults import FAULT_HEADER, Fault, parse_fault
from producer.cli.tools.standin.options import StandInOptions
from producer.cli.tools.standin.server import (
    API_KEY,
    DEFAULT_PORT,
    StandInServer,
    create_app,
    raise_open_file_limit,
    run,
)

__all__ = [
    "API_KEY",
    "DEFAULT_PORT",
    "FAULT_HEADER",
    "Fault",
    "StandInOptions",
    "StandInServer",
    "create_app",
    "parse_fault",
    "raise_open_file_limit",
    "run",
]
