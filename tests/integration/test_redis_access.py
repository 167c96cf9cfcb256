"""Redis access: a password and TLS (`rediss://`) through real workers, Flower and clients.

Each test runs its own private redis-server (`EmbeddedRedis`) with a password, or
with a password and TLS only (a CA and a server certificate made by `trustme`),
and a real `celery worker` process configured by `REDIS_URL` alone.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import celery
import kombu.exceptions
import pytest
import redis
import trustme

from dispatcher import JobStatus, Message, Request, Settings
from dispatcher.broker.celery_config import broker_ssl_options, celery_settings
from producer import AsyncClient, Client
from producer.cli.tools.embedded_redis import EmbeddedRedis, TlsFiles
from tests.integration.stack import Stack, running_flower, running_stack, wait_for

pytestmark = pytest.mark.integration

PASSWORD = "s3cret:redis/pass@word-0123"  # URL-special characters, percent-encoded in the URL
WRONG_PASSWORD = "not-the-redis-password-9876"
KEY = "sk-access-test-0123456789abcdef"
PROMPT = [Message(role="user", content="hello")]
FLOWER_USER, FLOWER_PASSWORD = "ops", "flower-access-password-42"
# A refused connection must fail well within the client's timeouts (3 s connect, 5 s read).
REFUSAL_WITHIN_S = 15.0


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    """A fresh CA, and a certificate it signed for 127.0.0.1 and localhost, as PEM files."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(
        cert=tmp_path / "server.pem", key=tmp_path / "server.key", ca=tmp_path / "ca.pem"
    )
    server.cert_chain_pems[0].write_to_path(str(files.cert))
    server.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.ca))
    return files


@pytest.fixture
def other_ca(tmp_path: Path) -> Path:
    """The certificate of a CA that signed nothing our server presents."""
    path = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def password_stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path, redis_server=EmbeddedRedis(password=PASSWORD)) as running:
        yield running


@pytest.fixture
def tls_stack(tmp_path: Path, tls_files: TlsFiles) -> Iterator[Stack]:
    server = EmbeddedRedis(password=PASSWORD, tls=tls_files)
    with running_stack(tmp_path, redis_server=server) as running:
        yield running


def configure(stack: Stack) -> None:
    stack.configure(
        {
            "vendors": {
                "primary": {
                    "type": "openai",
                    "base_url": "{url}/v1",
                    "models": ["gpt-*"],
                    "timeout_s": 4,
                    "api_key": "${OPENAI_API_KEY}",
                }
            },
            "default_vendor": "primary",
        },
        OPENAI_API_KEY=KEY,
    )


def client_for(stack: Stack, redis_url: str | None = None) -> Client:
    """A client of the stack's configuration; on `redis_url` instead of its own if given."""
    with stack.environment():
        if redis_url is None:
            return Client.from_env()
        return Client(Settings.load(redis_url=redis_url))


def run_one_job(stack: Stack) -> str:
    """A job submitted over the stack's REDIS_URL runs on a real worker and succeeds; its id."""
    stack.start_worker(["llm.primary"])
    client = client_for(stack)
    try:
        job_id = client.submit(Request(model="gpt-4o-mini", messages=PROMPT))
        assert client.wait(job_id, timeout_s=30).content == "echo: hello"
    finally:
        client.close()
    assert stack.received()[0]["headers"]["authorization"] == f"Bearer {KEY}"
    return job_id


def refused(stack: Stack, redis_url: str) -> Exception:
    """The error a client on `redis_url` gets from `submit`, raised within a bounded time."""
    client = client_for(stack, redis_url)
    started = time.monotonic()
    try:
        # StoreUnavailable (a ConnectionError) where the client translates redis-py's errors.
        with pytest.raises((ConnectionError, redis.ConnectionError)) as caught:
            client.submit(Request(model="gpt-4o-mini", messages=PROMPT))
    finally:
        client.close()
    assert time.monotonic() - started < REFUSAL_WITHIN_S
    return caught.value


def redis_error_of(error: Exception) -> BaseException | None:
    """redis-py's error itself, or the one our error was raised from."""
    return error if isinstance(error, redis.RedisError) else error.__cause__


def assert_no_password(text: str) -> None:
    """Neither the password nor its percent-encoded spelling (as in the URL) is in `text`."""
    assert PASSWORD not in text
    assert quote(PASSWORD, safe="") not in text


# --- the URL forms --------------------------------------------------------------------


def test_a_plain_redis_url_sets_no_broker_tls() -> None:
    assert broker_ssl_options("redis://:pw@127.0.0.1:6379/0") is None
    assert "broker_use_ssl" not in celery_settings(Settings(redis_url="redis://localhost:6379/0"))


def test_broker_tls_options_come_from_the_rediss_url_query() -> None:
    options = broker_ssl_options(
        "rediss://:pw@redis.internal:6380/0?ssl_cert_reqs=required&ssl_ca_certs=%2Fetc%2Fca.pem"
        "&ssl_check_hostname=false"
    )
    assert options == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": "/etc/ca.pem",
        "ssl_check_hostname": False,
    }


