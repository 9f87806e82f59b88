"""Routes in the controller's tables: each uplink's default route in T_u, and T_balance's
`default nhid G` (or `unreachable default`).

Routes share their key space (table, prefix) with everyone else's: a route we do not own
yet is added exclusively, so it never takes over another program's route at the same key;
only our own routes (protocol 77) are replaced, and deletes name our protocol.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from uplinkd.config import Ownership
from uplinkd.linux import RTN_UNICAST, RTN_UNREACHABLE, table_name
from uplinkd.model.kinds.base import Kind, Ref, Stage, Verb, ip_command
from uplinkd.model.kinds.io import RouteRecord, Snapshot, Transport
from uplinkd.model.net import AF_INET, IPAddress, IPNetwork, fam


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


class Routes(Kind[RouteKey, Route]):
    name = "route"
    type = Route
    create_stage = Stage.ROUTES
    delete_stage = Stage.ROUTES_GONE
    exclusive = True
    foreign_keys = True

    def key(self, obj: Route) -> RouteKey:
        return obj.key

    def render(self, verb: Verb, obj: Route) -> str:
        return ip_command(str(obj), verb)

    def refs(self, obj: Route) -> Iterable[Ref]:
        return (("nhid", obj.nhid),) if obj.nhid is not None else ()

    def read(self, snapshot: Snapshot, owner: Ownership) -> Iterator[Route]:
        for r in snapshot.routes:
            if r.protocol == owner.protocol:
                route = _route_of(r, snapshot)
                if route is not None:
                    yield route

    async def write(self, io: Transport, verb: Verb, obj: Route, owner: Ownership) -> None:
        key, net = obj.key, obj.key.network
        dst = str(net.network_address) if net.prefixlen else None
        if verb == "delete":
            await io.delete_route(
                family=key.family, table=key.table, dst=dst, dst_len=net.prefixlen, protocol=owner.protocol
            )
            return
        await io.replace_route(
            family=key.family,
            table=key.table,
            dst=dst,
            dst_len=net.prefixlen,
            protocol=owner.protocol,
            unreachable=obj.type == "unreachable",
            nhid=obj.nhid,
            oif=obj.oif,
            gateway=str(obj.gateway) if obj.gateway is not None else None,
            exclusive=verb == "add",
        )


def _route_of(r: RouteRecord, snapshot: Snapshot) -> Route | None:
    if r.priority not in (None, 0) and r.family == AF_INET:
        return None  # we only ever write metric-0 IPv4 routes; leave others' alone
    dst = f"{r.dst or ('0.0.0.0' if r.family == AF_INET else '::')}/{r.dst_len}"
    key = RouteKey(r.family, r.table, str(ipaddress.ip_network(dst, strict=False)))
    if r.type == RTN_UNREACHABLE:
        return Route(key, type="unreachable")
    if r.type != RTN_UNICAST:
        return None
    if r.nhid is not None:
        return Route(key, nhid=r.nhid)
    link = snapshot.links.get(r.oif) if r.oif is not None else None
    gateway = ipaddress.ip_address(r.gateway) if r.gateway else None
    return Route(key, oif=r.oif, gateway=gateway, dev=link.name if link else "")


KIND = Routes()
