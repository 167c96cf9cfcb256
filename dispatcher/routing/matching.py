"""Which requests a vendor or a routing rule takes: a vendor's model globs, a rule's condition.

Configuration only describes vendors and rules (`dispatcher.config.schema`);
deciding whether one of them applies to a request is routing's business.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from dispatcher.config.policies import RoutingCondition
from dispatcher.config.schema import VendorConfig
from dispatcher.models import Request

__all__ = ["condition_matches", "serves"]


def serves(vendor: VendorConfig, model: str) -> bool:
    """True when `vendor` can be asked for `model`: no patterns (any model), or one matches."""
    patterns = vendor.model_patterns()
    return not patterns or any(fnmatchcase(model, pattern) for pattern in patterns)


def condition_matches(condition: RoutingCondition, request: Request) -> bool:
    """True when `request` meets every condition `condition` gives."""
    if condition.model_pattern is not None and not fnmatchcase(
        request.model, condition.model_pattern
    ):
        return False
    if condition.max_tokens is not None and (
        request.max_tokens is None or request.max_tokens > condition.max_tokens
    ):
        return False
    if condition.temperature is not None and (
        request.temperature is None or request.temperature > condition.temperature
    ):
        return False
    return condition.user is None or (
        request.user is not None and fnmatchcase(request.user, condition.user)
    )
