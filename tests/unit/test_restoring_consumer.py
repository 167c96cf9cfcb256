"""The countdown messages a lost connection drops are noted, then restored after the reconnect."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from celery.worker import state

from workers.consumer import dropped_countdown_tags, restore


@dataclass(eq=False)
class FakeMessage:
    delivery_tag: str


@dataclass(eq=False)
class FakeRequest:
    message: FakeMessage
    acknowledged: bool = False


@pytest.fixture
def requests() -> Iterator[list[FakeRequest]]:
    """Requests held in Celery's worker state for the test; the sets are emptied after."""
    held: list[FakeRequest] = []
    yield held
    for request in held:
        for requests_set in (
            state.scheduled_requests,
            state.active_requests,
            state.reserved_requests,
        ):
            requests_set.discard(request)


def hold(held: list[FakeRequest], tag: str, *sets: Any, acknowledged: bool = False) -> None:
    request = FakeRequest(FakeMessage(tag), acknowledged=acknowledged)
    held.append(request)
    for requests_set in sets:
        requests_set.add(request)


def test_only_waiting_unacknowledged_countdowns_count_as_dropped(
    requests: list[FakeRequest],
) -> None:
    hold(requests, "waiting", state.scheduled_requests)
    hold(requests, "running", state.scheduled_requests, state.active_requests)
    hold(requests, "due", state.scheduled_requests, state.reserved_requests)
    hold(requests, "acked", state.scheduled_requests, acknowledged=True)
    hold(requests, "plain", state.reserved_requests)
    assert dropped_countdown_tags() == ["waiting"]


@dataclass
class FakeQos:
    fail_from: int | None = None
    restored: list[str] = field(default_factory=list)

    def restore_by_tag(self, tag: str, leftmost: bool = False) -> None:
        assert leftmost
        if self.fail_from is not None and len(self.restored) >= self.fail_from:
            raise redis.ConnectionError("Connection refused")
        self.restored.append(tag)


@dataclass
class FakeChannel:
    qos: FakeQos


@dataclass
class FakeConnection:
    default_channel: FakeChannel
    connection_errors: tuple[type[BaseException], ...] = (redis.ConnectionError,)


def test_restore_puts_every_tag_back_in_its_queue() -> None:
    qos = FakeQos()
    assert restore(FakeConnection(FakeChannel(qos)), ["a", "b", "c"]) == []
    assert qos.restored == ["a", "b", "c"]


def test_tags_not_restored_when_redis_goes_again_are_kept_for_the_next_connect() -> None:
    qos = FakeQos(fail_from=1)
    assert restore(FakeConnection(FakeChannel(qos)), ["a", "b", "c"]) == ["b", "c"]
    assert qos.restored == ["a"]
