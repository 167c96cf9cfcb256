"""The stand-in vendor's fault vocabulary: header values, prompt markers and `@N` limits."""

from __future__ import annotations

import pytest

from producer.cli.tools.standin.faults import FaultCounts, fault_for_kind, parse_fault


def test_a_header_value_combines_faults_and_the_first_status_wins() -> None:
    fault = parse_fault("slow:250, 503, 429, retry-after:2.5, midstream-error")
    assert fault is not None
    assert (fault.slow_s, fault.status, fault.retry_after_s) == (0.25, 503, 2.5)
    assert fault.stream_error
    assert fault.refuses


def test_an_empty_value_asks_for_no_fault() -> None:
    assert parse_fault("") is None
    assert parse_fault(" , ") is None


@pytest.mark.parametrize("value", ["meltdown", "stall:soon", "200", "429@once"])
def test_an_unknown_value_is_refused_with_the_accepted_ones(value: str) -> None:
    with pytest.raises(ValueError, match=r"accepted|milliseconds|@N"):
        parse_fault(value)


def test_at_n_applies_a_fault_to_the_first_n_requests_with_that_header() -> None:
    counts = FaultCounts()
    statuses = [counts.fault_of("429@2,slow:10", b"")[0] for _ in range(3)]
    assert [f.status if f else None for f in statuses] == [429, 429, None]
    assert all(f is not None and f.slow_s == 0.01 for f in statuses)


def test_a_prompt_marker_is_counted_by_its_whole_text() -> None:
    counts = FaultCounts()

    def status(body: bytes) -> int | None:
        fault, _ = counts.fault_of("", body)
        return fault.status if fault else None

    item_1 = b'{"content": "hi [fault:500@1 item-1]"}'
    item_2 = b'{"content": "hi [fault:500@1 item-2]"}'
    assert [status(item_1), status(item_2), status(item_1)] == [500, 500, None]
    counts.clear()
    assert status(item_1) == 500


def test_a_vendor_that_is_down_answers_503() -> None:
    fault, named = FaultCounts().fault_of("", b"{}", down=True)
    assert fault is not None
    assert (fault.status, named) == (503, ["503"])


def test_the_server_wide_failure_kinds_map_onto_the_vocabulary() -> None:
    assert fault_for_kind("rate_limited").status == 429
    assert fault_for_kind("server_error").status == 500
    assert fault_for_kind("timeout").hang
    assert fault_for_kind("midstream_drop").drop
