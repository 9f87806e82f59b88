"""Reading the kernel, and the one applier that writes to it.

`read()` takes one `Snapshot` of the kernel's dumps and turns it into `Observed` (others'
facts) and `KernelState` (what we own: each kind reads its own objects, recognised by our
protocol number and id ranges). `apply()` executes a `Plan`, one operation at a time,
logging each write once in `ip` syntax; each operation is written by its kind
(`model/kinds/`) through `Netlink`, the transport this module implements with pyroute2,
nft and ctnetlink. Nothing else in the controller writes to the kernel.

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
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from uplinkd.config import Config
from uplinkd.kernel import conntrack, nft, rtnl, vxlan
from uplinkd.kernel import explain as explain_mod
from uplinkd.linux import IFF_LOWER_UP, IFF_NOARP, IFF_POINTOPOINT, IFF_UP, RTN_UNICAST, RTN_UNREACHABLE
from uplinkd.model import (
    AF_INET,
    AF_INET6,
    NFT,
    Addr,
    Gateway,
    IPAddress,
    KernelState,
    Link,
    NftState,
    Observed,
    Op,
    Snapshot,
)
from uplinkd.model.kinds.addresses import address_of
from uplinkd.model.observed import CONF6
from uplinkd.plan import Plan, teardown
from uplinkd.tunnel.vxlan import FdbEntry, VxlanLink

log = logging.getLogger("uplinkd.kernel")

SYSFS_NET = Path("/sys/class/net")
SYSCTL_IPV4_CONF = Path("/proc/sys/net/ipv4/conf")

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


class Netlink:
    """The `Transport` the kinds write through: rtnetlink (pyroute2 and `rtnl`), nft, ctnetlink."""

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel

    @property
    def ipr(self) -> AsyncIPRoute:
        return self._kernel.ipr

    async def rule(self, command: Literal["add", "del"], **fields: Any) -> None:
        await self.ipr.rule(command, **fields)

    async def addr(self, command: Literal["add", "del"], **fields: Any) -> None:
        if command == "add" and ":" not in str(fields.get("address", "")):
            _promote_secondaries(fields["index"])
        await self.ipr.addr(command, **fields)

    async def link_up(self, *, index: int) -> None:
        await self.ipr.link("set", index=index, state="up")

    async def link_mtu(self, *, index: int, mtu: int) -> None:
        await self.ipr.link("set", index=index, mtu=mtu)

    async def ipv6_conf(self, *, dev: str, key: str, value: int) -> None:
        """A per-interface IPv6 setting, in the controller's own network namespace."""
        path = Path("/proc/sys/net/ipv6/conf", dev, key)
        await asyncio.to_thread(path.write_text, f"{value}\n")

    async def replace_route(
        self,
        *,
        family: int,
        table: int,
        dst: str | None,
        dst_len: int,
        protocol: int,
        unreachable: bool,
        nhid: int | None,
        oif: int | None,
        gateway: str | None,
        exclusive: bool,
    ) -> None:
        await rtnl.replace_route(
            self.ipr,
            family=family,
            table=table,
            dst=dst,
            dst_len=dst_len,
            protocol=protocol,
            nhid=nhid,
            oif=oif,
            gateway=gateway,
            route_type=RTN_UNREACHABLE if unreachable else RTN_UNICAST,
            exclusive=exclusive,
        )

    async def delete_route(
        self, *, family: int, table: int, dst: str | None, dst_len: int, protocol: int
    ) -> None:
        await rtnl.delete_route(
            self.ipr, family=family, table=table, dst=dst, dst_len=dst_len, protocol=protocol
        )

    async def replace_nexthop(
        self, *, id: int, family: int, oif: int, gateway: str | None, protocol: int
    ) -> None:
        await rtnl.replace_nexthop(
            self.ipr, id=id, family=family, oif=oif, gateway=gateway, protocol=protocol
        )

    async def replace_group(
        self,
        *,
        id: int,
        members: Sequence[tuple[int, int]],
        buckets: int,
        idle_timer: float,
        unbalanced_timer: float,
        protocol: int,
    ) -> None:
        await rtnl.replace_group(
            self.ipr,
            id=id,
            members=[rtnl.GroupMember(m, w) for m, w in members],
            resilient=rtnl.ResilientParams(
                buckets=buckets, idle_timer=idle_timer, unbalanced_timer=unbalanced_timer
            ),
            protocol=protocol,
        )

    async def delete_nexthop(self, *, id: int) -> None:
        await rtnl.delete_nexthop(self.ipr, id=id)

    async def nft_load(self, state: NftState) -> None:
        k = self._kernel
        k.nft_stale = True
        await asyncio.to_thread(nft.load, state)
        text = await asyncio.to_thread(nft.listing, state.table)
        if text is not None:
            k.nft_listings = {state.digest: nft.listing_hash(text)}

    async def nft_delete(self, table: str) -> None:
        self._kernel.nft_stale = True
        await asyncio.to_thread(nft.delete, table)
        self._kernel.nft_listings.clear()

    async def conntrack_flush(self, *, mark: int, mask: int) -> None:
        try:
            # counted first for the metrics (racy by a few entries at most; a flush is rare)
            found = await asyncio.to_thread(conntrack.count_mark, mark, mask)
            await asyncio.to_thread(conntrack.flush_mark, mark, mask)
            flushed = self._kernel.conntrack_flushed
            flushed[mark] = flushed.get(mark, 0) + found
        except OSError as e:  # ConntrackError, or a timeout on the netlink socket
            raise NetlinkError(e.errno or errno.EIO, str(e)) from None

    async def vxlan_link(self, command: Literal["set", "del"], link: VxlanLink) -> None:
        try:
            if command == "del":
                await vxlan.delete(self.ipr, link.ifname)
            else:
                await vxlan.ensure(self.ipr, link)
        except vxlan.VxlanError as e:
            raise NetlinkError(e.errno or errno.EINVAL, str(e)) from None

    async def vxlan_fdb(self, command: Literal["add", "del"], entry: FdbEntry) -> None:
        try:
            index = await vxlan.owned_index(self.ipr, entry.ifname)
            if command == "del":
                await vxlan.delete_fdb(self.ipr, index, entry)
            else:
                await vxlan.add_fdb(self.ipr, index, entry)
        except vxlan.VxlanError as e:
            raise NetlinkError(e.errno or errno.EINVAL, str(e)) from None


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
    conntrack_flushed: dict[int, int] = field(default_factory=dict)  # ct mark → entries deleted
    _nft_cache: NftState | None = None
    transport: Netlink = field(init=False, repr=False)  # what the kinds write through

    def __post_init__(self) -> None:
        self.transport = Netlink(self)

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
        snapshot = await self.snapshot()
        owner = self.config.kernel
        return observed_of(snapshot, protocol=owner.protocol), KernelState.read(snapshot, owner)

    async def snapshot(self) -> Snapshot:
        links = {link.index: link for link in await self._links()}
        addrs = [msg async for msg in await self.ipr.addr("dump")]
        routes: list[rtnl.RouteInfo] = []
        rules: list[Any] = []
        for family in (AF_INET, AF_INET6):
            routes += await rtnl.dump_routes(self.ipr, family=family)
        for family in (AF_INET, AF_INET6):
            rules += [msg async for msg in await self.ipr.rule("dump", family=family)]
        vxlans: list[VxlanLink] = []
        fdb: list[FdbEntry] = []
        for name in await vxlan.owned(self.ipr):
            reading = await vxlan.read(self.ipr, name)
            if reading is not None:
                vxlans.append(reading.link)
                fdb += reading.fdb
        return Snapshot(
            links=links,
            addrs=addrs,
            routes=routes,
            rules=rules,
            nexthops=await rtnl.dump_nexthops(self.ipr),
            nft=await self._nft_state(),
            vxlans=vxlans,
            fdb=fdb,
        )

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
                    mtu=msg.get("IFLA_MTU"),
                    accept_ra=_accept_ra(name),
                    conf6=_conf6(name),
                    **_sysfs_identity(name, kind),
                )
            )
        return out

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
        return nft.read(
            self.config.kernel.nft_table,
            self.config.kernel.mark_mask,
            trusted=self.nft_listings,
            policy_mask=self.config.kernel.policy_bits,
        )

    async def teardown(self) -> ApplyResult:
        """Remove everything we own. Our nft table goes even when it was edited by hand (then
        `read` reports it as drifted rather than as ours-as-rendered)."""
        _, actual = await self.read()
        result = await self.apply(teardown(actual))
        table = self.config.kernel.nft_table
        if not actual[NFT] and await asyncio.to_thread(nft.listing, table) is not None:
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
        owner = self.config.kernel
        for op in plan.ops:
            log.info("%s", op)
            kind = op.kind
            try:
                await kind.write(self.transport, op.verb, op.obj, owner)
            except (NetlinkError, OSError) as e:
                # OSError: the writes that are files or sockets (/proc/sys, wireguard's UAPI).
                # A device can vanish or be renamed by udev between reading and writing;
                # /proc/sys/net/ipv6/conf/<old name> is then ENOENT, like ENODEV on netlink.
                code = e.code if isinstance(e, NetlinkError) else (e.errno or errno.EIO)
                if op.verb == "delete" and code in (errno.ENOENT, errno.ESRCH, errno.ENODEV):
                    done.append(op)  # already gone: the kernel did it for us (e.g. unplug)
                    continue
                if op.verb == "add" and code == errno.EEXIST and kind.foreign_keys:
                    why = f"a {kind.name} uplinkd does not own holds this key; it is left alone"
                    log.warning("refused: %s: %s", op, why)
                    failed.append(OpFailure(op, why, transient=False))
                    continue
                if op.verb == "add" and code == errno.EEXIST:
                    done.append(op)
                    continue
                text = f"{os.strerror(code)} (errno {code})"
                log.warning("failed: %s: %s", op, text)
                failed.append(OpFailure(op, text, code in TRANSIENT))
            except nft.NftError as e:
                log.warning("failed: %s: %s", op, e)
                failed.append(OpFailure(op, str(e), transient=True))
            else:
                done.append(op)
        return ApplyResult(tuple(done), tuple(failed))


