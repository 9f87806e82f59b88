"""What `uplinkctl status` shows, and the one-line summary systemd shows: rendered from the
runtime state and the running probers, never from the kernel (that is `plan`'s job)."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Mapping
from typing import Any

from uplinkd import __version__
from uplinkd.advertiser import AdvertSender
from uplinkd.config import Config
from uplinkd.model import FAMILIES, GROUPS, VXLAN, NexthopGroup, NftState, UplinkStatus
from uplinkd.modem import ModemWatcher
from uplinkd.plan import group_id, lan6, nexthop_id, policies
from uplinkd.plan.balance import FAMILY_NAMES
from uplinkd.probes import TUNNEL_PREFIX, Prober
from uplinkd.runtime import Runtime
from uplinkd.usage import month_of, read_bytes


def summary(rt: Runtime) -> str:
    if rt.intent is None:
        return "starting"
    ups = rt.intent.uplinks
    in_group = [s.name for s in ups if s.in_group]
    text = f"{len(in_group)}/{len(ups)} uplinks in service"
    if in_group:
        text += f" ({', '.join(in_group)})"
    if rt.paused:
        text += "; PAUSED after flush"
    if rt.result.failed:
        text += f"; {len(rt.result.failed)} writes failing"
    return text


def render(
    rt: Runtime,
    *,
    probers: Mapping[str, Prober],
    modems: Mapping[str, ModemWatcher] | None = None,
    senders: Mapping[str, AdvertSender] | None = None,
) -> dict[str, Any]:
    now = time.monotonic()
    ups = rt.intent.uplinks if rt.intent else ()
    return {
        "version": __version__,
        "paused": rt.paused,
        "summary": summary(rt),
        "uplinks": [
            {
                **uplink_json(s, now - rt.since.get(s.name, now)),
                # the latest round's words (a new verdict's reason alone does not re-plan)
                "reason": _nft_trouble(
                    rt, s, rt.health[s.name].reason if s.ready and s.name in rt.health else s.reason
                ),
                "probe": _probe_json(rt, s.name, probers.get(s.name), now),
                **_metering_json(rt, s),
                **_modem_json(rt, s.name, (modems or {}).get(s.name)),
                **_delegation_json(rt, s.name),
                **_lease6_json(rt, s.name),
                "ra": _ra_json(rt, s.name),
                **_families_json(rt, s),
            }
            for s in ups
        ],
        "policies": _policies_json(rt),
        "balance": {
            "table": rt.config.balance.table,
            "ipv4": rt.intent.balance_reason.get(socket.AF_INET) if rt.intent else None,
            "ipv6": rt.intent.balance_reason.get(socket.AF_INET6) if rt.intent else None,
        },
        "lan": _lan_json(rt, senders or {}),
        "tunnels": tunnels_json(rt, probers=probers, now=now),
        "vxlan": vxlan_json(rt),
        "pending": [str(op) for op in rt.plan.ops] if rt.paused else [],
        "failures": [{"op": str(f.op), "error": f.error} for f in rt.result.failed],
        "events": [
            {"at": e.at, "uplink": e.uplink, "from": e.old, "to": e.new, "reason": e.reason}
            | ({"kind": "tunnel", "tunnel": e.uplink, "underlay": e.underlay} if e.kind == "tunnel" else {})
            for e in list(rt.events)[-20:]
        ],
        "passes": rt.passes,
        "writes": rt.writes,
        "counters": rt.counters.as_json(marks=flush_marks(rt.config)),
    }


def flush_marks(config: Config) -> dict[int, str]:
    """The ct marks conntrack flushes use, by uplink: its own, and with each tunnel's bits
    (a tunnel leaving a healthy uplink flushes only its flow there)."""
    own = {config.mark_of(n): n for n in config.uplinks}
    return own | {m | t.mark: n for m, n in own.items() for t in config.tunnels.values()}


def _nft_trouble(rt: Runtime, s: UplinkStatus, reason: str) -> str:
    """An uplink whose interface the nft table was to take in, while loading that table
    failed, routes without masquerade or connection pinning: its reason says so."""
    for failure in rt.result.failed:
        obj = failure.op.obj
        if isinstance(obj, NftState) and s.dev is not None and s.dev in {u.ifname for u in obj.uplinks}:
            return f"{reason}; its nftables rules are not loaded (no masquerade, no pinning): {failure.error}"
    return reason


def uplink_json(s: UplinkStatus, age: float) -> dict[str, Any]:
    return {
        "name": s.name,
        "state": str(s.state),
        "reason": s.reason,
        "since_s": round(age, 3),
        "dev": s.dev,
        "ifindex": s.ifindex,
        "addresses": [str(a) for a in s.addresses],
        "gateway4": str(s.gateway4) if s.gateway4 else None,
        "gateway6": str(s.gateway6) if s.gateway6 else None,
        "prefixes6": _prefixes6(s),
        "table": s.table,
        "mark": s.mark,
        "weight": s.weight,
        "in_group": s.in_group,
        "drained": s.drained,
        "also_matches": list(s.also_matches),
    }


def _families_json(rt: Runtime, s: UplinkStatus) -> dict[str, Any]:
    """The families the uplink is configured to carry, those it routes in now, and those
    whose balance group holds it (an IPv6-only uplink: ["ipv6"] in all three)."""
    groups: list[str] = []
    for family in FAMILIES:
        group = rt.intent.kernel[GROUPS].get(group_id(rt.config, family)) if rt.intent else None
        nhid = nexthop_id(rt.config, s.table, family)
        if isinstance(group, NexthopGroup) and any(m.id == nhid for m in group.members):
            groups.append(FAMILY_NAMES[family])
    return {
        "families": list(rt.config.uplinks[s.name].families) if s.name in rt.config.uplinks else [],
        "routes": [FAMILY_NAMES[f] for f in s.families],
        "groups": groups,
    }


def _prefixes6(s: UplinkStatus) -> list[str]:
    """The uplink's global IPv6 prefixes (what a LAN's IPv6 may be translated to); a DHCPv6
    address is its own /128."""
    nets = {
        str(a.network)
        for a in s.addresses
        if isinstance(a, ipaddress.IPv6Interface) and not a.ip.is_link_local
    }
    return sorted(nets)


def _ra_json(rt: Runtime, name: str) -> dict[str, Any] | None:
    """The last router advertisement heard on an uplink whose IPv6 comes by RA."""
    advert = rt.adverts.get(name)
    if advert is None:
        return None
    return {
        "router": str(advert.router),
        "lifetime": advert.lifetime,
        "prefixes": [
            {"prefix": str(p.prefix), "preferred": p.preferred, "valid": p.valid} for p in advert.prefixes
        ],
        "mtu": advert.mtu,
        "rdnss": [str(a) for a in advert.rdnss],
        "managed": advert.managed,
    }


def _delegation_json(rt: Runtime, name: str) -> dict[str, Any]:
    """`delegated6` for an uplink that holds a DHCPv6-PD prefix: it and its valid time left."""
    d = rt.delegations.get(name)
    if d is None:
        return {}
    left = None if d.valid_until is None else max(0.0, round(d.valid_until - time.time(), 1))
    return {"delegated6": {"prefix": str(d.prefix), "valid_s": left}}


def _lease6_json(rt: Runtime, name: str) -> dict[str, Any]:
    """`dhcp6` for an uplink that holds an address by DHCPv6 (IA_NA): it and its valid time left."""
    lease = rt.leases6.get(name)
    if lease is None:
        return {}
    left = None if lease.valid_until is None else max(0.0, round(lease.valid_until - time.time(), 1))
    return {"dhcp6": {"address": str(lease.address.ip), "valid_s": left}}


def _lan_json(rt: Runtime, senders: Mapping[str, AdvertSender]) -> list[dict[str, Any]]:
    """Each configured LAN: its IPv6 mode, its prefixes, and `uplink=prefix` it leaves by;
    an `extend` LAN also what uplinkd advertises there (deprecated prefixes, router lifetime)."""
    if rt.intent is None:
        return []
    devs = {s.dev: s.name for s in rt.intent.uplinks if s.dev is not None}
    tables = [obj for obj in rt.intent.kernel if isinstance(obj, NftState)]
    translations = [t for table in tables for t in table.ipv6.translations]
    out: list[dict[str, Any]] = []
    for name, lan in rt.config.lan.items():
        mode = lan6.lan_mode(rt.config, lan)
        prefixes = [str(lan.ipv6.prefix)] if lan.ipv6.prefix is not None else []
        via = sorted(f"{devs.get(t.ifname, t.ifname)}={t.outer}" for t in translations if t.lan == name)
        if mode == "delegate" and lan.ipv6.uplink is not None:
            net, _ = lan6.delegated_subnet(lan, rt.delegations.get(lan.ipv6.uplink))
            prefixes = [str(net)] if net is not None else []
            via = [f"{lan.ipv6.uplink}={net}"] if net is not None else []
        entry: dict[str, Any] = {
            "name": name,
            "mode": mode,
            "prefixes": prefixes,
            "via": via,
            "reason": rt.intent.reasons.get(lan6.topic(name)),
        }
        if mode == "extend":
            advert = rt.intent.adverts.get(name)
            sender = senders.get(name)
            sent = sender.spec.advert.prefixes if sender is not None else ()
            live = [str(p.prefix) for p in advert.prefixes] if advert is not None else []
            entry |= {
                "prefixes": live,
                "via": [f"{lan.ipv6.uplink}={p}" for p in live],
                "deprecated": [str(p.prefix) for p in sent if p.preferred == 0],
                "router_lifetime": advert.lifetime if advert is not None else None,
                "adverts_sent": sender.sent + sender.answered if sender is not None else 0,
            }
        out.append(entry)
    return out


def _probe_json(rt: Runtime, name: str, prober: Prober | None, now: float) -> dict[str, Any] | None:
    """An uplink's probing; or a tunnel's, by its prober's name ("tunnel <name>")."""
    probe = rt.config.uplinks[name].probe if name in rt.config.uplinks else None
    if name.startswith(TUNNEL_PREFIX) and name.removeprefix(TUNNEL_PREFIX) in rt.config.tunnels:
        probe = rt.config.tunnels[name.removeprefix(TUNNEL_PREFIX)].probe
    if probe is None or not probe.targets:
        return None
    tracker = prober.tracker if prober else None
    return {
        "method": probe.method,
        "targets": list(probe.targets),
        "health": str(tracker.health) if tracker else "unknown",
        "loss_pct": round(tracker.loss * 100, 1) if tracker else None,
        "rtt_ms": round(tracker.rtt * 1000, 2) if tracker and tracker.rtt is not None else None,
        "suspicious": tracker.suspicious if tracker else False,
        "bytes_per_minute": prober.bytes_per_minute(now) if prober else 0,
    }


