"""The data every part of the dispatcher exchanges: requests, responses, chunks, jobs, stats.

All models forbid unknown fields, and an unknown field's error names it and
lists the accepted ones, so a typo (`max_token=`) fails loudly instead of being
dropped. Value-like models are frozen. Timestamps are timezone-aware UTC.

One module per idea: `base` (StrictModel, checked text, utc_now), `requests`
(and what messages and requests hold: `content` parts, `tools`, `formats`),
`responses` (replies, chunks, stream events), `jobs` (routes, status, history,
records), `batches`, `health` and `stats`. Import from here:
`from dispatcher.models import Request`.
"""

from __future__ import annotations

from dispatcher.models.base import StrictModel, VendorName, utc_now
from dispatcher.models.batches import BatchCounts, BatchItem, BatchRecord
from dispatcher.models.content import ImagePart, ImageUrl, TextPart
from dispatcher.models.formats import (
    JsonObjectFormat,
    JsonSchemaFormat,
    JsonSchemaSpec,
    TextFormat,
)
from dispatcher.models.health import CircuitState, HealthStatus
from dispatcher.models.jobs import (
    Deployment,
    JobError,
    JobEvent,
    JobEventKind,
    JobRecord,
    JobStatus,
    Route,
)

# The request limits some callers check against (the broker's priority range, say).
from dispatcher.models.requests import DEFAULT_PRIORITY as DEFAULT_PRIORITY
from dispatcher.models.requests import MAX_MAX_TOKENS as MAX_MAX_TOKENS
from dispatcher.models.requests import MAX_PRIORITY as MAX_PRIORITY
from dispatcher.models.requests import MAX_STOP_SEQUENCES as MAX_STOP_SEQUENCES
from dispatcher.models.requests import MAX_TIMEOUT_S as MAX_TIMEOUT_S
from dispatcher.models.requests import RESERVED_BODY_FIELDS, Message, Request, Role
from dispatcher.models.responses import (
    Chunk,
    FinishReason,
    Response,
    StreamEvent,
    StreamEventType,
    Usage,
)
from dispatcher.models.stats import Stats, VendorStats
from dispatcher.models.tools import (
    FunctionCall,
    FunctionDefinition,
    NamedFunction,
    NamedToolChoice,
    Tool,
    ToolCall,
    ToolCallDelta,
)

__all__ = [
    "RESERVED_BODY_FIELDS",
    "BatchCounts",
    "BatchItem",
    "BatchRecord",
    "Chunk",
    "CircuitState",
    "Deployment",
    "FinishReason",
    "FunctionCall",
    "FunctionDefinition",
    "HealthStatus",
    "ImagePart",
    "ImageUrl",
    "JobError",
    "JobEvent",
    "JobEventKind",
    "JobRecord",
    "JobStatus",
    "JsonObjectFormat",
    "JsonSchemaFormat",
    "JsonSchemaSpec",
    "Message",
    "NamedFunction",
    "NamedToolChoice",
    "Request",
    "Response",
    "Role",
    "Route",
    "Stats",
    "StreamEvent",
    "StreamEventType",
    "StrictModel",
    "TextFormat",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "VendorName",
    "VendorStats",
    "utc_now",
]
