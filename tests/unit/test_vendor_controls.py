"""Operator controls on the client: look one vendor up, reset its circuit; and their commands."""

from __future__ import annotations

import json

import fakeredis
import pytest
import redis
from typer.testing import CliRunner

import producer.cli.root
from dispatcher import (
    CircuitState,
    HealthStatus,
    NoRoute,
    Settings,
    VendorConfig,
    VendorNotFound,
)
from dispatcher.config.schema import RateLimit
from dispatcher.state.store import JobStore
from dispatcher.vendors.base import Health
from producer import AsyncClient, Client
from producer.cli.root import EXIT_NOT_FOUND, app

KEY = "sk-vendor-controls-0123456789"
HEADER_SECRET = "zq-header-secret-5d41402abc"
URL_PASSWORD = "zq-url-password-7f3a"
# Longer than any test: a client reads the circuits once and keeps what it read.
FOR_EVER_S = 3_600.0
runner = CliRunner()


@pytest.fixture
def settings() -> Settings:
    return Settings(
        vendors={
            "openai": VendorConfig(
                type="openai",
                api_key=KEY,
                rpm=600,
                tpm=90_000,
                model_limits={"gpt-4o": RateLimit(rpm=100)},
                headers={"x-team-token": HEADER_SECRET},
            ),
            "local": VendorConfig(
                type="openai_compatible",
                base_url=f"https://ops:{URL_PASSWORD}@llm.internal/v1",
                models=["llama-*"],
                enabled=False,
            ),
        }
    )


def client_of(settings: Settings, redis_client: redis.Redis) -> Client:
    return Client(
        settings, redis_client=redis_client, send=lambda *_: None, live_state_ttl_s=FOR_EVER_S
    )


def request_to(vendor: str) -> dict[str, object]:
    return {
        "model": "gpt-4o-mini",
        "vendor": vendor,
        "messages": [{"role": "user", "content": "Hi"}],
    }


# --- reset_circuit -------------------------------------------------------------------------


def test_reset_circuit_lets_every_producer_route_to_the_vendor_again(
    settings: Settings, fake_or_real_redis: redis.Redis
) -> None:
    client = client_of(settings, fake_or_real_redis)
    other_producer = client_of(settings, fake_or_real_redis)
    assert client.store.circuits.trip("openai", failure_threshold=1, keep_s=60) == "open"
    for producer_client in (client, other_producer):
        with pytest.raises(NoRoute, match="openai: circuit open"):
            producer_client.submit(request_to("openai"))  # and keeps the open circuit it read

    assert client.reset_circuit("openai") is CircuitState.OPEN

    route = client.get(client.submit(request_to("openai"))).route
    assert route is not None
    assert route.vendor == "openai"
    assert client.vendor("openai").status.circuit is CircuitState.CLOSED
    # Another producer reads the circuits again once its copy is older than its TTL.
    fresh = Client(
        settings, redis_client=fake_or_real_redis, send=lambda *_: None, live_state_ttl_s=0.0
    )
    assert fresh.submit(request_to("openai"))


def test_reset_circuit_of_a_closed_circuit_says_it_was_closed(
    settings: Settings, fake_or_real_redis: redis.Redis
) -> None:
    client = client_of(settings, fake_or_real_redis)
    assert client.reset_circuit("openai") is CircuitState.CLOSED
    assert fake_or_real_redis.dbsize() == 0


def test_an_unknown_vendor_is_refused_naming_the_configured_ones(
    settings: Settings, fake_or_real_redis: redis.Redis
) -> None:
    client = client_of(settings, fake_or_real_redis)

    for call in (client.reset_circuit, client.vendor):
        with pytest.raises(
            VendorNotFound, match=r"no vendor 'opneai' .*\(configured: local, openai\)"
        ):
            call("opneai")

    assert fake_or_real_redis.dbsize() == 0


# --- vendor(name) --------------------------------------------------------------------------


def test_vendor_shows_configuration_health_circuit_and_limits_with_no_secret(
    settings: Settings,
) -> None:
    client = client_of(settings, fakeredis.FakeRedis())
    client.store.health.save("openai", Health(status=HealthStatus.DEGRADED, detail="slow"), 60)
    assert client.store.circuits.trip("openai", failure_threshold=1, keep_s=60) == "open"

    detail = client.vendor("openai")

    assert (detail.name, detail.enabled, detail.config.type) == ("openai", True, "openai")
    assert detail.endpoint == "https://api.openai.com/v1"
    assert "gpt-*" in detail.models
    assert (detail.status.health, detail.status.health_detail) == (HealthStatus.DEGRADED, "slow")
    assert detail.status.circuit is CircuitState.OPEN
    assert (detail.config.rpm, detail.config.tpm) == (600, 90_000)
    assert (detail.status.rpm_limit, detail.status.tpm_limit) == (600, 90_000)
    assert detail.config.model_limits == {"gpt-4o": RateLimit(rpm=100)}
    assert detail.config.api_key is not None
    everything = repr(detail) + detail.model_dump_json() + detail.config.api_key.get_secret_value()
    everything += json.dumps(detail.config.headers)
    assert KEY not in everything
    assert HEADER_SECRET not in everything
    assert list(detail.config.headers) == ["x-team-token"]


