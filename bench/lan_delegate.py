#!/usr/bin/env python3
"""LAN IPv6 `delegate`: how long the controller's DHCPv6-PD client takes to put a delegated
/64 on the LAN, what a restart costs, and how soon an expired delegation leaves the LAN.

    sudo python3 bench/lan_delegate.py [--repeat 5]

The wired ISP runs ISC Kea (kea-dhcp6) delegating /56s of 2001:db8:e1::/48 with T1 2 s, T2 3 s,
preferred 4 s, valid 6 s; the LAN takes subnet 1. Per run, with an empty state directory:
the time from the client's start to the bound prefix and to the /64 on lan0 (from the daemon's
log; the client waits 0-1 s before its first Solicit and collects Advertises for the first
retransmission time, as RFC 8415 says), the kernel writes of a restart (and whether Kea
extended the binding: the restarted client Rebinds), and, once Kea stops (right after that
Rebind's Reply), the time until the /64 is gone from lan0: the valid lifetime, 6 s, plus the
pass that removes it.

Prints JSON (also bench/results/lan_delegate.json) and a table. Needs root and kea-dhcp6.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from uplinkd.lab import Lab
from uplinkd.lab.launcher import LabDaemon
from uplinkd.lab.pd import PdTimes

import bootstrap  # noqa: F401 - harness on sys.path
from harness.lab_config import static_uplink
from harness.readback import wait_until
from harness.stats import markdown_table, publish, summary

RESULTS = Path(__file__).resolve().parent / "results" / "lan_delegate.json"
POOL = "2001:db8:e1::/48"
LAN64 = "2001:db8:e1:1::1/64"
TIMES = PdTimes(t1=2, t2=3, preferred=4, valid=6)


def config() -> dict[str, Any]:
    return {
        "uplinks": {
            "wan": static_uplink(1, "wan"),
        },
        "lan": {"lan0": {"ipv6": {"mode": "delegate", "uplink": "wan", "subnet": 1}}},
    }


def on_lan(lab: Lab) -> bool:
    return LAN64 in lab.run("router", ["ip", "-6", "address", "show", "dev", "lan0"]).stdout


def routed(lab: Lab) -> bool:
    """The /64 on lan0, its source rule and the delegation's unreachable route: the whole pass."""
    rule = lab.run("router", ["ip", "-6", "rule", "show", "from", "2001:db8:e1:1::/64"]).stdout
    route = lab.run("router", ["ip", "-6", "route", "show", "table", "main", "type", "unreachable"]).stdout
    return on_lan(lab) and "lookup 101" in rule and "2001:db8:e1::/56" in route


def stamp(log: str, what: str) -> datetime:
    line = next(line for line in log.splitlines() if what in line)
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


def one_run(lab: Lab, workdir: Path) -> dict[str, Any]:
    server = lab.serve_pd("wan", pool=POOL, times=TIMES)
    c = LabDaemon(lab.router, config(), workdir=workdir)
    try:
        c.start()
        wait_until(lambda: routed(lab), timeout=30, what="the /64 on lan0 and routed")
        log = c.log_path.read_text()
        started = stamp(log, "DHCPv6 client started")
        bound = (stamp(log, "delegated prefix 2001:db8:e1::/56") - started).total_seconds()
        added = (stamp(log, "ip address add 2001:db8:e1:1::1/64") - started).total_seconds()
        c.stop()
        rows = len(server.rows())
        writes = len(c.writes())
        c.start()
        wait_until(lambda: len(server.rows()) > rows, timeout=10, what="Kea extending the binding")
        restart_writes = c.writes()[writes:]  # each write as logged (none expected)
        server.stop()
        gone_from = time.monotonic()
        wait_until(lambda: not on_lan(lab), timeout=TIMES.valid + 10, what="the /64 gone")
        gone = time.monotonic() - gone_from
    finally:
        c.stop()
        server.stop()
        server.lease_file.unlink(missing_ok=True)
    return {
        "bound_s": bound,
        "on_lan_s": added,
        "restart_writes": len(restart_writes),
        "restart_write_lines": restart_writes,
        "gone_after_stop_s": gone,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/lan_delegate.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    runs = []
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="uplinkd-bench-") as tmp:
        lab.add_isp("wan", address="none", routed6=True)
        for i in range(args.repeat):
            workdir = Path(tmp) / str(i)
            workdir.mkdir()
            runs.append(one_run(lab, workdir))
        foreign = lab.isp("wan").foreign_sources()
    stats = ("p50", "p95", "max", "n")
    results: dict[str, Any] = {
        "runs": runs,
        "times": {"t1": TIMES.t1, "t2": TIMES.t2, "preferred": TIMES.preferred, "valid": TIMES.valid},
        **{key: summary([r[key] for r in runs], stats=stats, digits=3) for key in ("bound_s", "on_lan_s")},
        "gone_after_stop_s": summary([r["gone_after_stop_s"] for r in runs], stats=stats, digits=2),
        "restart_writes": [r["restart_writes"] for r in runs],
        "foreign_sources": foreign,
    }
    b, o, g = results["bound_s"], results["on_lan_s"], results["gone_after_stop_s"]
    table = markdown_table(
        [
            ["measure (Kea, valid 6 s)", "p50", "p95", "max"],
            ["client start → prefix bound (s)", str(b["p50"]), str(b["p95"]), str(b["max"])],
            ["client start → /64 on lan0 (s)", str(o["p50"]), str(o["p95"]), str(o["max"])],
            ["server stopped → /64 gone (s)", str(g["p50"]), str(g["p95"]), str(g["max"])],
            ["kernel writes of a restart", *(str(max(results["restart_writes"])),) * 3],
        ]
    )
    publish(results, RESULTS, table)


if __name__ == "__main__":
    main()