def _metering_json(rt: Runtime, s: UplinkStatus) -> dict[str, Any]:
    """Added fields: `metered`, `bytes` (the interface's rx+tx counters now, null when absent)
    and `usage` (this month's bytes against the budget, for metered or budgeted uplinks)."""
    up = rt.config.uplinks.get(s.name)
    if up is None:
        return {}
    usage = rt.usage.get(s.name)
    month = month_of(time.time())
    this_month = usage.bytes if usage is not None and usage.month == month else 0
    return {
        "metered": up.metered,
        "bytes": read_bytes(s.dev) if s.dev is not None else None,
        "usage": {"month": month, "bytes": this_month, "budget": up.budget, "spent": s.name in rt.spent}
        if up.metered or up.budget is not None
        else None,
    }


def _policies_json(rt: Runtime) -> dict[str, Any]:
    """Each policy's table, mark and, per family, the tier in use and why."""
    out: dict[str, Any] = {}
    reasons = rt.intent.reasons if rt.intent else {}
    for name, spec in rt.config.policies.items():
        entry: dict[str, Any] = {"table": spec.table, "mark": rt.config.policy_mark(name)}
        for family in FAMILIES:
            why = reasons.get(policies.topic(name, family))
            key = "ipv4" if family == socket.AF_INET else "ipv6"
            entry[key] = {"tier": policies.tier_of(why) if why else None, "why": why}
        out[name] = entry
    return out


