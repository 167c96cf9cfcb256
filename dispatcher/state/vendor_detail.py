"""One vendor looked up by name: its configuration with secrets masked, and its status now.

The operator's view of a single vendor (`Client.vendor(name)`, `llmdispatch
vendor NAME`): what it is configured to be (type, endpoint, models, limits,
timeouts, routing weight) beside its live `VendorStatus` (health, circuit,
queue, in flight, traffic against its limits). Nothing secret is in it: the
API key reads `**********`, every header value and any credentials in the
base URL `***`.
A disabled vendor can be looked up too; a name that is not configured raises
`VendorNotFound`, listing the names that are.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, SecretStr

from dispatcher.config.schema import VendorConfig
from dispatcher.config.settings import Settings
from dispatcher.errors import VendorNotFound
from dispatcher.models import StrictModel
from dispatcher.redaction import MASK, redact
from dispatcher.state.status import VendorStatus, vendor_status
from dispatcher.state.store import JobStore

__all__ = ["VendorDetail", "configured_vendor", "masked", "vendor_detail"]

# What pydantic prints for any SecretStr in JSON: a masked key reads the same in both.
KEY_MASK = "**********"


class VendorDetail(StrictModel):
    """One vendor's configuration (secrets masked) and its status now."""

    model_config = ConfigDict(frozen=True)

    name: str
    enabled: bool
    endpoint: str | None = Field(description="The base URL it calls; None for in-process ones.")
    models: list[str] = Field(description="Glob patterns of the models it serves; * for any.")
    config: VendorConfig = Field(description="As configured, with every secret masked.")
    status: VendorStatus


def configured_vendor(settings: Settings, name: str) -> VendorConfig:
    """The configuration of the vendor called `name`, enabled or not.

    Raises:
        VendorNotFound: no vendor has that name; the message lists the configured ones.
    """
    config = settings.vendors.get(name)
    if config is None:
        known = ", ".join(sorted(settings.vendors)) or "none"
        raise VendorNotFound(f"no vendor {name!r} is configured (configured: {known})")
    return config


def masked(config: VendorConfig) -> VendorConfig:
    """`config` with its API key, header values and URL credentials masked."""
    return config.model_copy(
        update={
            "api_key": SecretStr(KEY_MASK) if config.api_key is not None else None,
            "headers": dict.fromkeys(config.headers, MASK),
            "base_url": redact(config.base_url) if config.base_url else None,
        }
    )


def vendor_detail(store: JobStore, settings: Settings, name: str) -> VendorDetail:
    """The vendor called `name`: its masked configuration and its status now.

    Raises:
        VendorNotFound: no vendor has that name.
    """
    config = configured_vendor(settings, name)
    # `vendor_status` reports the enabled vendors of the settings it is given: hand it
    # this vendor alone, enabled, so one vendor's figures are read, disabled or not.
    alone = settings.model_copy(
        update={"vendors": {name: config.model_copy(update={"enabled": True})}}
    )
    (status,) = vendor_status(store, alone)
    return VendorDetail(
        name=name,
        enabled=config.enabled,
        endpoint=redact(config.endpoint) if config.endpoint else None,
        models=list(config.model_patterns()) or ["*"],
        config=masked(config),
        status=status,
    )
