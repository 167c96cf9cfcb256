"""The Redis test bodies of tests/unit/test_batch_store.py again, on a real redis-server."""

from __future__ import annotations

import pytest

from tests.unit.test_batch_store import *  # noqa: F403 - the same bodies, collected here

pytestmark = pytest.mark.integration
