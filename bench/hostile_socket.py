#!/usr/bin/env python3
"""Failover while a hostile client holds the control socket (issue 9, item 1).

    sudo python3 bench/hostile_socket.py [--quick] [--reps 3] [--held 1100]

Needs root (network namespaces).  A lab (uplinkd.lab: three ISPs, static addresses, fast
probes every 0.2 s) with the real daemon; three cases, each ``--reps`` times on a fresh lab:

- ``quiet``: no hostile client (the reference);
- ``soft-1024``: the daemon under ``prlimit --nofile=1024:16384`` (systemd's default soft
  limit, the unit's LimitNOFILE) and a client holding ``--held`` connections, re-opening
  every one the daemon closes (at most 100 per 0.1 s);
- ``64-fds``: the same under ``prlimit --nofile=64:64``: more connections than descriptors.

Each run: all three uplinks up; the client connects; after 1 s lte1 is blackholed at its ISP.
Measured: blackhole → ``status`` says lte1 is down, and → lte1 out of the kernel's group
(polled every 50 ms); ``status`` calls answered and failed meanwhile; the daemon's log lines
from the client's start to lte1's removal (+1 s); connections the daemon turned away.

Prints the JSON (also written to bench/results/hostile_socket.json) and a table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from uplinkd import control
from uplinkd.lab import Lab

import bootstrap  # noqa: F401 - harness on sys.path
from harness.hostile import Daemon, Holder
from harness.readback import group_members
from harness.stats import markdown_table, publish, summary

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "hostile_socket.json"
NAMES = ("wan", "lte1", "lte2")
TABLES = {101 + i: name for i, name in enumerate(NAMES)}
CASES = {"quiet": None, "soft-1024": "1024:16384", "64-fds": "64:64"}
GIVE_UP_S = 30.0


def config() -> dict[str, Any]:
    uplinks = {
        name: {
            "match": {"name": name},
            "address": {"mode": "static", "cidr": f"10.{101 + i}.0.2/24", "gateway": f"10.{101 + i}.0.1"},
            "table": 101 + i,
            "probe": {"targets": ["198.51.100.100", f"198.51.100.{i + 1}"]},
        }
        for i, name in enumerate(NAMES)
    }
    return {"uplinks": uplinks, "probe": {"profile": "fast", "interval": 0.2}, "balance": {"table": 200}}


def once(case: str, held: int, workdir: Path) -> dict[str, Any]:
    with Lab() as lab:
        for name in NAMES:
            lab.add_isp(name, address="none")
        d = Daemon(lab.router, config(), workdir=workdir, nofile=CASES[case])
        try:
            d.start()
            for name in NAMES:
                d.wait_state(name, "up", timeout=GIVE_UP_S)
            before = len(d.log().splitlines())
            holder = Holder(d.socket, held) if CASES[case] else None
            answered = failed = 0
            down = out = None
            with holder or contextlib.nullcontext():
                time.sleep(1.0)
                t0 = time.monotonic()
                lab.isp("lte1").blackhole()
                while time.monotonic() - t0 < GIVE_UP_S and (down is None or out is None):
                    if out is None and "lte1" not in group_members(lab.router, TABLES):
                        out = time.monotonic() - t0
                    if down is None:
                        try:
                            st = control.call(d.socket, {"command": "status"}, timeout=2.0)
                            answered += 1
                            if next(u for u in st["uplinks"] if u["name"] == "lte1")["state"] == "down":
                                down = time.monotonic() - t0
                        except control.ControlError:
                            failed += 1
                    time.sleep(0.05)
                time.sleep(1.0)
            lines = len(d.log().splitlines()) - before
            return {
                "down_s": None if down is None else round(down, 3),
                "out_of_group_s": None if out is None else round(out, 3),
                "status_answered": answered,
                "status_failed": failed,
                "log_lines": lines,
                "turned_away": holder.turned_away if holder else 0,
                "alive": d.running,
            }
        finally:
            d.stop()


def _stat(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    values = [r[key] for r in runs if r[key] is not None]
    if not values:
        return {"missing": len(runs)}
    return {**summary(values, stats=("n", "p50", "max"), digits=3), "missing": len(runs) - len(values)}


def _cell(s: dict[str, Any]) -> str:
    return f"{s['p50']}/{s['max']}" if "p50" in s else f"never ({s['missing']} runs)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one repetition")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--held", type=int, default=1100)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("hostile_socket: needs root (network namespaces)", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * args.held)), hard))
    reps = 1 if args.quick else args.reps
    runs: dict[str, list[dict[str, Any]]] = {case: [] for case in CASES}
    with tempfile.TemporaryDirectory(prefix="hostile-socket-") as tmp:
        for rep in range(reps):
            for case in CASES:
                runs[case].append(once(case, args.held, Path(tmp) / f"{case}-{rep}"))
                print(f"  {case} #{rep + 1}: {runs[case][-1]}", file=sys.stderr)
    results: dict[str, Any] = {"held": args.held, "reps": reps, "cases": {}}
    for case, rs in runs.items():
        results["cases"][case] = {
            "down_s": _stat(rs, "down_s"),
            "out_of_group_s": _stat(rs, "out_of_group_s"),
            "status_failed": sum(r["status_failed"] for r in rs),
            "status_answered": sum(r["status_answered"] for r in rs),
            "log_lines_max": max(r["log_lines"] for r in rs),
            "turned_away": sum(r["turned_away"] for r in rs),
            "runs": rs,
        }
    rows = [
        [
            "case",
            "down p50/max s",
            "out of group p50/max s",
            "status ok/failed",
            "log lines (max)",
            "turned away",
        ]
    ]
    for case, c in results["cases"].items():
        status = f"{c['status_answered']}/{c['status_failed']}"
        down, out = _cell(c["down_s"]), _cell(c["out_of_group_s"])
        rows.append([case, down, out, status, str(c["log_lines_max"]), str(c["turned_away"])])
    publish(results, RESULTS, markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
