"""Interface MTUs the controller sets: a tunnel's (`mtu auto` follows the uplinks that may
carry it). Only set, never reset: nothing here is pruned, and only the interfaces a
contributor names are compared, so other interfaces' MTUs are never read as ours."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from uplinkd.config import Ownership
from uplinkd.model.kinds.base import Kind, Stage, Verb
from uplinkd.model.kinds.io import Snapshot, Transport


@dataclass(frozen=True)
class LinkMtu:
    ifindex: int
    mtu: int
    dev: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"ip link set dev {self.dev or self.ifindex} mtu {self.mtu}"


class LinkMtus(Kind[int, LinkMtu]):
    name = "link-mtu"
    type = LinkMtu
    create_stage = Stage.LINKS
    delete_stage = Stage.LINKS  # never used: MTUs are not pruned
    prune = False

    def key(self, obj: LinkMtu) -> int:
        return obj.ifindex

    def order(self, obj: LinkMtu) -> int:
        return obj.ifindex

    def render(self, verb: Verb, obj: LinkMtu) -> str:
        return str(obj)

    def read(self, snapshot: Snapshot, owner: Ownership) -> Iterator[LinkMtu]:
        return (LinkMtu(i, link.mtu, dev=link.name) for i, link in snapshot.links.items() if link.mtu)

    async def write(self, io: Transport, verb: Verb, obj: LinkMtu, owner: Ownership) -> None:
        await io.link_mtu(index=obj.ifindex, mtu=obj.mtu)


KIND = LinkMtus()
