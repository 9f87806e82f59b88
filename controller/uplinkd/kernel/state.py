"""Reading the kernel, and the one applier that writes to it.

`read()` turns netlink dumps into `Observed` (others' facts) and `KernelState` (what we
own, recognised by our protocol number and id ranges). `apply()` executes a `Plan`, one
operation at a time, logging each write once in `ip` syntax. Nothing else in the
controller writes to the kernel.

Errno is translated here and nowhere else: a failed write becomes an `OpFailure`
that says whether retrying can help.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from uplinkd.config import Config
from uplinkd.kernel import conntrack, nft, rtnl
from uplinkd.kernel import explain as explain_mod
from uplinkd.linux import (
    FRA_NO_SUPPRESS,
    IFF_LOWER_UP,
    IFF_NOARP,
    IFF_POINTOPOINT,
    IFF_UP,
    RTN_UNICAST,
    RTN_UNREACHABLE,
)
from uplinkd.model import (
    AF_INET,
    AF_INET6,
    Addr,
    ConntrackFlush,
    Gateway,
    IPAddress,
    KernelState,
    Link,
    LinkUp,
    Member,
    Nexthop,
    NexthopGroup,
    NftState,
    Observed,
    Route,
    RouteKey,
    Rule,
    StaticAddr,
)
from uplinkd.plan import Op, Plan, diff, owns_nexthop

log = logging.getLogger("uplinkd.kernel")

SYSFS_NET = Path("/sys/class/net")

# errors that a later pass may not see again (a link that came back, a race with a DHCP client)
TRANSIENT = {
    errno.ENODEV,
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
    errno.ENETDOWN,
    errno.EBUSY,
    errno.EAGAIN,
    errno.ESRCH,
    errno.ENOENT,
    errno.EEXIST,
}


@dataclass(frozen=True)
class OpFailure:
    op: Op
    error: str
    transient: bool


@dataclass(frozen=True)
class ApplyResult:
    done: tuple[Op, ...] = ()
    failed: tuple[OpFailure, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass
class Kernel:
    """The controller's handle on one network namespace's kernel state."""

    config: Config
    ipr: AsyncIPRoute = field(default_factory=AsyncIPRoute)
    # digest → hash of nft's listing right after we loaded it (tamper detection)
    nft_listings: dict[str, str] = field(default_factory=dict)
    # Reading nft is a subprocess; it is read again only after an nftables event (the
    # daemon sets `nft_stale`), a periodic resync, or our own load.
    nft_stale: bool = True
    _nft_cache: NftState | None = None

    def close(self) -> None:
        self.ipr.close()

    # --- for callers outside kernel/ -------------------------------------------------------------

    def nft_changed(self) -> None:
        """Someone changed nftables (an event, or time for a resync): read it again next pass."""
        self.nft_stale = True

    def reconfigure(self, config: Config) -> None:
        """A reloaded config (same `kernel` section): render and read with it from now on."""
        self.config = config
        self.nft_stale = True

    async def explain(
        self,
        *,
        dst: IPAddress,
        src: IPAddress | None = None,
        iif: str | None = None,
        mark: int | None = None,
        ipproto: str | None = None,
        sport: int | None = None,
        dport: int | None = None,
        uplinks_by_dev: Mapping[str, str] | None = None,
    ) -> explain_mod.Explanation:
        """Which rule and route the kernel picks for a packet (`uplinkctl explain`)."""
        return await explain_mod.explain(
            self.ipr,
            dst=dst,
            src=src,
            iif=iif,
            mark=mark,
            ipproto=ipproto,
            sport=sport,
            dport=dport,
            uplinks_by_dev=uplinks_by_dev,
        )

    # --- reading ------------------------------------------------------------------------------

    async def read(self) -> tuple[Observed, KernelState]:
        links = {link.index: link for link in await self._links()}
        addrs, owned_addrs = await self._addrs(links)
        gateways, routes = await self._routes(links)
        nexthops, groups = await self._nexthops(links)
        state = KernelState(
            rules=frozenset(await self._rules()),
            routes=routes,
            nexthops=nexthops,
            groups=groups,
            addresses=frozenset(owned_addrs),
            nft=await self._nft_state(),
            links_up=frozenset(LinkUp(i, dev=link.name) for i, link in links.items() if link.up),
        )
        return Observed(links=links, addrs=tuple(addrs), gateways=tuple(gateways)), state

    async def _links(self) -> list[Link]:
        out: list[Link] = []
        async for msg in await self.ipr.link("dump"):
            name = msg.get("ifname")
            flags = msg["flags"]
            kind = None
            info = msg.get("IFLA_LINKINFO")
            if info is not None:
                kind = info.get("IFLA_INFO_KIND")
            out.append(
                Link(
                    index=msg["index"],
                    name=name,
                    up=bool(flags & IFF_UP),
                    carrier=bool(flags & IFF_LOWER_UP),
                    pointopoint=bool(flags & (IFF_POINTOPOINT | IFF_NOARP)) and name != "lo",
                    **_sysfs_identity(name, kind),
                )
            )
        return out

    async def _addrs(self, links: Mapping[int, Link]) -> tuple[list[Addr], list[StaticAddr]]:
        seen: list[Addr] = []
        owned: list[StaticAddr] = []
        async for msg in await self.ipr.addr("dump"):
            family = msg["family"]
            text = msg.get("IFA_LOCAL") if family == AF_INET else None
            text = text or msg.get("IFA_ADDRESS")
            if text is None:
                continue
            iface = ipaddress.ip_interface(f"{text}/{msg['prefixlen']}")
            seen.append(Addr(msg["index"], iface))
            if msg.get("IFA_PROTO") == self.config.kernel.protocol:
                link = links.get(msg["index"])
                owned.append(StaticAddr(msg["index"], iface, dev=link.name if link else ""))
        return seen, owned

    async def _routes(self, links: Mapping[int, Link]) -> tuple[list[Gateway], dict[RouteKey, Route]]:
        proto = self.config.kernel.protocol
        gateways: list[Gateway] = []
        owned: dict[RouteKey, Route] = {}
        for family in (AF_INET, AF_INET6):
            for r in await rtnl.dump_routes(self.ipr, family=family):
                if r.protocol == proto:
                    route = _route_of(r, links)
                    if route is not None:
                        owned[route.key] = route
                elif r.dst_len == 0 and r.type == RTN_UNICAST and r.oif is not None:
                    gw = ipaddress.ip_address(r.gateway) if r.gateway else None
                    gateways.append(Gateway(r.oif, family, gw))
        return gateways, owned

    async def _rules(self) -> list[Rule]:
        proto = self.config.kernel.protocol
        out: list[Rule] = []
        for family in (AF_INET, AF_INET6):
            async for msg in await self.ipr.rule("dump", family=family):
                if msg.get("FRA_PROTOCOL") != proto:
                    continue
                src = msg.get("FRA_SRC")
                suppress = msg.get("FRA_SUPPRESS_PREFIXLEN")
                out.append(
                    Rule(
                        family=family,
                        priority=msg.get("FRA_PRIORITY") or 0,
                        table=msg.get("FRA_TABLE") or msg["table"],
                        fwmark=msg.get("FRA_FWMARK"),
                        fwmask=msg.get("FRA_FWMASK") if msg.get("FRA_FWMARK") is not None else None,
                        src=ipaddress.ip_network(f"{src}/{msg['src_len']}") if src else None,
                        suppress_prefixlength=None if suppress in (None, FRA_NO_SUPPRESS) else suppress,
                    )
                )
        return out

    async def _nexthops(
        self, links: Mapping[int, Link]
    ) -> tuple[dict[int, Nexthop], dict[int, NexthopGroup]]:
        singles: dict[int, Nexthop] = {}
        groups: dict[int, NexthopGroup] = {}
        for nh in await rtnl.dump_nexthops(self.ipr):
            if nh.protocol != self.config.kernel.protocol or not owns_nexthop(self.config, nh.id):
                continue
            if nh.group:
                res = nh.resilient
                groups[nh.id] = NexthopGroup(
                    nh.id,
                    tuple(sorted(Member(m.id, m.weight) for m in nh.group)),
                    buckets=res.buckets if res else 0,
                    idle_timer_cs=round(res.idle_timer * 100) if res else -1,
                    unbalanced_timer_cs=round(res.unbalanced_timer * 100) if res else -1,
                )
            elif nh.oif is not None:
                link = links.get(nh.oif)
                singles[nh.id] = Nexthop(
                    nh.id, nh.family, nh.oif, _ip(nh.gateway), dev=link.name if link else ""
                )
        return singles, groups

    async def _nft_state(self) -> NftState | None:
        if self.nft_stale:
            self.nft_stale = False  # an event during the read sets it again
            try:
                self._nft_cache = await asyncio.to_thread(self._nft)  # off the event loop
            except nft.NftError as e:
                log.warning("cannot read nftables (%s); trying again next pass", e)
                self.nft_stale = True
        return self._nft_cache

    def _nft(self) -> NftState | None:
        return nft.read(self.config.kernel.nft_table, self.config.kernel.mark_mask, trusted=self.nft_listings)

    async def teardown(self) -> ApplyResult:
        """Remove everything we own. Our nft table goes even when it was edited by hand (then
        `read` reports it as drifted rather than as ours-as-rendered)."""
        _, actual = await self.read()
        result = await self.apply(diff(actual, KernelState()))
        table = self.config.kernel.nft_table
        if actual.nft is None and await asyncio.to_thread(nft.listing, table) is not None:
            op = Op("delete", NftState(table, self.config.kernel.mark_mask, ()))
            extra = await self.apply(Plan((op,)))
            result = ApplyResult(result.done + extra.done, result.failed + extra.failed)
        return result

    # --- writing ------------------------------------------------------------------------------

    async def apply(self, plan: Plan) -> ApplyResult:
        """Execute the plan in order. A failed op is logged and skipped; the rest still run
        (they are independent enough, and the next pass retries whatever is still missing)."""
        done: list[Op] = []
        failed: list[OpFailure] = []
        for op in plan.ops:
            log.info("%s", op)
            try:
                await self._apply_one(op)
            except NetlinkError as e:
                if op.verb == "delete" and e.code in (errno.ENOENT, errno.ESRCH, errno.ENODEV):
                    done.append(op)  # already gone: the kernel did it for us (e.g. unplug)
                    continue
                if op.verb == "add" and e.code == errno.EEXIST and isinstance(op.obj, Route):
                    why = "a route uplinkd does not own holds this key; it is left alone"
                    log.warning("refused: %s: %s", op, why)
                    failed.append(OpFailure(op, why, transient=False))
                    continue
                if op.verb == "add" and e.code == errno.EEXIST:
                    done.append(op)
                    continue
                text = f"{os.strerror(e.code)} (errno {e.code})"
                log.warning("failed: %s: %s", op, text)
                failed.append(OpFailure(op, text, e.code in TRANSIENT))
            except nft.NftError as e:
                log.warning("failed: %s: %s", op, e)
                failed.append(OpFailure(op, str(e), transient=True))
            else:
                done.append(op)
        return ApplyResult(tuple(done), tuple(failed))

    async def _apply_one(self, op: Op) -> None:
        obj = op.obj
        proto = self.config.kernel.protocol
        if isinstance(obj, Rule):
            kw: dict[str, Any] = {
                "family": obj.family,
                "priority": obj.priority,
                "table": obj.table,
                "protocol": proto,
            }
            if obj.fwmark is not None:
                kw.update(fwmark=obj.fwmark, fwmask=obj.fwmask)
            if obj.src is not None:
                kw.update(src=str(obj.src.network_address), src_len=obj.src.prefixlen)
            if obj.suppress_prefixlength is not None:
                kw.update(suppress_prefixlen=obj.suppress_prefixlength)
            await self.ipr.rule("add" if op.verb != "delete" else "del", **kw)
        elif isinstance(obj, Route):
            key = obj.key
            net = key.network
            dst = str(net.network_address) if net.prefixlen else None
            if op.verb == "delete":
                await rtnl.delete_route(
                    self.ipr,
                    family=key.family,
                    table=key.table,
                    dst=dst,
                    dst_len=net.prefixlen,
                    protocol=proto,
                )
                return
            await rtnl.replace_route(
                self.ipr,
                family=key.family,
                table=key.table,
                dst=dst,
                dst_len=net.prefixlen,
                protocol=proto,
                nhid=obj.nhid,
                oif=obj.oif,
                gateway=str(obj.gateway) if obj.gateway is not None else None,
                route_type=RTN_UNREACHABLE if obj.type == "unreachable" else RTN_UNICAST,
                exclusive=op.verb == "add",
            )
        elif isinstance(obj, Nexthop):
            if op.verb == "delete":
                await rtnl.delete_nexthop(self.ipr, id=obj.id)
            else:
                await rtnl.replace_nexthop(
                    self.ipr,
                    id=obj.id,
                    family=obj.family,
                    oif=obj.oif,
                    gateway=str(obj.gateway) if obj.gateway is not None else None,
                    protocol=proto,
                )
        elif isinstance(obj, NexthopGroup):
            if op.verb == "delete":
                await rtnl.delete_nexthop(self.ipr, id=obj.id)
            else:
                await rtnl.replace_group(
                    self.ipr,
                    id=obj.id,
                    members=[rtnl.GroupMember(m.id, m.weight) for m in obj.members],
                    resilient=rtnl.ResilientParams(
                        buckets=obj.buckets,
                        idle_timer=obj.idle_timer_cs / 100,
                        unbalanced_timer=obj.unbalanced_timer_cs / 100,
                    ),
                    protocol=proto,
                )
        elif isinstance(obj, StaticAddr):
            a = obj.address
            await self.ipr.addr(
                "add" if op.verb != "delete" else "del",  # add: never take over someone else's
                index=obj.ifindex,
                address=str(a.ip),
                prefixlen=a.network.prefixlen,
                **({"proto": proto} if op.verb != "delete" else {}),
            )
        elif isinstance(obj, LinkUp):
            await self.ipr.link("set", index=obj.ifindex, state="up")
        elif isinstance(obj, ConntrackFlush):
            try:
                await asyncio.to_thread(conntrack.flush_mark, obj.mark, obj.mask)
            except OSError as e:  # ConntrackError, or a timeout on the netlink socket
                raise NetlinkError(e.errno or errno.EIO, str(e)) from None
        elif isinstance(obj, NftState):
            self.nft_stale = True
            if op.verb == "delete":
                await asyncio.to_thread(nft.delete, obj.table)
                self.nft_listings.clear()
            else:
                await asyncio.to_thread(nft.load, obj)
                text = await asyncio.to_thread(nft.listing, obj.table)
                if text is not None:
                    self.nft_listings = {obj.digest: nft.listing_hash(text)}


def _ip(text: str | None) -> IPAddress | None:
    return ipaddress.ip_address(text) if text else None


def _route_of(r: rtnl.RouteInfo, links: Mapping[int, Link]) -> Route | None:
    if r.priority not in (None, 0) and r.family == AF_INET:
        return None  # we only ever write metric-0 IPv4 routes; leave others' alone
    dst = f"{r.dst or ('0.0.0.0' if r.family == AF_INET else '::')}/{r.dst_len}"
    key = RouteKey(r.family, r.table, str(ipaddress.ip_network(dst, strict=False)))
    if r.type == RTN_UNREACHABLE:
        return Route(key, type="unreachable")
    if r.type != RTN_UNICAST:
        return None
    link = links.get(r.oif) if r.oif is not None else None
    if r.nhid is not None:
        return Route(key, nhid=r.nhid)
    return Route(key, oif=r.oif, gateway=_ip(r.gateway), dev=link.name if link else "")


def _sysfs_identity(name: str, kind: str | None) -> dict[str, str | None]:
    """Driver and USB identity from sysfs (udev adds ID_PATH; see the udev source)."""
    ident: dict[str, str | None] = {"driver": kind}
    device = SYSFS_NET / name / "device"
    try:
        ident["driver"] = os.path.basename(os.readlink(device / "driver"))
    except OSError:
        return ident
    # The interface's device is a USB interface (…/1-1:1.0); its parent is the USB device.
    usb = device.resolve().parent
    for attr, key in (("idVendor", "usb_vendor"), ("idProduct", "usb_product"), ("serial", "usb_serial")):
        with contextlib.suppress(OSError):
            value = (usb / attr).read_text().strip()
            ident[key] = value if attr == "serial" else value.lower()
    return ident
