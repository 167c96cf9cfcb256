"""The HTTP front under hostile chat bodies, driven in process (ASGI) over fakeredis.

Whatever bytes arrive at `POST /v1/chat/completions`, the answer is one of
OpenAI's: a refusal is a 4xx whose error object names the field at fault
(`param`, a field the body sent) with a message, and nothing was written; a
body that is a valid request becomes exactly one job. Never a 500, never a
traceback, never an echo of the API key.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import fakeredis
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher import Settings
from dispatcher.models import Request
from producer import AsyncClient
from producer.http_api.app import create_app
from tests.unit.test_http_batches import serving

KEY = "acme-key-0123456789abcdef"
FIELDS = [*sorted(Request.model_fields), "max_completion_tokens", "n", "stream_options"]

texts = st.text(max_size=12)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
message_values = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant", "tool", "developer", "x"])},
        optional={"content": json_values, "tool_calls": json_values, "name": json_values},
    ),
)


def valid_body() -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@st.composite
def hostile_bodies(draw: st.DrawFn) -> bytes:
    """A valid body with some fields set to anything, some dropped, some invented; or raw bytes."""
    shape = draw(st.sampled_from(["mutated", "mutated", "mutated", "raw", "not-an-object"]))
    if shape == "raw":
        return draw(st.binary(max_size=64))
    if shape == "not-an-object":
        return json.dumps(draw(json_values.filter(lambda v: not isinstance(v, dict)))).encode()
    body = valid_body()
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from([*FIELDS, "messages", "bogus_field"]) | texts)
        if draw(st.booleans()) and field in body:
            del body[field]
        elif field == "messages":
            body[field] = draw(st.lists(message_values, max_size=3) | json_values)
        else:
            body[field] = draw(json_values)
    return json.dumps(body).encode()


@pytest.fixture
async def front() -> AsyncIterator[tuple[Any, AsyncClient, fakeredis.FakeServer]]:
    settings_ = Settings.load(
        openai_api_key="sk-test-0123456789",
        server={"api_keys": [{"key": KEY, "tenant": "acme"}], "max_body_bytes": 4096},
    )
    server = fakeredis.FakeServer()
    client = AsyncClient(
        settings_,
        redis_client=fakeredis.FakeAsyncRedis(server=server),
        sync_redis_client=fakeredis.FakeRedis(server=server),
        send=lambda *_: None,
    )

    # No worker runs: an accepted job is answered at once as timed out (504), and a
    # stream ends with that error event, so each example costs no waiting.
    async def no_worker_wait(job_id: str, timeout_s: float = 0) -> Any:
        raise TimeoutError(f"job {job_id} did not end")

    async def no_worker_stream(job_id: str, **_: Any) -> AsyncIterator[Any]:
        raise TimeoutError(f"job {job_id} never started")
        yield  # pragma: no cover - makes this an async generator

    client.wait = no_worker_wait  # type: ignore[method-assign]
    client.stream = no_worker_stream  # type: ignore[method-assign]
    app = create_app(settings_, client=client)
    async with serving(app):
        yield app, client, server


def _jobs(server: fakeredis.FakeServer) -> int:
    return len(fakeredis.FakeRedis(server=server).keys("*:job:*[0-9a-f]"))


async def call(app: Any, method: str, path: str, **options: Any) -> httpx.Response:
    """One request to `app` in process, with the tenant's key; app errors become 500s."""
    headers = {"authorization": f"Bearer {KEY}", **options.pop("headers", {})}
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://front") as http:
        return await http.request(method, path, headers=headers, **options)


