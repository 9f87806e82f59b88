#!/usr/bin/env python3
"""Hotplug with a late DHCP server: plug → routed when the stick's server starts after the plug.

    sudo python3 bench/hotplug_late_server.py [--reps 12] [--server-delay 1.0] [--interval-ms 5]

Needs root (network namespaces). Sticks' firmware often brings its DHCP server up a moment
after the USB device appears, so the controller's first DISCOVERs go unanswered and how soon
it asks again decides how long the stick stays unused (issue 9, item 9; goal: routed ≤ 2 s
after the plug with a server that starts 1 s after it).

One lab (`uplinkd.lab.Lab`: a router, one ISP, one LAN client, the echo server) and the real
daemon in the router namespace (`uplinkd.lab.launcher.LabDaemon`), configured with one `dhcp` uplink
(`usb`, match `usb*`, table 101), so nothing but the new stick can carry traffic. The ISP's
dnsmasq is not run by the lab (`dhcp="silent"`); this script starts it itself. Each plug:

1. The stored lease and dnsmasq's lease file are deleted (every plug is a new stick: a full
   DISCOVER / OFFER / REQUEST / ACK). A UDP flow on the LAN client (one socket, like a VPN;
   the prober of bench/hotplug.py) sends every `--interval-ms` from before the plug.
2. The clock starts right before `lab.plug()` (a veth appears in the router namespace, like a
   USB NIC). `--server-delay` s later (1 s) dnsmasq is started in the ISP's namespace;
   "server listening" is when `ss` first shows its socket on port 67 (the server's own
   start-up is part of what a stick does too).
3. **plug → routed**: the first reply the echo server saw coming from that ISP
   (CLOCK_MONOTONIC is shared across namespaces). The flow gives up after 20 s ("timeouts").
   **plug → lease**: the daemon's log line `usb: lease … (bound)` (wall clock, ms).
   **listening → lease**: what the client's retransmission schedule costs.
4. Unplug, stop dnsmasq (by pid), wait until the daemon reports the uplink absent.

Reported: p50 / p95 (nearest rank), min, max, in ms. Prints a table and the JSON (also
written to bench/results/hotplug_late_server.json). The lab is deleted at the end whatever
happens.
"""

from __future__ import annotations

import argparse
import datetime
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hotplug import PROBER  # the one-socket UDP flow of bench/hotplug.py

from uplinkd.lab import Isp, Lab, LabDaemon, wait_until
from uplinkd.lab.addresses import SERVER4
from uplinkd.lab.isp import IspOptions, dnsmasq_argv

import bootstrap  # noqa: F401 - harness on sys.path
from harness.stats import markdown_table, publish, summary

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "hotplug_late_server.json"
TABLE = 101
IFNAME = "usb0"
FIRST_REPLY_TIMEOUT_S = 20.0
GOAL_MS = 2000.0
SETTLE_S = 0.3


def config() -> dict[str, Any]:
    return {
        "uplinks": {"usb": {"match": {"name": "usb*"}, "address": {"mode": "dhcp"}, "table": TABLE}},
        "balance": {"table": 200},
    }


def listening(lab: Lab, isp: Isp, pid: int) -> bool:
    out = lab.run(f"isp{isp.index}", ["ss", "-H", "-u", "-l", "-n", "-p", "sport = :67"], check=False)
    return f"pid={pid}," in out.stdout


def lease_bound_at(log: Path, after: float) -> float | None:
    """Wall-clock time of the daemon's first `usb: lease … (bound)` line at or after `after`."""
    for line in log.read_text(errors="replace").splitlines():
        if " usb: lease " not in line or not line.rstrip().endswith("(bound)"):
            continue
        try:
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        if stamp >= after - 0.002:  # the log's stamps are truncated to the ms
            return stamp
    return None


