#!/usr/bin/env python3
"""Throughput through a tunnel: uplinkd's full tunnel next to a plain wireguard-go tunnel
between the same namespaces.

    sudo python3 bench/tunnel_throughput.py [--rounds 5] [--seconds 5] [--profile fast|default]

One lab (router with uplinks wan and lte1, a LAN client; "home" a wireguard-go peer in the
lab's internet namespace, see harness/tunnel_home.py), and iperf3 (one TCP stream) from the
LAN client to an address on the lab's internet, through the tunnel, up and down (`-R`). The
router takes turns between five set-ups, in the same namespaces, with the same key, peer,
MTU (1440) and path:

- ``uplinkd``: the real daemon with a full tunnel home over [wan, lte1] (wireguard-go here:
  this kernel has no WireGuard), its rule bands, nexthop group and nft table; after the run,
  `flush` and stop;
- ``uplinkd_stopped``: the same, but measured after the daemon was stopped (SIGTERM leaves
  its rules, tables, nft table and tunnel in place: fail static), so the kernel's share of the
  cost is told apart from the daemon's own CPU use (probes, the tunnel worker's reads) on a
  machine where the tunnel is CPU-bound;
- ``plain``: what wg-quick would set up: `wireguard-go` with a fwmark, `ip rule fwmark M
  lookup 300` with wan's default route there, `default dev wgp0` in main; no nft table; then
  removed again. Its wireguard-go runs in a session of its own, as uplinkd's does and as
  any service's does (systemd starts each in one);
- ``plain_ct``: ``plain`` plus the least firewall a router has, one forward chain with
  `ct state established,related accept`: conntrack's own cost, which ``plain`` does not pay
  and uplinkd (pinning, masquerade) cannot do without;
- ``plain_same_session``: ``plain`` with its wireguard-go in this benchmark's session, beside
  the iperf3 client and server and the home peer. With the scheduler's autogroups
  (``kernel.sched_autogroup_enabled``, on in Debian's kernels) CPU is shared fairly between
  sessions first and between threads only within one, so on a small machine that also runs
  both ends of the traffic this placement alone changes the result: it is reported to show by
  how much, not compared against.

Rounds alternate the order (forward in even rounds, reversed in odd ones), so drift in the
machine's load (it is shared) hits all alike. Reported: per set-up and direction the median
and spread of the runs, the ratio to plain (goal for uplinkd: ≥ 0.95) and to plain_ct of
each round with its median and spread, and the CPU time the daemon used while measured.

Prints JSON on stdout (also written to bench/results/tunnel_throughput.json) and a table.
Needs root, wireguard-go and iperf3.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
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
from harness.stats import markdown_table, publish
from harness.tunnel_home import (
    HOME_PORT,
    INNER_ROUTER,
    NAMES,
    OUTSIDE4,
    SERVER,
    Home,
    add_outside,
    kill_router_wireguard_go,
    router_config,
)
from harness.vxlan_home import plain_bridges

RESULTS = Path(__file__).resolve().parent / "results" / "tunnel_throughput.json"
PORT = 5201
MTU = 1440  # what uplinkd's mtu auto gives here: 1500 - 60 (IPv4 underlay)
PLAIN_IF = "wgp0"
PLAIN_MARK = 0x1234
PLAIN_TABLE = 300
WAN_ADDR, WAN_GW = "10.101.0.2/24", "10.101.0.1"
SETUPS = ("uplinkd", "uplinkd_stopped", "plain", "plain_ct", "plain_same_session")
BASELINES = ("plain", "plain_ct")
FIREWALL = (
    "table inet bench_fw {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n"
    "\t\tct state established,related accept\n\t}\n}\n"
)
DIRECTIONS = ("up", "down")


def iperf(lab: Lab, *, seconds: float, reverse: bool) -> float:
    """One iperf3 run from the LAN client through the tunnel: Mbit/s received."""
    argv = ["iperf3", "-c", OUTSIDE4, "-p", str(PORT), "-t", f"{seconds:g}", "-J"]
    if reverse:
        argv.append("-R")
    done = lab.run(lab.clients[0].netns, argv, timeout=seconds + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"iperf3 exited {done.returncode}: {done.stdout[-1500:]} {done.stderr[-500:]}")
    return float(json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"]) / 1e6


def tunnel_up(daemon: LabDaemon) -> bool:
    return bool(control.call(daemon.socket, {"command": "status"})["tunnels"][0]["state"] == "up")


def handshake_at_home(home: Home) -> bool:
    return home.run("wg", "show", home.ifname, "latest-handshakes").split()[-1] != "0"


class Plain:
    """The wg-quick-like tunnel in the router namespace, set up and removed by hand."""

    def __init__(self, lab: Lab, *, key_file: Path, home: Home) -> None:
        self.lab, self.key_file, self.home = lab, key_file, home
        self.added_address = False

    def ip(self, *args: str, check: bool = True) -> None:
        self.lab.run("router", ["ip", *args], check=check)

    def up(self, *, own_session: bool = True) -> None:
        have = self.lab.run("router", ["ip", "-4", "address", "show", "dev", "wan"]).stdout
        if WAN_ADDR.partition("/")[0] not in have:
            self.ip("address", "add", WAN_ADDR, "dev", "wan")
            self.added_address = True
        # setsid(1) execs in place (a popen'd child leads no process group), as uplinkd's
        # tunnel worker starts its wireguard-go with start_new_session
        session = ["setsid"] if own_session else []
        self.lab.popen("router", [*session, "wireguard-go", "-f", PLAIN_IF])
        sock = Path(f"/var/run/wireguard/{PLAIN_IF}.sock")
        wait_until(sock.exists, timeout=10, what="the plain tunnel's wireguard-go socket")
        self.lab.run("router", [
            "wg", "set", PLAIN_IF, "private-key", str(self.key_file), "fwmark", str(PLAIN_MARK),
            "peer", self.home.public, "endpoint", f"{SERVER}:{HOME_PORT}", "allowed-ips", "0.0.0.0/0",
            "persistent-keepalive", "1",
        ])  # fmt: skip
        self.ip("address", "add", INNER_ROUTER, "dev", PLAIN_IF)
        self.ip("link", "set", "dev", PLAIN_IF, "mtu", str(MTU), "up")
        self.ip("route", "add", "default", "via", WAN_GW, "dev", "wan", "table", str(PLAIN_TABLE))
        self.ip("rule", "add", "fwmark", str(PLAIN_MARK), "lookup", str(PLAIN_TABLE), "priority", "100")
        self.ip("route", "add", "default", "dev", PLAIN_IF)

    def down(self) -> None:
        self.ip("link", "delete", "dev", PLAIN_IF, check=False)  # wireguard-go ends with it
        self.ip("rule", "delete", "priority", "100", check=False)
        self.ip("route", "flush", "table", str(PLAIN_TABLE), check=False)
        if self.added_address:
            self.ip("address", "delete", WAN_ADDR, "dev", "wan", check=False)
            self.added_address = False
        wait_until(
            lambda: not Path(f"/var/run/wireguard/{PLAIN_IF}.sock").exists(), timeout=10, what="wgp0 gone"
        )


def measure(lab: Lab, args: argparse.Namespace) -> dict[str, float]:
    time.sleep(args.settle)
    return {d: iperf(lab, seconds=args.seconds, reverse=d == "down") for d in DIRECTIONS}


def cpu_s(pid: int | None) -> float:
    """User + system CPU time of process `pid` so far (0 for none)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_uplinkd(lab: Lab, daemon: LabDaemon, args: argparse.Namespace, *, stopped: bool) -> dict[str, float]:
    daemon.start()
    try:
        wait_until(lambda: tunnel_up(daemon), timeout=30, what=f"uplinkd's tunnel up (log {daemon.log_path})")
        if stopped:
            daemon.stop()  # fail static: everything stays
            return {**measure(lab, args), "daemon_cpu_s": 0.0}
        before = cpu_s(daemon.pid)
        got = measure(lab, args)
        return {**got, "daemon_cpu_s": cpu_s(daemon.pid) - before}
    finally:
        if not daemon.running:
            daemon.start()
        daemon.call({"command": "flush"}, timeout=30)
        daemon.stop()


