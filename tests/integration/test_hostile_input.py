"""Hostile input, as properties over a private Redis: refused clearly, and nothing written.

Malformed requests, JSONL batch files and configuration files are generated
with the fields or lines at fault known, so each property checks that the
error names those (a batch file's error: exactly its bad lines), and that Redis
holds nothing from refused input.
Valid input is generated too and must be accepted, so every property can fail
both ways. Arbitrary job and batch ids must be "not found", and must never
read or change a key that is not their own job's or batch's.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from dispatcher import BatchNotFound, ConfigError, InvalidRequest, JobNotFound, Request, Settings
from dispatcher.config.settings import ENV_NAMES
from dispatcher.config.sources import FILE_FIELDS
from dispatcher.models import (
    MAX_MAX_TOKENS,
    MAX_PRIORITY,
    MAX_STOP_SEQUENCES,
    MAX_TIMEOUT_S,
    RESERVED_BODY_FIELDS,
)
from producer import AsyncClient, Client
from producer.batch_files import CHAT_COMPLETIONS_URL, BatchFileError, BatchLimits, read_batch_file
from producer.cli.tools.embedded_redis import EmbeddedRedis

pytestmark = pytest.mark.integration

PREFIX = "llmd"
ENV = "LLMDISPATCH_MAX_REQUEST_BYTES"
# Small enough that generated requests fall on both sides of it.
SMALL_MAX_BYTES = 2_000
# The reader's bounds for that client: a line past `max_line_bytes` is skipped unread.
SMALL_LIMITS = BatchLimits(max_request_bytes=SMALL_MAX_BYTES)
# The mock vendor serves every model, so every valid request has a route.
MOCK_VENDORS = {"mock": {"type": "mock"}}
# Every test here uses a function-scoped fixture on purpose (one Redis for all its
# examples), and generates large inputs on purpose: on a busy machine Hypothesis would
# call that generation too slow and fail the test for it, which says nothing of ours.
SUPPRESSED_HEALTH_CHECKS = [
    HealthCheck.function_scoped_fixture,
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.large_base_example,
]
MISSING = object()  # a corruption that removes the field


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def raw(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A plain client of the private server; the database is empty before and after."""
    client = redis_server.client()
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def _client(server: EmbeddedRedis, **overrides: Any) -> Client:
    settings = Settings.load(
        redis_url=server.url, key_prefix=PREFIX, vendors=MOCK_VENDORS, **overrides
    )
    return Client(settings)


@pytest.fixture
def client(redis_server: EmbeddedRedis) -> Iterator[Client]:
    """A client of the private server: the mock vendor, real Celery sending, default limits."""
    with _client(redis_server) as built:
        yield built


@pytest.fixture
def small_client(redis_server: EmbeddedRedis) -> Iterator[Client]:
    """As `client`, with a maximum request size that generated requests fall on both sides of."""
    with _client(redis_server, max_request_bytes=SMALL_MAX_BYTES) as built:
        yield built


def size_of(request: dict[str, Any]) -> int:
    """The bytes of the request's JSON as the job store writes it."""
    return len(Request.model_validate(request).model_dump_json().encode())


def named_fields(message: str) -> set[str]:
    """The paths an error message names, one problem a line (``  path: reason``)."""
    return {line.strip().partition(": ")[0] for line in message.splitlines()[1:]}


def names(message: str, path: str) -> bool:
    """True when `message` names `path` or a value inside it (``messages[0].role``)."""
    return any(
        named == path or named.startswith((f"{path}.", f"{path}["))
        for named in named_fields(message)
    )


def queued_messages(raw: redis.Redis, queue: str) -> int:
    """How many Celery messages wait on `queue` (over its priority lists)."""
    return sum(int(raw.llen(key)) for key in raw.keys(f"{queue}*") if raw.type(key) == b"list")


# --- requests ----------------------------------------------------------------------------