def test_a_rediss_url_without_cert_reqs_still_verifies_the_server() -> None:
    # kombu alone would connect without verifying (CERT_NONE); redis-py verifies by default.
    assert broker_ssl_options("rediss://redis.internal:6380/0") == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED
    }


def test_an_unknown_cert_reqs_value_is_refused_without_repeating_the_url() -> None:
    with pytest.raises(ValueError, match="ssl_cert_reqs must be one of") as caught:
        broker_ssl_options("rediss://:hunter2hunter2@host:6380/0?ssl_cert_reqs=CERT_REQUIRED")
    assert "hunter2hunter2" not in str(caught.value)
    assert "CERT_REQUIRED" not in str(caught.value)


# --- a password -----------------------------------------------------------------------


def test_a_job_runs_through_a_worker_on_a_password_protected_redis(
    password_stack: Stack,
) -> None:
    configure(password_stack)
    assert password_stack.env["REDIS_URL"].startswith("redis://:")
    run_one_job(password_stack)
    assert_no_password(password_stack.workers[0].log_text())


def test_a_client_with_the_wrong_password_gets_a_clear_error_without_any_password(
    password_stack: Stack,
) -> None:
    configure(password_stack)
    port = password_stack.redis.port
    error = refused(password_stack, f"redis://:{WRONG_PASSWORD}@127.0.0.1:{port}/0")
    message = str(error)
    assert isinstance(redis_error_of(error), redis.AuthenticationError)
    assert "invalid username-password pair" in message
    assert WRONG_PASSWORD not in message
    assert_no_password(message)


def test_a_client_without_a_password_is_refused(password_stack: Stack) -> None:
    configure(password_stack)
    error = refused(password_stack, f"redis://127.0.0.1:{password_stack.redis.port}/0")
    assert isinstance(redis_error_of(error), redis.AuthenticationError)
    assert "authenticated" in str(error)


# --- TLS and a password ---------------------------------------------------------------


def test_a_job_runs_through_a_worker_over_tls_with_a_password(tls_stack: Stack) -> None:
    configure(tls_stack)
    url = tls_stack.env["REDIS_URL"]
    assert url.startswith("rediss://:")
    assert "ssl_cert_reqs=required" in url
    job_id = run_one_job(tls_stack)

    async def read_with_async_client() -> JobStatus:
        with tls_stack.environment():
            settings = Settings.load()
        async with AsyncClient(settings) as client:
            return (await client.get(job_id)).status

    assert asyncio.run(read_with_async_client()) is JobStatus.SUCCEEDED
    log = tls_stack.workers[0].log_text()
    assert "rediss://" in log  # the worker's banner names its broker, password masked
    assert "insecure" not in log  # kombu warns when it would not verify the certificate
    assert_no_password(log)


def test_a_plain_client_on_the_tls_port_fails_fast_with_a_clear_error(tls_stack: Stack) -> None:
    configure(tls_stack)
    port = tls_stack.redis.port
    error = refused(tls_stack, f"redis://:{quote(PASSWORD, safe='')}@127.0.0.1:{port}/0")
    assert "127.0.0.1" in str(error)
    assert_no_password(str(error))


def test_a_client_and_the_broker_that_do_not_trust_the_servers_ca_refuse_it(
    tls_stack: Stack, other_ca: Path
) -> None:
    url = (
        f"rediss://:{quote(PASSWORD, safe='')}@127.0.0.1:{tls_stack.redis.port}/0"
        f"?ssl_cert_reqs=required&ssl_ca_certs={other_ca}"
    )
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3).ping()

    app = celery.Celery("access-test", set_as_current=False)
    app.conf.update(celery_settings(Settings(redis_url=url)))
    try:
        with (
            app.connection_for_write() as connection,
            pytest.raises(kombu.exceptions.OperationalError, match="certificate verify failed"),
        ):
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=10)
    finally:
        app.close()


def test_flower_started_by_llmdispatch_reads_the_queues_over_tls(tls_stack: Stack) -> None:
    configure(tls_stack)
    with running_flower(
        tls_stack, user=FLOWER_USER, password=FLOWER_PASSWORD, via="llmdispatch"
    ) as flower:
        assert flower.get("/api/workers", auth=False)[0] == 401
        assert flower.get("/api/workers")[0] == 200
        tls_stack.start_worker(["llm.primary"], name="tls")
        wait_for(
            lambda: any(
                name.startswith("tls@") for name in (flower.get("/api/workers?refresh=1")[1] or {})
            ),
            60,
            "Flower to list the worker",
        )
        # Flower reads queue lengths with its own Redis client, set up by broker_use_ssl.
        status, lengths = flower.get("/api/queues/length")
        assert status == 200
        assert {"name": "llm.primary", "messages": 0} in lengths["active_queues"]
    assert_no_password(flower.log_text())
