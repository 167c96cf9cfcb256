"""The Redis test bodies of tests/unit/test_vendor_controls.py again, on a real redis-server."""

from __future__ import annotations

import pytest

from tests.unit.test_vendor_controls import *  # noqa: F403 - the same bodies, collected here

pytestmark = pytest.mark.integration