texts = st.text(max_size=20)
nonempty = st.text(min_size=1, max_size=20)
# A name (a model, a user, a metadata or extra_body key): printable, on one line.
name_texts = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=20)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
messages = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant"]), "content": nonempty}
)
valid_requests = st.fixed_dictionaries(
    {
        "model": name_texts,
        "messages": st.lists(messages, min_size=1, max_size=3),
    },
    optional={
        "temperature": st.none() | st.floats(0.0, 2.0),
        "max_tokens": st.none() | st.integers(1, MAX_MAX_TOKENS),
        "top_p": st.none() | st.floats(0.0, 1.0),
        "stream": st.booleans(),
        "stop": st.none() | nonempty | st.lists(nonempty, max_size=MAX_STOP_SEQUENCES),
        "user": st.none() | name_texts,
        "metadata": st.dictionaries(name_texts, texts, max_size=3),
        "vendor": st.none() | st.just("mock"),
        "vendor_weights": st.none()
        | st.dictionaries(st.sampled_from(["elsewhere", "other"]), st.floats(0.0, 10.0)).map(
            lambda weights: {**weights, "mock": 1.0}
        ),
        "allow_fallback": st.booleans(),
        "priority": st.integers(0, MAX_PRIORITY),
        "timeout_s": st.none() | st.floats(0.0, MAX_TIMEOUT_S, exclude_min=True),
        "extra_body": st.dictionaries(
            name_texts.filter(lambda key: key not in RESERVED_BODY_FIELDS), json_values, max_size=3
        ),
    },
)

NOT_JSON = [b"bytes", {1, 2}, object(), complex(1, 2), float("nan"), float("inf")]
REQUEST_KEYS = {*Request.model_fields, "custom_id", "body", "method", "url"}


def _bad_message(index: int) -> st.SearchStrategy[tuple[str, Any]]:
    """A broken `messages[index]`, with the path its error must name."""
    at = f"messages[{index}]"
    # "tool" is a role since the chat surface (issue 21): a tool message lacking its
    # tool_call_id is refused naming that, below; OpenAI's old "function" is no role.
    role = st.sampled_from(["function", "", "USER", 1, None]) | st.text().filter(
        lambda text: text not in {"system", "user", "assistant", "tool"}
    )
    return st.one_of(
        st.tuples(st.just(at), st.sampled_from([1, "hi", None, ["user", "hi"]])),
        role.map(lambda value: (f"{at}.role", {"role": value, "content": "hi"})),
        st.sampled_from(["", 1, None, ["hi"]]).map(
            lambda value: (f"{at}.content", {"role": "user", "content": value})
        ),
        st.just((f"{at}.content", {"role": "user"})),
        st.just((f"{at}.name", {"role": "user", "content": "hi", "name": "x"})),
        st.just((f"{at}.tool_call_id", {"role": "tool", "content": "hi"})),
    )


def _corruptions(jsonable: bool) -> dict[str, st.SearchStrategy[Any]]:
    """Per field, a strategy of bad values for it (MISSING: leave it out)."""
    not_json = [] if jsonable else NOT_JSON
    above = st.floats(min_value=2.0, exclude_min=True, allow_infinity=not jsonable)
    return {
        "model": st.sampled_from([MISSING, None, 1, [], {}, "", "m\r\nX-Injected: 1", "\x1b[0m"])
        | st.text(min_size=257),
        "messages": st.sampled_from([MISSING, None, "hi", 1, {}, []]),
        "temperature": st.floats(max_value=-1e-9, allow_infinity=False)
        | above
        | st.sampled_from(["warm", [], {}, True]),
        "max_tokens": st.integers(max_value=0)
        | st.integers(min_value=MAX_MAX_TOKENS + 1)
        | st.sampled_from([1.5, "many", [], 10**30]),
        "top_p": st.floats(max_value=-1e-9, allow_infinity=False)
        | st.floats(min_value=1.0, exclude_min=True, allow_infinity=False),
        "stream": st.sampled_from(["maybe", 2, [], {}, None, 0.5]),
        "stop": st.lists(nonempty, min_size=MAX_STOP_SEQUENCES + 1, max_size=8)
        | st.sampled_from(["", [""], [1], ["a", None], {}, 3]),
        "user": st.sampled_from(["", 1, [], {}]) | st.text(min_size=257),
        "metadata": st.sampled_from(["labels", [], 1, {"k": 1}, {"k": None}, {"k": ["v"]}]),
        "vendor": st.sampled_from(["", "Bad Vendor", "UPPER", "x" * 40, "-lead", 1, []]),
        "vendor_weights": st.sampled_from(
            [{"mock": 0.0}, {"mock": -1.0}, {"Bad Name": 1.0}, "x", {"mock": "heavy"}]
        ),
        "allow_fallback": st.sampled_from(["perhaps", 3, [], None]),
        "priority": st.integers(max_value=-1)
        | st.integers(min_value=MAX_PRIORITY + 1)
        | st.sampled_from(["high", 1.5, None]),
        # A deadline like 1e12 s was once accepted, and made the job's record unreadable.
        "timeout_s": st.floats(max_value=0.0, allow_infinity=False)
        | st.floats(min_value=MAX_TIMEOUT_S, exclude_min=True, allow_infinity=not jsonable)
        | st.sampled_from(["soon", [], 1e12, 1e308]),
        "extra_body": st.sampled_from(
            ["x", [], 1, {"model": "other"}, {"stream": True}, *[{"k": v} for v in not_json]]
        ),
    }


