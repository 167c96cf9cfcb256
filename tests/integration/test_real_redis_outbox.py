"""The Redis test bodies of tests/unit/test_outbox.py again, on a real redis-server."""

from __future__ import annotations

import pytest

from tests.unit.test_outbox import *  # noqa: F403 - the same bodies, collected here

pytestmark = pytest.mark.integration