def with_plain(
    lab: Lab, plain: Plain, args: argparse.Namespace, *, conntrack: bool = False, own_session: bool = True
) -> dict[str, float]:
    plain.up(own_session=own_session)
    if conntrack:
        lab.run("router", ["nft", "-f", "-"], input=FIREWALL)
    try:
        ping = ["ping", "-n", "-c", "1", "-W", "1", OUTSIDE4]
        wait_until(
            lambda: lab.run(lab.clients[0].netns, ping, check=False).returncode == 0,
            timeout=30, what="the plain tunnel carrying the client's ping",
        )  # fmt: skip
        return measure(lab, args)
    finally:
        if conntrack:
            lab.run("router", ["nft", "delete", "table", "inet", "bench_fw"], check=False)
        plain.down()


def run(args: argparse.Namespace) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="uplinkd-tunthr-") as tmp:
        for name in NAMES:
            lab.add_isp(name, address="none")
        lab.add_client()
        add_outside(lab)
        plain_bridges(*lab.namespaces)  # as bench/forwarding.py: no br_netfilter on the bridges
        server = lab.popen("inet", ["iperf3", "-s", "-B", OUTSIDE4, "-p", str(PORT)])
        home = Home(lab, Path(tmp))
        cfg, public = router_config(Path(tmp), home)
        cfg["probe"] = {"profile": args.profile}
        key_file = Path(cfg["tunnels"]["home"]["private_key_file"])
        daemon = LabDaemon(lab.router, cfg, workdir=Path(tmp))
        plain = Plain(lab, key_file=key_file, home=home)
        try:
            home.start(public)
            for r in range(args.rounds):
                order = SETUPS if r % 2 == 0 else tuple(reversed(SETUPS))
                for setup in order:
                    if setup.startswith("plain"):
                        alone = setup != "plain_same_session"
                        got = with_plain(lab, plain, args, conntrack=setup == "plain_ct", own_session=alone)
                    else:
                        got = with_uplinkd(lab, daemon, args, stopped=setup == "uplinkd_stopped")
                    runs.append({"round": r, "setup": setup, **{d: round(v, 2) for d, v in got.items()}})
                    print(f"round {r}: {setup}: " + ", ".join(f"{d} {v:.1f}" for d, v in got.items()),
                          file=sys.stderr)  # fmt: skip
        finally:
            daemon.stop()
            plain.down()
            home.stop()
            kill_router_wireguard_go(lab)
            server.terminate()
            server.wait()
    return report(runs, args)


