#!/usr/bin/env python3
"""LAN IPv6 `translate` under failover: what live IPv6 flows see when an uplink is blackholed.

    sudo python3 bench/lan_ipv6.py [--repeat 3]

Three uplinks (wan weight 3, lte1, lte2; `fast` probes), each ISP routing its /64 to the router
as a 3GPP network does; the LAN client holds 2001:db8:ff::11 in the LAN's internal prefix and
runs --tcp + --udp IPv6 flows to the server; lte1's ISP blackholes everything from the router.
Per run: the outage of the flows that were on lte1 (their longest silence), whether any flow on
wan/lte2 lost a packet, moved or reconnected, and the packets any ISP saw with a source outside
its own prefix.

Prints JSON (also bench/results/lan_ipv6.json) and a table. Needs root.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from uplinkd.lab import Lab
from uplinkd.lab.launcher import LabDaemon

import bootstrap  # noqa: F401 - harness on sys.path
from harness.readback import group_members, wait_until
from harness.stats import markdown_table, publish, summary

RESULTS = Path(__file__).resolve().parent / "results" / "lan_ipv6.json"
NAMES = ("wan", "lte1", "lte2")
TABLES = {101: "wan", 102: "lte1", 103: "lte2"}
WEIGHTS = {"wan": 3, "lte1": 1, "lte2": 1}


def config() -> dict[str, Any]:
    uplinks = {
        name: {
            "match": {"name": name},
            "address": {
                "mode": "static",
                "cidr": f"10.{100 + n}.0.2/24",
                "gateway": f"10.{100 + n}.0.1",
                "cidr6": f"2001:db8:{n}::2/64",
                "gateway6": f"2001:db8:{n}::1",
            },
            "table": 100 + n,
            "weight": WEIGHTS[name],
            "probe": {"targets": ["198.51.100.100", f"198.51.100.{n}"]},
        }
        for n, name in enumerate(NAMES, start=1)
    }
    return {
        "uplinks": uplinks,
        "probe": {"profile": "fast"},
        "lan": {"lan0": {"ipv6": {"mode": "translate", "prefix": "2001:db8:ff::/64"}}},
    }


def one_run(lab: Lab, c: LabDaemon, args: argparse.Namespace) -> dict[str, Any]:
    wait_until(lambda: len(group_members(lab.router, TABLES, v6=True)) == 3, timeout=30, what="v6 group of 3")
    flows = lab.start_flows(tcp=args.tcp, udp=args.udp, interval_ms=20, duration=6.0, family=6)
    time.sleep(1.5)
    lab.isp("lte1").blackhole()
    c.wait_state("lte1", "down", timeout=30)
    report = flows.result()
    lab.isp("lte1").blackhole(False)
    c.wait_state("lte1", "up", timeout=30)
    outage = [(f.proto, f.max_gap_ms) for f in report.started_on("lte1")]
    healthy = [f for f in report.flows if report.uplink(f.first_source) in ("wan", "lte2")]
    return {
        "outage_ms": outage,
        "on_lte1": len(outage),
        "healthy": len(healthy),
        "healthy_hit": sum(1 for f in healthy if f.lost or f.moved or f.reconnects),
        "by_uplink": report.by_uplink(at="first"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/lan_ipv6.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tcp", type=int, default=24)
    parser.add_argument("--udp", type=int, default=24)
    args = parser.parse_args()
    runs = []
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="uplinkd-bench-") as tmp:
        for name in NAMES:
            lab.add_isp(name, address="none", routed6=True)
        lab.add_client()
        lab.run("lan1", ["ip", "address", "add", "2001:db8:ff::11/64", "dev", "eth0", "nodad"])
        with LabDaemon(lab.router, config(), workdir=Path(tmp)) as c:
            for _ in range(args.repeat):
                runs.append(one_run(lab, c, args))
        foreign = {isp.name: isp.foreign_sources() for isp in lab.isps}
    stats = ("p50", "p95", "max", "n")
    outage = summary([g for r in runs for _, g in r["outage_ms"]], stats=stats, digits=None)
    by_proto = {
        proto: summary([g for r in runs for p, g in r["outage_ms"] if p == proto], stats=stats, digits=None)
        for proto in ("tcp", "udp")
    }
    results = {
        "runs": runs,
        "outage_ms": outage,
        "outage_ms_by_proto": by_proto,
        "healthy_flows": sum(r["healthy"] for r in runs),
        "healthy_hit": sum(r["healthy_hit"] for r in runs),
        "foreign_sources": foreign,
    }
    table = markdown_table(
        [
            ["fault", "outage p50 / p95 / max (ms)", "UDP p95", "TCP p95", "healthy hit", "foreign sources"],
            [
                "blackhole lte1, fast probes, IPv6 translate",
                f"{outage['p50']} / {outage['p95']} / {outage['max']}",
                str(by_proto["udp"]["p95"]),
                str(by_proto["tcp"]["p95"]),
                f"{results['healthy_hit']} of {results['healthy_flows']}",
                str(sum(v for f in foreign.values() for v in f.values())),
            ],
        ]
    )
    publish(results, RESULTS, table)


if __name__ == "__main__":
    main()
