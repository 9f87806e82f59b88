"""Values the planner reasons about: kernel objects, observed facts, uplink states.

Everything here is a frozen dataclass. Kernel objects have an explicit identity
(`key`) separate from their attributes, so "what exists" and "what differs" are
plain set operations in `plan.diff`. `str(obj)` is the object in `ip` syntax, which
is also how the applier logs every write.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from uplinkd.linux import fwmark_text, table_name

AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6
FAMILIES = (AF_INET, AF_INET6)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def fam(family: int) -> str:
    return "-4" if family == AF_INET else "-6"


def any_net(family: int) -> IPNetwork:
    return ipaddress.ip_network("0.0.0.0/0" if family == AF_INET else "::/0")


# --- kernel objects ---------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Rule:
    """A policy rule. All its fields are its identity: rules cannot be changed, only replaced."""

    family: int
    priority: int
    table: int
    fwmark: int | None = None
    fwmask: int | None = None
    src: IPNetwork | None = None
    suppress_prefixlength: int | None = None

    @property
    def key(self) -> Rule:
        return self

    def __str__(self) -> str:
        parts = [f"ip {fam(self.family)} rule", f"priority {self.priority}"]
        if self.src is not None:
            parts.append(f"from {self.src}")
        if self.fwmark is not None:
            parts.append(f"fwmark {fwmark_text(self.fwmark, self.fwmask or None)}")
        parts.append(f"lookup {table_name(self.table)}")
        if self.suppress_prefixlength is not None:
            parts.append(f"suppress_prefixlength {self.suppress_prefixlength}")
        return " ".join(parts)


@dataclass(frozen=True, order=True)
class RouteKey:
    family: int
    table: int
    dst: str  # the prefix as text ("0.0.0.0/0"), so keys sort and compare across families

    @property
    def network(self) -> IPNetwork:
        return ipaddress.ip_network(self.dst)


RouteType = Literal["unicast", "unreachable"]


@dataclass(frozen=True)
class Route:
    """A route in one of our tables. Exactly one of gateway/oif, nhid, or a non-unicast type."""

    key: RouteKey
    type: RouteType = "unicast"
    oif: int | None = None
    gateway: IPAddress | None = None
    nhid: int | None = None
    dev: str = field(default="", compare=False)  # for display only

    def __str__(self) -> str:
        dst = "default" if self.key.network.prefixlen == 0 else self.key.dst
        parts = [f"ip {fam(self.key.family)} route"]
        parts.append(f"{self.type} {dst}" if self.type != "unicast" else dst)
        if self.nhid is not None:
            parts.append(f"nhid {self.nhid}")
        if self.gateway is not None:
            parts.append(f"via {self.gateway}")
        if self.oif is not None:
            parts.append(f"dev {self.dev or self.oif}")
        parts.append(f"table {table_name(self.key.table)}")
        return " ".join(parts)


@dataclass(frozen=True)
class Nexthop:
    """A single nexthop object: one uplink's gateway (or device, for point-to-point)."""

    id: int
    family: int
    oif: int
    gateway: IPAddress | None
    dev: str = field(default="", compare=False)

    @property
    def key(self) -> int:
        return self.id

    def __str__(self) -> str:
        via = f" via {self.gateway}" if self.gateway is not None else ""
        return f"ip {fam(self.family)} nexthop id {self.id}{via} dev {self.dev or self.oif}"


@dataclass(frozen=True, order=True)
class Member:
    id: int
    weight: int  # 1..256


@dataclass(frozen=True)
class NexthopGroup:
    """A resilient nexthop group. Timers in centiseconds (the kernel's clock_t unit)."""

    id: int
    members: tuple[Member, ...]  # sorted by id
    buckets: int
    idle_timer_cs: int
    unbalanced_timer_cs: int

    @property
    def key(self) -> int:
        return self.id

    def __str__(self) -> str:
        group = "/".join(f"{m.id},{m.weight}" if m.weight != 1 else str(m.id) for m in self.members)
        return (
            f"ip nexthop id {self.id} group {group} type resilient buckets {self.buckets}"
            f" idle_timer {self.idle_timer_cs / 100:g} unbalanced_timer {self.unbalanced_timer_cs / 100:g}"
        )