@st.composite
def malformed_requests(
    draw: st.DrawFn, *, jsonable: bool = False
) -> tuple[dict[Any, Any], set[str]]:
    """A request with one to three fields broken, and the paths its error must name."""
    request: dict[Any, Any] = dict(draw(valid_requests))
    corruptions = _corruptions(jsonable)
    expected: set[str] = set()
    for field in draw(
        st.sets(st.sampled_from([*corruptions, "messages[]", "unknown"]), min_size=1, max_size=3)
    ):
        if field == "unknown":
            name = draw(
                st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True).filter(
                    lambda key: key not in REQUEST_KEYS
                )
            )
            request[name] = draw(json_values)
            expected.add(name)
        elif field == "messages[]":
            if "messages" in expected:
                continue
            index = draw(st.integers(0, len(request["messages"]) - 1))
            path, item = draw(_bad_message(index))
            request["messages"] = [
                *request["messages"][:index],
                item,
                *request["messages"][index + 1 :],
            ]
            expected.add(path)
        else:
            value = draw(corruptions[field])
            if field == "messages" and any(path.startswith("messages[") for path in expected):
                continue
            if value is MISSING:
                request.pop(field, None)
            else:
                request[field] = value
            expected.add(field)
    return request, expected


@settings(max_examples=150, deadline=None, suppress_health_check=SUPPRESSED_HEALTH_CHECKS)
@given(case=malformed_requests())
@example(
    case=(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "timeout_s": 1e12},
        {"timeout_s"},
    )
)
@example(
    case=(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**400},
        {"max_tokens"},
    )
)
def test_submit_refuses_a_malformed_request_naming_each_bad_field_and_writes_nothing(
    client: Client, raw: redis.Redis, case: tuple[dict[Any, Any], set[str]]
) -> None:
    raw.flushdb()
    request, expected = case

    with pytest.raises(InvalidRequest) as refused:
        client.submit(request)

    message = str(refused.value)
    assert message.startswith("invalid request (")
    assert all(names(message, path) for path in expected), (expected, message)
    assert raw.dbsize() == 0


@settings(max_examples=30, deadline=None, suppress_health_check=SUPPRESSED_HEALTH_CHECKS)
@given(request=st.none() | st.integers() | st.text() | st.binary() | st.lists(json_values))
def test_submit_refuses_what_is_not_a_request_at_all_and_writes_nothing(
    client: Client, raw: redis.Redis, request: Any
) -> None:
    raw.flushdb()

    with pytest.raises(TypeError, match=r"^a request is a Request or a dict, not \w+$"):
        client.submit(request)
    assert raw.dbsize() == 0


@settings(max_examples=100, deadline=None, suppress_health_check=SUPPRESSED_HEALTH_CHECKS)
@given(request=valid_requests)
def test_submit_accepts_a_valid_request_and_queues_it(
    client: Client, raw: redis.Redis, request: dict[str, Any]
) -> None:
    raw.flushdb()

    job_id = client.submit(request)

    assert client.get(job_id).request == Request.model_validate(request)
    assert queued_messages(raw, "llm.mock") == 1


@settings(max_examples=100, deadline=None, suppress_health_check=SUPPRESSED_HEALTH_CHECKS)
@given(
    request=valid_requests,
    pad=st.characters(exclude_categories=["Cs"]),
    count=st.integers(0, 2 * SMALL_MAX_BYTES),
)
def test_submit_accepts_a_request_exactly_when_its_json_fits_the_maximum(
    small_client: Client, raw: redis.Redis, request: dict[str, Any], pad: str, count: int
) -> None:
    raw.flushdb()
    first = request["messages"][0]
    request = {**request, "messages": [{**first, "content": first["content"] + pad * count}]}
    size = size_of(request)

    if size <= SMALL_MAX_BYTES:
        job_id = small_client.submit(request)
        assert small_client.get(job_id).request == Request.model_validate(request)
        return
    with pytest.raises(InvalidRequest) as refused:
        small_client.submit(request)
    assert str(refused.value).startswith(
        f"request: {size:,} bytes is over the maximum request size of {SMALL_MAX_BYTES:,} bytes"
    )
    assert ENV in str(refused.value)
    assert raw.dbsize() == 0


