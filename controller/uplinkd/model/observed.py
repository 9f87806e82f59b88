"""Facts about the world that are not the controller's: links, addresses, others' gateways,
and the DHCP leases it holds."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from uplinkd.model.net import AF_INET, AF_INET6, IPAddress, IPInterface


@dataclass(frozen=True)
class Link:
    """A network interface as netlink (and sysfs/udev, where known) describes it."""

    index: int
    name: str
    up: bool  # administratively (IFF_UP)
    carrier: bool  # IFF_LOWER_UP
    pointopoint: bool = False  # IFF_POINTOPOINT or IFF_NOARP: no gateway, `default dev X`
    driver: str | None = None
    usb_vendor: str | None = None
    usb_product: str | None = None
    usb_serial: str | None = None
    id_path: str | None = None
    mtu: int | None = None
    accept_ra: int | None = None  # net.ipv6.conf.<name>.accept_ra; None: not read (no IPv6)
    conf6: tuple[tuple[str, int], ...] = ()  # the CONF6 settings of net.ipv6.conf.<name>, sorted


CONF6 = ("accept_ra_defrtr", "accept_ra_pinfo", "proxy_ndp")
"""The IPv6 settings besides accept_ra that the controller may set on an uplink."""


@dataclass(frozen=True)
class Addr:
    ifindex: int
    address: IPInterface
    dadfailed: bool = False  # IFA_F_DADFAILED: another host on the link has this address

    @property
    def family(self) -> int:
        return AF_INET if self.address.version == 4 else AF_INET6


@dataclass(frozen=True)
class Gateway:
    """A default route someone else (DHCP client, networkd, ppp) put on a link."""

    ifindex: int
    family: int
    gateway: IPAddress | None  # None: `default dev X`


@dataclass(frozen=True)
class Lease:
    """A DHCPv4 lease the controller holds for an uplink (mode dhcp)."""

    address: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address | None


@dataclass(frozen=True)
class Delegation:
    """An IPv6 prefix delegated to the router over an uplink by DHCPv6-PD (a `delegate` LAN
    names that uplink), in force until `valid_until` (wall clock; None: for ever)."""

    prefix: ipaddress.IPv6Network
    valid_until: float | None = None


@dataclass(frozen=True)
class Lease6:
    """An IPv6 address the router holds for an uplink by DHCPv6 (IA_NA), as a /128, in force
    until `valid_until` (wall clock; None: for ever)."""

    address: ipaddress.IPv6Interface
    valid_until: float | None = None


@dataclass(frozen=True)
class BearerIp:
    """One family of a connected ModemManager bearer (its Ip4Config or Ip6Config)."""

    address: IPInterface
    gateway: IPAddress | None  # None: point-to-point, `default dev X`
    mtu: int | None = None
    dns: tuple[IPAddress, ...] = ()


@dataclass(frozen=True)
class Bearer:
    """A connected bearer of the modem an uplink in `modem` mode drives: the data interface
    ModemManager names, and its IP configuration per family. `ra6`: IPv6 comes by router
    advertisement on the interface (method dhcp), so RAs must be accepted there."""

    interface: str
    ip4: BearerIp | None = None
    ip6: BearerIp | None = None
    ra6: bool = False

    @property
    def mtu(self) -> int | None:
        mtus = [ip.mtu for ip in (self.ip4, self.ip6) if ip is not None and ip.mtu]
        return min(mtus) if mtus else None


@dataclass(frozen=True)
class Observed:
    """Facts about the world that are not ours: links, addresses, others' default routes."""

    links: Mapping[int, Link] = field(default_factory=dict)
    addrs: tuple[Addr, ...] = ()
    gateways: tuple[Gateway, ...] = ()

    def link_by_name(self, name: str) -> Link | None:
        for link in self.links.values():
            if link.name == name:
                return link
        return None

    def addrs_of(self, ifindex: int, family: int) -> tuple[IPInterface, ...]:
        return tuple(
            a.address
            for a in self.addrs
            if a.ifindex == ifindex and a.family == family and _usable(a.address) and not a.dadfailed
        )

    def dad_failed(self, ifindex: int, address: IPInterface) -> bool:
        """Whether the interface holds this address with duplicate-address detection failed."""
        return any(a.ifindex == ifindex and a.address == address and a.dadfailed for a in self.addrs)

    def has_addr(self, ifindex: int, address: IPInterface) -> bool:
        """Whether the interface holds exactly this address (and prefix)."""
        return any(a.ifindex == ifindex and a.address == address for a in self.addrs)

    def gateway_of(self, ifindex: int, family: int) -> Gateway | None:
        found = [g for g in self.gateways if g.ifindex == ifindex and g.family == family]
        return found[0] if found else None


def _usable(addr: IPInterface) -> bool:
    ip = addr.ip
    return not (ip.is_loopback or ip.is_link_local or ip.is_multicast)
