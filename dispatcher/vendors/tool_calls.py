"""Tool calls as vendors send them, made into our `ToolCall`s: whole, or from stream fragments.

Streamed calls come in pieces (OpenAI, Anthropic, Cohere, Bedrock): the first
fragment of a call carries its id and name, later ones only argument text.
`ToolCallAssembler` keys the pieces by the vendor's position key (never by id,
which only the first piece has), concatenates the argument text, and numbers
the calls 0..n-1 in the order they started. Arguments stay the JSON text the
model wrote; parsing is `ToolCall.parsed_arguments()`, and checking strict
schemas the runner's (`dispatcher.runner.reply_checks`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from dispatcher.errors import InvalidVendorOutput
from dispatcher.models import FunctionCall, ToolCall, ToolCallDelta

__all__ = ["ToolCallAssembler", "arguments_text", "tool_call"]


def arguments_text(value: Any) -> str:
    """A call's arguments sent as a JSON value (Anthropic's and Bedrock's `input`, Gemini's
    `args`, Ollama's `arguments`) as the compact JSON text `ToolCall` keeps; none is `{}`."""
    return json.dumps(value if value is not None else {}, separators=(",", ":"), ensure_ascii=False)


def tool_call(call_id: Any, name: Any, arguments: Any, *, vendor: str, index: int) -> ToolCall:
    """Our `ToolCall` from a vendor's pieces; a missing id is minted from the position.

    Raises:
        InvalidVendorOutput: the name is missing or not a function name we could declare.
    """
    text = arguments if isinstance(arguments, str) else ""
    try:
        return ToolCall(
            id=str(call_id) if call_id else f"call_{index}",
            function=FunctionCall(name=name, arguments=text),
        )
    except ValidationError:
        raise InvalidVendorOutput(
            f"{vendor} sent tool call {index} with a missing or invalid function name ({name!r})",
            raw_text=text,
            vendor=vendor,
        ) from None


@dataclass
class _Pending:
    index: int  # the call's place in the reply, in the order calls started
    call_id: Any = None
    name: Any = None
    arguments: list[str] = field(default_factory=list)


class ToolCallAssembler:
    """Collects streamed tool-call fragments by position key; `calls()` gives the whole calls."""

    def __init__(self, vendor: str) -> None:
        self.vendor = vendor
        self._pending: dict[Any, _Pending] = {}
        self._pieces: list[ToolCallDelta] = []

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(
        self, key: Any, *, call_id: Any = None, name: Any = None, arguments: Any = None
    ) -> None:
        """One fragment: id and name when the call starts, argument text at any time."""
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(index=len(self._pending))
        if call_id:
            pending.call_id = call_id
        if name:
            pending.name = name
        text = arguments if isinstance(arguments, str) else ""
        if text:
            pending.arguments.append(text)
        if call_id or name or text:
            self._pieces.append(
                ToolCallDelta(
                    index=pending.index,
                    id=str(call_id) if call_id else None,
                    name=name if isinstance(name, str) and name else None,
                    arguments=text,
                )
            )

    def take_pieces(self) -> tuple[ToolCallDelta, ...]:
        """The fragments added since the last take, as stream events carry them."""
        pieces, self._pieces = tuple(self._pieces), []
        return pieces

    def calls(self) -> tuple[ToolCall, ...]:
        """The assembled calls, in the order they started."""
        return tuple(
            tool_call(p.call_id, p.name, "".join(p.arguments), vendor=self.vendor, index=index)
            for index, p in enumerate(self._pending.values())
        )
