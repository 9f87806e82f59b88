"""Address families and IP types, as the rest of the model spells them."""

from __future__ import annotations

import ipaddress
import socket

AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6
FAMILIES = (AF_INET, AF_INET6)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def fam(family: int) -> str:
    """The family as `ip` spells it: -4 or -6."""
    return "-4" if family == AF_INET else "-6"


def any_net(family: int) -> IPNetwork:
    return ipaddress.ip_network("0.0.0.0/0" if family == AF_INET else "::/0")
