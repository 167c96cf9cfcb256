"""The OpenAI-compatible HTTP front: an ASGI app (FastAPI on uvicorn) over the job queue.

Stateless: every replica reads the same configuration and meets the others in
Redis, so any number can run behind a load balancer. Routes:

- `POST /v1/chat/completions` (`chat`), `GET /v1/chat/completions/{id}`;
- `GET /v1/models`: the model groups and the models the vendors list;
- `/v1/files` and `/v1/batches` (`batches_api`);
- `GET /healthz` (the process answers), `GET /readyz` (Redis answers),
  `GET /metrics` (Prometheus), `GET /docs` (OpenAPI).

Errors are OpenAI's (`errors`); callers and tenants come from API keys (`auth`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from dispatcher.config.settings import Settings
from dispatcher.errors import DispatcherError
from producer.async_client import AsyncClient
from producer.http_api import batches_api, files
from producer.http_api.auth import NotAuthenticated
from producer.http_api.chat import answer_chat, completion_of_job
from producer.http_api.chat_request import BadChatRequest, chat_call
from producer.http_api.context import client_of, tenant_of
from producer.http_api.errors import api_error, error_response
from producer.http_api.idempotency import idempotency_key_of
from producer.http_api.limits import BodyLimit
from producer.http_api.metrics import FrontMetrics

__all__ = ["create_app"]

log = logging.getLogger("llmdispatch.http")

FILES_PATH = "/v1/files"


def create_app(settings: Settings, *, client: AsyncClient | None = None) -> Any:
    """The front for `settings` (an ASGI app); `client` replaces the one it would build."""
    metrics = FrontMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = client is None
        app.state.client = client or AsyncClient(settings)
        if not settings.server.api_keys:
            log.warning(
                "no API keys configured (server.api_keys, LLMDISPATCH_SERVER_API_KEYS): every "
                "caller is let in, with no tenant; serve only on loopback like this"
            )
        try:
            yield
        finally:
            if own:
                await app.state.client.aclose()

    app = FastAPI(
        title="llmdispatcher",
        summary="OpenAI-compatible Chat Completions, Files and Batches over a durable job queue.",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.include_router(files.router)
    app.include_router(batches_api.router)

    @app.exception_handler(NotAuthenticated)
    async def _unauthenticated(request: HttpRequest, exc: NotAuthenticated) -> JSONResponse:
        return api_error(401, str(exc), code="invalid_api_key")

    @app.exception_handler(BadChatRequest)
    async def _bad_request(request: HttpRequest, exc: BadChatRequest) -> JSONResponse:
        return api_error(400, exc.message, param=exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: HttpRequest, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p != "body") or None
        return api_error(400, f"{where or 'body'}: {first['msg']}", param=where)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: HttpRequest, exc: StarletteHTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return api_error(exc.status_code, str(exc.detail), kind=kind)

    @app.exception_handler(DispatcherError)
    async def _ours(request: HttpRequest, exc: DispatcherError) -> JSONResponse:
        return error_response(exc, job_id=exc.job_id)

    @app.post("/v1/chat/completions", summary="Create a chat completion (a job)")
    async def create_chat_completion(request: HttpRequest) -> Response:
        tenant = tenant_of(request)
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise BadChatRequest("the request body is not valid JSON") from None
        call = chat_call(body, tenant)
        client = client_of(request)
        key = idempotency_key_of(request, tenant)
        job_id = await client.submit(call.request, idempotency_key=key)
        return await answer_chat(client, request, call, job_id, retry_safe=key is not None)

    @app.get(
        "/v1/chat/completions/{completion_id}", summary="A chat completion, once its job ended"
    )
    async def get_chat_completion(request: HttpRequest, completion_id: str) -> Response:
        return await completion_of_job(client_of(request), completion_id, tenant_of(request))

    @app.get("/v1/models", summary="The models and model groups this dispatcher serves")
    async def list_models(request: HttpRequest) -> dict[str, Any]:
        tenant_of(request)  # the caller must hold a key
        return {"object": "list", "data": served_models(settings)}

    @app.get("/healthz", summary="The process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Redis answers")
    async def readyz(request: HttpRequest) -> JSONResponse:
        try:
            await client_of(request).redis.ping()
        except Exception as exc:
            problem = f"Redis does not answer ({type(exc).__name__})"
            return api_error(503, problem, kind="server_error", code="store_unavailable")
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", summary="Prometheus metrics of this front", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4")

    def limit_for(path: str) -> int:
        if path.startswith(FILES_PATH):
            return settings.server.max_file_bytes + 64 * 1024  # the multipart framing
        return settings.server.max_body_bytes

    return metrics.middleware(BodyLimit(app, limit_for))


def served_models(settings: Settings) -> list[dict[str, Any]]:
    """`GET /v1/models`: each model group, then each concrete model an enabled vendor lists."""
    created = int(time.time())
    models: dict[str, str] = dict.fromkeys(settings.model_groups, "llmdispatch")
    for vendor_name, vendor in settings.enabled_vendors().items():
        for model in vendor.models:
            if not any(ch in model for ch in "*?[") and model not in models:
                models[model] = vendor_name
    return [
        {"id": model, "object": "model", "created": created, "owned_by": owner}
        for model, owner in models.items()
    ]
