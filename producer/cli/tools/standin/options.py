"""The stand-in vendor's options: how it paces, fails, authenticates and remembers."""

from __future__ import annotations

from pydantic import ConfigDict, Field, SecretStr

from dispatcher.models import StrictModel
from dispatcher.vendors.mock import MockBehaviour

__all__ = ["DEFAULT_MODELS", "StandInOptions"]

# Listed by the model lists; completions accept any model name and echo it back.
DEFAULT_MODELS = ("mock-echo",)


class StandInOptions(StrictModel):
    """How the stand-in paces, fails, authenticates and remembers."""

    model_config = ConfigDict(frozen=True)

    behaviour: MockBehaviour = Field(
        default_factory=MockBehaviour,
        description="time_to_first_token_s is the latency before the first byte.",
    )
    api_key: SecretStr | None = Field(
        default=None, description="The key callers must send, their vendor's way; None: no auth."
    )
    access_log: bool = Field(default=False, description="Log every request (slows the server).")
    models: tuple[str, ...] = DEFAULT_MODELS
    record_requests: bool = Field(
        default=False,
        description="Keep every call for GET /__requests (tests); off for long runs and benches.",
    )