def plug_once(lab: Lab, isp: Isp, daemon: LabDaemon, *, server_argv: list[str], server_delay: float,
              interval_ms: float) -> dict[str, float | None]:  # fmt: skip
    """One plug of a new stick whose server starts late; the times in ms from the plug."""
    (daemon.state_dir / "usb.lease.json").unlink(missing_ok=True)
    (daemon.workdir / f"isp{isp.index}.leases").unlink(missing_ok=True)
    expect = str(isp.addresses.upstream4.ip)
    prober = lab.popen(
        "lan1",
        [sys.executable, "-c", PROBER, str(SERVER4.ip), "9000", str(interval_ms), expect,
         str(FIRST_REPLY_TIMEOUT_S)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    server: subprocess.Popen[str] | None = None
    try:
        assert prober.stdout is not None
        if prober.stdout.readline().strip() != "ready":
            raise RuntimeError("the prober did not start")
        time.sleep(0.05)  # it is sending
        wall0, t0 = time.time(), time.monotonic()
        lab.plug(isp, IFNAME)
        time.sleep(max(0.0, t0 + server_delay - time.monotonic()))
        started = server = lab.popen(f"isp{isp.index}", server_argv)
        wait_until(lambda: listening(lab, isp, started.pid), timeout=5, what="dnsmasq listening",
                   interval=0.005)  # fmt: skip
        up_ms = (time.monotonic() - t0) * 1000
        readable, _, _ = select.select([prober.stdout], [], [], FIRST_REPLY_TIMEOUT_S + 2)
        line = prober.stdout.readline().split() if readable else []
        routed = (float(line[1]) - t0) * 1000 if line and line[0] == "reply" else None
        daemon.wait_state("usb", "up", timeout=30)
        bound = lease_bound_at(daemon.log_path, wall0)
        leased = (bound - wall0) * 1000 if bound is not None else None
        time.sleep(SETTLE_S)
        lab.unplug(IFNAME)
        daemon.wait_state("usb", "absent", timeout=10)
    finally:
        lab.stop(prober)
        if server is not None:
            lab.stop(server)
    return {"routed": routed, "leased": leased, "server_up": up_ms,
            "after_server": None if leased is None else leased - up_ms}  # fmt: skip


def measure(reps: int, server_delay: float, interval_ms: float) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"routed": [], "leased": [], "server_up": [], "after_server": []}
    timeouts = 0
    work = Path(tempfile.mkdtemp(prefix="uplinkd-bench-late-"))
    try:
        with Lab() as lab:
            isp = lab.add_isp("usb", address="dhcp", dhcp="silent", plugged=False)
            lab.add_client()
            lab.start_server()
            argv = dnsmasq_argv(addresses=isp.addresses, options=IspOptions(address="dhcp"),
                                workdir=work, name=f"isp{isp.index}")  # fmt: skip
            with LabDaemon(lab.router, config(), workdir=work) as daemon:  # its first pass is done
                for rep in range(reps):
                    got = plug_once(lab, isp, daemon, server_argv=argv, server_delay=server_delay,
                                    interval_ms=interval_ms)  # fmt: skip
                    for key, value in got.items():
                        if value is not None:
                            samples[key].append(value)
                    if got["routed"] is None:
                        timeouts += 1
                    shown = ", ".join(f"{k} {v:.0f} ms" for k, v in got.items() if v is not None)
                    print(f"  plug {rep + 1}/{reps}: {shown}", file=sys.stderr)
                    time.sleep(SETTLE_S)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "plug_to_routed_ms": summary(samples["routed"]),
        "plug_to_lease_ms": summary(samples["leased"]),
        "plug_to_server_listening_ms": summary(samples["server_up"]),
        "server_listening_to_lease_ms": summary(samples["after_server"]),
        "timeouts": timeouts,
    }


def controller() -> dict[str, Any]:
    """Which controller ran (PYTHONPATH decides) and its DHCP retransmission schedule."""
    import uplinkd  # noqa: PLC0415
    from uplinkd import dhcp  # noqa: PLC0415

    where = Path(uplinkd.__file__).resolve().parent
    done = subprocess.run(["git", "-C", str(where), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    schedule = getattr(dhcp, "RETRANSMISSION", None)
    return {
        "path": str(where),
        "revision": done.stdout.strip() or None,
        "retransmission": repr(schedule) if schedule is not None else "pyroute2's (4 s, then x1-2, <= 32 s)",
    }


def table(results: dict[str, Any]) -> str:
    r = results["result"]
    rows: list[tuple[str, ...]] = [("what", "p50", "p95", "min", "max")]
    for key, label in (
        ("plug_to_server_listening_ms", "plug → server listening"),
        ("plug_to_lease_ms", "plug → lease bound (daemon log)"),
        ("server_listening_to_lease_ms", "server listening → lease bound"),
        ("plug_to_routed_ms", "plug → routed (first reply via the stick)"),
    ):
        d = r[key]
        rows.append((label, *(f"{d[k]:.0f}" if d.get("n") else "-" for k in ("p50", "p95", "min", "max"))))
    p95 = r["plug_to_routed_ms"].get("p95")
    verdict = "no sample" if p95 is None else ("met" if p95 <= GOAL_MS else "missed")
    head = (
        f"Hotplug, server {results['server_delay_s']:g} s after the plug, netns lab, ms, "
        f"{results['reps']} plugs, {r['timeouts']} timeouts (controller {results['controller']['revision']}):"
    )
    return "\n".join([head, markdown_table(rows), f"goal: routed ≤ {GOAL_MS:.0f} ms at p95: {verdict}"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--reps", type=int, default=12)
    p.add_argument("--server-delay", type=float, default=1.0, help="s from the plug to dnsmasq's start")
    p.add_argument("--interval-ms", type=float, default=5.0)
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("hotplug_late_server: needs root (network namespaces)", file=sys.stderr)
        return 2
    if args.reps < 1 or not 0 <= args.server_delay <= 10:
        print("hotplug_late_server: --reps at least 1, --server-delay 0..10 s", file=sys.stderr)
        return 2
    began = time.monotonic()
    results: dict[str, Any] = {
        "bench": "hotplug_late_server",
        "tier": "netns",
        "reps": args.reps,
        "server_delay_s": args.server_delay,
        "interval_ms": args.interval_ms,
        "goal_ms": GOAL_MS,
        "controller": controller(),
        "result": measure(args.reps, args.server_delay, args.interval_ms),
    }
    print(f"  done ({time.monotonic() - began:.0f} s)", file=sys.stderr)
    publish(results, args.output, table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
