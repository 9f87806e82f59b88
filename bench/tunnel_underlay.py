#!/usr/bin/env python3
"""Where a tunnel rides, timed: a healthy uplink that drops UDP, and fail-back.

    sudo python3 bench/tunnel_underlay.py [--repeat 3]

Runs the real daemon in a lab (uplinks wan and lte1, one LAN client; "home" is a
wireguard-go peer on the lab's internet, see harness/tunnel_home.py) with a full tunnel over
[wan, lte1], `fast` probes on the uplinks and probes through the tunnel to home's inner
address (every --probe-interval s while idle). Flows inside the tunnel run throughout
(--tcp + --udp, one request every --interval-ms each). Per run:

1. **UDP blocked**: wan's ISP starts dropping the router's UDP to home (ICMP passes: wan stays
   healthy). Timed: until the tunnel is `degraded` (its probes failed), until it is up again
   on lte1 (the next allowed uplink, after the grace that tells a network dropping UDP from a
   dying uplink), the flows' longest silence and reconnects.
2. **Fail-back**: the block is lifted and wan blackholed (carrier up) until the tunnel is on
   lte1, then restored. Timed: from wan's return (its state `up`) until the tunnel is back on
   wan (`fail_back = "immediate"`), and the flows' longest silence across the move.

Prints JSON on stdout (also written to bench/results/tunnel_underlay.json) and a short table.
Needs root (network namespaces) and wireguard-go.
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
    INNER_HOME,
    NAMES,
    Home,
    add_outside,
    block_udp,
    count_at_isps,
    kill_router_wireguard_go,
    router_config,
)

RESULTS = Path(__file__).resolve().parent / "results" / "tunnel_underlay.json"
PRE_FAULT_S = 2.0


def status(c: LabDaemon) -> dict[str, Any]:
    return dict(control.call(c.socket, {"command": "status"}))


def tunnel(c: LabDaemon) -> dict[str, Any]:
    return dict(status(c)["tunnels"][0])


def uplink_up(c: LabDaemon, name: str) -> bool:
    return any(u["name"] == name and u["state"] == "up" for u in status(c)["uplinks"])


def since(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000, 1)


def one_run(args: argparse.Namespace) -> dict[str, Any]:
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="uplinkd-tunbench-") as tmp:
        for name in NAMES:
            lab.add_isp(name, address="none")
        lab.add_client()
        add_outside(lab)
        count_at_isps(lab)
        home = Home(lab, Path(tmp))
        probe = {"targets": [INNER_HOME.split("/")[0]], "interval": args.probe_interval}
        cfg, public = router_config(Path(tmp), home, probe=probe)
        daemon = LabDaemon(lab.router, cfg, workdir=Path(tmp))
        out: dict[str, Any] = {}
        try:
            home.start(public)
            daemon.start()
            wait_until(lambda: tunnel(daemon)["state"] == "up" and all(uplink_up(daemon, n) for n in NAMES),
                       timeout=30, what="tunnel and uplinks up")  # fmt: skip
            wait_until(lambda: (tunnel(daemon)["probe"] or {}).get("health") == "up", timeout=30,
                       what="the tunnel's probes up")  # fmt: skip

            # 1. wan drops UDP
            flows = lab.start_flows(tcp=args.tcp, udp=args.udp, interval_ms=args.interval_ms,
                                    duration=args.duration)  # fmt: skip
            time.sleep(PRE_FAULT_S)
            t0 = time.monotonic()
            block_udp(lab, "wan")
            wait_until(lambda: tunnel(daemon)["state"] == "degraded", timeout=30, what="degraded")
            degraded_ms = since(t0)
            wait_until(lambda: tunnel(daemon)["underlay4"] == "lte1" and tunnel(daemon)["state"] == "up",
                       timeout=30, what="up on lte1")  # fmt: skip
            out["udp_block"] = {
                "degraded_ms": degraded_ms,
                "up_on_lte1_ms": since(t0),
                "wan_state": "up" if uplink_up(daemon, "wan") else "not up",
                **_flows(flows.result()),
            }

            # 2. fail-back: wan's UDP works again; wan dies and returns
            block_udp(lab, "wan", on=False)
            lab.isp("wan").blackhole()
            wait_until(lambda: not uplink_up(daemon, "wan"), timeout=30, what="wan out of service")
            flows = lab.start_flows(tcp=args.tcp, udp=args.udp, interval_ms=args.interval_ms,
                                    duration=args.duration)  # fmt: skip
            time.sleep(PRE_FAULT_S)
            lab.isp("wan").blackhole(False)
            wait_until(lambda: uplink_up(daemon, "wan"), timeout=30, what="wan up")
            t1 = time.monotonic()
            wait_until(lambda: tunnel(daemon)["underlay4"] == "wan", timeout=30, what="back on wan")
            out["fail_back"] = {"back_on_wan_ms": since(t1), **_flows(flows.result())}
            return out
        finally:
            daemon.stop()
            home.stop()
            kill_router_wireguard_go(lab)


def _flows(report: Any) -> dict[str, Any]:
    return {
        "tcp_gap_ms": max((f.max_gap_ms for f in report.flows if f.proto == "tcp"), default=0.0),
        "udp_gap_ms": max((f.max_gap_ms for f in report.flows if f.proto == "udp"), default=0.0),
        "lost": report.lost(),
        "sent": report.sent(),
        "reconnects": report.reconnects(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tcp", type=int, default=3)
    parser.add_argument("--udp", type=int, default=3)
    parser.add_argument("--interval-ms", type=int, default=20)
    parser.add_argument("--duration", type=float, default=16.0)
    parser.add_argument("--probe-interval", type=float, default=1.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    runs = [one_run(args) for _ in range(args.repeat)]
    stats = ("p50", "max", "n")
    results = {
        "benchmark": "tunnel_underlay",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": vars(args),
        "udp_block_up_on_lte1_ms": summary([r["udp_block"]["up_on_lte1_ms"] for r in runs], stats=stats),
        "fail_back_ms": summary([r["fail_back"]["back_on_wan_ms"] for r in runs], stats=stats),
        "reconnects": sum(r[k]["reconnects"] for r in runs for k in ("udp_block", "fail_back")),
        "runs": runs,
    }
    rows = [["run", "udp block: degraded / up on lte1 ms", "gap tcp/udp ms", "fail-back ms", "gap tcp/udp ms",
             "reconnects"]]  # fmt: skip
    for i, r in enumerate(runs, 1):
        b, f = r["udp_block"], r["fail_back"]
        rows.append([
            str(i), f"{b['degraded_ms']:.0f} / {b['up_on_lte1_ms']:.0f}",
            f"{b['tcp_gap_ms']:.0f} / {b['udp_gap_ms']:.0f}", f"{f['back_on_wan_ms']:.0f}",
            f"{f['tcp_gap_ms']:.0f} / {f['udp_gap_ms']:.0f}", str(b["reconnects"] + f["reconnects"]),
        ])  # fmt: skip
    publish(results, RESULTS, markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
