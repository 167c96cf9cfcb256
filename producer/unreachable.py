"""Turns "Redis did not answer" into one clear, typed error for the producer's caller.

A producer must not hang, nor see a transport's traceback, when Redis is down
or restarting: the client's sockets time out (`redis_pool_options`), and every
public method of `Client` and `AsyncClient` is wrapped by `reaching_redis` so
that redis-py's and kombu's connection errors become `StoreUnavailable`, which
names the server (password masked) and says that retrying later may help.
Iterators the methods return (streams, batch results) are wrapped too, since
their errors come while they are read.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any, TypeVar, cast

import kombu.exceptions
import redis

from dispatcher.errors import StoreUnavailable
from dispatcher.redaction import redact

__all__ = ["UNREACHABLE", "reaching_redis", "unavailable"]

# What redis-py and kombu raise when the server is down, restarting or out of reach.
UNREACHABLE: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    kombu.exceptions.OperationalError,
)

F = TypeVar("F", bound=Callable[..., Any])


def unavailable(
    redis_url: str,
    exc: BaseException,
    *,
    left: str = "",
    job_id: str | None = None,
    batch_id: str | None = None,
    may_have_been_written: bool = False,
) -> StoreUnavailable:
    """The error a caller sees for `exc`, naming the server but never its password.

    `left` says what the failed call may have left written, and how to find it;
    `may_have_been_written` whether the write went out before the reply was lost.
    """
    where = redact(redis_url.split("?", 1)[0])
    if isinstance(exc, redis.AuthenticationError):
        return StoreUnavailable(
            f"Redis at {where} refused our credentials ({exc}); check the password in REDIS_URL",
            job_id=job_id,
            batch_id=batch_id,
        )
    return StoreUnavailable(
        f"Redis at {where} is unreachable ({type(exc).__name__}: {exc}); "
        "it holds the job store and the queues, so try again once it answers"
        + (f"; {left}" if left else ""),
        job_id=job_id,
        batch_id=batch_id,
        may_have_been_written=may_have_been_written,
    )


def reaching_redis(method: F) -> F:
    """Wrap a client method (plain, generator, coroutine or async generator) as above.

    The instance must have `settings.redis_url` (a SecretStr).
    """
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def call_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                result = await method(self, *args, **kwargs)
            except UNREACHABLE as exc:
                raise _error(self, exc) from exc
            return _wrapped_result(self, result)

        return cast("F", call_async)

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            result = method(self, *args, **kwargs)
        except UNREACHABLE as exc:
            raise _error(self, exc) from exc
        return _wrapped_result(self, result)

    return cast("F", call)


def _error(client: Any, exc: BaseException) -> StoreUnavailable:
    return unavailable(client.settings.redis_url.get_secret_value(), exc)


def _wrapped_result(client: Any, result: Any) -> Any:
    if inspect.isgenerator(result):
        return _generator(client, result)
    if inspect.isasyncgen(result):
        return _async_generator(client, result)
    return result


def _generator(client: Any, inner: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
    try:
        return (yield from inner)
    except UNREACHABLE as exc:
        raise _error(client, exc) from exc


async def _async_generator(client: Any, inner: AsyncIterator[Any]) -> AsyncIterator[Any]:
    try:
        async for item in inner:
            yield item
    except UNREACHABLE as exc:
        raise _error(client, exc) from exc
    finally:
        close = getattr(inner, "aclose", None)
        if close is not None:
            await close()
