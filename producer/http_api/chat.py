"""`POST /v1/chat/completions`: submit a job, then answer it whole or as Server-Sent Events.

Whole: wait for the job and answer a `chat.completion` object. Streamed:
`chat.completion.chunk` events from the job's stream, the usage chunk when
`stream_options.include_usage` asks, then `data: [DONE]`. Every answer carries
the job id in `x-llmdispatch-job-id`.

A vendor retry mid-stream restarts the reply (a `reset` on the job's stream).
Before any text has gone out the restart is invisible; after, the stream ends
with an error event (`{"error": {..., "code": "stream_reset"}}`, which the
OpenAI SDKs raise as an APIError) rather than send text that would not add up:
the job goes on, and `GET /v1/chat/completions/{id}` answers its whole result
once it ends.

A client that hangs up does not cancel its job: the job runs, and is answered
later by `GET /v1/chat/completions/{id}`. Send `x-llmdispatch-cancel-on-disconnect:
true` to cancel it when the client goes away first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse, Response, StreamingResponse

from dispatcher.errors import DispatcherError, JobNotFound
from dispatcher.models import Response as ChatResponse
from dispatcher.models import StreamEventType, Usage
from producer.async_client import AsyncClient
from producer.client import DEFAULT_WAIT_TIMEOUT_S
from producer.http_api.chat_request import ChatCall
from producer.http_api.context import metrics_of
from producer.http_api.errors import JOB_ID_HEADER, api_error, error_object, error_response
from producer.openai_shapes import ChunkWriter, chat_completion
from producer.outcomes import response_of
from producer.streaming import stream_error

__all__ = ["CANCEL_HEADER", "answer_chat", "completion_of_job"]

CANCEL_HEADER = "x-llmdispatch-cancel-on-disconnect"
# Obeyed by OpenAI's SDKs (and Stainless-built ones): "false" means do not retry this answer.
SHOULD_RETRY_HEADER = "x-should-retry"
# How often a waiting answer asks whether its client is still there (only when asked to cancel).
_DISCONNECT_POLL_S = 0.5
_DONE = b"data: [DONE]\n\n"


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def wait_timeout_s(call: ChatCall) -> float:
    """How long an answer waits for its job: its deadline, else the client's default."""
    return call.request.timeout_s or DEFAULT_WAIT_TIMEOUT_S


async def answer_chat(
    client: AsyncClient, http: HttpRequest, call: ChatCall, job_id: str, *, retry_safe: bool = False
) -> Response:
    """The answer to a submitted chat job: whole, or streamed.

    `retry_safe`: the request carried an `Idempotency-Key`, so a retry names this job
    again. Without one, an answer that stopped waiting while the job runs on tells the
    SDKs not to retry (`x-should-retry: false`): a retry would be a second job.
    """
    cancel = http.headers.get(CANCEL_HEADER, "").strip().lower() in ("1", "true", "yes")
    if call.request.stream:
        events = _chunks(client, http, call, job_id, cancel=cancel)
        return StreamingResponse(
            events,
            media_type="text/event-stream",
            headers={JOB_ID_HEADER: job_id, "cache-control": "no-cache"},
        )
    try:
        if cancel:
            response = await _wait_unless_gone(client, http, job_id, wait_timeout_s(call))
            if response is None:
                return Response(status_code=499, headers={JOB_ID_HEADER: job_id})
        else:
            response = await client.wait(job_id, timeout_s=wait_timeout_s(call))
    except (DispatcherError, TimeoutError) as exc:
        answer = error_response(exc, job_id=job_id)
        if isinstance(exc, TimeoutError) and not retry_safe:
            answer.headers[SHOULD_RETRY_HEADER] = "false"
        return answer
    _count(http, call, response.usage, response.cost_usd)
    return JSONResponse(chat_completion(job_id, response), headers={JOB_ID_HEADER: job_id})


def _count(http: HttpRequest, call: ChatCall, usage: Usage | None, cost_usd: float | None) -> None:
    """Add an answered completion's tokens and cost to its tenant's metrics."""
    metrics_of(http).answered(call.request.user if call.tenant_bound else None, usage, cost_usd)


async def _wait_unless_gone(
    client: AsyncClient, http: HttpRequest, job_id: str, timeout_s: float
) -> ChatResponse | None:
    """The job's response, or None when the client went away first (the job is cancelled)."""
    waiting = asyncio.ensure_future(client.wait(job_id, timeout_s=timeout_s))
    try:
        while not waiting.done():
            if await http.is_disconnected():
                waiting.cancel()
                await client.cancel(job_id)
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiting), _DISCONNECT_POLL_S)
        return await waiting
    finally:
        if not waiting.done():
            waiting.cancel()


async def _chunks(
    client: AsyncClient, http: HttpRequest, call: ChatCall, job_id: str, *, cancel: bool
) -> AsyncIterator[bytes]:
    writer = ChunkWriter(job_id, call.request.model, include_usage=call.include_usage)
    sent_text = False
    ended = False
    try:
        async for event in client.stream(job_id):
            if event.type is StreamEventType.RESET:
                if sent_text:
                    yield _sse(_reset_error(job_id))
                    ended = True
                    return
                continue
            if event.type is StreamEventType.ERROR:
                ended = True
                yield _sse(_error_body(stream_error(event)))
                return
            for chunk in writer.chunks(event):
                sent_text = True
                yield _sse(chunk)
            if event.type is StreamEventType.DONE:
                ended = True
                _count(http, call, event.usage, event.cost_usd)
        yield _DONE
    except (DispatcherError, TimeoutError) as exc:
        ended = True
        yield _sse(_error_body(exc))
    finally:
        if cancel and not ended:
            # The client went away (the response was closed early): cancel as it asked.
            # Shielded: Starlette cancels this generator's scope when the client goes.
            with anyio.CancelScope(shield=True), contextlib.suppress(DispatcherError):
                await client.cancel(job_id)


def _error_body(error: BaseException) -> dict[str, Any]:
    """An error event's body: OpenAI's error object, with the status it would have had."""
    status, body = error_object(error)
    return {"error": {**body, "status": status}}


def _reset_error(job_id: str) -> dict[str, Any]:
    return {
        "error": {
            "message": (
                "the vendor call was retried after part of the reply was sent, so the "
                f"stream stops here; the job goes on: GET /v1/chat/completions/chatcmpl-{job_id} "
                "answers its whole result once it ends"
            ),
            "type": "server_error",
            "param": None,
            "code": "stream_reset",
        }
    }


async def completion_of_job(
    client: AsyncClient, completion_id: str, tenant: str | None
) -> Response:
    """`GET /v1/chat/completions/{id}`: a job's chat.completion once it has ended."""
    job_id = completion_id.removeprefix("chatcmpl-")
    try:
        record = await client.get(job_id)
        if tenant is not None and record.request.user != tenant:
            raise JobNotFound(f"no completion {completion_id!r}")
        if not record.status.is_terminal:
            message = f"completion {completion_id!r} has not ended yet ({record.status.value})"
            return api_error(409, message, code="not_finished", headers={JOB_ID_HEADER: job_id})
        body = chat_completion(job_id, response_of(record))  # raises the job's own error
    except (DispatcherError, TimeoutError) as exc:
        return error_response(exc, job_id=job_id)
    return JSONResponse(body, headers={JOB_ID_HEADER: job_id})
