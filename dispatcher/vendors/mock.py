"""A deterministic stand-in vendor, in process or over HTTP (`producer.cli.tools.standin`).

The reply is predictable so tests can assert exact values; the stand-in server
answers every wire format with these same replies:

- the reply is ``"echo: "`` + the text of the last user message;
- a stop sequence found in the reply cuts it just before the match (finish ``stop``);
- ``max_tokens`` truncates the reply to that many words (finish ``length``);
- prompt tokens are the whitespace-separated words of all input text, completion
  tokens the words of the reply actually returned;
- a stream sends words with their leading whitespace, so the chunks concatenate
  to exactly the reply.

`MockBehaviour` adds latency and injected failures. Failures are drawn from a
`random.Random` seeded per vendor, so a run with the same seed and the same call
order fails on the same calls.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Self

import httpx
from pydantic import ConfigDict, Field, model_validator

from dispatcher.config.schema import VendorConfig
from dispatcher.errors import (
    DispatcherError,
    StreamBroken,
    VendorRateLimited,
    VendorTimeout,
    VendorUnavailable,
)
from dispatcher.models import (
    FinishReason,
    HealthStatus,
    Request,
    Response,
    Role,
    StrictModel,
    Usage,
)
from dispatcher.vendors.base import Health, StreamDelta, Vendor

__all__ = [
    "FAILURE_KINDS",
    "REPLY_PREFIX",
    "FailureKind",
    "MockAnswer",
    "MockBehaviour",
    "MockVendor",
    "compose_answer",
    "count_words",
    "mock_answer",
    "mock_reply",
    "split_into_chunks",
    "split_words",
]

REPLY_PREFIX = "echo: "

FailureKind = Literal["rate_limited", "server_error", "timeout", "midstream_drop"]
FAILURE_KINDS: frozenset[FailureKind] = frozenset(
    {"rate_limited", "server_error", "timeout", "midstream_drop"}
)

# Real vendors commonly ask for a one-second pause on a 429; so does the fake server.
DEFAULT_RETRY_AFTER_S = 1.0

# A word with the whitespace before it; trailing whitespace sticks to the last word.
_WORD = re.compile(r"\s*\S+(?:\s+\Z)?|\s+\Z")


def split_words(text: str) -> list[str]:
    """`text` as words, each with its leading whitespace; they concatenate to `text`."""
    return _WORD.findall(text)


def count_words(text: str) -> int:
    """The whitespace-separated words in `text`: the mock's token count."""
    return len(text.split())


def split_into_chunks(text: str, chunk_count: int | None = None) -> list[str]:
    """`text` as stream chunks that concatenate to exactly `text`.

    `chunk_count` None gives one chunk per word (with its leading whitespace);
    otherwise the words are spread as evenly as possible over at most
    `chunk_count` chunks, never splitting a word, so a short text gets fewer.
    """
    if chunk_count is not None and chunk_count < 1:
        raise ValueError(f"chunk_count must be at least 1, got {chunk_count}")
    words = split_words(text)
    if chunk_count is None or chunk_count >= len(words):
        return words
    size, extra = divmod(len(words), chunk_count)
    chunks: list[str] = []
    start = 0
    for index in range(chunk_count):
        end = start + size + (1 if index < extra else 0)
        chunks.append("".join(words[start:end]))
        start = end
    return chunks


def _reply_to(messages: Sequence[tuple[str, str]]) -> str:
    last_user = next((text for role, text in reversed(messages) if role == Role.USER), "")
    return REPLY_PREFIX + last_user


def mock_reply(request: Request) -> str:
    """The whole reply to `request` before any stop sequence or `max_tokens` applies."""
    return _reply_to([(message.role.value, message.text) for message in request.messages])


