"""A VXLAN interface and its forwarding entries as values. Pure.

Identity of a link: its name; of a forwarding entry: (interface, MAC, remote). With learning
off, a frame for an unknown or broadcast MAC is flooded to every all-zero entry
(`00:00:00:00:00:00 dst <remote>`), one per remote: that is how several remotes share a
segment without multicast.

The kernel cannot change a VXLAN interface's VNI, port or address family in place
(`vxlan_changelink` refuses them); `needs_recreate` says when it must be deleted and created
again. Its MTU, MAC, local address, learning and bridge change in place.

Forwarding entries carry no protocol the kernel keeps (NDA_PROTOCOL is accepted and dropped
for VXLAN entries, measured on 6.18), so they are ours by the interface: uplinkd owns every
entry on a VXLAN interface it created, and recognises those by the interface's alias.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

VXLAN_PORT: Final = 4789
FLOOD_MAC: Final = "00:00:00:00:00:00"
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def check_mac(mac: str, *, what: str) -> str:
    mac = mac.lower()
    if not _MAC.match(mac):
        raise ValueError(f"{what}: {mac!r} is not a MAC address like 02:00:00:00:00:01")
    if int(mac[:2], 16) & 1:
        raise ValueError(f"{what}: {mac} is a multicast MAC; use a unicast one (first byte even, e.g. 02:…)")
    return mac


@dataclass(frozen=True)
class VxlanLink:
    """A VXLAN interface. In a desired link, `mtu`/`mac` None = the kernel's choice."""

    ifname: str
    vni: int
    local: IPAddress
    port: int = VXLAN_PORT
    mtu: int | None = None
    mac: str | None = None
    learning: bool = False
    #: the bridge it is a port of, by name
    bridge: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.vni < 1 << 24:
            raise ValueError(f"{self.ifname}: VNI {self.vni} must be 1-16777215")
        if not 0 < self.port < 65536:
            raise ValueError(f"{self.ifname}: port {self.port} must be 1-65535")
        if self.mac is not None:
            object.__setattr__(self, "mac", check_mac(self.mac, what=f"{self.ifname} mac"))

    @property
    def key(self) -> str:
        return self.ifname

    def __str__(self) -> str:
        words = [f"ip link add {self.ifname} type vxlan id {self.vni} local {self.local} dstport {self.port}"]
        words.append("learning" if self.learning else "nolearning")
        if self.mac is not None:
            words.append(f"address {self.mac}")
        if self.mtu is not None:
            words.append(f"mtu {self.mtu}")
        if self.bridge is not None:
            words.append(f"master {self.bridge}")
        return " ".join(words)


def needs_recreate(actual: VxlanLink, desired: VxlanLink) -> bool:
    """Whether `actual` can become `desired` only by deleting and creating it again."""
    return (
        actual.vni != desired.vni
        or actual.port != desired.port
        or actual.local.version != desired.local.version
    )


def link_changes(actual: VxlanLink, desired: VxlanLink) -> frozenset[str]:
    """The attributes to set in place (assuming not `needs_recreate`): a subset of
    {"local", "mtu", "mac", "learning", "bridge"}; None in `desired` means "leave it"."""
    changed = set()
    if actual.local != desired.local:
        changed.add("local")
    if desired.mtu is not None and actual.mtu != desired.mtu:
        changed.add("mtu")
    if desired.mac is not None and actual.mac != desired.mac:
        changed.add("mac")
    if actual.learning != desired.learning:
        changed.add("learning")
    if actual.bridge != desired.bridge:
        changed.add("bridge")
    return frozenset(changed)


@dataclass(frozen=True, order=True)
class FdbEntry:
    """`bridge fdb append MAC dev IFNAME dst DST self permanent`: frames for `mac` (all zeros:
    flooded frames) are sent to the remote VTEP `dst`."""

    ifname: str
    dst: IPAddress
    mac: str = FLOOD_MAC

    def __post_init__(self) -> None:
        object.__setattr__(self, "mac", self.mac.lower())

    def __str__(self) -> str:
        return f"bridge fdb append {self.mac} dev {self.ifname} dst {self.dst} self permanent"


def flood_entries(ifname: str, remotes: frozenset[IPAddress] | set[IPAddress]) -> frozenset[FdbEntry]:
    """One all-zero entry per remote: broadcast, unknown unicast and multicast go to each."""
    return frozenset(FdbEntry(ifname, remote) for remote in remotes)
