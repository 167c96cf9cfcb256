"""Whether an address to listen on reaches this machine only (Flower's, the HTTP front's)."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


def is_loopback(address: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1 (bracketed or not); a host name may
    resolve to any interface, so it is not."""
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False
