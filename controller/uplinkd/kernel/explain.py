"""`uplinkctl explain`: which rule, table, route and uplink the kernel picks for a packet.

The route comes from a real lookup (RTM_GETROUTE with RTM_F_LOOKUP_TABLE, so the kernel
reports the table it used, and with the flow's ports so multipath picks as it would for
that flow). The kernel does not report which rule matched; we name the first rule, in
priority order, whose selectors match the packet and that points at the table the kernel
used. That is the rule that sent it there unless an earlier rule for the same table was
skipped by `suppress_prefixlength`, which we account for.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from uplinkd.kernel import rtnl
from uplinkd.linux import (
    FR_ACT_TO_TBL,
    FRA_FWMASK_ALL,
    FRA_NO_SUPPRESS,
    RTM_F_LOOKUP_TABLE,
    RTN_NAMES,
    RTN_REFUSING,
    fwmark_text,
    table_name,
)
from uplinkd.model import IPAddress

IPPROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "icmp": socket.IPPROTO_ICMP}


@dataclass(frozen=True)
class Explanation:
    dst: str
    src: str | None
    iif: str | None
    mark: int | None
    rule: str | None  # the rule that chose the table, in `ip rule` syntax
    table: int | None
    type: str  # unicast, unreachable, local, ...
    dev: str | None
    gateway: str | None
    prefsrc: str | None
    uplink: str | None  # the uplink whose interface the packet leaves by
    error: str | None = None
    # which steering rule and policy tier a new connection gets (from the daemon's config:
    # the kernel does not say which nft rule matched); None when the config is not known
    steer: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def explain(
    ipr: AsyncIPRoute,
    *,
    dst: IPAddress,
    src: IPAddress | None = None,
    iif: str | None = None,
    mark: int | None = None,
    ipproto: str | None = None,
    sport: int | None = None,
    dport: int | None = None,
    uplinks_by_dev: Mapping[str, str] | None = None,
) -> Explanation:
    family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
    names = {msg["index"]: msg.get("ifname") async for msg in await ipr.link("dump")}
    iif_index = None
    if iif is not None:
        iif_index = next((i for i, n in names.items() if n == iif), None)
        if iif_index is None:
            return _failed(dst, src, iif, mark, f"iif: no interface named {iif!r}")
    try:
        route = await rtnl.get_route(
            ipr,
            family=family,
            dst=str(dst),
            src=str(src) if src is not None else None,
            iif=iif_index,
            mark=mark,
            ip_proto=IPPROTO[ipproto] if ipproto else None,
            sport=sport,
            dport=dport,
            flags=RTM_F_LOOKUP_TABLE,
        )
    except NetlinkError as e:
        # e.g. ENETUNREACH for an `unreachable` route: still name the rule that got there
        route = None
        error: str | None = _strerror(e.code)
    else:
        error = None
    table = route.table if route is not None else None
    rules = [m async for m in await ipr.rule("dump", family=family)]
    rule_text = _matching_rule(rules, table=table, dst=dst, src=src, iif=iif, mark=mark)
    kind = RTN_NAMES.get(route.type, str(route.type)) if route is not None else "none"
    if route is None:
        # No route: find the rule whose table answered with unreachable/prohibit/blackhole.
        found = await _refusing_rule(ipr, rules, family=family, dst=dst, src=src, iif=iif, mark=mark)
        if found is not None:
            rule_text, table, kind = found
    dev = names.get(route.oif) if route is not None and route.oif is not None else None
    return Explanation(
        dst=str(dst),
        src=str(src) if src is not None else None,
        iif=iif,
        mark=mark,
        rule=rule_text,
        table=table,
        type=kind,
        dev=dev,
        gateway=route.gateway if route is not None else None,
        prefsrc=route.prefsrc if route is not None else None,
        uplink=(uplinks_by_dev or {}).get(dev) if dev is not None else None,
        error=error,
    )


def _failed(
    dst: IPAddress, src: IPAddress | None, iif: str | None, mark: int | None, why: str
) -> Explanation:
    return Explanation(
        str(dst), str(src) if src else None, iif, mark, None, None, "none", None, None, None, None, why
    )


def _strerror(code: int) -> str:
    return os.strerror(code)


def _matching_rule(
    rules: list[Any],
    *,
    table: int | None,
    dst: IPAddress,
    src: IPAddress | None,
    iif: str | None,
    mark: int | None,
) -> str | None:
    for msg in sorted(rules, key=lambda m: m.get("FRA_PRIORITY") or 0):
        if msg["action"] != FR_ACT_TO_TBL:
            continue
        rule_table = msg.get("FRA_TABLE") or msg["table"]
        if not _selects(msg, dst=dst, src=src, iif=iif, mark=mark):
            continue
        if table is None:
            # no route: the last lookup rule that matched led to `unreachable`; report the
            # first one pointing at a table with an unreachable default (our balance table)
            continue
        if rule_table == table:
            return _rule_text(msg)
    return None


def _selects(msg: Any, *, dst: IPAddress, src: IPAddress | None, iif: str | None, mark: int | None) -> bool:
    fwmark = msg.get("FRA_FWMARK")
    if fwmark is not None:
        mask = msg.get("FRA_FWMASK", FRA_FWMASK_ALL)
        if ((mark or 0) & mask) != fwmark:
            return False
    rsrc = msg.get("FRA_SRC")
    if rsrc is not None and (src is None or src not in ipaddress.ip_network(f"{rsrc}/{msg['src_len']}")):
        return False
    rdst = msg.get("FRA_DST")
    if rdst is not None and dst not in ipaddress.ip_network(f"{rdst}/{msg['dst_len']}"):
        return False
    riif = msg.get("FRA_IIFNAME")
    return not (riif is not None and riif != (iif or "lo"))


async def _refusing_rule(
    ipr: AsyncIPRoute,
    rules: list[Any],
    *,
    family: int,
    dst: IPAddress,
    src: IPAddress | None,
    iif: str | None,
    mark: int | None,
) -> tuple[str, int, str] | None:
    """Walk the rules as the kernel does; the first table holding a route for `dst` decides.
    Returns (rule, table, route type) when that route refuses the packet."""
    for msg in sorted(rules, key=lambda m: m.get("FRA_PRIORITY") or 0):
        if msg["action"] != FR_ACT_TO_TBL or not _selects(msg, dst=dst, src=src, iif=iif, mark=mark):
            continue
        table = msg.get("FRA_TABLE") or msg["table"]
        suppress = msg.get("FRA_SUPPRESS_PREFIXLEN")
        best: rtnl.RouteInfo | None = None
        for r in await rtnl.dump_routes(ipr, family=family, table=table):
            net = ipaddress.ip_network(
                f"{r.dst or ('0.0.0.0' if family == socket.AF_INET else '::')}/{r.dst_len}"
            )
            if dst in net and (best is None or r.dst_len > best.dst_len):
                best = r
        if best is None or (suppress not in (None, FRA_NO_SUPPRESS) and best.dst_len <= suppress):
            continue
        if best.type in RTN_REFUSING:
            return _rule_text(msg), table, RTN_NAMES[best.type]
        return None
    return None


def _rule_text(msg: Any) -> str:
    parts = [f"{msg.get('FRA_PRIORITY') or 0}:"]
    if msg.get("FRA_SRC") is not None:
        parts.append(f"from {msg.get('FRA_SRC')}/{msg['src_len']}")
    else:
        parts.append("from all")
    if msg.get("FRA_DST") is not None:
        parts.append(f"to {msg.get('FRA_DST')}/{msg['dst_len']}")
    if msg.get("FRA_FWMARK") is not None:
        parts.append(f"fwmark {fwmark_text(msg.get('FRA_FWMARK'), msg.get('FRA_FWMASK'))}")
    if msg.get("FRA_IIFNAME") is not None:
        parts.append(f"iif {msg.get('FRA_IIFNAME')}")
    table = msg.get("FRA_TABLE") or msg["table"]
    parts.append(f"lookup {table_name(table)}")
    sup = msg.get("FRA_SUPPRESS_PREFIXLEN")
    if sup not in (None, FRA_NO_SUPPRESS):
        parts.append(f"suppress_prefixlength {sup}")
    return " ".join(parts)