hostile_examples = settings(
    max_examples=300,
    deadline=None,
    # One front for all the examples of a test: a job count is compared per example.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@hostile_examples
@given(raw=hostile_bodies())
async def test_any_chat_body_gets_openais_answer_naming_the_field_and_writes_only_whole_jobs(
    front: tuple[Any, AsyncClient, fakeredis.FakeServer], raw: bytes
) -> None:
    app, _, server = front
    before = _jobs(server)
    answer = await call(
        app,
        "POST",
        "/v1/chat/completions",
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert KEY not in answer.text
    made = _jobs(server) - before
    try:
        sent = json.loads(raw)
    except ValueError:
        sent = None
    if answer.status_code in (200, 504):  # accepted: one job, answered without a worker
        assert made == 1
        if answer.status_code == 200:  # a stream: its error event says why it stopped
            assert answer.headers["content-type"].startswith("text/event-stream")
            assert '"error"' in answer.text
        return
    assert answer.status_code in (400, 413), answer.text
    assert made == 0
    error = answer.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error["type"] == "invalid_request_error"
    param = error["param"]
    if param is not None:
        assert isinstance(sent, dict), param
        # The field at fault is one the body sent (`max_tokens` may be its other
        # spelling), or a required one it left out.
        named = [key for key in sent if param == key or param.startswith((f"{key}.", f"{key}["))]
        assert (
            named
            or (param == "max_tokens" and "max_completion_tokens" in sent)
            or (param in ("model", "messages") and param not in sent)
        ), (param, sent)
        assert param in error["message"] or param.split(".")[0] in error["message"]


async def test_a_valid_body_is_accepted_by_the_same_front(
    front: tuple[Any, AsyncClient, fakeredis.FakeServer],
) -> None:
    """The oracle's other side: a plain valid body is a job (here answered 504, no worker)."""
    app, _, server = front
    before = _jobs(server)
    answer = await call(app, "POST", "/v1/chat/completions", json=valid_body())
    assert answer.status_code == 504
    assert answer.json()["error"]["code"] == "timeout"
    assert _jobs(server) - before == 1


ids = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40) | st.sampled_from(
    ["batch_" + "0" * 32, "file-" + "0" * 32, "file-" + "0" * 32 + "-output", "chatcmpl-x", ".."]
)


@st.composite
def hostile_calls(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    """A call to any other route of the front, with hostile ids, queries and bodies."""
    route = draw(st.sampled_from(["get-id", "list", "batch", "upload", "cancel"]))
    if route == "get-id":
        where = draw(st.sampled_from(["/v1/files/", "/v1/batches/", "/v1/chat/completions/"]))
        suffix = draw(st.sampled_from(["", "/content"])) if where == "/v1/files/" else ""
        return "GET", where + quote(draw(ids), safe="") + suffix, {}
    if route == "list":
        query = draw(st.dictionaries(st.sampled_from(["limit", "after", "order", "purpose"]),
                                     texts, max_size=3))  # fmt: skip
        return "GET", draw(st.sampled_from(["/v1/batches", "/v1/files"])), {"params": query}
    if route == "batch":
        body = draw(st.dictionaries(
            st.sampled_from(["input_file_id", "endpoint", "completion_window", "metadata", "x"]),
            json_values, max_size=4))  # fmt: skip
        return "POST", "/v1/batches", {"json": body}
    if route == "cancel":
        return "POST", f"/v1/batches/{quote(draw(ids), safe='')}/cancel", {}
    lines = draw(st.lists(json_values.map(json.dumps) | texts, max_size=3))
    data = {"purpose": draw(st.sampled_from(["batch", "fine-tune", ""]) | texts)}
    content = "\n".join(lines).encode()
    return "POST", "/v1/files", {"files": {"file": ("in.jsonl", content)}, "data": data}


@hostile_examples
@given(hostile=hostile_calls())
async def test_any_call_to_files_and_batches_gets_openais_answer_never_a_500(
    front: tuple[Any, AsyncClient, fakeredis.FakeServer], hostile: tuple[str, str, dict[str, Any]]
) -> None:
    app, _, _ = front
    method, path, options = hostile
    answer = await call(app, method, path, **options)
    assert answer.status_code < 500, (hostile, answer.text)
    assert KEY not in answer.text
    if answer.status_code >= 400:
        error = answer.json()["error"]
        assert error["message"]
        assert error["type"] == "invalid_request_error"
