"""What `uplinkctl status` shows, and the one-line summary systemd shows: rendered from the
runtime state and the running probers, never from the kernel (that is `plan`'s job)."""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from typing import Any

from uplinkd import __version__
from uplinkd.model import FAMILIES, UplinkStatus
from uplinkd.plan import policies
from uplinkd.probes import Prober
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


def render(rt: Runtime, *, probers: Mapping[str, Prober]) -> dict[str, Any]:
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
                "reason": rt.health[s.name].reason if s.ready and s.name in rt.health else s.reason,
                "probe": _probe_json(rt, s.name, probers.get(s.name), now),
                **_metering_json(rt, s),
            }
            for s in ups
        ],
        "policies": _policies_json(rt),
        "balance": {
            "table": rt.config.balance.table,
            "ipv4": rt.intent.balance_reason.get(socket.AF_INET) if rt.intent else None,
            "ipv6": rt.intent.balance_reason.get(socket.AF_INET6) if rt.intent else None,
        },
        "pending": [str(op) for op in rt.plan.ops] if rt.paused else [],
        "failures": [{"op": str(f.op), "error": f.error} for f in rt.result.failed],
        "events": [
            {"at": e.at, "uplink": e.uplink, "from": e.old, "to": e.new, "reason": e.reason}
            for e in list(rt.events)[-20:]
        ],
        "passes": rt.passes,
        "writes": rt.writes,
        "counters": rt.counters.as_json(marks={rt.config.mark_of(n): n for n in rt.config.uplinks}),
    }


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
        "table": s.table,
        "mark": s.mark,
        "weight": s.weight,
        "in_group": s.in_group,
        "drained": s.drained,
        "also_matches": list(s.also_matches),
    }


def _probe_json(rt: Runtime, name: str, prober: Prober | None, now: float) -> dict[str, Any] | None:
    probe = rt.config.uplinks[name].probe if name in rt.config.uplinks else None
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
