"""IP addresses and CIDRs from settings, and whether a peer's address is among them.

The gate protects the API server's addresses and admits only allowed sources to the metrics listener; both are
parsed and matched here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def within(host: str, networks: Networks) -> bool:
    """True when `host` (IPv4-mapped IPv6 too) lies in one of `networks`; False for a non-address."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def parse_networks(text: str | Iterable[str]) -> Networks:
    """Comma-separated addresses or CIDRs as networks; ValueError names the bad entry."""
    items = [part.strip() for part in text.split(",")] if isinstance(text, str) else [p.strip() for p in text]
    networks = []
    for item in items:
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR like 10.0.0.0/16") from None
    return tuple(networks)
