"""Forwarding entries on the VXLAN interfaces the controller creates: one all-zero entry
per remote (`bridge fdb append 00:00:00:00:00:00 dev vx0 dst R`), so broadcast, unknown
unicast and multicast reach every remote without multicast underneath.

The kernel keeps no protocol on these entries; every entry with a remote on one of our
interfaces is ours (and goes with the interface).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from uplinkd.config import Ownership
from uplinkd.model.kinds.base import Kind, Ref, Stage, Verb
from uplinkd.model.kinds.io import Snapshot, Transport
from uplinkd.tunnel.vxlan import FdbEntry


class FdbEntries(Kind[FdbEntry, FdbEntry]):
    name = "fdb"
    type = FdbEntry
    create_stage = Stage.ADDRESSES
    delete_stage = Stage.ADDRESSES_GONE

    def key(self, obj: FdbEntry) -> FdbEntry:
        return obj

    def render(self, verb: Verb, obj: FdbEntry) -> str:
        if verb == "delete":
            return f"bridge fdb del {obj.mac} dev {obj.ifname} dst {obj.dst} self"
        return str(obj)

    def refs(self, obj: FdbEntry) -> Iterable[Ref]:
        return (("vxlan", obj.ifname),)

    def read(self, snapshot: Snapshot, owner: Ownership) -> Iterator[FdbEntry]:
        return iter(snapshot.fdb)

    async def write(self, io: Transport, verb: Verb, obj: FdbEntry, owner: Ownership) -> None:
        await io.vxlan_fdb("del" if verb == "delete" else "add", obj)


KIND = FdbEntries()
