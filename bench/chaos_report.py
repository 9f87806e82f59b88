"""The chaos soak's figures: per fault kind and in all, from the windows' records (pure)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import bootstrap  # noqa: F401 - harness on sys.path
from harness.stats import markdown_table, summary


def _kind(windows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    healthy = [w["healthy"] for w in windows if "healthy" in w]
    at_fault = [w["at_fault"] for w in windows if "at_fault" in w]
    gaps = [a["max_gap_ms"] for a in at_fault if a["max_gap_ms"] is not None and a["flows"]]
    converge = [w["converge_ms"] for w in windows if w.get("converge_ms") is not None]
    recover = [w["recover_ms"] for w in windows if w.get("recover_ms") is not None]
    new = [w["new_flows"] for w in windows if "new_flows" in w]
    return {
        "n": len(windows),
        "converge_ms": summary(converge),
        "recover_ms": summary(recover),
        # part of recover_ms: the lab's own undo call (carrier: waits for the ISP end to be up;
        # replug: makes the veth, brings the ISP end up, starts dnsmasq)
        "undo_call_ms": summary([w["undo_call_ms"] for w in windows if "undo_call_ms" in w]),
        "not_converged": sum(1 for w in windows if w.get("timeouts")),
        "healthy_flows": sum(h["flows"] for h in healthy),
        "healthy_lost": sum(h["lost"] for h in healthy),
        "healthy_hit": sum(h["hit"] for h in healthy),
        "at_fault_flows": sum(a["flows"] for a in at_fault),
        "at_fault_lost": sum(a["lost"] for a in at_fault),
        "at_fault_max_gap_ms": summary(gaps),
        "new_flows": sum(n["sent"] for n in new),
        "new_flows_through_out_uplink": sum(n["through_out_uplink"] for n in new),
        "errors": [w["error"] for w in windows if "error" in w],
        "traffic_errors": sum(1 for w in windows if "traffic_error" in w),
    }


def summarize(windows: Sequence[dict[str, Any]], read_ms: Sequence[float]) -> dict[str, Any]:
    kinds = sorted({w["kind"] for w in windows})
    by_kind = {k: _kind([w for w in windows if w["kind"] == k]) for k in kinds}
    targeted = [w for w in windows if w.get("faulted") and "healthy" in w]
    wide = [w for w in windows if not w.get("faulted") and "healthy" in w]
    kills = [w for w in windows if w["kind"] == "sigkill"]
    return {
        "faults": len(windows),
        "by_kind": by_kind,
        # uplink faults (blackhole, carrier, replug, drain, deleting an uplink's rule or route):
        # the flows of the other uplinks
        "healthy_lost": sum(w["healthy"]["lost"] for w in targeted),
        "healthy_hit": sum(w["healthy"]["hit"] for w in targeted),
        "healthy_flows": sum(w["healthy"]["flows"] for w in targeted),
        # router-wide faults (SIGHUP, nft flush, SIGKILL, deleting a shared rule or route): every flow
        "router_wide_lost": sum(w["healthy"]["lost"] for w in wide),
        "router_wide_hit": sum(w["healthy"]["hit"] for w in wide),
        "router_wide_flows": sum(w["healthy"]["flows"] for w in wide),
        "router_wide_hit_by_kind": dict(Counter(w["kind"] for w in wide if w["healthy"]["hit"])),
        "new_flows_through_out_uplink": sum(k["new_flows_through_out_uplink"] for k in by_kind.values()),
        "not_converged": sum(k["not_converged"] for k in by_kind.values()),
        "window_errors": sum(len(k["errors"]) for k in by_kind.values()),
        "invalid_sighup_kept": [w.get("kept") for w in windows if w["kind"] == "sighup_invalid"],
        "sigkill_layout_kept_while_dead": [w.get("layout_kept_while_dead") for w in kills],
        "sigkill_restart_writes": [w.get("restart_writes") for w in kills],
        "read_ms": {k: v for k, v in summary(read_ms).items() if k != "samples"},
    }


def _pair(s: dict[str, Any]) -> str:
    return f"{s['p50']:.0f} / {s['p95']:.0f}" if s.get("n") else "-"


def table(results: dict[str, Any]) -> str:
    s = results["summary"]
    rows = [("fault", "n", "converge p50/p95 ms", "recover p50/p95 ms", "healthy flows hit (pkts lost)",
             "new flows via out uplink", "at-fault flows: max gap p50/p95 ms")]  # fmt: skip
    for kind, k in s["by_kind"].items():
        rows.append((kind, str(k["n"]), _pair(k["converge_ms"]), _pair(k["recover_ms"]),
                     f"{k['healthy_hit']}/{k['healthy_flows']} ({k['healthy_lost']})",
                     f"{k['new_flows_through_out_uplink']}/{k['new_flows']}",
                     _pair(k["at_fault_max_gap_ms"])))  # fmt: skip
    lines = markdown_table(rows).splitlines()
    end, m = results["end"], results["machine"]
    kept = s["invalid_sighup_kept"]
    return "\n".join([
        f"Chaos soak, {s['faults']} faults in {results['soaked_s']:.0f} s ({results['command']}),"
        f" load average {m['loadavg_before'][0]} → {m['loadavg_after'][0]} on {m['cpus']} CPUs:",
        *lines,
        f"crashes: {len(results['crashes'])}",
        f"uplink faults, flows of the other uplinks hit: {s['healthy_hit']} of {s['healthy_flows']}"
        f" ({s['healthy_lost']} requests lost)",
        f"router-wide faults, flows hit: {s['router_wide_hit']} of {s['router_wide_flows']}"
        f" ({s['router_wide_lost']} lost; windows with a hit: {s['router_wide_hit_by_kind']})",
        f"new flows through an out-of-group uplink: {s['new_flows_through_out_uplink']};"
        f" not converged: {s['not_converged']}; windows that broke: {s['window_errors']};"
        f" invalid SIGHUP kept the config: {sum(map(bool, kept))}/{len(kept)}",
        f"leftovers vs a fresh start: {len(end['leftovers'])} extra, {len(end['missing_after_soak'])}"
        f" missing; fresh = baseline: {end['fresh_equals_baseline']}; read p50 {s['read_ms'].get('p50')} ms",
    ])  # fmt: skip