def tunnels_json(
    rt: Runtime, *, probers: Mapping[str, Prober] | None = None, now: float | None = None
) -> list[dict[str, Any]]:
    """Each tunnel: state, the uplink(s) carrying it, last handshake, bytes, endpoint, its
    probes through the tunnel, the healthy uplinks it found it cannot pass (`avoid`) and
    the uplink fail-back holds it on (`stay_on`)."""
    at = time.monotonic() if now is None else now
    reasons = rt.intent.reasons if rt.intent else {}
    out: list[dict[str, Any]] = []
    for name, t in rt.config.tunnels.items():
        h = rt.tunnels.get(name)
        planned, _, why = reasons.get(f"tunnel {name}", "down: not planned yet").partition(": ")
        out.append(
            {
                "name": name,
                "interface": t.interface,
                "state": planned,
                # the worker's latest words while the state is the planned one (a new reason
                # alone does not re-plan)
                "reason": h.reason if h is not None and h.state == planned else why,
                "underlay4": reasons.get(f"tunnel {name} underlay ipv4") or None,
                "underlay6": reasons.get(f"tunnel {name} underlay ipv6") or None,
                "last_handshake": h.last_handshake if h else None,
                "handshake_age_s": round(time.time() - h.last_handshake, 1)
                if h and h.last_handshake
                else None,
                "rx_bytes": h.rx_bytes if h else 0,
                "tx_bytes": h.tx_bytes if h else 0,
                "endpoint": h.endpoint if h else None,
                "probe": _probe_json(rt, TUNNEL_PREFIX + name, (probers or {}).get(TUNNEL_PREFIX + name), at),
                "avoid": sorted(h.avoid) if h else [],
                "stay_on": h.stay_on if h else None,
                "resolved": {text: str(e) for text, e in h.resolved} if h else {},
                "backend": h.backend if h else None,
            }
        )
    return out


