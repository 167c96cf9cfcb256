"""The libraries whose internals we touch run at the versions the suite was run with."""

from __future__ import annotations

import logging
import re
import tomllib
from pathlib import Path

import pytest
from celery.signals import celeryd_after_setup
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from dispatcher.tested_versions import TESTED_RANGES, VersionRange, untested_versions

ROOT = Path(__file__).resolve().parents[2]


def test_every_installed_library_is_within_its_tested_range() -> None:
    problems = untested_versions()
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("version", "inside"),
    [
        ("5.7.0", True),
        ("5.7.11", True),
        ("5.7.1.post1", True),
        ("5.6.9", False),
        ("5.8.0", False),
        ("5.8.0rc1", False),
        ("6.0.0", False),
        ("not-a-version", False),
    ],
)
def test_a_range_holds_the_minor_series_it_names(version: str, inside: bool) -> None:
    assert VersionRange("celery", "5.7", "5.8").contains(version) is inside


def test_the_guard_names_each_library_outside_its_range_and_the_range() -> None:
    installed = {"celery": "5.8.0", "kombu": "5.7.2", "redis": "8.1.0", "httpx": None}
    problems = untested_versions(installed.get)
    assert problems == [
        "celery 5.8.0 is outside the tested range >=5.7,<5.8 (see docs/private-internals.md)",
        "redis 8.1.0 is outside the tested range >=8.2,<8.3 (see docs/private-internals.md)",
    ]


def test_the_guard_is_quiet_when_every_library_is_in_range() -> None:
    installed = {tested.distribution: f"{tested.lowest}.0" for tested in TESTED_RANGES}
    assert untested_versions(installed.get) == []


def test_pyproject_bounds_each_library_to_its_tested_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = {
        canonicalize_name(req.name): req
        for req in map(Requirement, project["dependencies"])
        if req.marker is None
    }
    for tested in TESTED_RANGES:
        requirement = requirements.get(canonicalize_name(tested.distribution))
        assert requirement is not None, f"{tested.distribution} is not a direct dependency"
        assert requirement.specifier == tested.specifier, (
            f"pyproject.toml asks {tested.distribution}{requirement.specifier}, "
            f"the tested range is {tested.text}"
        )


def test_the_locked_versions_are_within_the_tested_ranges() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = {canonicalize_name(p["name"]): p["version"] for p in lock["package"]}
    assert untested_versions(lambda name: locked.get(canonicalize_name(name))) == []


def test_make_and_the_image_bootstrap_the_uv_the_lock_pins() -> None:
    makefile = (ROOT / "Makefile").read_text()
    pinned = re.search(r"^UV_VERSION := (\S+)$", makefile, re.MULTILINE)
    assert pinned is not None
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = {p["name"]: p["version"] for p in lock["package"]}
    assert locked["uv"] == pinned.group(1)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"'uv=={locked['uv']}'" in dockerfile, "the image installs with the same uv"


def test_a_starting_worker_warns_once_of_an_untested_version(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import workers.app  # noqa: PLC0415 - builds the Celery app: only in the tests that need it

    monkeypatch.setattr(
        workers.app,
        "untested_versions",
        lambda: untested_versions({"kombu": "5.8.1", "celery": "5.9.0"}.get),
    )
    with caplog.at_level(logging.WARNING, logger="workers.app"):
        celeryd_after_setup.send(sender="w1@test", instance=None, conf=None)
    lines = [r.getMessage() for r in caplog.records if r.name == "workers.app"]
    assert len(lines) == 1
    assert "\n" not in lines[0]
    assert "celery 5.9.0 is outside the tested range >=5.7,<5.8" in lines[0]
    assert "kombu 5.8.1 is outside the tested range >=5.7,<5.8" in lines[0]


def test_a_starting_worker_says_nothing_when_every_version_was_tested(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import workers.app  # noqa: PLC0415

    monkeypatch.setattr(workers.app, "untested_versions", lambda: [])
    with caplog.at_level(logging.WARNING, logger="workers.app"):
        celeryd_after_setup.send(sender="w1@test", instance=None, conf=None)
    assert [r for r in caplog.records if r.name == "workers.app"] == []
