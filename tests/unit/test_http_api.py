"""The HTTP front's pieces without a server: bodies to requests, errors to OpenAI's,
stream events to chunks, keys to tenants, the body cap and the loopback rule."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from dispatcher.config.server import ApiKey, ServerConfig, parse_key_list
from dispatcher.config.settings import Settings
from dispatcher.errors import (
    CircuitOpen,
    DeadlineExceeded,
    InvalidRequest,
    JobCancelled,
    JobNotFound,
    NoRoute,
    StoreUnavailable,
    VendorAuthError,
    VendorQuotaExceeded,
    VendorRateLimited,
    VendorUnavailable,
)
from dispatcher.models import FinishReason, StreamEvent, ToolCallDelta, Usage
from producer.cli import app as cli
from producer.http_api.auth import NotAuthenticated, caller_of
from producer.http_api.chat_request import BadChatRequest, chat_call
from producer.http_api.errors import error_response, status_of
from producer.http_api.limits import BodyLimit
from producer.http_api.serving import exposure_problem
from producer.loopback import is_loopback
from producer.openai_shapes import ChunkWriter

ACME = "acme-key-0123456789abcdef"
EVERYWHERE = "0.0.0.0"  # noqa: S104 - the address under test, nothing listens
GLOBEX = "globex-key-0123456789abcdef"
SERVER = ServerConfig(
    api_keys=[ApiKey(key=SecretStr(ACME), tenant="acme"),
              ApiKey(key=SecretStr(GLOBEX), tenant="globex")]
)  # fmt: skip


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **fields}


# --- bodies -------------------------------------------------------------------------


def test_a_chat_body_is_our_request_with_the_tenant_as_user() -> None:
    call = chat_call(body(user="someone-else", temperature=0.2), tenant="acme")
    assert call.request.user == "acme"
    assert call.request.temperature == 0.2
    assert call.include_usage is False
    assert chat_call(body(user="u1"), tenant=None).request.user == "u1"


def test_openai_spellings_are_folded_in() -> None:
    call = chat_call(
        body(max_completion_tokens=7, n=1, stream=True, stream_options={"include_usage": True}),
        tenant=None,
    )
    assert call.request.max_tokens == 7
    assert call.request.stream is True
    assert call.include_usage is True


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"presence_penalty": 0.5}, "presence_penalty", "unknown field"),
        ({"n": 2}, "n", "only 1"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "stream is true"),
        ({"max_tokens": 5, "max_completion_tokens": 5}, "max_tokens", "both"),
        ({"temperature": "hot"}, "temperature", "valid number"),
        ({"messages": [{"role": "user"}]}, "messages[0]", "content"),
    ],
)
def test_bad_bodies_name_the_param(fields: dict[str, Any], param: str, words: str) -> None:
    with pytest.raises(BadChatRequest) as caught:
        chat_call(body(**fields), tenant=None)
    assert caught.value.param is not None
    assert caught.value.param.startswith(param)
    assert words in caught.value.message


def test_a_body_that_is_no_object_is_refused() -> None:
    with pytest.raises(BadChatRequest, match="JSON object"):
        chat_call([1, 2], tenant=None)


# --- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (InvalidRequest("bad"), 400, "invalid_request_error"),
        (NoRoute("no vendor"), 400, "invalid_request_error"),
        (JobNotFound("gone"), 404, "invalid_request_error"),
        (JobCancelled("cancelled"), 409, "invalid_request_error"),
        (VendorRateLimited("slow down", retry_after_s=2.5), 429, "rate_limit_error"),
        (VendorQuotaExceeded("no credit"), 429, "insufficient_quota"),
        (VendorUnavailable("503"), 503, "server_error"),
        (CircuitOpen("open", vendor="v"), 503, "server_error"),
        (StoreUnavailable("no redis"), 503, "server_error"),
        (DeadlineExceeded("too late"), 504, "server_error"),
        (TimeoutError("job j1 has not ended after 300 s"), 504, "server_error"),
        (VendorAuthError("their key"), 502, "server_error"),
        (RuntimeError("boom"), 500, "server_error"),
    ],
)
def test_our_errors_map_to_openais_statuses(error: Exception, status: int, kind: str) -> None:
    assert status_of(error)[:2] == (status, kind)
    answer = error_response(error, job_id="0" * 32)
    assert answer.status_code == status
    assert answer.headers["x-llmdispatch-job-id"] == "0" * 32
    # An id the caller made up (from a path) is never echoed in a header: it may not encode.
    assert "x-llmdispatch-job-id" not in error_response(error, job_id="\u0100").headers
    data = json.loads(bytes(answer.body))
    assert data["error"]["type"] == kind
    if status == 429:
        assert answer.headers["retry-after"] == ("3" if "slow" in str(error) else "1")
    if isinstance(error, RuntimeError):
        assert "boom" not in data["error"]["message"]  # no internals leak


# --- chunks -------------------------------------------------------------------------


def event(seq: int, kind: str, **fields: Any) -> StreamEvent:
    return StreamEvent(seq=seq, type=kind, job_id="j1", **fields)  # type: ignore[arg-type]


def test_chunks_carry_the_role_once_then_text_then_the_finish_then_usage() -> None:
    writer = ChunkWriter("j1", "gpt-4o", include_usage=True)
    chunks = [
        *writer.chunks(event(1, "chunk", delta="Hel")),
        *writer.chunks(event(2, "chunk", delta="lo")),
        *writer.chunks(
            event(3, "done", finish_reason=FinishReason.STOP, model="gpt-4o-2024-08-06",
                  usage=Usage(prompt_tokens=3, completion_tokens=2))
        ),
    ]  # fmt: skip
    assert [c["choices"][0]["delta"] for c in chunks[:3]] == [
        {"role": "assistant", "content": "Hel"},
        {"content": "lo"},
        {},
    ]
    assert chunks[2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[2]["model"] == "gpt-4o-2024-08-06"
    assert chunks[3]["choices"] == []
    assert chunks[3]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert {c["id"] for c in chunks} == {"chatcmpl-j1"}


def test_tool_call_pieces_that_arrive_together_are_one_entry_per_call() -> None:
    writer = ChunkWriter("j1", "gpt-4o")
    pieces = [
        ToolCallDelta(index=0, id="call_1", name="get_weather", arguments=""),
        ToolCallDelta(index=0, arguments='{"city"'),
        ToolCallDelta(index=1, id="call_2", name="get_time", arguments="{}"),
        ToolCallDelta(index=0, arguments=':"Paris"}'),
    ]
    (chunk,) = writer.chunks(event(1, "chunk", tool_calls=pieces))
    calls = chunk["choices"][0]["delta"]["tool_calls"]
    assert calls == [
        {"index": 0, "id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"index": 1, "id": "call_2", "type": "function",
         "function": {"name": "get_time", "arguments": "{}"}},
    ]  # fmt: skip
    (later,) = writer.chunks(event(2, "chunk", tool_calls=[ToolCallDelta(index=1, arguments="")]))
    assert later["choices"][0]["delta"] == {
        "tool_calls": [{"index": 1, "function": {"arguments": ""}}]
    }


# --- keys and tenants ----------------------------------------------------------------


class FakeRequest:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers
        self.state = SimpleNamespace()


@pytest.mark.parametrize(
    ("headers", "tenant"),
    [
        ({"authorization": f"Bearer {ACME}"}, "acme"),
        ({"authorization": f"bearer {GLOBEX}"}, "globex"),
        ({"api-key": ACME}, "acme"),
    ],
)
def test_a_key_names_its_tenant(headers: dict[str, str], tenant: str) -> None:
    request = FakeRequest(headers)
    assert caller_of(request, SERVER).tenant == tenant  # type: ignore[arg-type]
    assert request.state.tenant == tenant  # for the per-tenant metrics


@pytest.mark.parametrize(
    "headers", [{}, {"authorization": "Bearer nope-0123456789abcdef"}, {"authorization": ACME}]
)
def test_no_key_or_a_wrong_one_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(NotAuthenticated) as caught:
        caller_of(FakeRequest(headers), SERVER)  # type: ignore[arg-type]
    assert ACME not in str(caught.value)


def test_without_keys_every_caller_is_tenantless() -> None:
    assert caller_of(FakeRequest({}), ServerConfig()).tenant is None  # type: ignore[arg-type]


def test_keys_from_the_environment_parse_and_never_show_the_key() -> None:
    keys = parse_key_list(f"{ACME}:acme, {GLOBEX}:globex,")
    assert [(k.key.get_secret_value(), k.tenant) for k in keys] == [
        (ACME, "acme"),
        (GLOBEX, "globex"),
    ]
    with pytest.raises(ValueError, match="key:tenant") as caught:
        parse_key_list(f"{ACME}")
    assert ACME not in str(caught.value)
    with pytest.raises(ValueError, match="at least 16"):
        parse_key_list("short:acme")


def test_the_same_key_twice_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        ServerConfig(api_keys=[ApiKey(key=SecretStr(ACME), tenant="a"),
                               ApiKey(key=SecretStr(ACME), tenant="b")])  # fmt: skip


# --- the body cap ----------------------------------------------------------------------


def run_asgi(app: Any, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> list[Any]:
    sent: list[Any] = []
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/v1/chat/completions", "headers": headers}
    asyncio.run(app(scope, receive, send))
    return sent


async def reading_app(scope: Any, receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"read"})


@pytest.mark.parametrize(
    ("chunks", "headers"),
    [
        ([b"x" * 11], [(b"content-length", b"11")]),  # declared: refused before reading
        ([b"x" * 6, b"x" * 6], []),  # chunked: refused once past the cap
    ],
)
def test_a_body_over_the_cap_is_a_413(chunks: list[bytes], headers: list[Any]) -> None:
    sent = run_asgi(BodyLimit(reading_app, lambda path: 10), chunks, headers)
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["code"] == "request_too_large"


def test_a_body_within_the_cap_goes_through() -> None:
    sent = run_asgi(BodyLimit(reading_app, lambda path: 10), [b"x" * 5, b"x" * 5], [])
    assert (sent[0]["status"], sent[1]["body"]) == (200, b"read")


# --- where it may listen -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("localhost", True), ("LOCALHOST", True), ("::1", True),
     ("[::1]", True), (EVERYWHERE, False), ("10.1.2.3", False), ("api.example.com", False)],
)  # fmt: skip
def test_loopback_is_told_apart(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_without_keys_it_listens_on_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMDISPATCH_SERVER_API_KEYS", raising=False)
    monkeypatch.delenv("LLMDISPATCH_CONFIG", raising=False)
    settings = Settings()
    assert exposure_problem(settings, "127.0.0.1") is None
    problem = exposure_problem(settings, EVERYWHERE)
    assert problem is not None
    assert "LLMDISPATCH_SERVER_API_KEYS" in problem
    keyed = Settings(server={"api_keys": [{"key": ACME, "tenant": "acme"}]})
    assert exposure_problem(keyed, EVERYWHERE) is None

    result = CliRunner().invoke(cli, ["serve", "--host", EVERYWHERE])
    assert result.exit_code == 3
    assert "loopback only" in result.output
