#!/usr/bin/env python3
"""Modem uplinks: how soon a lost bearer takes the uplink out, and how soon it is back.

    sudo python3 bench/modem.py [--reps 5]

Needs root (network namespaces), dbus-daemon and python-dbusmock. ModemManager is stood in
for on a private bus (harness/modemmanager.py, as in tests/netns/test_modem.py); the
controller, the kernel and the raw-IP-like data interface (`wwan0`, a veth with ARP off) are
real. One `modem` uplink (`lte`, table 110), so nothing else can carry traffic.

1. **registered → routed**: from the stand-in announcing the modem (InterfacesAdded) to
   `default dev wwan0` appearing in table 110 (Simple.Connect, the bearer read, the address
   and MTU written, the route added).
2. Each rep: **bearer lost → out**: from the stand-in setting the bearer's Connected to false
   to the default route leaving table 110 (the uplink leaves the group in the same pass). No
   probe is configured: this is the bearer's signal alone. The issue's goal: ≤ 100 ms.
   **bearer lost → back**: until the route is back, after the reconnect backoff (1 s, 2 s,
   4 s… for a bearer that keeps dropping within a minute), which is reported beside it.

Times are read from `ip monitor route` in the router namespace (each line stamped when read).
Reported: p50 / p95 (nearest rank), min, max in ms; a table and the JSON (also written to
bench/results/modem.json). The lab and the bus are torn down at the end whatever happens.
"""

from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from uplinkd.lab import Lab, LabDaemon

import bootstrap  # noqa: F401 - harness on sys.path
from harness.modemmanager import ModemManagerStandIn
from harness.stats import markdown_table, publish, summary

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "modem.json"
TABLE, PORT = 110, "wwan0"
GOAL_MS = 100.0


class RouteWatch:
    """`ip monitor route` in a namespace; each line with the wall-clock time it was read."""

    def __init__(self, netns: str) -> None:
        argv = ["ip", "-n", netns, "monitor", "route"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.time(), line.strip()))

    def wait(self, *, added: bool, timeout: float) -> float:
        """When `default dev wwan0 table 110` was next added (or deleted)."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                at, line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if f"table {TABLE}" in line and line.startswith(("default", "Deleted default")) and (
                line.startswith("Deleted") != added
            ):
                return at
        raise TimeoutError(f"route {'added' if added else 'deleted'} in table {TABLE}: none in {timeout} s")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=5)


def measure(reps: int) -> dict[str, Any]:
    out: dict[str, list[float]] = {"down": [], "back": []}
    backoffs: list[float] = []
    with tempfile.TemporaryDirectory(prefix="uplinkd-bench-modem-") as tmp, Lab() as lab:
        workdir = Path(tmp)
        isp = lab.add_isp("lte", ifname=PORT, address="none")
        lab.run("router", ["ip", "link", "set", "dev", PORT, "arp", "off"])
        mac = lab.link("router", PORT)["address"]
        lab.run(isp.netns, ["ip", "link", "set", "dev", "down", "arp", "off", "address", mac])
        a = isp.addresses
        bearer = {"address": str(a.router4.ip), "prefix": 24, "gateway": str(a.gateway4.ip), "mtu": 1428}
        address = {"mode": "modem", "apn": "internet"}
        config = {"uplinks": {"lte": {"match": {"name": PORT}, "address": address, "table": TABLE}},
                  "balance": {"table": 200}}  # fmt: skip
        with ModemManagerStandIn(workdir) as mm, LabDaemon(lab.router, config, workdir=workdir, env=mm.env):
            watch = RouteWatch(lab.router)
            try:
                began = time.time()
                mm.add_modem(PORT, **bearer)
                first = (watch.wait(added=True, timeout=20) - began) * 1000
                for rep in range(reps):
                    time.sleep(0.5)
                    began = time.time()
                    mm.drop_bearer()
                    out["down"].append((watch.wait(added=False, timeout=10) - began) * 1000)
                    out["back"].append((watch.wait(added=True, timeout=90) - began) * 1000)
                    backoffs.append(float(2**rep))
                    print(f"  rep {rep + 1}/{reps}: out {out['down'][-1]:.0f} ms, "
                          f"back {out['back'][-1]:.0f} ms", file=sys.stderr)  # fmt: skip
            finally:
                watch.stop()
    return {
        "registered_to_routed_ms": round(first, 1),
        "bearer_lost_to_out_ms": summary(out["down"]),
        "bearer_lost_to_back_ms": [round(v, 1) for v in out["back"]],
        "backoff_s": backoffs,
    }


def table(results: dict[str, Any]) -> str:
    r = results["result"]
    d = r["bearer_lost_to_out_ms"]
    rows: list[tuple[str, ...]] = [("what", "p50", "p95", "min", "max")]
    rows.append(("bearer lost → out of table 110", *(f"{d[k]:.1f}" for k in ("p50", "p95", "min", "max"))))
    verdict = "met" if d["p95"] <= GOAL_MS else "missed"
    pairs = zip(r["bearer_lost_to_back_ms"], r["backoff_s"], strict=True)
    back = ", ".join(f"{b:.0f} ms (backoff {s:g} s)" for b, s in pairs)
    return "\n".join([
        f"Modem uplink, netns lab, ModemManager stood in for by dbusmock, {results['reps']} drops:",
        markdown_table(rows),
        f"goal: out ≤ {GOAL_MS:.0f} ms at p95: {verdict}",
        f"registered → routed: {r['registered_to_routed_ms']:.0f} ms",
        f"bearer lost → back: {back}",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("modem: needs root (network namespaces)", file=sys.stderr)
        return 2
    if not 1 <= args.reps <= 7:
        print("modem: --reps from 1 to 7 (the backoff doubles with each drop)", file=sys.stderr)
        return 2
    results = {"bench": "modem", "tier": "netns", "reps": args.reps, "goal_ms": GOAL_MS,
               "result": measure(args.reps)}  # fmt: skip
    publish(results, args.output, table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
