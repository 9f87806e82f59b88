"""Nexthop objects (`ip nexthop`): one per ready uplink and family, its gateway (or only
its device, for point-to-point links). The balance group is made of these.

Ids come from our reserved range (`io.owns_nexthop`); nexthops and groups share
the kernel's id space, which `provides`/`refs` name "nhid".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from uplinkd.config import Ownership
from uplinkd.model.kinds.base import Kind, Ref, Stage, Verb, ip_command
from uplinkd.model.kinds.io import Snapshot, Transport, owns_nexthop
from uplinkd.model.net import IPAddress, fam


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


class Nexthops(Kind[int, Nexthop]):
    name = "nexthop"
    type = Nexthop
    create_stage = Stage.NEXTHOPS
    delete_stage = Stage.NEXTHOPS_GONE

    def key(self, obj: Nexthop) -> int:
        return obj.id

    def render(self, verb: Verb, obj: Nexthop) -> str:
        return ip_command(str(obj), verb)

    def provides(self, obj: Nexthop) -> Iterable[Ref]:
        return (("nhid", obj.id),)

    def read(self, snapshot: Snapshot, owner: Ownership) -> Iterator[Nexthop]:
        for nh in snapshot.nexthops:
            if nh.protocol != owner.protocol or not owns_nexthop(owner, nh.id):
                continue
            if not nh.group and nh.oif is not None:
                link = snapshot.links.get(nh.oif)
                gateway = ipaddress.ip_address(nh.gateway) if nh.gateway else None
                yield Nexthop(nh.id, nh.family, nh.oif, gateway, dev=link.name if link else "")

    async def write(self, io: Transport, verb: Verb, obj: Nexthop, owner: Ownership) -> None:
        if verb == "delete":
            await io.delete_nexthop(id=obj.id)
            return
        await io.replace_nexthop(
            id=obj.id,
            family=obj.family,
            oif=obj.oif,
            gateway=str(obj.gateway) if obj.gateway is not None else None,
            protocol=owner.protocol,
        )


KIND = Nexthops()
