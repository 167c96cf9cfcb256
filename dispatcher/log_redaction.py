"""Masks secrets in log records, including the tracebacks they carry.

Our own messages are redacted where they are made (`DispatcherError`), but
libraries log by themselves: Celery logs a task's exception with its
traceback, httpx and aiohttp exceptions name the URL they failed on (a Gemini
URL carries `?key=`). `RedactingFilter`, attached to a handler, renders each
record's message and traceback once and masks them with `redaction.redact`
before any formatter sees them.

Workers install it on every handler Celery sets up (`workers.app`); a producer
process can call `install_log_redaction()` on its own handlers.
"""

from __future__ import annotations

import logging

from dispatcher.redaction import redact

__all__ = ["RedactingFilter", "install_log_redaction"]

_FORMATTER = logging.Formatter()


class RedactingFilter(logging.Filter):
    """Replaces a record's message, arguments and traceback with their redacted text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> int:
    """Attach one `RedactingFilter` to every handler of `logger` (default: root); how many."""
    target = logger or logging.getLogger()
    added = 0
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
            added += 1
    return added