# --- JSONL batch files -----------------------------------------------------------------------


def _openai(custom_id: Any, body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": CHAT_COMPLETIONS_URL, "body": body}


def _dumped(value: Any) -> bytes:
    return json.dumps(value).encode()


def _is_blank(raw: bytes) -> bool:
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        return False
    return not text or text.isspace()


def _is_json_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw.decode("utf-8")), dict)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return False


def _broken_utf8(line: bytes, cut: int, bad: bytes) -> bytes:
    cut %= len(line) + 1
    return line[:cut] + bad + line[cut:]


def _without_custom_id(request: dict[str, Any]) -> bytes:
    line = _openai(None, request)
    del line["custom_id"]
    return _dumped(line)


def _shaped(shape: str, custom_id: Any, request: dict[Any, Any]) -> bytes:
    """`request` as a line: OpenAI's shape, plain with a custom_id, or plain without one."""
    if shape == "openai":
        return _dumped(_openai(custom_id, request))
    if shape == "plain":
        return _dumped({**request, "custom_id": custom_id})
    return _dumped(request)


# Lines that register no custom id; every one but a blank line is bad.
LINES_WITHOUT_ID: dict[str, st.SearchStrategy[bytes]] = {
    "blank": st.sampled_from([b"", b"   ", b"\t", b"\r"]),
    "bytes": st.binary(min_size=1, max_size=30).filter(
        lambda raw: (
            b"\n" not in raw
            and not raw.startswith(b"\xef\xbb\xbf")
            and not _is_blank(raw)
            and not _is_json_object(raw)
        )
    ),
    "not_utf8": st.builds(
        _broken_utf8,
        valid_requests.map(_dumped),
        st.integers(0, 10_000),
        st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"]),
    ),
    "not_object": json_values.filter(lambda value: not isinstance(value, dict)).map(_dumped),
    "no_custom_id": valid_requests.map(_without_custom_id),
    "bad_custom_id": st.builds(
        _shaped,
        st.sampled_from(["openai", "plain"]),
        st.sampled_from([1, None, "", [], True, {"id": "x"}]),
        valid_requests,
    ),
}
huge_requests = st.builds(
    lambda request, length: {**request, "messages": [{"role": "user", "content": "x" * length}]},
    valid_requests,
    st.integers(SMALL_MAX_BYTES, 100_000),
)
# Lines with a request and a custom id: (request, is it malformed?).
LINES_WITH_ID: dict[str, st.SearchStrategy[tuple[dict[Any, Any], bool]]] = {
    "valid": valid_requests.map(lambda request: (request, False)),
    "duplicate": valid_requests.map(lambda request: (request, False)),
    "huge": huge_requests.map(lambda request: (request, False)),
    "bad_request": malformed_requests(jsonable=True).map(lambda case: (case[0], True)),
}


@st.composite
def batch_files(draw: st.DrawFn) -> tuple[list[bytes], set[int]]:
    """JSONL lines mixing valid and hostile ones, and the numbers of the bad lines."""
    lines: list[bytes] = []
    bad: set[int] = set()
    ids: list[str] = []  # the string custom ids so far: the reader remembers each one
    kinds = st.sampled_from([*LINES_WITHOUT_ID, *LINES_WITH_ID, "valid"])
    for number, kind in enumerate(draw(st.lists(kinds, max_size=8)), start=1):
        if kind in LINES_WITHOUT_ID:
            lines.append(draw(LINES_WITHOUT_ID[kind]))
            if kind != "blank":
                bad.add(number)
            continue
        request, malformed = draw(LINES_WITH_ID[kind])
        duplicate = kind == "duplicate" and bool(ids)
        shape = draw(st.sampled_from(["openai", "plain"] if duplicate else ["openai", "plain", ""]))
        custom_id = draw(st.sampled_from(ids)) if duplicate else f"c{number}"
        if not shape:
            custom_id = f"line-{number}"  # the default of a plain line without one
        line = _shaped(shape, custom_id, request)
        lines.append(line)
        # A line too long to be one request is skipped unread: its custom id stays
        # unknown, so a later line with the same id is no duplicate of it.
        if len(line) <= SMALL_LIMITS.max_line_bytes:
            ids.append(custom_id)
        if malformed or duplicate or size_of(request) > SMALL_MAX_BYTES:
            bad.add(number)
    if all(_is_blank(line) for line in lines):
        bad = {0}  # a file without requests is refused as a whole
    return lines, bad


