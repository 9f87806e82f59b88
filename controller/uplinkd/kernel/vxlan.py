"""VXLAN interfaces and their forwarding entries in the kernel, through pyroute2.

The controller owns the VXLAN interfaces it created — recognised by their alias
(`OWNER_ALIAS`), since links carry no protocol number — and every forwarding entry on them.
`apply` makes one interface and its entries what is desired, writing only what differs, and
logs each write once in `ip`/`bridge` syntax.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any, Final

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from uplinkd.linux import IFF_UP
from uplinkd.tunnel.vxlan import FLOOD_MAC, FdbEntry, VxlanLink, link_changes, needs_recreate

log = logging.getLogger("uplinkd.kernel")

#: IFLA_IFALIAS of every VXLAN interface uplinkd created
OWNER_ALIAS: Final = "uplinkd"
AF_BRIDGE: Final = socket.AF_BRIDGE


class VxlanError(Exception):
    """The kernel refused a VXLAN write; carries the errno and the write in `ip` syntax."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


@dataclass(frozen=True)
class VxlanReading:
    link: VxlanLink
    index: int
    #: created by uplinkd (its alias says so)
    owned: bool
    fdb: frozenset[FdbEntry]


def _first(msgs: Any) -> Any:
    return msgs[0] if isinstance(msgs, (list, tuple)) else msgs


async def _index(ipr: AsyncIPRoute, ifname: str) -> int | None:
    found = await ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


async def _ifname(ipr: AsyncIPRoute, index: int) -> str | None:
    try:
        msg = _first(await ipr.link("get", index=index))
    except NetlinkError:
        return None
    name = msg.get("IFLA_IFNAME")
    return str(name) if name is not None else None


async def read(ipr: AsyncIPRoute, ifname: str) -> VxlanReading | None:
    """The VXLAN interface `ifname` with its forwarding entries, or None when there is no
    interface of that name or it is not a VXLAN interface."""
    index = await _index(ipr, ifname)
    if index is None:
        return None
    try:
        msg = _first(await ipr.link("get", index=index))
    except NetlinkError:
        return None
    if msg.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")) != "vxlan":
        return None
    data = msg.get(("IFLA_LINKINFO", "IFLA_INFO_DATA"))
    local = data.get("IFLA_VXLAN_LOCAL") or data.get("IFLA_VXLAN_LOCAL6")
    master = msg.get("IFLA_MASTER")
    link = VxlanLink(
        ifname,
        vni=int(data.get("IFLA_VXLAN_ID")),
        local=ipaddress.ip_address(local or "0.0.0.0"),
        port=int(data.get("IFLA_VXLAN_PORT")),
        mtu=int(msg.get("IFLA_MTU")),
        mac=str(msg.get("IFLA_ADDRESS")),
        learning=bool(data.get("IFLA_VXLAN_LEARNING")),
        bridge=await _ifname(ipr, int(master)) if master else None,
    )
    return VxlanReading(
        link, index, msg.get("IFLA_IFALIAS") == OWNER_ALIAS, await read_fdb(ipr, ifname, index)
    )


async def read_fdb(ipr: AsyncIPRoute, ifname: str, index: int) -> frozenset[FdbEntry]:
    """The remote entries (those with a destination) of one VXLAN interface."""
    entries = set()
    for msg in await _list(await ipr.fdb("dump", ifindex=index)):
        dst = msg.get("NDA_DST")
        if msg["ifindex"] != index or dst is None:
            continue
        entries.add(FdbEntry(ifname, ipaddress.ip_address(dst), str(msg.get("NDA_LLADDR") or FLOOD_MAC)))
    return frozenset(entries)


async def _list(result: Any) -> list[Any]:
    if isinstance(result, (list, tuple)):
        return list(result)
    return [m async for m in result]


async def owned(ipr: AsyncIPRoute) -> list[str]:
    """The names of every VXLAN interface uplinkd created (for a flush)."""
    names = []
    for msg in await _list(await ipr.link("dump")):
        if msg.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")) == "vxlan" and msg.get("IFLA_IFALIAS") == OWNER_ALIAS:
            names.append(str(msg.get("IFLA_IFNAME")))
    return names


def _local(link: VxlanLink) -> dict[str, Any]:
    return {"vxlan_local6" if link.local.version == 6 else "vxlan_local": str(link.local)}


async def _write(what: str, request: Any) -> Any:
    log.info("%s", what)
    try:
        return await request
    except NetlinkError as e:
        raise VxlanError(f"{what}: {e.args[1] if len(e.args) > 1 else e}", e.code) from None


async def create(ipr: AsyncIPRoute, link: VxlanLink) -> None:
    """Create `link` (down; marked as ours), and make it a port of its bridge if it has one."""
    extra: dict[str, Any] = {}
    if link.mtu is not None:
        extra["mtu"] = link.mtu
    if link.mac is not None:
        extra["address"] = link.mac
    request = ipr.link(
        "add", ifname=link.ifname, kind="vxlan", vxlan_id=link.vni, vxlan_port=link.port,
        vxlan_learning=int(link.learning), **_local(link), **extra,
    )  # fmt: skip
    await _write(str(link), request)
    index = await _index(ipr, link.ifname)
    assert index is not None
    await _write(
        f'ip link set {link.ifname} alias "{OWNER_ALIAS}"', ipr.link("set", index=index, ifalias=OWNER_ALIAS)
    )


