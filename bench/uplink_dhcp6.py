#!/usr/bin/env python3
"""IPv6 by DHCPv6 (IA_NA) on a `dhcp` uplink: from plugging the uplink in to its DHCPv6 address
being on it and routed, with an ISP that gives addresses only by DHCPv6.

    sudo python3 bench/uplink_dhcp6.py [--repeat 5]

The ISP is dnsmasq (DHCPv4, and stateful DHCPv6 from its /64 announced by RAs with the M flag
and no A flag). Per run, with an empty state directory (a new DUID, so dnsmasq hands out a new
address and the client Solicits), the daemon runs first and the uplink is then plugged in;
from the plug (a veth appearing in the router's namespace): the RA heard, the DHCPv6 client
started (it follows the RA's M flag), the address bound, `ip address add` written, the address
on the interface with DAD done and its `from <addr> lookup T_u` rule there (polled every 20 ms).
The client waits 0-1 s before its first Solicit and collects Advertises for the first
retransmission time (~1 s), as RFC 8415 §18.2.1 says: most of the time to bound. Then the
uplink is unplugged and plugged in again: the stored binding is kept and Rebound, so the same
address is back without a Solicit (`replug_s`).

Prints JSON (also bench/results/uplink_dhcp6.json) and a table. Needs root and dnsmasq.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from uplinkd.lab import Lab
from uplinkd.lab.launcher import LabDaemon

import bootstrap  # noqa: F401 - harness on sys.path
from harness.readback import wait_until
from harness.stats import markdown_table, publish, summary

RESULTS = Path(__file__).resolve().parent / "results" / "uplink_dhcp6.json"
POLL_S = 0.02


def config() -> dict[str, Any]:
    return {
        "uplinks": {
            "wan": {
                "match": {"name": "wan"},
                "address": {"mode": "dhcp"},  # dhcp6 unset: auto, by the RA's M flag
                "table": 101,
                "probe": {"targets": ["2001:db8:100::100"]},
            }
        },
        "probe": {"profile": "fast"},
    }


def leased(lab: Lab) -> str | None:
    """The /128 on wan once DAD is done, if its source rule is there too."""
    out = lab.run("router", ["ip", "-6", "-json", "address", "show", "dev", "wan", "scope", "global"]).stdout
    for entry in json.loads(out or "[]"):
        for info in entry.get("addr_info", []):
            if info.get("prefixlen") == 128 and not info.get("tentative"):
                return str(info["local"])
    return None


def routed(lab: Lab, address: str) -> bool:
    return "lookup 101" in lab.run("router", ["ip", "-6", "rule", "show", "from", address]).stdout


def stamp(log: str, what: str, after: datetime) -> float | None:
    """Seconds from `after` to the first log line after it that holds `what`."""
    for line in log.splitlines():
        if what in line:
            at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            if at >= after:
                return round((at - after).total_seconds(), 3)
    return None


def plug_and_wait(lab: Lab) -> tuple[datetime, float, str]:
    """Plug the uplink in; (the plug's wall-clock time, seconds to address and rule, address)."""
    began, plugged = time.monotonic(), datetime.now()
    lab.plug(lab.isp("wan"), "wan")
    while True:
        address = leased(lab)
        if address is not None and routed(lab, address):
            return plugged, time.monotonic() - began, address
        if time.monotonic() - began > 30:
            raise TimeoutError("no DHCPv6 address on wan 30 s after the plug")
        time.sleep(POLL_S)


def one_run(lab: Lab, workdir: Path) -> dict[str, Any]:
    c = LabDaemon(lab.router, config(), workdir=workdir)
    try:
        c.start()
        plugged, total, address = plug_and_wait(lab)
        log = c.log_path.read_text()
        run: dict[str, Any] = {
            "address": address,
            "ra_heard_s": stamp(log, "addresses by DHCPv6 (M flag)", plugged),
            "client_started_s": stamp(log, "DHCPv6 client started", plugged),
            "bound_s": stamp(log, f"DHCPv6 address {address}/128 (bound)", plugged),
            "added_s": stamp(log, f"ip address add {address}/128", plugged),
            "routed_s": round(total, 3),
        }
        lab.unplug("wan")
        wait_until(lambda: not routed(lab, address), timeout=10, what="the rule gone after the unplug")
        _, replug, again = plug_and_wait(lab)
        run["replug_s"] = round(replug, 3)
        run["replug_same_address"] = again == address
        lab.unplug("wan")
    finally:
        c.stop()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/uplink_dhcp6.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    runs = []
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="uplinkd-bench-") as tmp:
        lab.add_isp("wan", address="dhcp", ra=True, dhcp6=True, routed6=True, onlink6=True, plugged=False)
        for i in range(args.repeat):
            workdir = Path(tmp) / str(i)
            workdir.mkdir()
            runs.append(one_run(lab, workdir))
        foreign = lab.isp("wan").foreign_sources()
    stats = ("p50", "p95", "max", "n")
    keys = ("ra_heard_s", "client_started_s", "bound_s", "added_s", "routed_s", "replug_s")
    results: dict[str, Any] = {
        "runs": runs,
        **{key: summary([r[key] for r in runs if r[key] is not None], stats=stats, digits=3) for key in keys},
        "replug_same_address": all(r["replug_same_address"] for r in runs),
        "foreign_sources": foreign,
    }
    rows = [["from the plug (dnsmasq, M flag) to", "p50", "p95", "max"]]
    names = {
        "ra_heard_s": "the RA heard (s)",
        "client_started_s": "the DHCPv6 client started (s)",
        "bound_s": "the address bound (s)",
        "added_s": "`ip address add` written (s)",
        "routed_s": "address (DAD done) and source rule seen (s)",
        "replug_s": "replug (stored binding): the same, again (s)",
    }
    for key, name in names.items():
        s = results[key]
        rows.append([name, str(s["p50"]), str(s["p95"]), str(s["max"])])
    publish(results, RESULTS, markdown_table(rows))


if __name__ == "__main__":
    main()
