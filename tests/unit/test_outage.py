"""Riding out a Redis outage: wait until it answers, then run the step again."""

from __future__ import annotations

import pytest
import redis

from dispatcher.runner.outage import OutagePolicy, through_outages


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def policy(clock: FakeClock, **overrides: float) -> OutagePolicy:
    return OutagePolicy(clock=clock, sleep=clock.sleep, **overrides)  # type: ignore[arg-type]


def test_a_step_that_meets_an_outage_runs_again_as_a_repeat_once_redis_answers() -> None:
    clock = FakeClock()
    runs: list[bool] = []
    answers = iter([False, False, True])

    def run(again: bool) -> str:
        runs.append(again)
        if len(runs) == 1:
            raise redis.ConnectionError("Connection reset by peer")
        return "done"

    assert through_outages(run, lambda: next(answers), policy(clock)) == "done"
    assert runs == [False, True]
    assert clock.sleeps == [0.1, 0.2]  # probes back off until Redis answers


def test_probes_back_off_to_the_longest_pause_and_give_up_after_the_bound() -> None:
    clock = FakeClock()

    def run(_again: bool) -> None:
        raise redis.TimeoutError("Timeout reading from socket")

    with pytest.raises(redis.TimeoutError):
        through_outages(run, lambda: False, policy(clock, give_up_after_s=10.0))
    assert max(clock.sleeps) == 2.0
    assert 10.0 <= clock.now < 12.0


def test_a_probe_that_raises_counts_as_no_answer() -> None:
    clock = FakeClock()
    probes = iter([redis.ConnectionError("refused"), True])
    runs: list[bool] = []

    def reachable() -> bool:
        answer = next(probes)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def run(again: bool) -> int:
        runs.append(again)
        if not again:
            raise redis.ConnectionError("refused")
        return 7

    assert through_outages(run, reachable, policy(clock)) == 7
    assert runs == [False, True]


def test_other_errors_go_out_at_once_without_waiting() -> None:
    clock = FakeClock()

    def run(_again: bool) -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        through_outages(run, lambda: True, policy(clock))
    assert clock.sleeps == []


def test_an_outage_that_keeps_coming_back_is_given_up_after_max_repeats() -> None:
    clock = FakeClock()
    runs: list[bool] = []

    def run(again: bool) -> None:
        runs.append(again)
        raise redis.ConnectionError("flapping")

    with pytest.raises(redis.ConnectionError):
        through_outages(run, lambda: True, policy(clock, max_repeats=3))
    assert runs == [False, True, True, True]
