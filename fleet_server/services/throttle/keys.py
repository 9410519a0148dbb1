"""What a client address counts as: one owner for the key both the throttle and the audit log
group callers by."""

from __future__ import annotations

import ipaddress


def client_key(host: str | None) -> str:
    """The throttle's key for a client address: IPv4 as is, IPv6 by its /64 (one host or
    customer usually owns the whole prefix, so rotating the last 64 bits gains nothing)."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
