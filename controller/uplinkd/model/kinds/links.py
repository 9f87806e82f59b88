"""Interfaces the controller raises (`ip link set dev X up`) for the uplinks it configures
(static, dhcp): a hot-plugged USB NIC appears administratively down and nobody else will
raise it. Only ever raised, never lowered: nothing here is pruned, nothing is "ours"."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from uplinkd.config import Ownership
from uplinkd.model.kinds.base import Kind, Stage, Verb
from uplinkd.model.kinds.io import Snapshot, Transport


@dataclass(frozen=True)
class LinkUp:
    """An uplink interface the controller configures (static, dhcp) must be up."""

    ifindex: int
    dev: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"ip link set dev {self.dev or self.ifindex} up"


class LinksUp(Kind[LinkUp, LinkUp]):
    name = "link-up"
    type = LinkUp
    create_stage = Stage.LINKS
    delete_stage = Stage.LINKS  # never used: links are not pruned
    prune = False

    def key(self, obj: LinkUp) -> LinkUp:
        return obj

    def order(self, obj: LinkUp) -> str:
        return str(obj)

    def render(self, verb: Verb, obj: LinkUp) -> str:
        return str(obj)

    def read(self, snapshot: Snapshot, owner: Ownership) -> Iterator[LinkUp]:
        return (LinkUp(i, dev=link.name) for i, link in snapshot.links.items() if link.up)

    async def write(self, io: Transport, verb: Verb, obj: LinkUp, owner: Ownership) -> None:
        await io.link_up(index=obj.ifindex)


KIND = LinksUp()
