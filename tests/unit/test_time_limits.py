"""Every call ends in time: a stream has a longest run, and every bound sits below the
visibility timeout, so no message comes back while its first run still goes on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dispatcher import (
    ConfigError,
    DeadlineExceeded,
    Message,
    Request,
    Response,
    Settings,
    VendorTimeout,
)
from dispatcher.config.schema import VendorConfig
from dispatcher.models import FinishReason
from dispatcher.runner.vendor_call import call_vendor
from dispatcher.vendors.base import Health, StreamDelta, Vendor

REQUEST = Request(model="m", messages=[Message(role="user", content="hi")], stream=True)


class EndlessStream(Vendor):
    """A vendor whose stream sends a word every `every_s`, never ending (or after `words`)."""

    def __init__(self, every_s: float, words: int | None = None) -> None:
        super().__init__("endless", VendorConfig(type="openai"))
        self.every_s, self.words = every_s, words

    async def stream(
        self, request: Request, model: str | None = None
    ) -> AsyncIterator[StreamDelta]:
        sent = 0
        while self.words is None or sent < self.words:
            await asyncio.sleep(self.every_s)
            sent += 1
            yield StreamDelta(text=" word")
        yield StreamDelta(text="", finish_reason=FinishReason.STOP)

    async def complete(self, request: Request, model: str | None = None) -> Response:
        raise NotImplementedError

    async def health_check(self) -> Health:
        raise NotImplementedError


@pytest.mark.timeout(30)
async def test_a_stream_that_never_ends_is_cut_at_its_longest_run() -> None:
    with pytest.raises(VendorTimeout, match=r"the stream ran past 0.2 s"):
        await call_vendor(EndlessStream(every_s=0.01), REQUEST, "m", max_stream_s=0.2)


async def test_a_stream_within_its_longest_run_is_whole() -> None:
    reply = await call_vendor(EndlessStream(every_s=0, words=3), REQUEST, "m", max_stream_s=60)
    assert reply.content == " word word word"


def test_the_longest_stream_sits_below_the_visibility_timeout() -> None:
    for visibility in (6, 600, 3600):
        settings = Settings.load(visibility_timeout_s=visibility)
        assert 0 < settings.max_stream_s < visibility


@pytest.mark.parametrize("vendor_timeout_s", [3600, 5000])
def test_a_vendor_timeout_not_below_the_visibility_timeout_is_refused(
    vendor_timeout_s: float,
) -> None:
    vendors: dict[str, Any] = {"slow": {"type": "mock", "timeout_s": vendor_timeout_s}}
    with pytest.raises(ConfigError) as caught:
        Settings.load(vendors=vendors, visibility_timeout_s=3600)
    assert any(
        "LLMDISPATCH_VISIBILITY_TIMEOUT_S (3600 s) must exceed" in p and "slow" in p
        for p in caught.value.problems
    ), caught.value.problems


def test_a_vendor_timeout_below_the_visibility_timeout_passes() -> None:
    settings = Settings.load(vendors={"ok": {"type": "mock", "timeout_s": 59}})
    assert settings.vendors["ok"].timeout < settings.visibility_timeout_s


class SlowReply(Vendor):
    """A vendor whose plain reply takes `after_s`, a stream a word every `after_s`."""

    def __init__(self, after_s: float) -> None:
        super().__init__("slow", VendorConfig(type="openai"))
        self.after_s = after_s

    async def complete(self, request: Request, model: str | None = None) -> Response:
        await asyncio.sleep(self.after_s)
        return Response(content="late", model="m", vendor=self.name)

    async def stream(
        self, request: Request, model: str | None = None
    ) -> AsyncIterator[StreamDelta]:
        while True:
            await asyncio.sleep(self.after_s)
            yield StreamDelta(text=" word")

    async def health_check(self) -> Health:
        raise NotImplementedError


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stream", [False, True])
async def test_a_call_still_going_at_the_jobs_deadline_is_cut_there(stream: bool) -> None:
    request = REQUEST.model_copy(update={"stream": stream, "timeout_s": 0.3})
    started = time.time()

    with pytest.raises(DeadlineExceeded, match="passed during its call to slow") as caught:
        await call_vendor(SlowReply(after_s=20), request, "m", deadline=started + 0.3)

    assert not caught.value.retryable
    assert time.time() - started < 15  # cut at the deadline, not at the reply


async def test_a_call_whose_deadline_has_passed_is_not_made() -> None:
    vendor = SlowReply(after_s=20)
    with pytest.raises(DeadlineExceeded):
        await call_vendor(vendor, REQUEST, "m", deadline=time.time() - 1)


async def test_a_call_within_its_deadline_is_whole_and_its_own_timeouts_stay_its_own() -> None:
    reply = await call_vendor(SlowReply(after_s=0), REQUEST.model_copy(update={"stream": False}),
                              "m", deadline=time.time() + 60)  # fmt: skip
    assert reply.content == "late"
    with pytest.raises(VendorTimeout, match="the stream ran past") as caught:
        await call_vendor(SlowReply(after_s=0.01), REQUEST, "m", max_stream_s=0.1,
                          deadline=time.time() + 60)  # fmt: skip
    assert not isinstance(caught.value, DeadlineExceeded)
