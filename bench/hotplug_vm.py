#!/usr/bin/env python3
"""Hotplug benchmark, VM tier: a USB NIC hot-plugged into a QEMU guest running uplinkd.

    sudo python3 bench/hotplug_vm.py [--reps 5] [--interval-ms 50]

Boots a Debian kernel with virtme-ng (TCG: no KVM here) with one QEMU user network
(10.0.2.0/24, restrict=off so that QEMU's DHCP offers a router, IPv6 off), starts the real
daemon in the guest (`lte1`: match USB 0525:a4a2, DHCP, table 102, ICMP probe of 10.0.2.2,
`fast` profile) and a test server on the host's loopback, which the guest reaches at
10.0.2.100:7000 (guestfwd). Every packet goes to QEMU's 10.0.2.x. Per repetition:

1. The stored lease is deleted (every plug is a new stick: DISCOVER/OFFER/REQUEST/ACK) and a
   connect loop is started in the guest: a TCP connection to 10.0.2.100:7000 every
   `--interval-ms` (each try bounded by max(interval, 0.5 s)); with no uplink, connect()
   fails at once (T_balance is `unreachable default`).
2. The clock starts right before QMP `device_add usb-net` (qemu-xhci). Measured on the host:
   - plug → present / up: until the daemon's status says so. Status is polled in the guest
     every 0.1 s by a small stdlib client (uplinkctl costs ~25 s of imports under TCG) and
     read by the host from the shared directory every 20 ms: resolution ~0.1-0.15 s.
   - plug → first packet: until the host's test server accepts the loop's first connection
     through the stick (QEMU forks a relay per guest connection, ~tens of ms, included).
   - plug → present / lease / up from the daemon's own log (ms timestamps of the guest's
     clock, put on the host's with one agent round trip, `Vm.clock()`, ~1-2 ms): exact.
3. The clock starts right before QMP `device_del`. From the daemon's log: unplug → absent,
   and unplug → its last kernel write (the log line is written just before the write).
   unplug → clean is the first kernel read-back (one guest command: rules, routes of
   table 102 and of the interface, nexthops and group members, nft set element and rules,
   conntrack entries with mark 0x6600) that shows nothing of the stick; exec is slow under
   TCG, one check takes ~1.1 s (`check_ms_p50`): an upper bound, up to two checks late.

Reported: p50 / max (and min, samples) in ms. Prints a table and the JSON (also written to
bench/results/hotplug_vm.json). The VM is shut down and its temp dir removed whatever happens.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import bootstrap  # noqa: F401 - harness on sys.path
from harness.host_server import FWD_ADDR, GUEST_PORT, HostServer
from harness.stats import markdown_table, percentile, publish, summary
from harness.vm import (
    GuestClock,
    GuestDaemon,
    GuestFwd,
    UserNet,
    Vm,
    connect_loop,
    missing_requirements,
    read_kernel,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "hotplug_vm.json"
TABLE, MARK = 102, 0x6600
MAC, IFNAME = "52:54:00:12:34:01", "enx525400123401"
UP_TIMEOUT_S = 60.0
CLEAN_TIMEOUT_S = 20.0
CONNECT_LIMIT_S = 60.0
POLL_S = 0.02

CONFIG = {
    "uplinks": {
        "lte1": {
            "match": {"usb": {"vendor": "0525", "product": "a4a2"}},
            "address": {"mode": "dhcp"},
            "table": TABLE,
            "probe": {"targets": ["10.0.2.2"], "profile": "fast"},
        }
    },
    "balance": {"table": 200},
}


CONNECT_LOOP = Path(connect_loop.__file__)  # run in the guest by path


def state_of(ctl: GuestDaemon) -> dict[str, Any] | None:
    status = ctl.status()
    if status is None:
        return None
    return next((u for u in status["uplinks"] if u["name"] == "lte1"), None)


_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) (.*)$")


def log_events(ctl: GuestDaemon, clock: GuestClock, since_wall: float) -> list[tuple[float, str]]:
    """The daemon's log lines from host wall time `since_wall` on, as (seconds since then,
    message); the guest's timestamps (local time, ms) are put on the host's clock."""
    events = []
    for line in ctl.log().splitlines():
        m = _LOG_LINE.match(line)
        if m is None:
            continue
        guest_wall = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        at = clock.host_wall(guest_wall) - since_wall
        if at >= -0.5:
            events.append((at, f"{m.group(2)} {m.group(3)}"))
    return events


def first_event(events: list[tuple[float, str]], pattern: str) -> float | None:
    return next((at * 1000 for at, text in events if re.search(pattern, text)), None)


def last_write(events: list[tuple[float, str]]) -> float | None:
    writes = [at * 1000 for at, text in events if re.match(r"INFO (ip|nft|conntrack) ", text)]
    return writes[-1] if writes else None


def one_rep(vm: Vm, ctl: GuestDaemon, server: HostServer, rep: int, interval_ms: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    vm.check(["rm", "-f", ctl.lease_file("lte1")])
    tag = f"rep{rep}-{os.getpid()}"
    loop_log = ctl.dir / f"connect-{rep}.log"
    vm.spawn(
        [
            "python3",
            "-I",
            str(CONNECT_LOOP),
            FWD_ADDR,
            str(GUEST_PORT),
            str(interval_ms / 1000),
            str(CONNECT_LIMIT_S),
            tag,
        ],
        log=str(loop_log),
    )
    vm.wait_until(
        lambda: loop_log.exists() and "ready" in loop_log.read_text(),
        timeout=60,
        what="the guest's connect loop",
        interval=0.1,
    )
    time.sleep(0.2)  # it is trying

    clock = vm.clock()
    wall0, t0 = time.time(), time.monotonic()
    vm.plug_usb_nic("stick0", "isp0", mac=MAC, port="1" if rep % 2 == 0 else "3", wait=False)
    out["device_add_ms"] = (time.monotonic() - t0) * 1000
    present = up = first = None
    deadline = t0 + UP_TIMEOUT_S
    while time.monotonic() < deadline and (up is None or first is None):
        now = time.monotonic()
        u = state_of(ctl)
        if present is None and u is not None and u["dev"] is not None:
            present = now
        if up is None and u is not None and u["state"] == "up":
            up = now
            out["dev"] = u["dev"]
        if first is None:
            first = server.first(tag)
        time.sleep(POLL_S)
    out["plug_to_present_ms"] = (present - t0) * 1000 if present else None
    out["plug_to_up_ms"] = (up - t0) * 1000 if up else None
    out["plug_to_first_packet_ms"] = (first - t0) * 1000 if first else None
    vm.wait_until(
        lambda: "ok" in loop_log.read_text() or "timeout" in loop_log.read_text(),
        timeout=30,
        what="the connect loop to end",
        interval=0.1,
    )
    out["connect_loop"] = loop_log.read_text().split("\n")[1].strip()
    if up is None:
        raise RuntimeError(
            f"rep {rep}: lte1 not up within {UP_TIMEOUT_S:g} s: {state_of(ctl)}\n{ctl.log(3000)}"
        )
    events = log_events(ctl, clock, wall0)
    out["log_present_ms"] = first_event(events, r"uplink lte1: absent → present")
    out["log_lease_ms"] = first_event(events, r"lte1: lease ")
    out["log_up_ms"] = first_event(events, r"uplink lte1: \w+ → up")
    k = read_kernel(vm)
    if MARK not in k.conntrack_marks or IFNAME not in k.nft_set():
        raise RuntimeError(
            f"rep {rep}: no conntrack entry with lte1's mark, or no nft element: the check is void"
        )
    address = "10.0.2.15"
    time.sleep(0.3)

    clock = vm.clock()
    wall0, t0 = time.time(), time.monotonic()
    vm.qmp("device_del", id="stick0")
    clean = None
    checks: list[float] = []
    left: list[str] = []
    while time.monotonic() - t0 < CLEAN_TIMEOUT_S and clean is None:
        c0 = time.monotonic()
        left = read_kernel(vm).leftovers(ifname=IFNAME, table=TABLE, mark=MARK, address=address)
        checks.append((time.monotonic() - c0) * 1000)
        if not left:
            clean = time.monotonic()
    vm.wait_qmp_event("DEVICE_DELETED", lambda data: data.get("device") == "stick0", 10)
    if clean is None:
        raise RuntimeError(f"rep {rep}: not clean {CLEAN_TIMEOUT_S:g} s after unplug: {left}")
    u = state_of(ctl)
    if u is None or u["state"] != "absent":
        raise RuntimeError(f"rep {rep}: clean but the uplink is {u}")
    out["unplug_to_clean_ms"] = (clean - t0) * 1000
    out["check_ms"] = checks
    events = log_events(ctl, clock, wall0)
    out["log_absent_ms"] = first_event(events, r"uplink lte1: \w+ → absent")
    out["log_last_write_ms"] = last_write(events)
    out["clock_rtt_ms"] = clock.rtt * 1000
    vm.wait_until(lambda: IFNAME not in vm.link_names(), timeout=20, what=f"{IFNAME} gone")
    time.sleep(0.5)
    return out


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, ...]] = [("what (ms)", "p50", "min", "max", "n")]
    labels = {
        "log_present_ms": "plug → uplink present (daemon log)",
        "log_lease_ms": "plug → DHCP lease bound (daemon log)",
        "log_up_ms": "plug → uplink up (daemon log)",
        "plug_to_up_ms": "plug → up seen in status (host)",
        "plug_to_first_packet_ms": "plug → first packet via the stick (host server)",
        "log_absent_ms": "unplug → uplink absent (daemon log)",
        "log_last_write_ms": "unplug → controller's last write (daemon log)",
        "unplug_to_clean_ms": "unplug → read back clean (host, +≤1 check)",
    }
    for key, label in labels.items():
        s = results["summary"][key]
        rows.append(
            (label, *(f"{s[k]:.0f}" if s.get("n") else "-" for k in ("p50", "min", "max")), str(s["n"]))
        )
    head = (
        f"Hotplug, VM tier (QEMU TCG, usb-net on qemu-xhci, kernel {results['kernel']}), "
        f"{results['reps']} plugs; connect loop every {results['interval_ms']:g} ms; "
        f"kernel check {results['check_ms_p50']:.0f} ms:"
    )
    return "\n".join([head, markdown_table(rows)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--interval-ms", type=float, default=50.0)
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    missing = missing_requirements()
    if missing:
        print("hotplug_vm: the VM tier needs " + ", ".join(missing), file=sys.stderr)
        return 2
    if args.reps < 1:
        print("hotplug_vm: --reps at least 1", file=sys.stderr)
        return 2
    server = HostServer()
    reps: list[dict[str, Any]] = []
    began = time.monotonic()
    net = UserNet(
        "isp0",
        restrict=False,
        ipv6=False,
        guestfwds=[GuestFwd.to_host_port(GUEST_PORT, server.port, FWD_ADDR)],
    )
    try:
        with Vm(netdevs=[net]) as vm:
            vm.ensure_udev()
            vm.check(["modprobe", "cdc_ether"])  # see Vm.plug_usb_nic: else cdc_subset may win
            ctl = GuestDaemon(vm, CONFIG)
            start_s = ctl.start(uplinkctl=False)
            print(
                f"  booted in {vm.timings.boot:.0f} s, controller answered after {start_s:.0f} s",
                file=sys.stderr,
            )
            for rep in range(args.reps):
                reps.append(one_rep(vm, ctl, server, rep, args.interval_ms))
                r = reps[-1]
                print(
                    f"  rep {rep}: up {r['log_up_ms']} ms, first packet {r['plug_to_first_packet_ms']} ms, "
                    f"clean {r['unplug_to_clean_ms']:.0f} ms",
                    file=sys.stderr,
                )
            kernel = vm.kernel.name.removeprefix("vmlinuz-")
            boot_s = vm.timings.boot
            ctl.stop()
    finally:
        server.close()
    checks = [c for r in reps for c in r.pop("check_ms")]
    keys = (
        "device_add_ms",
        "plug_to_present_ms",
        "log_present_ms",
        "log_lease_ms",
        "log_up_ms",
        "plug_to_up_ms",
        "plug_to_first_packet_ms",
        "log_absent_ms",
        "log_last_write_ms",
        "unplug_to_clean_ms",
        "clock_rtt_ms",
    )
    results: dict[str, Any] = {
        "bench": "hotplug_vm",
        "tier": "vm",
        "kernel": kernel,
        "kvm": False,
        "reps": args.reps,
        "interval_ms": args.interval_ms,
        "boot_s": round(boot_s or 0, 1),
        "controller_start_s": round(start_s, 1),
        "check_ms_p50": round(percentile(checks, 0.5), 1) if checks else 0.0,
        "status_poll_s": 0.1,
        "summary": {k: summary([r[k] for r in reps if r.get(k) is not None]) for k in keys},
        "first_packet_missing": sum(1 for r in reps if r.get("plug_to_first_packet_ms") is None),
        "reps_detail": [
            {k: (round(v, 1) if isinstance(v, float) else v) for k, v in r.items()} for r in reps
        ],
        "total_s": round(time.monotonic() - began, 1),
    }
    publish(results, args.output, table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
