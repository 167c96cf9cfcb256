"""The Redis test bodies of tests/unit/test_circuit_reset.py again, on a real redis-server."""

from __future__ import annotations

import pytest

from tests.unit.test_circuit_reset import *  # noqa: F403 - the same bodies, collected here

pytestmark = pytest.mark.integration
