#!/usr/bin/env python3
"""Failover benchmark: what live flows see when an uplink dies, and what probing costs.

    sudo python3 bench/failover.py [--profiles fast,default] [--repeat 3]

Runs the real daemon in a lab (three uplinks wan/lte1/lte2, one LAN client, the lab's
server as the internet; see uplinkd.lab). For each probe profile and each scenario:

1. all three uplinks up; the client runs --tcp + --udp flows to the server, one request
   every --interval-ms each (UDP flows keep their socket, like a VPN);
2. the fault hits lte1: `blackhole` (its ISP drops everything from the router, carrier
   stays up: only probes can tell) or `carrier` (its link loses carrier);
3. the flows' reports say, per flow, the longest time it sent without a reply: for the
   flows that were on lte1 that is the outage they saw; flows on wan/lte2 must lose
   nothing and not move;
4. the fault is undone; the time until lte1 is back in service (`rejoin_ms`: the daemon's
   state change, which it writes to the group at once) and until a new connection gets a reply through it
   (`new_flows_ms`: a LAN poller opens four new UDP flows every 20 ms).

With `--setups balanced,tiered` (the default) each profile runs twice: `balanced` is the above
(every flow from lan1, balanced over all three); `tiered` steers lan1 (a steering rule on its
source address) to a policy whose top tier is lte1 alone, then wan and lte2, while a second
client, lan2, is balanced as usual. Half the flows come from each client. Every lan1 flow
starts on lte1 and must move to the next tier when it dies; the lan2 flows on wan and lte2 are
the healthy ones that must not notice; the recovery poller (in lan1) times when new
connections return to the top tier.

Meanwhile a second lab sits idle with one uplink per profile for a minute, to read what
probing an idle uplink costs (`uplinkctl status` → probe.bytes_per_minute).

Prints JSON on stdout (also written to bench/results/failover.json) and a short table on
stderr. A full run takes about two minutes. Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from uplinkd.lab import FlowReport, Lab
from uplinkd.lab.launcher import LabDaemon

import bootstrap  # noqa: F401 - harness on sys.path
from harness.readback import group_members, wait_until
from harness.stats import markdown_table, publish, summary

RESULTS = Path(__file__).resolve().parent / "results" / "failover.json"

NAMES = ("wan", "lte1", "lte2")
TABLES = {101: "wan", 102: "lte1", 103: "lte2"}
FAILED = "lte1"
SERVER = "198.51.100.100"
TARGET_P95_MS = {("fast", "blackhole"): 1000.0, ("fast", "carrier"): 100.0}
IDLE_S = 61.0  # bytes_per_minute sums the last 60 s of rounds: wait that long after start-up
# How long the flows run: before the fault, and in all
PRE_FAULT_S = 1.5
DURATION_S = {("default", "blackhole"): 14.0, ("fast", "blackhole"): 6.0}
CARRIER_DURATION_S = 5.0
WAIT_S = 60.0


def log(msg: str) -> None:
    print(f"[failover] {msg}", file=sys.stderr, flush=True)


def uplink(index: int, name: str, probe: dict[str, Any]) -> dict[str, Any]:
    return {
        "match": {"name": name},
        "address": {"mode": "static", "cidr": f"10.{100 + index}.0.2/24", "gateway": f"10.{100 + index}.0.1"},
        "table": 100 + index,
        # the server, and the ISP's own upstream address
        "probe": {"targets": [SERVER, f"198.51.100.{index}"], **probe},
    }


def config(profile: str, setup: str = "balanced") -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "uplinks": {name: uplink(i + 1, name, {}) for i, name in enumerate(NAMES)},
        "probe": {"profile": profile},
        "balance": {"table": 200},
    }
    if setup == "tiered":
        cfg["policies"] = {"tiered": {"tiers": [{"lte1": 1}, {"wan": 1, "lte2": 1}], "table": 150}}
        cfg["rules"] = {"steer": [{"src": "192.168.50.11/32", "policy": "tiered"}]}
    return cfg


def percentiles(values: Sequence[float]) -> dict[str, Any]:
    """p50, p95 (nearest rank) and max; None for no values."""
    return summary(values, stats=("p50", "p95", "max", "n"), digits=None)


@contextmanager
def running_lab(
    n: int, cfg: dict[str, Any], names: Sequence[str] = NAMES, clients: int = 1
) -> Iterator[tuple[Lab, LabDaemon]]:
    """A lab with the daemon started (its log's tail is attached to any error)."""
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="uplinkd-bench-") as tmp:
        for name in names[:n]:
            lab.add_isp(name, address="none")  # the controller puts the static address on
        for _ in range(clients):
            lab.add_client()
        with LabDaemon(lab.router, cfg, workdir=Path(tmp)) as c:
            yield lab, c


