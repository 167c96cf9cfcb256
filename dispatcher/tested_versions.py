"""The versions of the libraries whose internals we touch that the suite was run with.

Workers and producers reach into private parts of kombu, Celery, redis-py, httpx
and httpx-aiohttp (docs/private-internals.md lists every access). A new minor
release of one of them may change those parts without notice, so
pyproject.toml bounds each to the minor series tested here (a unit test keeps
the two equal), and a worker logs one warning at start when an installed
version is outside its range (an install with `--no-deps`, or a forced upgrade).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

__all__ = ["TESTED_RANGES", "VersionRange", "installed_version", "untested_versions"]


@dataclass(frozen=True)
class VersionRange:
    """One library and the versions the suite passed with: `lowest` <= version < `below`."""

    distribution: str
    lowest: str
    below: str

    @property
    def text(self) -> str:
        """The range as pyproject.toml writes it: `>=5.7,<5.8`."""
        return f">={self.lowest},<{self.below}"

    @property
    def specifier(self) -> SpecifierSet:
        """The range as a requirement specifier."""
        return SpecifierSet(self.text)

    def contains(self, version: str) -> bool:
        """Whether `version` is in the range; an unparsable version is not."""
        try:
            return self.specifier.contains(Version(version), prereleases=True)
        except InvalidVersion:
            return False


# Each upper bound is the next minor release: the one whose internals we have not seen.
TESTED_RANGES = (
    VersionRange("celery", "5.7", "5.8"),
    VersionRange("kombu", "5.7", "5.8"),
    VersionRange("redis", "8.2", "8.3"),
    VersionRange("httpx", "0.29", "0.30"),
    VersionRange("httpx-aiohttp", "0.2", "0.3"),
)


def installed_version(distribution: str) -> str | None:
    """The installed version of `distribution`, or None when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def untested_versions(
    installed: Callable[[str], str | None] = installed_version,
    ranges: tuple[VersionRange, ...] = TESTED_RANGES,
) -> list[str]:
    """One line per library installed outside its tested range (none installed: not listed)."""
    problems = []
    for tested in ranges:
        version = installed(tested.distribution)
        if version is not None and not tested.contains(version):
            problems.append(
                f"{tested.distribution} {version} is outside the tested range "
                f"{tested.text} (see docs/private-internals.md)"
            )
    return problems