@settings(max_examples=120, deadline=None, suppress_health_check=SUPPRESSED_HEALTH_CHECKS)
@given(case=batch_files())
def test_a_batch_file_is_refused_naming_exactly_its_bad_lines_and_writes_nothing(
    small_client: Client, raw: redis.Redis, tmp_path: Path, case: tuple[list[bytes], set[int]]
) -> None:
    raw.flushdb()
    lines, bad = case
    path = tmp_path / "batch.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    if not bad:
        batch_id = small_client.submit_batch(path)
        good = [line for line in lines if not _is_blank(line)]
        assert small_client.batch_status(batch_id).counts.total == len(good)
        return
    # The client's own bounds: a long line is skipped and the lines after it still read.
    limits = BatchLimits(
        max_request_bytes=SMALL_MAX_BYTES, max_file_bytes=small_client.settings.max_batch_bytes
    )
    with pytest.raises(BatchFileError) as parsed:
        read_batch_file(path, limits=limits)
    assert {number for number, _ in parsed.value.problems} == bad
    with pytest.raises(BatchFileError) as submitted:
        small_client.submit_batch(path)
    assert submitted.value.problems == parsed.value.problems
    assert raw.dbsize() == 0


# --- configuration files ---------------------------------------------------------------------

VALID_CONFIG: dict[str, Any] = {"vendors": {"mock": {"type": "mock"}}, "default_vendor": "mock"}
positive_field = st.sampled_from([0, -1, -0.5, "many", [], {}])
identifiers = st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True)


def _vendor_corruption(name: str) -> st.SearchStrategy[tuple[str, Any]]:
    """A bad entry for vendor `name`, with the path its problem must name."""
    at = f"vendors.{name}"
    field = st.sampled_from(["rpm", "tpm", "rpm_burst", "tpm_burst", "timeout_s"])
    return st.one_of(
        st.tuples(st.just(at), st.sampled_from(["mock", 3, [1], True])),
        st.tuples(field, positive_field).map(
            lambda pair: (f"{at}.{pair[0]}", {"type": "mock", pair[0]: pair[1]})
        ),
        # An unknown kind: not a built-in type, nor a "package.module:Factory".
        st.text(max_size=12)
        .filter(lambda kind: ":" not in kind)
        .map(lambda kind: (f"{at}.type", {"type": f"no such kind {kind}"})),
        st.sampled_from(
            [
                ("weight", -1),
                ("base_url", "ftp://example.com"),
                ("base_url", "not a url"),
                ("models", "gpt-*"),
                ("models", [""]),
                ("priority", "high"),
                ("enabled", "perhaps"),
                ("headers", {"x-key": 1}),
                ("auth", {"scheme": "magic"}),
                ("max_tokens_field", "tokens"),
            ]
        ).map(lambda pair: (f"{at}.{pair[0]}", {"type": "mock", pair[0]: pair[1]})),
        identifiers.map(lambda key: (f"{at}.{key}_x", {"type": "mock", f"{key}_x": 1})),
    )


def _section(name: str, fields: list[tuple[str, Any]]) -> st.SearchStrategy[tuple[str, Any]]:
    """A bad value for a section's field, or a section that is not a mapping."""
    return st.sampled_from(fields).map(
        lambda pair: (f"{name}.{pair[0]}", {pair[0]: pair[1]})
    ) | st.sampled_from([(name, "on"), (name, [1]), (name, 5)])