@dataclass(frozen=True)
class NftUplink:
    ifname: str
    mark: int


@dataclass(frozen=True)
class NftState:
    """What the controller's nftables table must say: the uplinks and their marks."""

    table: str
    mask: int
    uplinks: tuple[NftUplink, ...]  # sorted by ifname

    @property
    def digest(self) -> str:
        """A short stable fingerprint, stored in the table's comment to detect drift cheaply."""
        text = f"{self.table}|{self.mask}|" + ",".join(f"{u.ifname}={u.mark}" for u in self.uplinks)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StaticAddr:
    """An address the controller puts on an uplink (mode static)."""

    ifindex: int
    address: IPInterface
    dev: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"ip address {self.address} dev {self.dev or self.ifindex}"


@dataclass(frozen=True)
class LinkUp:
    """An uplink interface the controller configures (static, dhcp) must be up.
    A hot-plugged USB NIC appears administratively down; nobody else will raise it."""

    ifindex: int
    dev: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"ip link set dev {self.dev or self.ifindex} up"


@dataclass(frozen=True)
class ConntrackFlush:
    """Delete the connections pinned to one uplink (its ct mark), and only those."""

    uplink: str
    mark: int
    mask: int
    why: str

    def __str__(self) -> str:
        return f"conntrack -D --mark {self.mark:#x}/{self.mask:#x}  # {self.uplink}: {self.why}"


@dataclass(frozen=True)
class KernelState:
    """Everything the controller owns, as desired or as read back from the kernel."""

    rules: frozenset[Rule] = frozenset()
    routes: Mapping[RouteKey, Route] = field(default_factory=dict)
    nexthops: Mapping[int, Nexthop] = field(default_factory=dict)
    groups: Mapping[int, NexthopGroup] = field(default_factory=dict)
    addresses: frozenset[StaticAddr] = frozenset()
    nft: NftState | None = None
    links_up: frozenset[LinkUp] = frozenset()  # only raised, never lowered

    @property
    def empty(self) -> bool:
        return not (self.rules or self.routes or self.nexthops or self.groups or self.nft)


# --- observed facts ---------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Addr:
    ifindex: int
    address: IPInterface

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
            if a.ifindex == ifindex and a.family == family and _usable(a.address)
        )

    def gateway_of(self, ifindex: int, family: int) -> Gateway | None:
        found = [g for g in self.gateways if g.ifindex == ifindex and g.family == family]
        return found[0] if found else None


def _usable(addr: IPInterface) -> bool:
    ip = addr.ip
    return not (ip.is_loopback or ip.is_link_local or ip.is_multicast)


# --- uplink state -----------------------------------------------------------------------------


class State(enum.StrEnum):
    """Where an uplink is in its life. Ordered: each state implies the ones before it."""

    ABSENT = "absent"  # no interface matches
    PRESENT = "present"  # interface there, but no carrier or not up
    ADDRESSED = "addressed"  # carrier and an address, but no usable gateway yet
    PROBING = "probing"  # ready; health not yet known
    UP = "up"  # healthy and in service
    DEGRADED = "degraded"  # in service with a reduced weight
    DOWN = "down"  # ready but failing its health checks


class Health(enum.StrEnum):
    """What the health checker says about a ready uplink."""

    UNKNOWN = "unknown"
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


@dataclass(frozen=True)
class HealthVerdict:
    health: Health
    reason: str = ""
    weight_factor: float = 1.0  # degraded uplinks get a fraction of their weight


@dataclass(frozen=True)
class UplinkStatus:
    """The planner's view of one uplink: what it is and why."""

    name: str
    state: State
    reason: str
    ifindex: int | None = None
    dev: str | None = None
    addresses: tuple[IPInterface, ...] = ()
    gateway4: IPAddress | None = None
    gateway6: IPAddress | None = None
    pointopoint: bool = False
    link_ready: bool = False  # up with carrier
    table: int = 0
    mark: int = 0
    weight: int = 0  # effective weight in the balance group (0: not a member)
    in_group: bool = False
    drained: bool = False

    @property
    def ready(self) -> bool:
        """Carrier, address and a way out: can carry traffic if healthy."""
        return self.state in (State.PROBING, State.UP, State.DEGRADED, State.DOWN)
