"""VXLAN segments over a tunnel: the interface, its flood entries, its bridge, its MTU, and
"source in, source out" for the router's own address on the segment.

Per `vxlan.<name>` (P = rules.priority):

- the VXLAN interface (`model/kinds/vxlan.py`): VNI, port, the local end (one of the
  tunnel's inner addresses), learning off, a stable MAC, a port of `bridge` once that bridge
  exists, and its MTU: a number, or `auto` = the tunnel's MTU - 50 (IPv4 between the ends)
  or - 70 (IPv6). The tunnel's MTU is its own `auto` (`plan.tunnels.mtu_of`), else what its
  interface has; with neither, the MTU is left as it is;
- one all-zero forwarding entry per remote (`model/kinds/fdb.py`);
- with `address` (the router's own address on the segment, put on the bridge, or on the
  interface without one): `from <address> lookup <table>` at P+3, above every other band,
  and in that table the segment's prefix and, with `gateway`, `default via gateway`. A
  request that reached the router's segment address from beyond the segment (through the
  home router) is answered the way it came, not by an uplink or into the tunnel, whose peer
  would not accept the segment's source.

MSS clamping on the interface and its bridge is the nft table's (`plan/nft.py`).
"""

from __future__ import annotations

import ipaddress

from uplinkd.config import Config, Vxlan
from uplinkd.model import AF_INET, AF_INET6, Route, RouteKey, Rule, StaticAddr, any_net
from uplinkd.plan import tunnels
from uplinkd.plan.facts import Contribution, Facts, Survey
from uplinkd.plan.layout import BAND_SEGMENT_SOURCE
from uplinkd.tunnel.mtu import vxlan_mtu
from uplinkd.tunnel.vxlan import VxlanLink, flood_entries


def topic(name: str) -> str:
    return f"vxlan {name}"


def mtu_of(config: Config, segment: Vxlan, facts: Facts, survey: Survey) -> int | None:
    """The segment's MTU: the configured number, or `auto` from the tunnel's MTU (None: not
    known yet, or too small)."""
    if isinstance(segment.mtu, int):
        return segment.mtu
    tunnel = config.tunnels[segment.tunnel]
    under = tunnels.mtu_of(tunnel, facts, survey)
    if under is None:
        link = facts.observed.link_by_name(tunnel.interface)
        under = link.mtu if link is not None else None
    if under is None:
        return None
    try:
        return vxlan_mtu(under, ipv6_inner=segment.family_version == 6)
    except ValueError:
        return None


def contribute(config: Config, facts: Facts, survey: Survey) -> Contribution:
    objects: list[object] = []
    reasons: dict[str, str] = {}
    prio = config.rules.priority
    for name, seg in config.vxlan.items():
        local = seg.local_in(config.tunnels[seg.tunnel].addresses)
        assert local is not None  # the config refuses a segment without a local end
        bridge = facts.observed.link_by_name(seg.bridge) if seg.bridge is not None else None
        mtu = mtu_of(config, seg, facts, survey)
        link = VxlanLink(
            seg.interface,
            vni=seg.vni,
            local=local,
            port=seg.port,
            mtu=mtu,
            mac=seg.mac_value,
            bridge=bridge.name if bridge is not None else None,
        )
        objects.append(link)
        objects += flood_entries(seg.interface, set(seg.remotes))
        why = [f"vni {seg.vni}, mtu {mtu if mtu is not None else 'unknown (tunnel MTU not known yet)'}"]
        if seg.bridge is not None and bridge is None:
            why.append(f"bridge {seg.bridge} is not there yet: the interface joins it when it appears")
        reasons[topic(name)] = "; ".join(why)
        if seg.address is not None and seg.table is not None:
            holder = bridge if seg.bridge is not None else facts.observed.link_by_name(seg.interface)
            objects += _source_in_source_out(seg, seg.table, prio, holder=holder)
    return Contribution(objects=tuple(objects), reasons=reasons)


def _source_in_source_out(seg: Vxlan, table: int, prio: int, *, holder: object) -> list[object]:
    """The router's address on the segment, its source rule and the rule's table (the
    rule always: without its table's routes it falls through, as if it were not there)."""
    assert seg.address is not None
    family = AF_INET if seg.address.version == 4 else AF_INET6
    host = ipaddress.ip_network(seg.address.ip)
    out: list[object] = [Rule(family, prio + BAND_SEGMENT_SOURCE, table, src=host)]
    index = getattr(holder, "index", None)
    dev = str(getattr(holder, "name", ""))
    if index is None:
        return out
    out.append(StaticAddr(index, seg.address, dev=dev))
    out.append(Route(RouteKey(family, table, str(seg.address.network)), oif=index, dev=dev))
    if seg.gateway is not None:
        out.append(
            Route(RouteKey(family, table, str(any_net(family))), oif=index, gateway=seg.gateway, dev=dev)
        )
    return out