# Status is asked over the control socket from this process (LabDaemon.status), not with
# uplinkctl: a Python start-up per call would load the CPUs and disturb the flows measured.


def all_up(lab: Lab, c: LabDaemon) -> None:
    for name in NAMES:
        c.wait_state(name, "up", timeout=WAIT_S)
    wait_until(lambda: set(group_members(lab.router, TABLES)) == set(NAMES), timeout=WAIT_S,
               what="every uplink in the group")  # fmt: skip


def fault(lab: Lab, scenario: str, on: bool) -> None:
    isp = lab.isp(FAILED)
    if scenario == "blackhole":
        isp.blackhole(on)
    else:
        isp.carrier(not on)


# A LAN-side poller: every 20 ms, four new UDP flows (new sockets, so new connections that
# the balance group places); prints the wall-clock time of the first reply that came back
# through `want` (the failed uplink's ISP address), then exits.
POLLER = r"""
import select, socket, sys, time
server, port, want, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
print("ready", flush=True)
end, seq, socks = time.monotonic() + limit, 0, []
while time.monotonic() < end:
    for _ in range(4):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.connect((server, port))
        s.send(b"%d" % seq)
        seq += 1
        socks.append((time.monotonic(), s))
    tick = time.monotonic() + 0.02
    while (left := tick - time.monotonic()) > 0:
        for s in select.select([s for _, s in socks], [], [], left)[0]:
            try:
                words = s.recv(100).split()
            except OSError:
                continue
            if len(words) == 3 and words[1].decode() == want:
                print(f"{time.time():.6f}", flush=True)
                sys.exit(0)
    now = time.monotonic()
    for t, s in socks:
        if now - t > 1.0:
            s.close()
    socks = [(t, s) for t, s in socks if now - t <= 1.0]
print("timeout", flush=True)
sys.exit(1)
"""


