"""Addresses the controller puts on uplinks (static `cidr`, a DHCP lease's address).

Added, never replaced, so an address someone else configured is never taken over; ours
carry IFA_PROTO, which is how they are read back.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field

from uplinkd.config import Ownership
from uplinkd.model.kinds.base import Kind, Stage, Verb, ip_command
from uplinkd.model.kinds.io import Snapshot, Transport
from uplinkd.model.net import AF_INET, IPInterface


@dataclass(frozen=True)
class StaticAddr:
    """An address the controller puts on an uplink (mode static, or a DHCP lease's)."""

    ifindex: int
    address: IPInterface
    dev: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"ip address {self.address} dev {self.dev or self.ifindex}"


class Addresses(Kind[StaticAddr, StaticAddr]):
    name = "address"
    type = StaticAddr
    create_stage = Stage.ADDRESSES
    delete_stage = Stage.ADDRESSES_GONE
    exclusive = True

    def key(self, obj: StaticAddr) -> StaticAddr:
        return obj

    def order(self, obj: StaticAddr) -> str:
        return str(obj)

    def render(self, verb: Verb, obj: StaticAddr) -> str:
        return ip_command(str(obj), "delete" if verb == "delete" else "add")

    def read(self, snapshot: Snapshot, owner: Ownership) -> Iterator[StaticAddr]:
        for msg in snapshot.addrs:
            if msg.get("IFA_PROTO") != owner.protocol:
                continue
            address = address_of(
                msg["family"], msg.get("IFA_LOCAL"), msg.get("IFA_ADDRESS"), msg["prefixlen"]
            )
            if address is not None:
                link = snapshot.links.get(msg["index"])
                yield StaticAddr(msg["index"], address, dev=link.name if link else "")

    async def write(self, io: Transport, verb: Verb, obj: StaticAddr, owner: Ownership) -> None:
        a = obj.address
        if verb == "delete":
            await io.addr("del", index=obj.ifindex, address=str(a.ip), prefixlen=a.network.prefixlen)
        else:  # add: never take over someone else's
            await io.addr(
                "add",
                index=obj.ifindex,
                address=str(a.ip),
                prefixlen=a.network.prefixlen,
                proto=owner.protocol,
            )


def address_of(family: int, local: str | None, address: str | None, prefixlen: int) -> IPInterface | None:
    """An RTM_NEWADDR's address: IPv4 names it in IFA_LOCAL (IFA_ADDRESS is the peer on
    point-to-point links), IPv6 in IFA_ADDRESS."""
    text = (local if family == AF_INET else None) or address
    return ipaddress.ip_interface(f"{text}/{prefixlen}") if text is not None else None


KIND = Addresses()
