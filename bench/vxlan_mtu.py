#!/usr/bin/env python3
"""Throughput over the tunnel (L3) and the VXLAN segment (L2) at an uplink MTU of 1428, and
what a segment MTU of 1500 costs against `auto` (1318).

    sudo python3 bench/vxlan_mtu.py [--repeat 3] [--megabytes 50]

The lab of tests/netns/test_vxlan_mtu.py (harness/vxlan_home.py): uplinks wan and lte1 at
1428, a full tunnel home (wireguard-go at both ends, tunnel MTU auto = 1368) and `vxlan.home`
into a bridge on the router, hosts sending as on a cable (no TSO/GSO/GRO). Per run and case,
one TCP connection carries --megabytes and the ISPs count the router's packets and fragments:

- `l3`: the LAN client to home's inner address, through the tunnel;
- `l2-auto`: segment MTU auto (1318), hosts at 1318 (what DHCP option 26 gives them);
- `l2-1500`: segment MTU 1500 at both ends, hosts at 1500 (TCP learns 1318 from the VXLAN
  port's "fragmentation needed"; what is not DF is carried in fragments inside the tunnel).

Prints JSON on stdout (also written to bench/results/vxlan_mtu.json) and a short table.
Needs root (network namespaces), wireguard-go and ethtool. Timing is wall clock around the
sending client (its Python start included), on a shared machine: compare the cases of one
run more than runs of different days.
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

from uplinkd.lab import Lab

import bootstrap  # noqa: F401 - harness on sys.path
from harness.stats import markdown_table, publish, summary
from harness.tunnel_home import Home, kill_router_wireguard_go
from harness.vxlan_home import HOME_HOST, HOME_INNER, SEGMENT_MTU, bulk, fragments, mtu_lab, start_segment

RESULTS = Path(__file__).resolve().parent / "results" / "vxlan_mtu.json"
CASES = ("l3", "l2-auto", "l2-1500")


def one_case(case: str, size: int) -> dict[str, Any]:
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="uplinkd-vxbench-") as tmp:
        mtu_lab(lab)
        home = Home(lab, Path(tmp))
        daemon = None
        try:
            daemon, seg = start_segment(lab, home, Path(tmp), **({"mtu": 1500} if case == "l2-1500" else {}))
            seg.like_a_wire()
            if case == "l2-auto":
                seg.set_host_mtu(SEGMENT_MTU)
            if case == "l3":
                client, server_ns, server = lab.clients[0].netns, lab.inet, HOME_INNER
            else:
                client, server_ns, server = seg.router_host, seg.home_host, HOME_HOST.split("/")[0]
            bulk(client, server_ns, server, size=100_000)  # warm up: ARP, PMTU, handshake
            before = fragments(lab)
            started = time.monotonic()
            got = bulk(client, server_ns, server, size=size)
            seconds = time.monotonic() - started
            seen = {k: v - before[k] for k, v in fragments(lab).items()}
            return {
                "bytes": got,
                "seconds": round(seconds, 3),
                "mbit_s": round(got * 8 / seconds / 1e6, 1) if got > 0 else 0.0,
                "outer_packets": seen["all"],
                "outer_fragments": seen["first"] + seen["later"],
            }
        finally:
            if daemon is not None:
                daemon.stop()
            home.stop()
            kill_router_wireguard_go(lab)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--megabytes", type=int, default=50)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    size = args.megabytes * 1_000_000
    runs = [{case: one_case(case, size) for case in CASES} for _ in range(args.repeat)]
    results = {
        "benchmark": "vxlan_mtu",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": vars(args),
        "mbit_s": {
            c: summary([r[c]["mbit_s"] for r in runs], stats=("median", "min", "max", "n")) for c in CASES
        },
        "outer_fragments": {c: sum(r[c]["outer_fragments"] for r in runs) for c in CASES},
        "runs": runs,
    }
    rows = [["run", *(f"{c} Mbit/s (outer frags)" for c in CASES)]]
    for i, r in enumerate(runs, 1):
        rows.append([str(i), *(f"{r[c]['mbit_s']:.0f} ({r[c]['outer_fragments']})" for c in CASES)])
    publish(results, RESULTS, markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
