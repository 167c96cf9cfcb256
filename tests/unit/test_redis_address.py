"""`REDIS_URL` naming a Sentinel-watched primary: parsing, validation, masking."""

from __future__ import annotations

import json
import ssl
import uuid

import pytest
from typer.testing import CliRunner

from dispatcher import ConfigError, Settings
from dispatcher.config.redis_address import (
    DEFAULT_SENTINEL_PORT,
    SentinelAddress,
    is_sentinel_url,
    parse_sentinel_url,
    shown_redis_url,
)
from dispatcher.redaction import MASK, redact
from producer.cli.root import app


def fresh_secret(label: str) -> str:
    """A secret no other test registered, shaped so no redaction pattern matches it alone."""
    return f"zq{label}{uuid.uuid4().hex}"


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    address = parse_sentinel_url(
        "redis+sentinel://app:p%40ss%2Cword@s1.internal:26380,s2.internal,[::1]:26381/orders/3"
    )

    assert address == SentinelAddress(
        sentinels=(("s1.internal", 26380), ("s2.internal", DEFAULT_SENTINEL_PORT), ("::1", 26381)),
        service_name="orders",
        db=3,
        username="app",
        password="p@ss,word",
    )
    assert address.server_options() == {"db": 3, "username": "app", "password": "p@ss,word"}
    assert address.sentinel_options() == {}


def test_the_database_is_0_when_the_url_names_only_the_service() -> None:
    assert parse_sentinel_url("redis+sentinel://s1/orders").db == 0
    assert parse_sentinel_url("redis+sentinel://s1/orders/").db == 0


def test_the_sentinels_own_password_comes_from_the_query() -> None:
    address = parse_sentinel_url(
        "redis+sentinel://:data-pass@s1/orders/0?sentinel_username=watch&sentinel_password=s%26p"
    )

    assert address.sentinel_options() == {"username": "watch", "password": "s&p"}
    assert address.server_options() == {"db": 0, "password": "data-pass"}


def test_rediss_sentinel_uses_tls_to_sentinels_and_servers_and_verifies_by_default() -> None:
    address = parse_sentinel_url(
        "rediss+sentinel://s1/orders/0?ssl_ca_certs=%2Fetc%2Fca.pem&ssl_check_hostname=false"
    )

    tls = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/etc/ca.pem",
           "ssl_check_hostname": False}  # fmt: skip
    assert address.tls == tls
    assert address.server_options() == {"db": 0, "ssl": True, **tls}
    assert address.sentinel_options() == {"ssl": True, **tls}


@pytest.mark.parametrize(
    ("url", "sentinel"),
    [
        ("redis+sentinel://s1/orders", True),
        ("rediss+sentinel://s1/orders", True),
        ("redis://cache:6379/0", False),
        ("sentinel://s1:26379", False),  # Celery's own form: not a REDIS_URL
    ],
)
def test_only_the_sentinel_schemes_name_a_sentinel_url(url: str, sentinel: bool) -> None:
    assert is_sentinel_url(url) is sentinel


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://:{pw}@/orders/0", "name at least one sentinel"),
        ("redis+sentinel://:{pw}@s1:26379,,s2/orders", "sentinel 2 is empty"),
        ("redis+sentinel://:{pw}@s1:99999/orders", "sentinel 1: the port must be a number"),
        ("redis+sentinel://:{pw}@s1:0/orders", "sentinel 1: the port must be a number"),
        ("redis+sentinel://:{pw}@s1:port/orders", "sentinel 1: the port must be a number"),
        ("redis+sentinel://:{pw}@s1,s1/orders", "a sentinel is listed twice"),
        ("redis+sentinel://:{pw}@s1:26379", "name the service the sentinels watch"),
        ("redis+sentinel://:{pw}@s1:26379/", "name the service the sentinels watch"),
        ("redis+sentinel://:{pw}@s1/orders/zero", "the database must be a number"),
        ("redis+sentinel://:{pw}@s1/orders/0/extra", "the path is SERVICE or SERVICE/DB"),
        ("redis+sentinel://:{pw}@s1/or%20ders/0", "the service name must be"),
        ("redis+sentinel://:{pw}@s1/orders/0?colour=blue", "an option is not one of"),
        ("redis+sentinel://:{pw}@s1/orders/0?ssl_cert_reqs=required", "need rediss+sentinel://"),
        ("rediss+sentinel://:{pw}@s1/orders/0?ssl_cert_reqs=CERT_REQUIRED", "ssl_cert_reqs must"),
        ("redis+sentinel://:{pw}@s1/orders/0?sentinel_password=a&sentinel_password=b", "twice"),
        ("redis+sentinel://:{pw}@s1/orders/0#frag", "no #fragment"),
        ("REDIS+SENTINEL://:{pw}@s1/orders/0", "must start with one of"),
    ],
)
def test_a_sentinel_url_that_cannot_work_is_refused_at_start_up_without_repeating_it(
    monkeypatch: pytest.MonkeyPatch, url: str, problem: str
) -> None:
    password = fresh_secret("sentinel")
    monkeypatch.setenv("REDIS_URL", url.format(pw=password))

    with pytest.raises(ConfigError) as caught:
        Settings.load()

    [message] = caught.value.problems
    assert message.startswith("REDIS_URL: ")
    assert problem in message
    assert password not in str(caught.value)
    assert password not in json.dumps(caught.value.to_dict())


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://s1:26379,s2:26379,s3:26379/orders/0",
        "redis+sentinel://:p%40ss@10.0.0.1,10.0.0.2/orders/15?sentinel_password=x",
        "rediss+sentinel://app:pw@s1:26380/orders/0?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem",
        "redis+sentinel://[::1]:26379/orders",
    ],
)
def test_usable_sentinel_urls_pass(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("REDIS_URL", url)

    assert Settings.load().redis_url.get_secret_value() == url


def test_both_passwords_of_a_sentinel_url_are_masked_wherever_text_is_produced() -> None:
    data_password, sentinel_password = fresh_secret("data"), fresh_secret("watch")
    Settings(
        redis_url=f"redis+sentinel://:{data_password}@s1/orders/0"
        f"?sentinel_password={sentinel_password}"
    )

    text = redact(f"lost {data_password} and {sentinel_password}")

    assert text == f"lost {MASK} and {MASK}"


def test_a_shown_sentinel_url_masks_both_passwords_however_short() -> None:
    shown = shown_redis_url("redis+sentinel://app:pw1@s1,s2:26380/orders/0?sentinel_password=pw2")

    assert shown == "redis+sentinel://app:***@s1,s2:26380/orders/0?sentinel_password=***"


def test_config_check_prints_a_sentinel_url_with_its_passwords_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-sentinel-unit-0123456789")
    monkeypatch.setenv(
        "REDIS_URL", "redis+sentinel://:short@s1:26379,s2:26379/orders/2?sentinel_password=tiny"
    )

    result = CliRunner().invoke(app, ["config", "check", "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["redis_url"] == (
        "redis+sentinel://:***@s1:26379,s2:26379/orders/2?sentinel_password=***"
    )
    assert "short" not in result.output
    assert "tiny" not in result.output