def new_flows_through(lab: Lab, name: str) -> subprocess.Popen[str]:
    """Start the poller in lan1; its stdout says when a new flow went through `name`."""
    want = str(lab.isp(name).addresses.upstream4.ip)
    proc = lab.popen(
        "lan1", [sys.executable, "-c", POLLER, SERVER, "9000", want, str(WAIT_S)], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("the new-flow poller did not start")
    return proc


def one_run(
    lab: Lab, c: LabDaemon, profile: str, scenario: str, args: argparse.Namespace, *, setup: str = "balanced"
) -> dict[str, Any]:
    all_up(lab, c)
    duration = DURATION_S.get((profile, scenario), CARRIER_DURATION_S)
    if setup == "tiered":  # half from the steered client, half from the balanced one
        half = {"tcp": args.tcp // 2, "udp": args.udp // 2, "interval_ms": args.interval_ms}
        clients = ("lan1", "lan2")
        flows: Any = _Joined([lab.start_flows(client=cl, duration=duration, **half) for cl in clients])
    else:
        flows = lab.start_flows(tcp=args.tcp, udp=args.udp, interval_ms=args.interval_ms, duration=duration)
    time.sleep(PRE_FAULT_S)
    at = time.time()
    fault(lab, scenario, True)
    failed_state = "down" if scenario == "blackhole" else "present"
    c.wait_state(FAILED, failed_state, timeout=WAIT_S)
    events = [e for e in c.status()["events"] if e["uplink"] == FAILED and e["to"] == failed_state]
    detect_ms = round((events[-1]["at"] - at) * 1000, 1) if events else None
    report = flows.result()

    # recovery: undo the fault; when is the uplink back in the group, and carrying new flows?
    poller = new_flows_through(lab, FAILED)
    undone = time.time()
    fault(lab, scenario, False)
    assert poller.stdout is not None
    line = poller.stdout.readline().strip()
    lab.stop(poller)
    new_flows_ms = round((float(line) - undone) * 1000, 1) if line and line != "timeout" else None
    c.wait_state(FAILED, "up", "degraded", timeout=WAIT_S)
    back = [
        e["at"]
        for e in c.status()["events"]
        if e["uplink"] == FAILED and e["to"] in ("up", "degraded") and e["at"] >= undone
    ]
    rejoin_ms = round((back[0] - undone) * 1000, 1) if back else None
    return {"detect_ms": detect_ms, "report": report, "rejoin_ms": rejoin_ms, "new_flows_ms": new_flows_ms}


class _Joined:
    """Several clients' flow runs, reported as one."""

    def __init__(self, runs: Sequence[Any]) -> None:
        self.runs = list(runs)

    def result(self) -> FlowReport:
        reports = [r.result() for r in self.runs]
        return FlowReport(tuple(f for r in reports for f in r.flows), reports[0].uplink_names)


def summarize(profile: str, scenario: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    affected: list[tuple[str, float]] = []
    healthy = not_recovered = 0
    disturbed: list[dict[str, Any]] = []
    for i, run in enumerate(runs):
        report: FlowReport = run["report"]
        for flow in report.flows:
            first = report.uplink(flow.first_source)
            if first == FAILED:
                affected.append((flow.proto, flow.max_gap_ms))
                if report.uplink(flow.last_source) in (FAILED, "none"):
                    not_recovered += 1
            else:
                healthy += 1
                if flow.lost or flow.moved or flow.reconnects:
                    disturbed.append(
                        {
                            "run": i,
                            "proto": flow.proto,
                            "uplinks": report.uplinks_of(flow),
                            "lost": flow.lost,
                            "max_gap_ms": flow.max_gap_ms,
                            "reconnects": flow.reconnects,
                        }
                    )
    outage = percentiles([gap for _, gap in affected])
    target = TARGET_P95_MS.get((profile, scenario))
    return {
        "runs": len(runs),
        "affected_flows": len(affected),
        "outage_ms": outage,
        "outage_ms_tcp": percentiles([gap for proto, gap in affected if proto == "tcp"]),
        "outage_ms_udp": percentiles([gap for proto, gap in affected if proto == "udp"]),
        "not_recovered": not_recovered,
        "healthy_flows": healthy,
        "healthy_disturbed": len(disturbed),
        "healthy_disturbed_flows": disturbed[:20],
        "detect_ms": [run["detect_ms"] for run in runs],
        "rejoin_ms": [run["rejoin_ms"] for run in runs],
        "new_flows_ms": [run["new_flows_ms"] for run in runs],
        "target_p95_ms": target,
        "met": None
        if target is None
        else (outage["p95"] is not None and outage["p95"] <= target and not disturbed),
    }


def run_profile(profile: str, args: argparse.Namespace, setup: str = "balanced") -> dict[str, Any]:
    result: dict[str, Any] = {}
    clients = 2 if setup == "tiered" else 1
    with running_lab(3, config(profile, setup), clients=clients) as (lab, c):
        for scenario in ("blackhole", "carrier"):
            runs = []
            for i in range(args.repeat):
                log(f"{profile} {setup}: {scenario} run {i + 1}/{args.repeat}")
                runs.append(one_run(lab, c, profile, scenario, args, setup=setup))
            result[scenario] = summarize(profile, scenario, runs)
        # the last minute, faults included
        result["bytes_per_minute"] = {
            u["name"]: u["probe"]["bytes_per_minute"] for u in c.status()["uplinks"] if u["probe"]
        }
    return result


class IdleLab:
    """One uplink per profile, no traffic, for a minute; then each one's probe cost."""

    def __init__(self, profiles: Sequence[str]) -> None:
        self.profiles = list(profiles)
        self.result: dict[str, int] = {}
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            names = [f"idle{i}" for i in range(len(self.profiles))]
            cfg: dict[str, Any] = {
                "uplinks": {
                    name: uplink(i + 1, name, {"profile": profile})
                    for i, (name, profile) in enumerate(zip(names, self.profiles, strict=True))
                },
                "balance": {"table": 200},
            }
            with running_lab(len(names), cfg, names) as (_lab, c):
                for name in names:  # the start-up rounds (fast, until up) must leave the window
                    c.wait_state(name, "up", timeout=WAIT_S)
                time.sleep(IDLE_S)
                by_name = {u["name"]: u for u in c.status()["uplinks"]}
                self.result = {
                    profile: by_name[name]["probe"]["bytes_per_minute"]
                    for name, profile in zip(names, self.profiles, strict=True)
                }
        except BaseException as e:  # reported by join()
            self.error = e

    def join(self) -> dict[str, int]:
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.result


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def fmts(values: Sequence[float | None]) -> str:
    return "/".join(fmt(v) for v in values)


def table(results: dict[str, Any]) -> str:
    rows = [("setup", "profile", "fault", "flows", "outage p50/p95/max ms", "tcp p95", "udp p95", "detect ms",
             "healthy hit", "rejoin ms", "new flows ms", "target")]  # fmt: skip
    setups = [("balanced", results["profiles"])] + [("tiered", results["tiered"])] * ("tiered" in results)
    for setup, profile, by_scenario in ((st, p, b) for st, by in setups for p, b in by.items()):
        for scenario in ("blackhole", "carrier"):
            s = by_scenario[scenario]
            o = s["outage_ms"]
            target = (
                "-"
                if s["target_p95_ms"] is None
                else f"{'ok' if s['met'] else 'MISSED'} {s['target_p95_ms']:.0f}"
            )
            rows.append(
                (setup, profile, scenario, str(s["affected_flows"]), fmts([o["p50"], o["p95"], o["max"]]),
                 fmt(s["outage_ms_tcp"]["p95"]), fmt(s["outage_ms_udp"]["p95"]), fmts(s["detect_ms"]),
                 f"{s['healthy_disturbed']}/{s['healthy_flows']}", fmts(s["rejoin_ms"]),
                 fmts(s["new_flows_ms"]), target)
            )  # fmt: skip
    lines = [markdown_table(rows)]
    idle = results.get("idle_bytes_per_minute") or {}
    if idle:
        lines.append(
            "idle probe cost per uplink: "
            + ", ".join(f"{p} {b} B/min ({b * 1440 / 1e6:.2f} MB/day)" for p, b in idle.items())
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/failover.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", default="fast,default", help="comma-separated probe profiles")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario (more flows per percentile)")
    parser.add_argument("--tcp", type=int, default=24, help="TCP flows per run")
    parser.add_argument("--udp", type=int, default=24, help="UDP flows per run")
    parser.add_argument("--interval-ms", type=int, default=20, help="each flow sends this often")
    parser.add_argument("--no-idle", action="store_true", help="skip the idle probe-cost minute")
    parser.add_argument("--setups", default="balanced,tiered", help="balanced and/or tiered (a policy)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces)")
    profiles = [p for p in args.profiles.split(",") if p]
    started = time.monotonic()
    idle = None if args.no_idle else IdleLab(profiles)
    results: dict[str, Any] = {
        "benchmark": "failover",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "flows": {"tcp": args.tcp, "udp": args.udp, "interval_ms": args.interval_ms},
        "failed_uplink": FAILED,
        "profiles": {},
    }
    setups = [s for s in args.setups.split(",") if s]
    for profile in profiles:
        if "balanced" in setups:
            results["profiles"][profile] = run_profile(profile, args)
        if "tiered" in setups:
            results.setdefault("tiered", {})[profile] = run_profile(profile, args, "tiered")
    if idle is not None:
        results["idle_bytes_per_minute"] = idle.join()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    publish(results, args.output, table(results), table_to=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
