"""VXLAN interfaces the controller creates (`vxlan.<name>`), a port of their bridge, with
their MTU and MAC.

Links carry no protocol number: ours are the VXLAN interfaces whose alias is uplinkd's
(`kernel/vxlan.py` sets it at creation and reads only those), so a flush deletes them and
nothing else. What the kernel cannot change in place (VNI, port, address family) is
deleted and created again, which takes the interface's forwarding entries (`fdb`) with it;
they are written again. `mtu` None in a wanted interface means "leave it as it is".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping

from uplinkd.config import Ownership
from uplinkd.model.kinds.base import Change, Kind, Ref, Stage, Verb
from uplinkd.model.kinds.io import Snapshot, Transport
from uplinkd.tunnel.vxlan import VxlanLink, needs_recreate


class VxlanLinks(Kind[str, VxlanLink]):
    name = "vxlan"
    type = VxlanLink
    create_stage = Stage.LINKS
    delete_stage = Stage.LINKS_GONE
    # a name held by an interface uplinkd did not create is left alone and reported
    exclusive = True
    foreign_keys = True

    def key(self, obj: VxlanLink) -> str:
        return obj.ifname

    def render(self, verb: Verb, obj: VxlanLink) -> str:
        if verb == "delete":
            return f"ip link del {obj.ifname}"
        return str(obj) if verb == "add" else f"{obj} (in place)"

    def provides(self, obj: VxlanLink) -> Iterable[Ref]:
        return (("vxlan", obj.ifname),)

    def recreate(self, old: VxlanLink, new: VxlanLink) -> bool:
        return needs_recreate(old, new)

    def changes(
        self, have: Mapping[str, VxlanLink], want: Mapping[str, VxlanLink], *, recreated: frozenset[Ref]
    ) -> Iterator[Change]:
        # a wanted MTU of None leaves the interface's as it is
        narrowed = {
            key: dataclasses.replace(old, mtu=None) if key in want and want[key].mtu is None else old
            for key, old in have.items()
        }
        return super().changes(narrowed, want, recreated=recreated)

    def read(self, snapshot: Snapshot, owner: Ownership) -> Iterator[VxlanLink]:
        return iter(snapshot.vxlans)

    async def write(self, io: Transport, verb: Verb, obj: VxlanLink, owner: Ownership) -> None:
        await io.vxlan_link("del" if verb == "delete" else "set", obj)


KIND = VxlanLinks()
