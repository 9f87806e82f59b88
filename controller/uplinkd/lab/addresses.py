"""The lab's address plan: every address the lab uses, computed from small indexes.

Computes, no side effects.  All addresses are private (RFC 1918, ULA) or documentation
ranges (RFC 5737 ``198.51.100.0/24``, RFC 3849 ``2001:db8::/32``) and live only inside the
lab's own namespaces.

=========================  ======================  ============================
where                      IPv4                    IPv6
=========================  ======================  ============================
router ``lan0`` (bridge)   192.168.50.1/24         fd50::1/64
client ``lan<K>`` eth0     192.168.50.<10+K>/24    fd50::<10+K>/64
ISP N ``down`` (gateway)   10.<100+N>.0.1/24       2001:db8:<N>::1/64
router side, static        10.<100+N>.0.2/24       2001:db8:<N>::2/64
router side, DHCP pool     10.<100+N>.0.50-150     (RA: 2001:db8:<N>::/64, SLAAC)
ISP N ``up`` (masquerade)  198.51.100.<N>/24       2001:db8:100::<N>/64
server (``inet`` ``br0``)  198.51.100.100/24       2001:db8:100::100/64
=========================  ======================  ============================

``<N>`` and ``<10+K>`` are written as decimal digits, also inside IPv6 groups
(ISP 12 is ``2001:db8:12::1``), so an address reads the same in both families.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface

MAX_ISPS = 99
"""ISP N's upstream is 198.51.100.N, and .100 is the server."""

MAX_CLIENTS = 200

LAN_ROUTER4 = IPv4Interface("192.168.50.1/24")
LAN_ROUTER6 = IPv6Interface("fd50::1/64")
SERVER4 = IPv4Interface("198.51.100.100/24")
SERVER6 = IPv6Interface("2001:db8:100::100/64")


@dataclass(frozen=True)
class IspAddresses:
    """Addresses of ISP number ``index`` (1-based)."""

    index: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= MAX_ISPS:
            raise ValueError(f"ISP index must be 1..{MAX_ISPS}, not {self.index}")

    @property
    def gateway4(self) -> IPv4Interface:
        return IPv4Interface(f"10.{100 + self.index}.0.1/24")

    @property
    def gateway6(self) -> IPv6Interface:
        return IPv6Interface(f"2001:db8:{self.index}::1/64")

    @property
    def router4(self) -> IPv4Interface:
        """The router side's address when the lab assigns it (``address="static"``)."""
        return IPv4Interface(f"10.{100 + self.index}.0.2/24")

    @property
    def router6(self) -> IPv6Interface:
        return IPv6Interface(f"2001:db8:{self.index}::2/64")

    @property
    def dhcp_pool(self) -> tuple[IPv4Address, IPv4Address]:
        return (
            IPv4Address(f"10.{100 + self.index}.0.50"),
            IPv4Address(f"10.{100 + self.index}.0.150"),
        )

    @property
    def upstream4(self) -> IPv4Interface:
        """The ISP's address towards the server: the source the server sees."""
        return IPv4Interface(f"198.51.100.{self.index}/24")

    @property
    def upstream6(self) -> IPv6Interface:
        return IPv6Interface(f"2001:db8:100::{self.index}/64")


@dataclass(frozen=True)
class ClientAddresses:
    """Addresses of LAN client number ``index`` (1-based)."""

    index: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= MAX_CLIENTS:
            raise ValueError(f"client index must be 1..{MAX_CLIENTS}, not {self.index}")

    @property
    def host4(self) -> IPv4Interface:
        return IPv4Interface(f"192.168.50.{10 + self.index}/24")

    @property
    def host6(self) -> IPv6Interface:
        return IPv6Interface(f"fd50::{10 + self.index}/64")
