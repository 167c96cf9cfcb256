"""Secrets in log records, their arguments and their tracebacks are masked before formatting."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator

import pytest

from dispatcher.log_redaction import RedactingFilter, install_log_redaction
from dispatcher.redaction import MASK, register_secret
from workers.app import redact_logs

SECRET = "zq-log-secret-0123456789abcdef"


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose one handler writes formatted records to a string, with the filter."""
    register_secret(SECRET)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    # A name no other test has used: an object's id may be reused once it is freed, and
    # a logger outlives its test (other tests may have given it handlers of their own).
    logger = logging.getLogger(f"test-log-redaction-{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    assert install_log_redaction(logger) == 1
    yield logger, stream
    logger.removeHandler(handler)


def test_a_secret_in_the_message_or_its_arguments_is_masked(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    logger.warning("calling https://vendor.example/v1?key=%s now", SECRET)
    logger.info(f"Authorization: Bearer {SECRET}")
    text = stream.getvalue()
    assert SECRET not in text
    assert text.count(MASK) == 2
    assert "calling https://vendor.example/v1?key=" in text


def test_a_secret_in_a_traceback_is_masked(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    try:
        raise ConnectionError(f"could not reach https://vendor.example/?key={SECRET}")
    except ConnectionError:
        logger.exception("task failed")
    text = stream.getvalue()
    assert "Traceback (most recent call last)" in text
    assert "ConnectionError: could not reach" in text
    assert SECRET not in text


def test_installing_twice_adds_one_filter() -> None:
    logger = logging.getLogger("test-log-redaction-twice")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        assert install_log_redaction(logger) == 1
        assert install_log_redaction(logger) == 0
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    finally:
        logger.removeHandler(handler)


def test_the_worker_installs_it_on_the_loggers_celery_sets_up() -> None:
    logger = logging.getLogger("test-log-redaction-worker")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        redact_logs(logger=logger)
        assert any(isinstance(f, RedactingFilter) for f in handler.filters)
    finally:
        logger.removeHandler(handler)
