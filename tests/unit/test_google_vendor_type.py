"""`google`, the seeds' name for Gemini's wire format, is accepted and reported as `gemini`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import fakeredis
import pytest
from pydantic import ValidationError

from dispatcher import Settings, VendorConfig, VendorType
from dispatcher.config.schema import DEFAULT_BASE_URLS
from dispatcher.routing.matching import serves
from dispatcher.state.status import vendor_status
from dispatcher.state.store import JobStore
from dispatcher.vendors import build_vendor
from dispatcher.vendors.gemini import GeminiVendor
from producer.cli.config import summarise


def load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "llmdispatch.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return Settings.load(config_file=path)


def test_type_google_is_the_gemini_wire_format_under_its_own_name() -> None:
    vendor = VendorConfig(type="google", api_key="AIza-google-alias-test-0123")

    assert vendor.type == VendorType.GEMINI
    assert vendor.endpoint == DEFAULT_BASE_URLS[VendorType.GEMINI]
    assert serves(vendor, "gemini-1.5-flash")
    assert not serves(vendor, "gpt-4o")
    assert isinstance(build_vendor("g", vendor), GeminiVendor)


def test_a_file_saying_type_google_is_reported_as_gemini_everywhere(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        """
        vendors:
          vertex:
            type: google
            api_key: AIza-google-alias-test-0123
        """,
    )

    assert settings.vendors["vertex"].type == "gemini"
    assert summarise(settings)["vendors"]["vertex"]["type"] == "gemini"
    (status,) = vendor_status(JobStore(fakeredis.FakeRedis(), "llmd"), settings)
    assert status.type == "gemini"


def test_a_vendor_named_google_needs_no_type_and_takes_the_google_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", "AIza-from-the-environment-0123")
    monkeypatch.setenv("GOOGLE_TIMEOUT", "12")
    settings = load(
        tmp_path,
        """
        vendors:
          google:
            rpm: 60
        """,
    )

    google = settings.vendors["google"]
    assert google.type == "gemini"
    assert google.api_key is not None
    assert google.api_key.get_secret_value() == "AIza-from-the-environment-0123"
    assert (google.timeout_s, google.rpm) == (12.0, 60)
    assert list(settings.vendors) == ["google"], "no second, gemini-named vendor appears"


def test_an_unknown_type_lists_google_among_the_accepted_ones() -> None:
    with pytest.raises(ValidationError, match=r"must be one of .*gemini, google,"):
        VendorConfig(type="goggle")
