"""llmdispatcher's core: models, configuration, errors and routing, free of Celery.

Everything here can be used and tested without a broker; `workers` and
`producer` build on it and meet only in Redis.
"""

from dispatcher.config import Settings
from dispatcher.config_schema import (
    BackoffStrategy,
    CostOptimization,
    LatencyOptimization,
    RetryPolicy,
    RoutingCondition,
    RoutingRule,
    VendorConfig,
    VendorType,
)
from dispatcher.errors import (
    BudgetExceeded,
    CircuitOpen,
    ConfigError,
    ContentFiltered,
    DispatcherError,
    InvalidRequest,
    JobNotFound,
    NoRoute,
    VendorAuthError,
    VendorQuotaExceeded,
    VendorRateLimited,
    VendorTimeout,
    VendorUnavailable,
)
from dispatcher.models import (
    Chunk,
    CircuitState,
    Deployment,
    FinishReason,
    HealthStatus,
    JobError,
    JobEvent,
    JobEventKind,
    JobRecord,
    JobStatus,
    Message,
    Request,
    Response,
    Role,
    Route,
    Stats,
    Usage,
    VendorStats,
)
from dispatcher.pricing import Price
from dispatcher.router import LiveState, VendorState, route

__version__ = "0.1.0"

__all__ = [
    "BackoffStrategy",
    "BudgetExceeded",
    "Chunk",
    "CircuitOpen",
    "CircuitState",
    "ConfigError",
    "ContentFiltered",
    "CostOptimization",
    "Deployment",
    "DispatcherError",
    "FinishReason",
    "HealthStatus",
    "InvalidRequest",
    "JobError",
    "JobEvent",
    "JobEventKind",
    "JobNotFound",
    "JobRecord",
    "JobStatus",
    "LatencyOptimization",
    "LiveState",
    "Message",
    "NoRoute",
    "Price",
    "Request",
    "Response",
    "RetryPolicy",
    "Role",
    "Route",
    "RoutingCondition",
    "RoutingRule",
    "Settings",
    "Stats",
    "Usage",
    "VendorAuthError",
    "VendorConfig",
    "VendorQuotaExceeded",
    "VendorRateLimited",
    "VendorState",
    "VendorStats",
    "VendorTimeout",
    "VendorType",
    "VendorUnavailable",
    "__version__",
    "route",
]
