"""MTU arithmetic for a WireGuard tunnel over the uplinks and VXLAN over the tunnel. Pure.

WireGuard adds, per packet: the outer IP header (20 for IPv4, 40 for IPv6), UDP (8), its
own header (16) and the authentication tag (16): 60 over IPv4, 80 over IPv6. The padding to
16 bytes is not counted, as wg-quick does not count it either: an MTU of 1420 over a
1500-byte IPv6-capable underlay is the usual figure. VXLAN adds the inner Ethernet header
(14), VXLAN (8), UDP (8) and the IP header of the address family it is carried over (20/40):
50 or 70.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

WG_OVERHEAD_IPV4: Final = 60
WG_OVERHEAD_IPV6: Final = 80
VXLAN_OVERHEAD_IPV4: Final = 50
VXLAN_OVERHEAD_IPV6: Final = 70
#: the smallest MTU an IPv6 link may have (RFC 8200); an interface below it loses IPv6
IPV6_MIN_MTU: Final = 1280
#: the smallest MTU the kernel accepts on an IPv4 interface
IPV4_MIN_MTU: Final = 68


def tunnel_mtu(uplink_mtus: Iterable[int], *, ipv6_underlay: bool) -> int:
    """`auto` for a WireGuard tunnel: the smallest MTU among the uplinks that may carry it,
    minus WireGuard's overhead for the underlay's family (80 when any carrying uplink may
    use IPv6 to reach the peer, 60 when the underlay is IPv4 only)."""
    mtus = list(uplink_mtus)
    if not mtus:
        raise ValueError("tunnel MTU auto: no uplink may carry the tunnel; set the MTU or an underlay")
    overhead = WG_OVERHEAD_IPV6 if ipv6_underlay else WG_OVERHEAD_IPV4
    return _checked(min(mtus) - overhead, what="tunnel")


def vxlan_mtu(tunnel_mtu: int, *, ipv6_inner: bool) -> int:
    """`auto` for a VXLAN interface carried by the tunnel: the tunnel's MTU minus VXLAN's
    overhead for the family of the tunnel's inner addresses VXLAN is sent between."""
    overhead = VXLAN_OVERHEAD_IPV6 if ipv6_inner else VXLAN_OVERHEAD_IPV4
    return _checked(tunnel_mtu - overhead, what="vxlan")


def _checked(mtu: int, *, what: str) -> int:
    if mtu < IPV4_MIN_MTU:
        raise ValueError(
            f"{what} MTU auto comes to {mtu}, below {IPV4_MIN_MTU}: the underlay's MTU is too small"
        )
    return mtu


def carries_ipv6(mtu: int) -> bool:
    """Whether an interface of this MTU can carry IPv6 at all."""
    return mtu >= IPV6_MIN_MTU