CONFIG_CORRUPTIONS: dict[str, st.SearchStrategy[tuple[str, Any]]] = {
    "retry_policy": _section(
        "retry_policy",
        [
            ("max_retries", -1),
            ("max_retries", 101),
            ("max_retries", "often"),
            ("backoff", "sometimes"),
            ("initial_delay_s", 0),
            ("multiplier", 0.5),
            ("multiplier", 11),
            ("retry_on", ["everything"]),
            ("patience", 3),
        ],
    ),
    "circuit_breaker": _section(
        "circuit_breaker",
        [("failure_threshold", 0), ("reset_timeout_s", -1), ("enabled", "perhaps")],
    ),
    "cost_optimization": _section(
        "cost_optimization",
        [("max_cost_usd", 0), ("max_cost_usd", "cheap"), ("vendor_costs", "cheap")],
    ),
    "latency_optimization": _section(
        "latency_optimization", [("max_latency_ms", -5), ("prefer_fast", "yes please")]
    ),
    "least_busy": _section("least_busy", [("enabled", "perhaps"), ("mode", "fast")]),
    "routing_rules": st.sampled_from(
        [
            ("routing_rules", "all to mock"),
            ("routing_rules", {"vendor": "mock"}),
            ("routing_rules[0]", [5]),
            ("routing_rules[0].vendor", [{}]),
            ("routing_rules[0].vendor", [{"vendor": "ghost"}]),
            ("routing_rules[0].vendor", [{"vendor": 7}]),
            (
                "routing_rules[0].condition.temperature",
                [{"vendor": "mock", "condition": {"temperature": 5}}],
            ),
        ]
    ),
    "default_vendor": st.sampled_from(["ghost", "Bad Name", 5, ["mock"]]).map(
        lambda value: ("default_vendor", value)
    ),
    "fallback_vendor": st.sampled_from(["ghost", 5, {}]).map(
        lambda value: ("fallback_vendor", value)
    ),
    "model_groups": st.sampled_from(
        [
            ("model_groups", "fast"),
            ("model_groups.g", {"g": []}),
            ("model_groups.g", {"g": "mock"}),
            ("model_groups.g[0].vendor", {"g": [{"vendor": "ghost", "model": "m"}]}),
            ("model_groups.g[0].model", {"g": [{"vendor": "mock"}]}),
        ]
    ),
}


@st.composite
def hostile_configs(draw: st.DrawFn) -> tuple[dict[str, Any], set[str]]:
    """A configuration with one to three sections broken, and the paths its error must name."""
    config: dict[str, Any] = json.loads(json.dumps(VALID_CONFIG))
    expected: set[str] = set()
    kinds = [*CONFIG_CORRUPTIONS, "vendors", "vendor", "unknown", "env_only"]
    for kind in draw(st.sets(st.sampled_from(kinds), min_size=1, max_size=3)):
        if kind == "vendors":
            if any(path.startswith("vendors.") for path in expected):
                continue
            config["vendors"] = draw(st.sampled_from(["mock", [{"type": "mock"}], 3]))
            expected.add("vendors")
        elif kind == "vendor":
            if "vendors" in expected:
                continue
            path, entry = draw(_vendor_corruption("mock"))
            config["vendors"] = {"mock": entry}
            expected.add(path)
        elif kind == "unknown":
            key = draw(identifiers.filter(lambda name: name not in {*FILE_FIELDS, *ENV_NAMES}))
            config[key] = draw(json_values)
            expected.add(key)
        elif kind == "env_only":
            # Not config_file: the path handed to load wins over the file's own, unreported.
            key = draw(st.sampled_from(sorted(set(ENV_NAMES) - {"config_file"})))
            config[key] = draw(st.sampled_from(["1", 1, True]))
            expected.add(ENV_NAMES[key])
        else:
            path, value = draw(CONFIG_CORRUPTIONS[kind])
            config[kind] = value
            expected.add(path)
    return config, expected


def _load(path: Path) -> Settings:
    return Settings.load(config_file=path)


@settings(max_examples=100, deadline=None, suppress_health_check=SUPPRESSED_HEALTH_CHECKS)
@given(case=hostile_configs(), as_json=st.booleans())
def test_a_hostile_config_file_is_refused_naming_each_bad_path(
    tmp_path: Path, case: tuple[dict[str, Any], set[str]], as_json: bool
) -> None:
    config, expected = case
    path = tmp_path / ("llmdispatch.json" if as_json else "llmdispatch.yaml")
    path.write_text(json.dumps(config) if as_json else yaml.safe_dump(config))

    with pytest.raises(ConfigError) as refused:
        _load(path)
    named = {problem.partition(": ")[0] for problem in refused.value.problems}
    for want in expected:
        assert any(
            path_ == want or path_.startswith((f"{want}.", f"{want}[")) for path_ in named
        ), (want, refused.value.problems)


