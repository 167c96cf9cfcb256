"""Integration-only collection rules."""

from __future__ import annotations

import pytest

# Modules that run unit test bodies again on a real redis-server (see `fake_or_real_redis`).
REAL_REDIS_PREFIX = "test_real_redis_"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a `test_real_redis_*` module, keep only the bodies that use Redis: the rest
    ran in the unit suite already and would only run twice."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        again = item.path.name.startswith(REAL_REDIS_PREFIX)
        uses_redis = "fake_or_real_redis" in getattr(item, "fixturenames", ())
        (dropped if again and not uses_redis else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