def test_a_disabled_vendor_can_be_looked_up_and_its_url_credentials_are_masked(
    settings: Settings,
) -> None:
    detail = client_of(settings, fakeredis.FakeRedis()).vendor("local")

    assert (detail.enabled, detail.config.enabled) == (False, False)
    assert detail.config.api_key is None
    assert detail.models == ["llama-*"]
    assert detail.status.name == "local"
    assert detail.endpoint is not None
    assert URL_PASSWORD not in detail.endpoint + detail.model_dump_json()
    assert detail.endpoint.endswith("@llm.internal/v1")


async def test_the_async_client_looks_up_a_vendor_and_resets_its_circuit(
    settings: Settings,
) -> None:
    server = fakeredis.FakeServer()
    client = AsyncClient(
        settings,
        redis_client=fakeredis.FakeAsyncRedis(server=server),
        sync_redis_client=fakeredis.FakeRedis(server=server),
        send=lambda *_: None,
    )
    async with client:
        assert client.sync.store.circuits.trip("openai", failure_threshold=1, keep_s=60) == "open"
        assert (await client.vendor("openai")).status.circuit is CircuitState.OPEN
        assert await client.reset_circuit("openai") is CircuitState.OPEN
        assert (await client.vendor("openai")).status.circuit is CircuitState.CLOSED
        with pytest.raises(VendorNotFound):
            await client.vendor("nobody")


# --- llmdispatch vendor / circuit reset ---------------------------------------------------


@pytest.fixture
def cli_client(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Client:
    client = client_of(settings, fakeredis.FakeRedis())
    monkeypatch.setattr(producer.cli.root, "make_client", lambda: client)
    return client


def test_llmdispatch_vendor_prints_the_vendor_as_text_and_json(cli_client: Client) -> None:
    cli_client.store.health.save("openai", Health(status=HealthStatus.HEALTHY), 60)

    text = runner.invoke(app, ["vendor", "openai"])
    as_json = runner.invoke(app, ["vendor", "openai", "--json"])

    assert text.exit_code == 0, text.output
    lines = dict(line.split(":", 1) for line in text.stdout.splitlines() if ":" in line[:11])
    assert lines["vendor"].strip() == "openai (openai, enabled)"
    assert lines["api key"].strip() == "set"
    assert lines["health"].strip().startswith("healthy")
    assert lines["circuit"].strip() == "closed"
    assert lines["limits"].strip() == "rpm 600 (burst 60), tpm 90000 (burst 9000)"
    assert "  model gpt-4o: rpm 100 (burst 10)" in text.stdout.splitlines()
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert (data["name"], data["status"]["health"], data["config"]["rpm"]) == (
        "openai",
        "healthy",
        600,
    )
    assert KEY not in text.stdout + as_json.stdout
    assert HEADER_SECRET not in text.stdout + as_json.stdout


def test_llmdispatch_circuit_reset_closes_the_circuit_and_says_what_it_was(
    cli_client: Client,
) -> None:
    assert cli_client.store.circuits.trip("openai", failure_threshold=1, keep_s=60) == "open"

    opened = runner.invoke(app, ["circuit", "reset", "openai"])
    again = runner.invoke(app, ["circuit", "reset", "openai"])

    assert (opened.exit_code, opened.stdout) == (
        0,
        "the circuit of openai was open; it is closed\n",
    )
    assert cli_client.store.circuits.states(["openai"], 30.0) == {}
    assert (again.exit_code, again.stdout) == (
        0,
        "the circuit of openai was closed already; its failure count is cleared\n",
    )


@pytest.mark.parametrize("args", [["vendor", "opneai"], ["circuit", "reset", "opneai"]])
def test_an_unknown_vendor_exits_4_naming_the_configured_ones(
    cli_client: Client, args: list[str]
) -> None:
    result = runner.invoke(app, args)

    assert result.exit_code == EXIT_NOT_FOUND
    assert "no vendor 'opneai' is configured (configured: local, openai)" in result.stderr


def test_a_worker_sees_the_reset_at_once(settings: Settings) -> None:
    shared = fakeredis.FakeServer()
    worker = JobStore(fakeredis.FakeRedis(server=shared), "llmd")
    client = client_of(settings, fakeredis.FakeRedis(server=shared))
    assert worker.circuits.trip("openai", failure_threshold=1, keep_s=60) == "open"

    client.reset_circuit("openai")

    assert worker.circuits.states(["openai"], 30.0) == {}