@dataclass(frozen=True)
class MockAnswer:
    """The reply actually returned, why it ended, and the token counts."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int

    @property
    def usage(self) -> Usage:
        """The token counts as our `Usage`."""
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens)


def compose_answer(
    messages: Sequence[tuple[str, str]],
    *,
    max_tokens: int | None = None,
    stop: Iterable[str] = (),
) -> MockAnswer:
    """The answer to `messages`, given as (role, text) pairs; the server and the vendor share it."""
    text = _reply_to(messages)
    reason = FinishReason.STOP
    cuts = [index for index in (text.find(s) for s in stop if s) if index >= 0]
    if cuts:
        text = text[: min(cuts)]
    if max_tokens is not None:
        words = split_words(text)
        if len(words) > max_tokens:
            text, reason = "".join(words[:max_tokens]), FinishReason.LENGTH
    return MockAnswer(
        text=text,
        finish_reason=reason,
        prompt_tokens=sum(count_words(content) for _, content in messages),
        completion_tokens=count_words(text),
    )


def mock_answer(request: Request) -> MockAnswer:
    """The answer to `request`, honouring its stop sequences and `max_tokens`."""
    return compose_answer(
        [(message.role.value, message.text) for message in request.messages],
        max_tokens=request.max_tokens,
        stop=request.stop or (),
    )


class MockBehaviour(StrictModel):
    """How the mock vendor (or the mock server) paces its replies and how often it fails."""

    model_config = ConfigDict(frozen=True)

    time_to_first_token_s: float = Field(default=0.0, ge=0.0)
    chunk_delay_s: float = Field(default=0.0, ge=0.0, description="Between stream chunks.")
    chunk_count: int | None = Field(
        default=None, gt=0, description="Chunks per reply; None: one chunk per word."
    )
    failure_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of calls failed.")
    failure_kinds: frozenset[FailureKind] = Field(
        default=FAILURE_KINDS, description="Failures drawn from, with equal odds."
    )
    retry_after_s: float = Field(
        default=DEFAULT_RETRY_AFTER_S, ge=0.0, description="Carried by an injected rate limit."
    )
    seed: int | None = Field(
        default=None, description="Seeds the failure draws; None: derived from the vendor name."
    )

    @model_validator(mode="after")
    def _failures_have_a_kind(self) -> Self:
        if self.failure_rate > 0 and not self.failure_kinds:
            raise ValueError("failure_kinds must name at least one kind when failure_rate > 0")
        return self

    def draw_failure(self, rng: random.Random) -> FailureKind | None:
        """The failure to inject into the next call, or None; one draw per call."""
        if self.failure_rate <= 0 or rng.random() >= self.failure_rate:
            return None
        return rng.choice(sorted(self.failure_kinds))


class MockVendor(Vendor):
    """An in-process vendor with no HTTP: echoes the prompt, paced and failing as configured.

    Built by the registry as `MockVendor(name, config, client)`; `client` is
    accepted for that signature and unused. Tests pass `behaviour=` for
    latency and failures; the default answers at once and never fails.
    """

    def __init__(
        self,
        name: str,
        config: VendorConfig,
        client: httpx.AsyncClient | None = None,
        *,
        behaviour: MockBehaviour | None = None,
    ) -> None:
        super().__init__(name, config)
        self.behaviour = behaviour or MockBehaviour()
        seed = self.behaviour.seed
        # A string seed is hashed the same way in every process, unlike hash(name).
        self._random = random.Random(name if seed is None else seed)

    async def complete(self, request: Request, model: str | None = None) -> Response:
        model = model or request.model
        started = time.perf_counter()
        behaviour = self.behaviour
        failure = behaviour.draw_failure(self._random)
        if failure is not None and failure != "midstream_drop":
            raise self._injected(failure)
        answer = mock_answer(request)
        chunks = split_into_chunks(answer.text, behaviour.chunk_count)
        await _pause(behaviour.time_to_first_token_s)
        if failure == "midstream_drop":
            # What an HTTP client sees when the body stops halfway: the vendor is unreachable.
            raise VendorUnavailable(
                "the mock vendor dropped the connection mid-reply (injected failure); retry",
                vendor=self.name,
            )
        await _pause(behaviour.chunk_delay_s * max(0, len(chunks) - 1))
        usage = answer.usage
        return Response(
            content=answer.text,
            usage=usage,
            model=model,
            vendor=self.name,
            finish_reason=answer.finish_reason,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            cost_usd=self.cost_of(usage, model),
            vendor_finish_reason=answer.finish_reason.value,
        )

    async def stream(
        self, request: Request, model: str | None = None
    ) -> AsyncIterator[StreamDelta]:
        model = model or request.model
        failure = self.behaviour.draw_failure(self._random)
        if failure is not None and failure != "midstream_drop":
            raise self._injected(failure)
        answer = mock_answer(request)
        chunks = split_into_chunks(answer.text, self.behaviour.chunk_count)
        # Half the chunks (at least one, so the break is really partial) before the drop.
        cut = max(1, len(chunks) // 2) if failure == "midstream_drop" else None
        await _pause(self.behaviour.time_to_first_token_s)
        for index, chunk in enumerate(chunks):
            if index:
                await _pause(self.behaviour.chunk_delay_s)
            yield StreamDelta(text=chunk)
            if cut is not None and index + 1 >= cut:
                raise StreamBroken(
                    f"the mock stream broke off after {cut} of {len(chunks)} chunks "
                    "(injected failure); the text so far is not an answer",
                    partial=True,
                    vendor=self.name,
                )
        yield StreamDelta(
            finish_reason=answer.finish_reason,
            usage=answer.usage,
            vendor_finish_reason=answer.finish_reason.value,
            model=model,
        )

    async def health_check(self) -> Health:
        return Health(status=HealthStatus.HEALTHY, latency_ms=0.0)

    def _injected(self, kind: FailureKind) -> DispatcherError:
        """The typed error for an injected failure that happens before any output."""
        if kind == "rate_limited":
            return VendorRateLimited(
                f"the mock vendor is rate limiting (injected failure); "
                f"retry after {self.behaviour.retry_after_s:g} s",
                retry_after_s=self.behaviour.retry_after_s,
                vendor=self.name,
            )
        if kind == "timeout":
            return VendorTimeout(
                "the mock vendor did not answer in time (injected failure); retry",
                vendor=self.name,
            )
        return VendorUnavailable(
            "the mock vendor failed with a server error (injected failure); retry",
            vendor=self.name,
            status_code=500,
        )


async def _pause(seconds: float) -> None:
    # Zero delay is the default: skip the sleep rather than yield to the loop on every chunk.
    if seconds > 0:
        await asyncio.sleep(seconds)