def spread(samples: list[float], digits: int) -> dict[str, Any]:
    return {
        "median": round(statistics.median(samples), digits),
        "min": round(min(samples), digits),
        "max": round(max(samples), digits),
        "samples": [round(s, digits) for s in samples],
    }


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    by: dict[str, dict[str, list[float]]] = {s: {d: [] for d in DIRECTIONS} for s in SETUPS}
    for row in runs:
        for d in DIRECTIONS:
            by[row["setup"]][d].append(row[d])
    compared = [s for s in SETUPS if s not in BASELINES]
    ratios = {b: {s: {d: [] for d in DIRECTIONS} for s in compared} for b in BASELINES}
    for r in range(args.rounds):
        one = {row["setup"]: row for row in runs if row["round"] == r}
        for b in BASELINES:
            for s in compared:
                for d in DIRECTIONS:
                    ratios[b][s][d].append(one[s][d] / one[b][d])
    daemon_cpu = [row["daemon_cpu_s"] for row in runs if row["setup"] == "uplinkd"]
    return {
        "benchmark": "tunnel_throughput",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count()},
        "settings": {
            "rounds": args.rounds,
            "seconds_per_direction": args.seconds,
            "mtu": MTU,
            "streams": 1,
            "probe_profile": args.profile,
            "load_average_at_end": os.getloadavg()[0],
        },
        "mbit_s": {s: {d: spread(v, 1) for d, v in dirs.items()} for s, dirs in by.items()},
        **{
            f"ratio_to_{b}": {s: {d: spread(v, 3) for d, v in dirs.items()} for s, dirs in by_setup.items()}
            for b, by_setup in ratios.items()
        },
        "daemon_cpu_s_per_uplinkd_run": spread(daemon_cpu, 2),
        "goal": {"ratio_at_least": 0.95},
        "runs": runs,
    }


def table(results: dict[str, Any]) -> str:
    def cell(q: dict[str, Any], digits: int) -> str:
        return f"{q['median']:.{digits}f} ({q['min']:.{digits}f}-{q['max']:.{digits}f})"

    rows = [[
        "direction", "plain Mbit/s", "plain_ct Mbit/s", "uplinkd Mbit/s", "uplinkd_stopped Mbit/s",
        "uplinkd / plain", "uplinkd / plain_ct", "uplinkd_stopped / plain", "plain_same_session / plain",
    ]]  # fmt: skip
    for d in DIRECTIONS:
        mbit, ratio, ratio_ct = results["mbit_s"], results["ratio_to_plain"], results["ratio_to_plain_ct"]
        rows.append([
            d, cell(mbit["plain"][d], 0), cell(mbit["plain_ct"][d], 0), cell(mbit["uplinkd"][d], 0),
            cell(mbit["uplinkd_stopped"][d], 0), cell(ratio["uplinkd"][d], 3),
            cell(ratio_ct["uplinkd"][d], 3), cell(ratio["uplinkd_stopped"][d], 3),
            cell(ratio["plain_same_session"][d], 3),
        ])  # fmt: skip
    return markdown_table(rows) + "\nmedian (min-max) over the rounds"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each runs both set-ups (default 5)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per iperf3 run (default 5)")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds to wait before measuring")
    parser.add_argument(
        "--profile", choices=("fast", "default"), default="fast",
        help="uplinkd's probe profile (default fast: the tests' sub-second one, whose 50 ms look at "
        "the counters and fast rounds during a bulk upload cost the daemon CPU)",
    )  # fmt: skip
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    results = run(args)
    where = RESULTS if args.profile == "fast" else RESULTS.with_name(f"tunnel_throughput_{args.profile}.json")
    publish(results, where, table(results))


if __name__ == "__main__":
    main()
