#!/usr/bin/env python3
"""Hotplug benchmark: plug → first packet through the new uplink; unplug → kernel clean.

    sudo python3 bench/hotplug.py [--reps 12] [--modes dhcp,static] [--interval-ms 5]

Needs root (network namespaces). Per address mode, one lab (`uplinkd.lab.Lab`: a router,
one ISP, one LAN client, the traffic server) and the real daemon in the router namespace,
configured with that one uplink only (`usb`, match `usb*`, table 101), so that nothing but
the new uplink can carry traffic. The lab is deleted at the end whatever happens.

Each repetition:

1. plug → first packet. A UDP flow (one socket, so one 5-tuple, like a VPN) is started
   on the LAN client before the plug, sending a request every `--interval-ms` (5 ms) to
   the lab's echo server; the router has no uplink, so these die at the router
   (`unreachable default` in the balance table). The clock starts right before
   `lab.plug()` (a veth pair appears in the router namespace, like a USB NIC) and stops at
   the first reply that the server saw coming from that ISP (CLOCK_MONOTONIC is shared
   across network namespaces). The flow gives up after 15 s ("timeouts" in the results).
   `lab.plug()` itself also waits for the ISP end to be operationally up; its share is
   reported as `lab_plug_call_ms`.
   - `dhcp`: the ISP's dnsmasq runs all along (it does not bind to the interface, so it
     serves it as soon as it appears, as a modem's DHCP server would). The controller's
     stored lease is deleted before each plug, so every plug is a new stick: a full
     DISCOVER / OFFER / REQUEST / ACK.
   - `static`: the controller puts 10.101.0.2/24 on the interface itself.
2. unplug → clean. The clock starts right before `lab.unplug()` (the veth is deleted) and
   stops when `ip -json` (rules v4/v6, routes of table 101 v4/v6, nexthops and group
   members) and `nft -j list table inet uplinkd` (set elements,
   rules) show nothing of the uplink any more. One such check takes ~20 ms (7
   subprocesses): that is the resolution, reported as `check_ms`.

Reported: p50 / p95 (nearest rank), min, max per mode, in ms. Prints a table, and the JSON
(also written to bench/results/hotplug.json). HOTPLUG_DEBUG=1 prints the router's UDP
conntrack entries and the daemon's log when a flow never got its reply. The VM tier (a
USB NIC hot-plugged into a QEMU guest) is measured by bench/hotplug_vm.py.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from uplinkd.lab import wait_until
from uplinkd.lab.launcher import LabDaemon

import bootstrap  # noqa: F401 - harness on sys.path
from harness.stats import markdown_table, percentile, publish, summary

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "hotplug.json"
TABLE = 101
IFNAME = "usb0"
FIRST_REPLY_TIMEOUT_S = 15.0
CLEAN_TIMEOUT_S = 10.0
SETTLE_S = 0.3

# Runs in the LAN client's namespace: one UDP socket, a request every interval, until the
# server answers and says it saw the request coming from `expect` (the new ISP's address).
# Unconnected, so the ICMP errors of the router (no uplink yet) are not reported to it.
PROBER = r"""
import select, socket, sys, time
server, port, interval, expect = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) / 1000, sys.argv[4]
limit = float(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
print("ready", flush=True)
seq, due = 0, time.monotonic()
deadline = due + limit
while time.monotonic() < deadline:
    if time.monotonic() >= due:
        try:
            s.sendto(b"%d" % seq, (server, port))
        except OSError:
            pass
        seq += 1
        due += interval
    readable, _, _ = select.select([s], [], [], max(0.0, due - time.monotonic()))
    if readable:
        try:
            data = s.recv(512)
        except OSError:
            continue
        now = time.monotonic()
        words = data.split()
        if len(words) == 3 and words[1].decode() == expect:
            print(f"reply {now:.6f} {words[0].decode()} {seq}", flush=True)
            sys.exit(0)
print(f"timeout {seq}", flush=True)
sys.exit(1)
"""


def uplink_config(mode: str) -> dict[str, Any]:
    address: dict[str, Any] = {"mode": "dhcp"}
    if mode == "static":
        address = {"mode": "static", "cidr": "10.101.0.2/24", "gateway": "10.101.0.1"}
    return {
        "uplinks": {"usb": {"match": {"name": "usb*"}, "address": address, "table": TABLE}},
        "balance": {"table": 200},
    }


# --- reading the kernel back -------------------------------------------------------------------


def _json(argv: list[str]) -> Any:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        if "FIB table does not exist" in done.stderr:
            return []
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return json.loads(done.stdout) if done.stdout.strip() else []


def leftovers(router: str, *, address: str | None, nh_ids: set[int]) -> list[str]:
    """What the kernel still holds of the uplink (`ip -json`, `nft -j`), as text."""
    left: list[str] = []
    ip = ["ip", "-n", router, "-json"]
    for family in ("-4", "-6"):
        for rule in _json([*ip, family, "rule", "show"]):
            if str(rule.get("table")) == str(TABLE) or (address and rule.get("src") == address):
                left.append(f"rule {rule}")
        left += [f"route {r}" for r in _json([*ip, family, "route", "show", "table", str(TABLE)])]
    for nh in _json([*ip, "nexthop", "show"]):
        if nh.get("dev") == IFNAME or nh["id"] in nh_ids or {m["id"] for m in nh.get("group", [])} & nh_ids:
            left.append(f"nexthop {nh}")
    listing = _json(["ip", "netns", "exec", router, "nft", "-j", "list", "table", "inet", "uplinkd"])
    for obj in listing.get("nftables", []) if isinstance(listing, dict) else []:
        if "set" in obj and IFNAME in json.dumps(obj["set"].get("elem", [])):
            left.append(f"nft set element {IFNAME}")
        if "rule" in obj and f'"{IFNAME}"' in json.dumps(obj["rule"]["expr"]):
            left.append(f"nft rule in {obj['rule']['chain']}")
    return left


# --- one mode ----------------------------------------------------------------------------------


def wait(predicate: Any, timeout: float, what: str) -> Any:
    return wait_until(predicate, timeout=timeout, what=what, interval=0.01)


def measure_mode(mode: str, reps: int, interval_ms: float) -> dict[str, Any]:
    from uplinkd.config import parse  # noqa: PLC0415
    from uplinkd.lab import Lab  # noqa: PLC0415
    from uplinkd.lab.addresses import SERVER4  # noqa: PLC0415
    from uplinkd.lab.isp import IspOptions, dnsmasq_argv  # noqa: PLC0415
    from uplinkd.plan import nexthop_id  # noqa: PLC0415

    first: list[float] = []
    plug_call: list[float] = []
    clean: list[float] = []
    checks: list[float] = []
    timeouts = 0
    work = Path(tempfile.mkdtemp(prefix="uplinkd-bench-hotplug-"))
    cfg = uplink_config(mode)
    parsed = parse(cfg)
    nh_ids = {nexthop_id(parsed, TABLE, family) for family in (2, 10)}
    try:
        with Lab() as lab:
            isp = lab.add_isp(
                "usb", address="dhcp" if mode == "dhcp" else "none", dhcp="silent", plugged=False
            )
            lab.add_client()
            lab.start_server()
            expect = str(isp.addresses.upstream4.ip)
            if mode == "dhcp":
                argv = dnsmasq_argv(addresses=isp.addresses, options=IspOptions(address="dhcp"),
                                    workdir=work, name="isp")  # fmt: skip
                # not bound to `down`, which comes and goes with each plug: serve it when it is there
                argv = [a for a in argv if a != "--bind-interfaces"]
                lab.popen(f"isp{isp.index}", argv)
                time.sleep(0.3)
            with LabDaemon(lab.router, cfg, workdir=work) as daemon:  # its first pass is done

                def status() -> dict[str, Any]:
                    return daemon.status_or_none() or {}

                lease_file = daemon.state_dir / "usb.lease.json"
                for rep in range(reps):
                    lease_file.unlink(missing_ok=True)
                    prober = lab.popen(
                        "lan1",
                        [sys.executable, "-c", PROBER, str(SERVER4.ip), "9000", str(interval_ms), expect,
                         str(FIRST_REPLY_TIMEOUT_S)],
                        stdout=subprocess.PIPE,
                    )  # fmt: skip
                    assert prober.stdout is not None
                    if prober.stdout.readline().strip() != "ready":
                        raise RuntimeError("the prober did not start")
                    time.sleep(0.05)  # it is sending
                    t0 = time.monotonic()
                    lab.plug(isp, IFNAME)
                    plug_call.append((time.monotonic() - t0) * 1000)
                    readable, _, _ = select.select([prober.stdout], [], [], FIRST_REPLY_TIMEOUT_S + 2)
                    line = prober.stdout.readline().split() if readable else []
                    lab.stop(prober)
                    if line and line[0] == "reply":
                        first.append((float(line[1]) - t0) * 1000)
                    else:
                        timeouts += 1
                        print(
                            f"  {mode} rep {rep}: no reply through the new uplink ({line})", file=sys.stderr
                        )
                        if os.environ.get("HOTPLUG_DEBUG"):
                            ct = lab.run(
                                "router", ["conntrack", "-L", "-p", "udp", "-o", "extended"], check=False
                            )
                            print(ct.stdout, file=sys.stderr)
                            print(daemon.log()[-3000:], file=sys.stderr)
                    wait(
                        lambda: any(u["state"] == "up" for u in status().get("uplinks", [])),
                        15,
                        "usb up",
                    )
                    up = daemon.uplink("usb")
                    address = up["addresses"][0].split("/")[0] if up["addresses"] else None
                    time.sleep(SETTLE_S)
                    t0 = time.monotonic()
                    lab.unplug(IFNAME)
                    while True:
                        c0 = time.monotonic()
                        left = leftovers(lab.router, address=address, nh_ids=nh_ids)
                        checks.append((time.monotonic() - c0) * 1000)
                        if not left:
                            clean.append((time.monotonic() - t0) * 1000)
                            break
                        if time.monotonic() - t0 > CLEAN_TIMEOUT_S:
                            raise RuntimeError(
                                f"{mode}: still there {CLEAN_TIMEOUT_S:g} s after unplug: {left}"
                            )
                    wait(
                        lambda: all(u["state"] == "absent" for u in status().get("uplinks", [])),
                        10,
                        "usb absent",
                    )
                    time.sleep(SETTLE_S)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "plug_to_first_packet_ms": summary(first),
        "timeouts": timeouts,
        "lab_plug_call_ms": summary(plug_call),
        "unplug_to_clean_ms": summary(clean),
        "check_ms": round(percentile(checks, 0.5), 1) if checks else None,
    }


def vm_part() -> dict[str, Any]:
    """Whether the VM tier could be measured here (it is not, by this script, yet)."""
    try:
        from harness.vm import missing_requirements  # noqa: PLC0415
    except ImportError as e:
        return {"measured": False, "why": f"no VM harness ({e})"}
    missing = missing_requirements()
    if missing:
        return {"measured": False, "why": "VM harness cannot run here: " + "; ".join(missing)}
    return {
        "measured": False,
        "why": "measured by bench/hotplug_vm.py (results in bench/results/hotplug_vm.json)",
    }


def table(results: dict[str, Any]) -> str:
    rows = [("mode", "plug → first packet", "of which lab.plug()", "unplug → clean", "timeouts")]

    def cell(d: dict[str, Any]) -> str:
        return f"{d['p50']:.0f} / {d['p95']:.0f}" if d.get("n") else "-"

    for mode, r in results["modes"].items():
        rows.append((mode, cell(r["plug_to_first_packet_ms"]), cell(r["lab_plug_call_ms"]),
                     cell(r["unplug_to_clean_ms"]), str(r["timeouts"])))  # fmt: skip
    head = (
        f"Hotplug, netns lab, ms, p50 / p95 of {results['reps']} plugs"
        f" (flow sends every {results['interval_ms']:g} ms):"
    )
    return "\n".join([head, markdown_table(rows)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=12)
    p.add_argument("--modes", default="dhcp,static")
    p.add_argument("--interval-ms", type=float, default=5.0)
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("hotplug: needs root (network namespaces)", file=sys.stderr)
        return 2
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in ("dhcp", "static") for m in modes) or args.reps < 1:
        print("hotplug: --modes is a list of dhcp, static; --reps at least 1", file=sys.stderr)
        return 2
    results: dict[str, Any] = {
        "bench": "hotplug",
        "tier": "netns",
        "reps": args.reps,
        "interval_ms": args.interval_ms,
        "modes": {},
    }
    for mode in modes:
        began = time.monotonic()
        results["modes"][mode] = measure_mode(mode, args.reps, args.interval_ms)
        print(f"  {mode} done ({time.monotonic() - began:.0f} s)", file=sys.stderr)
    results["vm"] = vm_part()
    publish(results, args.output, table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