def vxlan_json(rt: Runtime) -> list[dict[str, Any]]:
    """Each VXLAN segment: interface, VNI, remotes, the MTU planned for it, bridge, why."""
    wanted = rt.intent.kernel[VXLAN] if rt.intent else {}
    reasons = rt.intent.reasons if rt.intent else {}
    out: list[dict[str, Any]] = []
    for name, v in rt.config.vxlan.items():
        link = wanted.get(v.interface)
        out.append(
            {
                "name": name,
                "interface": v.interface,
                "tunnel": v.tunnel,
                "vni": v.vni,
                "local": str(link.local) if link else None,
                "remotes": [str(r) for r in v.remotes],
                "port": v.port,
                "mtu": link.mtu if link else None,
                "bridge": link.bridge if link else None,
                "address": str(v.address) if v.address else None,
                "reason": reasons.get(f"vxlan {name}", "not planned yet"),
            }
        )
    return out


def _modem_json(rt: Runtime, name: str, watcher: ModemWatcher | None) -> dict[str, Any]:
    """`modem` for uplinks in modem mode: ModemManager's view (state, signal, access
    technology, operator, registration) and what stops it, with the fix; null while no
    interface is there to watch for."""
    up = rt.config.uplinks.get(name)
    if up is None or up.address.mode != "modem":
        return {}
    return {"modem": watcher.report.as_json() if watcher is not None else None}