IFA_F_DADFAILED = 0x08


def observed_of(snapshot: Snapshot, *, protocol: int) -> Observed:
    """Others' facts in a snapshot: every address, and the default routes others made."""
    addrs: list[Addr] = []
    for msg in snapshot.addrs:
        address = address_of(msg["family"], msg.get("IFA_LOCAL"), msg.get("IFA_ADDRESS"), msg["prefixlen"])
        if address is not None:
            flags = msg.get("IFA_FLAGS") or msg.get("flags") or 0
            addrs.append(Addr(msg["index"], address, dadfailed=bool(flags & IFA_F_DADFAILED)))
    gateways = [
        Gateway(r.oif, r.family, ipaddress.ip_address(r.gateway) if r.gateway else None)
        for r in snapshot.routes
        if r.protocol != protocol and r.dst_len == 0 and r.type == RTN_UNICAST and r.oif is not None
    ]
    return Observed(links=snapshot.links, addrs=tuple(addrs), gateways=tuple(gateways))


def _accept_ra(name: str) -> int | None:
    try:
        return int(Path("/proc/sys/net/ipv6/conf", name, "accept_ra").read_text())
    except (OSError, ValueError):
        return None


def _conf6(name: str) -> tuple[tuple[str, int], ...]:
    found: list[tuple[str, int]] = []
    for key in CONF6:
        try:
            found.append((key, int(Path("/proc/sys/net/ipv6/conf", name, key).read_text())))
        except (OSError, ValueError):
            continue
    return tuple(found)


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


def _promote_secondaries(ifindex: int) -> None:
    """Let a secondary IPv4 address survive the deletion of the primary on an interface the
    controller addresses. A DHCP lease that moves to another address of the same subnet is
    added (secondary) before the old one is deleted; with `promote_secondaries` off (the
    kernel's default, though systemd's sysctl defaults turn it on) the kernel deletes the
    new address together with the old primary, and the uplink is without an address until
    the next pass. Best effort: where /proc/sys is read-only (systemd's ProtectKernelTunables)
    the NixOS module sets `net.ipv4.conf.all.promote_secondaries` instead."""
    try:
        path = SYSCTL_IPV4_CONF / socket.if_indextoname(ifindex) / "promote_secondaries"
        if path.read_text().strip() != "1":
            path.write_text("1\n")
            log.debug("sysctl %s = 1", path)
    except OSError as e:
        log.debug("cannot turn on promote_secondaries for interface %d: %s", ifindex, e)