async def _set(ipr: AsyncIPRoute, reading: VxlanReading, desired: VxlanLink, fields: frozenset[str]) -> None:
    name, index = desired.ifname, reading.index
    if "bridge" in fields:
        master = 0
        if desired.bridge is not None:
            found = await _index(ipr, desired.bridge)
            if found is None:
                raise VxlanError(f"ip link set {name} master {desired.bridge}: no such bridge")
            master = found
        text = f"ip link set {name} " + (f"master {desired.bridge}" if desired.bridge else "nomaster")
        await _write(text, ipr.link("set", index=index, master=master))
    if "mtu" in fields:
        await _write(f"ip link set {name} mtu {desired.mtu}", ipr.link("set", index=index, mtu=desired.mtu))
    if "mac" in fields:
        await _write(
            f"ip link set {name} address {desired.mac}", ipr.link("set", index=index, address=desired.mac)
        )
    if fields & {"local", "learning"}:
        text = f"ip link set {name} type vxlan local {desired.local} " + (
            "learning" if desired.learning else "nolearning"
        )
        request = ipr.link(
            "set", index=index, kind="vxlan", vxlan_id=desired.vni, vxlan_port=desired.port,
            vxlan_learning=int(desired.learning), **_local(desired),
        )  # fmt: skip
        await _write(text, request)


async def delete(ipr: AsyncIPRoute, ifname: str) -> bool:
    """Delete `ifname` if it is a VXLAN interface uplinkd created; whether it did."""
    reading = await read(ipr, ifname)
    if reading is None or not reading.owned:
        return False
    await _write(f"ip link del {ifname}", ipr.link("del", index=reading.index))
    return True


async def owned_index(ipr: AsyncIPRoute, ifname: str) -> int:
    """The index of `ifname` if it is a VXLAN interface uplinkd created; VxlanError
    otherwise (ENODEV: none; EEXIST: someone else's), so an entry is never written on it."""
    reading = await read(ipr, ifname)
    if reading is None:
        raise VxlanError(f"{ifname}: no VXLAN interface of that name", errno.ENODEV)
    if not reading.owned:
        raise VxlanError(
            f"{ifname}: a VXLAN interface uplinkd did not create; its entries are left alone", errno.EEXIST
        )
    return reading.index


async def add_fdb(ipr: AsyncIPRoute, index: int, entry: FdbEntry) -> None:
    request = ipr.fdb("append", ifindex=index, lladdr=entry.mac, dst=str(entry.dst))
    await _write(str(entry), request)


async def delete_fdb(ipr: AsyncIPRoute, index: int, entry: FdbEntry) -> None:
    text = f"bridge fdb del {entry.mac} dev {entry.ifname} dst {entry.dst} self"
    await _write(text, ipr.fdb("del", ifindex=index, lladdr=entry.mac, dst=str(entry.dst)))


async def ensure(ipr: AsyncIPRoute, desired: VxlanLink, *, up: bool = True) -> tuple[int, int]:
    """Make the VXLAN interface `desired.ifname` what is desired (created, changed in place,
    or deleted and created again when it cannot change), raised when `up`; writing only what
    differs. Returns its index and the number of writes. Refuses (VxlanError) to take over an
    interface of that name that uplinkd did not create."""
    writes = 0
    reading = await read(ipr, desired.ifname)
    if reading is None and await _index(ipr, desired.ifname) is not None:
        raise VxlanError(
            f"{desired.ifname}: an interface of that name exists and is not VXLAN; rename one", errno.EEXIST
        )
    if reading is not None and not reading.owned:
        raise VxlanError(
            f"{desired.ifname}: a VXLAN interface uplinkd did not create; delete it or rename ours",
            errno.EEXIST,
        )
    if reading is not None and needs_recreate(reading.link, desired):
        await _write(f"ip link del {desired.ifname}", ipr.link("del", index=reading.index))
        writes += 1
        reading = None
    if reading is None:
        await create(ipr, desired)
        writes += 2
        reading = await read(ipr, desired.ifname)
        assert reading is not None
    fields = link_changes(reading.link, desired)
    if fields:
        await _set(ipr, reading, desired, fields)
        writes += len(fields)
    if up:
        msg = _first(await ipr.link("get", index=reading.index))
        if not msg["flags"] & IFF_UP:
            await _write(f"ip link set {desired.ifname} up", ipr.link("set", index=reading.index, state="up"))
            writes += 1
    return reading.index, writes


async def apply(ipr: AsyncIPRoute, desired: VxlanLink, fdb: frozenset[FdbEntry], *, up: bool = True) -> int:
    """Make the VXLAN interface `desired.ifname` and its forwarding entries what is desired,
    writing only what differs; returns the number of writes (0 when it already was).
    Refuses (VxlanError) to take over an interface of that name that uplinkd did not create."""
    index, writes = await ensure(ipr, desired, up=up)
    reading = await read(ipr, desired.ifname)
    assert reading is not None
    wanted = frozenset(e for e in fdb if e.ifname == desired.ifname)
    for entry in sorted(reading.fdb - wanted):
        await delete_fdb(ipr, index, entry)
        writes += 1
    for entry in sorted(wanted - reading.fdb):
        await add_fdb(ipr, index, entry)
        writes += 1
    return writes