def test_the_valid_config_the_hostile_ones_start_from_loads(tmp_path: Path) -> None:
    path = tmp_path / "llmdispatch.yaml"
    path.write_text(yaml.safe_dump(VALID_CONFIG))

    assert list(_load(path).vendors) == ["mock"]


@settings(max_examples=80, deadline=None, suppress_health_check=SUPPRESSED_HEALTH_CHECKS)
@given(
    content=st.text(max_size=200).map(str.encode)
    | st.binary(max_size=100)
    | json_values.map(lambda value: yaml.safe_dump(value).encode()),
    suffix=st.sampled_from([".yaml", ".json", ".yml", ""]),
)
@example(content=b"- a\n- b\n", suffix=".yaml")
@example(content=b"just words", suffix=".yaml")
@example(content=b"routing_rules: &loop [*loop]\n", suffix=".yaml")
@example(content=b"vendors: " + b"[" * 5_000 + b"]" * 5_000, suffix=".yaml")
@example(content=b'{"vendors": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", suffix=".json")
@example(content=b"\xff\xfe", suffix=".json")
def test_any_config_file_loads_or_is_refused_with_config_error_problems(
    tmp_path: Path, content: bytes, suffix: str
) -> None:
    path = tmp_path / f"llmdispatch{suffix}"
    path.write_bytes(content)

    try:
        _load(path)
    except ConfigError as refused:
        problems = refused.problems
    else:
        return
    assert problems
    for problem in problems:
        # "path: what is wrong", or "LLMDISPATCH_CONFIG (file): what is wrong".
        assert ": " in problem, problem
        assert problem.rpartition(": ")[2].strip(), problem
        assert "Traceback" not in problem


# --- job and batch ids -----------------------------------------------------------------------

# Ids built around a real job's ({job}) or batch's ({batch}) id, and the key layout.
CRAFTED_IDS = [
    "",
    "*",
    "?",
    "[0-9a-f]*",
    "..",
    "../{job}",
    "{",
    "}",
    "\n",
    "\r\n",
    PREFIX,
    f"{PREFIX}:*",
    f"{PREFIX}:job:{{job}}",
    f"{PREFIX}:batch:{{batch}}",
    "itest:secret",
    f"{PREFIX}:stats",
    "llm.mock",
    "{job}:events",
    "{job}:done",
    "{job}:stream",
    "{job}*",
    "*{job}",
    " {job}",
    "{job} ",
    "{job}\n",
    "{job}\x00",
    "{JOB}",
    "{job}0",
    "{batch}:jobs",
    "{batch}:custom_ids",
    "0" * 31,
    "0" * 33,
    "g" * 32,
    "not-a-job",
]
NOT_TEXT_IDS: list[Any] = [None, 42, 4.2, ["{job}"], {"id": "{job}"}, b"{job}"]
# Keys a leaking lookup could reach; each copies a real job's record, so a leak would be seen.
DECOYS = ["*", "..", "not-a-job", "itest", "{", "\n"]


def crafted(template: Any, job_id: str, batch_id: str) -> Any:
    """`template` with the real ids put in."""
    if isinstance(template, str):
        return (
            template.replace("{job}", job_id)
            .replace("{JOB}", job_id.upper())
            .replace("{batch}", batch_id)
        )
    if isinstance(template, bytes):
        return template.replace(b"{job}", job_id.encode())
    return template


def snapshot(raw: redis.Redis) -> dict[bytes, tuple[bytes | None, bool]]:
    """Every key's value (as DUMP) and whether it expires."""
    keys = raw.keys("*")
    pipe = raw.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
        pipe.ttl(key)
    replies = pipe.execute()
    return {
        key: (replies[2 * index], int(replies[2 * index + 1]) >= 0)
        for index, key in enumerate(keys)
    }


def plant(client: Client, raw: redis.Redis) -> tuple[str, str]:
    """A real job and batch, decoy copies of the job at keys ids must not reach, secrets."""
    job_id = client.submit({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    batch_id = client.submit_batch([{"model": "m", "messages": [{"role": "user", "content": "b"}]}])
    record = raw.hgetall(f"{PREFIX}:job:{job_id}")
    pipe = raw.pipeline(transaction=False)
    for decoy in DECOYS:
        pipe.hset(f"{PREFIX}:job:{decoy}", mapping=record)  # type: ignore[arg-type]
        pipe.hset(f"{PREFIX}:batch:{decoy}", mapping={"total": 1, "created_at": 0})
    pipe.set("itest:secret", "do not touch")
    pipe.hset(f"{PREFIX}:secret", mapping={"value": "do not touch"})
    pipe.execute()
    return job_id, batch_id


def assert_not_found(call: Callable[[], Any], error: type[JobNotFound] = JobNotFound) -> None:
    with pytest.raises(error) as refused:
        call()
    message = str(refused.value)
    assert "not a " in message or "no job" in message or "no batch" in message, message


def job_calls(client: Client, job_id: Any) -> list[Callable[[], Any]]:
    return [
        lambda: client.get(job_id),
        lambda: client.wait(job_id, timeout_s=0.1),
        lambda: client.cancel(job_id),
        lambda: client.stream(job_id, start_timeout_s=0.1),
    ]


def batch_calls(client: Client, batch_id: Any) -> list[Callable[[], Any]]:
    return [
        lambda: client.batch_status(batch_id),
        lambda: client.wait_batch(batch_id, timeout_s=0.1),
        lambda: client.batch_results(batch_id),
        lambda: next(client.iter_batch_results(batch_id)),
        lambda: client.cancel_batch(batch_id),
        lambda: client.retry_failed(batch_id),
    ]


@settings(max_examples=120, deadline=None, suppress_health_check=SUPPRESSED_HEALTH_CHECKS)
@given(
    template=st.text()
    | st.sampled_from(CRAFTED_IDS + NOT_TEXT_IDS)
    | st.tuples(
        st.text(max_size=4), st.sampled_from(["{job}", "{batch}"]), st.text(max_size=4)
    ).map("".join)
)
def test_no_id_is_found_that_is_not_a_real_one_and_none_reaches_another_key(
    client: Client, raw: redis.Redis, template: Any
) -> None:
    raw.flushdb()
    job_id, batch_id = plant(client, raw)
    hostile = crafted(template, job_id, batch_id)
    assume(hostile not in (job_id, batch_id))
    before = snapshot(raw)

    for call in job_calls(client, hostile):
        assert_not_found(call)
    for call in batch_calls(client, hostile):
        assert_not_found(call, BatchNotFound)

    assert snapshot(raw) == before
    assert client.get(job_id).status.value == "queued"  # the real job is untouched


def test_a_job_id_is_no_batch_id_and_a_batch_id_no_job_id(client: Client, raw: redis.Redis) -> None:
    job_id, batch_id = plant(client, raw)
    before = snapshot(raw)

    for call in job_calls(client, batch_id):
        assert_not_found(call)
    for call in batch_calls(client, job_id):
        assert_not_found(call, BatchNotFound)
    assert snapshot(raw) == before


async def test_the_async_client_finds_no_crafted_id_and_reaches_no_other_key(
    client: Client, raw: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    job_id, batch_id = plant(client, raw)
    before = snapshot(raw)
    async with AsyncClient(client.settings, send=lambda *_: None) as async_client:
        for template in CRAFTED_IDS + NOT_TEXT_IDS:
            hostile = crafted(template, job_id, batch_id)
            with pytest.raises(JobNotFound):
                await async_client.get(hostile)
            with pytest.raises(JobNotFound):
                await async_client.wait(hostile, timeout_s=0.1)
            with pytest.raises(JobNotFound):
                await async_client.cancel(hostile)
            with pytest.raises(JobNotFound):
                await anext(async_client.stream(hostile, start_timeout_s=0.1))
    assert snapshot(raw) == before


@pytest.mark.parametrize("timeout_s", [float("nan"), -1.0, -math.inf])
def test_wait_refuses_a_timeout_that_is_not_a_duration(
    client: Client, raw: redis.Redis, timeout_s: float
) -> None:
    job_id, _ = plant(client, raw)

    with pytest.raises(ValueError, match="timeout_s must be >= 0"):
        client.wait(job_id, timeout_s=timeout_s)

    async def wait_async() -> None:
        async with AsyncClient(client.settings, send=lambda *_: None) as async_client:
            await async_client.wait(job_id, timeout_s=timeout_s)

    with pytest.raises(ValueError, match="timeout_s must be >= 0"):
        asyncio.run(wait_async())
