"""AWS event-stream framing (`application/vnd.amazon.eventstream`), as Bedrock streams it.

Each message is, big-endian throughout::

    total length (4) | headers length (4) | prelude CRC32 (4, of the 8 bytes before)
    headers | payload | message CRC32 (4, of every byte before it)

A header is a 1-byte name length, the name, a 1-byte value type and the value:
0 true, 1 false (no value), 2 byte, 3 short, 4 int, 5 long, 6 bytes and 7 string
(each after a 2-byte length), 8 timestamp (ms, 8 bytes), 9 uuid (16 bytes).
`:message-type` is `event` (named by `:event-type`), `exception` (named by
`:exception-type`) or `error` (`:error-code`, `:error-message`).

`EventStreamDecoder` takes the body's bytes in whatever chunks they arrive and
yields whole messages; a CRC that does not match, or a body that ends inside a
message, is a `StreamBroken` (retryable): the reply cannot be trusted past it.
`encode_message` writes a message, for tests and the stand-in.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from dispatcher.errors import StreamBroken

__all__ = ["EventMessage", "EventStreamDecoder", "encode_message"]

# 4 + 4 bytes of lengths and their CRC32.
PRELUDE_LENGTH = 12
# The prelude and the message CRC32 of a message with no headers and no payload.
MIN_MESSAGE_LENGTH = PRELUDE_LENGTH + 4
# AWS caps a message at 16 MiB (and its headers at 128 KiB): past that, the framing is lost.
MAX_MESSAGE_LENGTH = 16 * 1024 * 1024
MAX_HEADERS_LENGTH = 128 * 1024

# Fixed-size header values by type: struct format.
_FIXED = {2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}


@dataclass(frozen=True)
class EventMessage:
    """One decoded message: its headers and its payload bytes."""

    headers: dict[str, Any] = field(default_factory=dict)
    payload: bytes = b""

    @property
    def message_type(self) -> str:
        """`event`, `exception` or `error` (`event` when the header is missing)."""
        return str(self.headers.get(":message-type") or "event")

    @property
    def event_type(self) -> str:
        """The name of the event or exception (`:event-type`, `:exception-type`, `:error-code`)."""
        for name in (":event-type", ":exception-type", ":error-code"):
            value = self.headers.get(name)
            if value:
                return str(value)
        return ""


class EventStreamDecoder:
    """Whole messages from a body's bytes, fed in chunks of any size."""

    def __init__(self, vendor: str = "") -> None:
        self.vendor = vendor
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[EventMessage]:
        """The messages `chunk` completed, in order.

        Raises:
            StreamBroken: a prelude or message CRC32 does not match, or a length is impossible.
        """
        self._buffer += chunk
        messages = []
        while len(self._buffer) >= PRELUDE_LENGTH:
            total, headers_length, prelude_crc = struct.unpack_from(">III", self._buffer)
            if zlib.crc32(self._buffer[:8]) != prelude_crc:
                raise self._broken("a message's prelude CRC32 does not match")
            if not MIN_MESSAGE_LENGTH <= total <= MAX_MESSAGE_LENGTH or (
                headers_length > min(MAX_HEADERS_LENGTH, total - MIN_MESSAGE_LENGTH)
            ):
                raise self._broken(f"a message claims an impossible length ({total} bytes)")
            if len(self._buffer) < total:
                break
            frame = bytes(self._buffer[:total])
            del self._buffer[:total]
            (message_crc,) = struct.unpack_from(">I", frame, total - 4)
            if zlib.crc32(frame[:-4]) != message_crc:
                raise self._broken("a message's CRC32 does not match")
            end_of_headers = PRELUDE_LENGTH + headers_length
            headers = self._headers(frame[PRELUDE_LENGTH:end_of_headers])
            messages.append(EventMessage(headers, frame[end_of_headers:-4]))
        return messages

    def close(self) -> None:
        """Say the body has ended.

        Raises:
            StreamBroken: the body ended inside a message.
        """
        if self._buffer:
            raise self._broken(
                f"the body ended inside a message ({len(self._buffer)} bytes of it arrived)"
            )

    def _headers(self, data: bytes) -> dict[str, Any]:
        headers: dict[str, Any] = {}
        at = 0
        try:
            while at < len(data):
                name_length = data[at]
                name = data[at + 1 : at + 1 + name_length].decode("utf-8")
                at += 1 + name_length
                kind = data[at]
                at += 1
                value: Any
                if kind in (0, 1):
                    value = kind == 0
                elif kind in _FIXED:
                    (value,) = struct.unpack_from(_FIXED[kind], data, at)
                    at += struct.calcsize(_FIXED[kind])
                elif kind in (6, 7):
                    (length,) = struct.unpack_from(">H", data, at)
                    raw = data[at + 2 : at + 2 + length]
                    if len(raw) != length:
                        raise ValueError("a header value runs past the headers")
                    value = raw.decode("utf-8") if kind == 7 else raw
                    at += 2 + length
                elif kind == 9:
                    value = data[at : at + 16]
                    at += 16
                else:
                    raise ValueError(f"unknown header value type {kind}")
                headers[name] = value
        except (IndexError, struct.error, UnicodeDecodeError, ValueError) as exc:
            raise self._broken(f"a message's headers do not parse ({exc})") from None
        return headers

    def _broken(self, what: str) -> StreamBroken:
        return StreamBroken(
            f"the event stream is corrupt: {what}; the reply is incomplete",
            vendor=self.vendor or None,
        )


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One message with string headers, framed and checksummed as AWS frames it."""
    encoded = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded += struct.pack(">B", len(raw_name)) + raw_name
        encoded += struct.pack(">BH", 7, len(raw_value)) + raw_value
    total = PRELUDE_LENGTH + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + encoded + payload
    return body + struct.pack(">I", zlib.crc32(body))
