#!/usr/bin/env python3
"""Failover inside a tunnel: what flows inside a full WireGuard tunnel see when the uplink
carrying the tunnel dies.

    sudo python3 bench/tunnel_failover.py [--repeat 3]

Runs the real daemon in a lab (uplinks wan and lte1, one LAN client; "home" is a
wireguard-go peer on the lab's internet, see harness/tunnel_home.py) with a full tunnel
over the preference list [wan, lte1] and `fast` probes. Per run:

1. the client runs --tcp + --udp flows to the server, one request every --interval-ms
   each, all inside the tunnel;
2. after 2 s, wan's ISP drops everything from the router (carrier stays up);
3. per flow, the longest time it sent without a reply (`gap_ms`), its losses and its
   reconnects (goal: none); and whether the encrypted packets then leave by lte1 only.

Prints JSON on stdout (also written to bench/results/tunnel_failover.json) and a short
table. Needs root (network namespaces) and wireguard-go.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from uplinkd import control
from uplinkd.lab import Lab
from uplinkd.lab.launcher import LabDaemon

import bootstrap  # noqa: F401 - harness on sys.path
from harness.readback import wait_until
from harness.stats import markdown_table, publish, summary
from harness.tunnel_home import (
    NAMES,
    Counted,
    Home,
    add_outside,
    count_at_isps,
    kill_router_wireguard_go,
    router_config,
)

RESULTS = Path(__file__).resolve().parent / "results" / "tunnel_failover.json"
PRE_FAULT_S = 2.0


def tunnel(c: LabDaemon) -> dict[str, Any]:
    return dict(control.call(c.socket, {"command": "status"})["tunnels"][0])


def one_run(args: argparse.Namespace) -> dict[str, Any]:
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="uplinkd-tunbench-") as tmp:
        for name in NAMES:
            lab.add_isp(name, address="none")
        lab.add_client()
        add_outside(lab)
        count_at_isps(lab)
        home = Home(lab, Path(tmp))
        cfg, public = router_config(Path(tmp), home)
        daemon = LabDaemon(lab.router, cfg, workdir=Path(tmp))
        try:
            home.start(public)
            daemon.start()
            wait_until(lambda: tunnel(daemon)["state"] == "up", timeout=30, what="tunnel up")
            run = lab.start_flows(
                tcp=args.tcp, udp=args.udp, interval_ms=args.interval_ms, duration=args.duration
            )
            time.sleep(PRE_FAULT_S)
            faulted = time.monotonic()
            lab.isp("wan").blackhole()
            wait_until(lambda: tunnel(daemon)["underlay4"] == "lte1", timeout=30, what="underlay lte1")
            moved_ms = (time.monotonic() - faulted) * 1000
            report = run.result()
            seen = Counted(lab)
            time.sleep(2)
            return {
                "gap_ms": [round(f.max_gap_ms, 1) for f in report.flows],
                "tcp_gap_ms": [round(f.max_gap_ms, 1) for f in report.flows if f.proto == "tcp"],
                "udp_gap_ms": [round(f.max_gap_ms, 1) for f in report.flows if f.proto == "udp"],
                "lost": report.lost(),
                "sent": report.sent(),
                "reconnects": report.reconnects(),
                "underlay_moved_ms": round(moved_ms, 1),
                "encrypted_after": {n: seen[n]["encrypted"] for n in NAMES},
                "home_sees": home.endpoint(),
            }
        finally:
            daemon.stop()
            home.stop()
            kill_router_wireguard_go(lab)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tcp", type=int, default=5)
    parser.add_argument("--udp", type=int, default=5)
    parser.add_argument("--interval-ms", type=int, default=20)
    parser.add_argument("--duration", type=float, default=8.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    runs = [one_run(args) for _ in range(args.repeat)]
    gaps = [g for r in runs for g in r["gap_ms"]]
    results = {
        "benchmark": "tunnel_failover",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": vars(args),
        "max_gap_ms": summary(gaps, stats=("p50", "p95", "max", "n")),
        "reconnects": sum(r["reconnects"] for r in runs),
        "runs": runs,
    }
    rows = [
        ["run", "longest gap ms (tcp/udp)", "lost/sent", "reconnects", "underlay moved ms", "after: wan/lte1"]
    ]
    for i, r in enumerate(runs, 1):
        rows.append(
            [
                str(i),
                f"{max(r['tcp_gap_ms'], default=0):.0f} / {max(r['udp_gap_ms'], default=0):.0f}",
                f"{r['lost']}/{r['sent']}",
                str(r["reconnects"]),
                f"{r['underlay_moved_ms']:.0f}",
                f"{r['encrypted_after']['wan']}/{r['encrypted_after']['lte1']}",
            ]
        )
    publish(results, RESULTS, markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
