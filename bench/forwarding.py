#!/usr/bin/env python3
"""Forwarding benchmark: what uplinkd's nft table and rule bands cost every forwarded packet.

    sudo python3 bench/forwarding.py [--sizes 2,4,8] [--rounds 5] [--seconds 3] [--quick]

Per uplink count N, four labs side by side (LAN client → router → N ISPs → server, see
uplinkd.lab), one per variant of the router:

- ``bare``: a default route in main via ISP 1 and one masquerade rule; no policy rules at
  all, so the kernel keeps its merged local/main table (one lookup a packet);
- ``uplinkd``: the real daemon (static uplinks, no probes), running;
- ``nft_only``: uplinkd's nft table (``render()``, loaded by hand) and a default route in
  main; no rule bands;
- ``bands_only``: uplinkd's rules, tables and nexthop group (written by the daemon, which is
  then stopped), its nft table replaced by the same masquerade rule as ``bare``.

Each variant needs its own router namespace: once a policy rule has been added to a
namespace the kernel never merges local and main back, so the variants cannot take turns
in one router.

iperf3 (one TCP stream, client pinned to CPU 0, server to CPU 1) runs from the LAN client
to the server (``up``) and back (``down``, ``-R``), first with offloads off on every
interface of every namespace (``ethtool -K tso/gso/gro off``: each ~1500-byte packet crosses
the router alone, the per-packet cost), then with TSO/GSO on (``bulk``: 64 KB segments).
The variants take turns within each round, in an order rotated every round, so drift in
the machine's load (it is shared) hits them alike. Two measures per run: throughput, and
CPU time per packet (the iperf3 client's rusage, the server's and the ksoftirqd threads'
schedstat: the whole path runs in softirq, in their contexts), which holds up better when
other work takes CPU away from the runs. Reported per variant: medians, and the ratios to
``bare`` of the same round (throughput; bare's CPU per packet over the variant's), median
over the rounds. ``--base DIR`` adds ``uplinkd@base`` and ``nft_only@base``, run from
another checkout, to compare two versions in one run. A variant named with ``~loose``
(``uplinkd~loose``, ``uplinkd@base~loose``) runs with the router's reverse-path settings of
before uplinkd checked sources itself: ``rp_filter=2`` and no ``accept_local``.

Every lab's bridges skip the inet hooks (``bridge-nf-call-*=0``), as on a router without
br_netfilter; ``--br-netfilter`` leaves the kernel's setting.

Prints JSON on stdout (also written to bench/results/forwarding.json) and a table.
Needs root, iperf3 and ethtool (scripts/setup.sh installs them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from uplinkd import config as uconfig
from uplinkd.kernel import nft
from uplinkd.lab import Lab
from uplinkd.lab.addresses import SERVER4
from uplinkd.lab.launcher import LabDaemon
from uplinkd.model import NftState, NftUplink

import bootstrap  # noqa: F401 - harness on sys.path
from harness.readback import group_members, wait_until
from harness.stats import publish
from harness.vxlan_home import plain_bridges

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("bare", "uplinkd", "nft_only", "bands_only")
DIRECTIONS = ("up", "down")
PORT = 5201
MSS = 1448  # TCP payload of a 1500-byte packet with timestamps: packets ≈ bytes / MSS
BARE_NAT = "bench_nat"
RESULTS = ROOT / "bench" / "results" / "forwarding.json"


def log(msg: str) -> None:
    print(f"[forwarding] {msg}", file=sys.stderr, flush=True)


def names(n: int) -> list[str]:
    return [f"up{i}" for i in range(1, n + 1)]


def config(n: int) -> dict[str, Any]:
    """N static uplinks, equal weights, no probes (nothing but the benchmark's traffic)."""
    return {
        "uplinks": {
            name: {
                "match": {"name": name},
                "address": {"mode": "static", "cidr": f"10.{100 + i}.0.2/24", "gateway": f"10.{100 + i}.0.1"},
                "table": 100 + i,
            }
            for i, name in enumerate(names(n), start=1)
        },
        "balance": {"table": 200},
    }


def nft_state(n: int) -> NftState:
    """The nft table uplinkd would load for these uplinks (for the `nft_only` router)."""
    cfg = uconfig.parse(config(n))
    uplinks = tuple(sorted((NftUplink(name, cfg.mark_of(name)) for name in names(n)), key=lambda u: u.ifname))
    return NftState(table=cfg.kernel.nft_table, mask=cfg.kernel.mark_mask, uplinks=uplinks)


def masquerade(lab: Lab) -> None:
    """The bare router's NAT: LAN traffic leaving through any other interface is masqueraded."""
    lab.run(
        "router",
        ["nft", "-f", "-"],
        input=(
            f"table inet {BARE_NAT} {{\n\tchain postrouting {{\n"
            "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
            '\t\tiifname "lan0" oifname != "lan0" masquerade\n\t}\n}\n'
        ),
    )


def offloads(lab: Lab, *, on: bool) -> None:
    """TSO/GSO (and GRO) on or off on every interface of every namespace of the lab."""
    state = "on" if on else "off"
    for ns in lab.namespaces:
        for link in json.loads(lab.run(ns, ["ip", "-json", "link", "show"]).stdout):
            if link["ifname"] == "lo":
                continue
            argv = ["ethtool", "-K", link["ifname"], "tso", state, "gso", state]
            if not on:
                argv += ["gro", "off"]  # veth GRO is off by default; bulk leaves it so
            lab.run(ns, argv)


def cpu_ns(pid: int) -> int:
    """CPU time a thread has run, in ns (schedstat; softirq work done in its context included)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def ksoftirqd_pids() -> list[int]:
    """The per-CPU softirq threads: forwarding work the kernel defers lands there."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().startswith("ksoftirqd/"):
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


@dataclass
class Router:
    """One variant's lab, ready to forward."""

    variant: str
    lab: Lab
    server: subprocess.Popen[str]

    def iperf(self, *, seconds: float, reverse: bool, softirqd: Sequence[int]) -> dict[str, float]:
        """One iperf3 run: throughput, and the CPU it took all told (client, server, and the
        softirq threads; the forwarding runs in softirq, mostly in the sender's context)."""
        argv = ["iperf3", "-c", str(SERVER4.ip), "-p", str(PORT), "-t", f"{seconds:g}", "-A", "0,1", "-J"]
        if reverse:
            argv.append("-R")
        before = cpu_ns(self.server.pid) + sum(cpu_ns(p) for p in softirqd)
        proc = self.lab.popen("lan1", argv, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        after = cpu_ns(self.server.pid) + sum(cpu_ns(p) for p in softirqd)
        if proc.returncode != 0:
            raise RuntimeError(f"{self.variant}: iperf3 exited {proc.returncode}: {out[-2000:]}")
        received = json.loads(out)["end"]["sum_received"]
        packets = received["bytes"] / MSS
        cpu_s = usage.ru_utime + usage.ru_stime + (after - before) / 1e9
        return {
            "mbit_s": received["bits_per_second"] / 1e6,
            "kpps": packets / received["seconds"] / 1e3,
            "cpu_us_per_packet": cpu_s / packets * 1e6,
        }


def start_iperf_server(lab: Lab) -> subprocess.Popen[str]:
    proc = lab.popen("inet", ["iperf3", "-s", "-B", str(SERVER4.ip), "-p", str(PORT)])
    wait_until(
        lambda: f":{PORT}" in lab.run("inet", ["ss", "-Htln", f"sport = :{PORT}"]).stdout,
        timeout=10,
        what="iperf3 server listening",
    )
    return proc


def render_with(tree: Path | None, n: int) -> str:
    """uplinkd's nft table for N uplinks, rendered by this checkout or by the one at `tree`."""
    if tree is None:
        return nft.render(nft_state(n))
    code = (
        "import sys\nfrom uplinkd import config\nfrom uplinkd.kernel import nft\n"
        "from uplinkd.model import NftState, NftUplink\n"
        "cfg = config.parse(__import__('json').loads(sys.argv[1]))\n"
        "ups = tuple(sorted((NftUplink(n, cfg.mark_of(n)) for n in cfg.uplinks), key=lambda u: u.ifname))\n"
        "print(nft.render(NftState(cfg.kernel.nft_table, cfg.kernel.mark_mask, ups)), end='')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tree / "controller")}
    argv = [sys.executable, "-c", code, json.dumps(config(n))]
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout


def build(
    variant: str, n: int, stack: ExitStack, workdir: Path, base: Path | None, *, br_netfilter: bool = False
) -> Router:
    built, _, how = variant.partition("~")
    kind, _, other = built.partition("@")
    tree = base if other else None
    lab = stack.enter_context(Lab())
    by_hand = kind in ("bare", "nft_only")
    for name in names(n):
        # bare and nft_only: the lab puts 10.<100+i>.0.2 on; uplinkd: the controller does
        lab.add_isp(name, address="static" if by_hand else "none")
    lab.add_client()
    if not br_netfilter:
        # as on a router without br_netfilter, which this machine's kernel has built in: the
        # LAN bridge's frames would cross every inet hook (uplinkd's chains, conntrack) too
        plain_bridges(*lab.namespaces)
    if by_hand:
        lab.run("router", ["ip", "route", "add", "default", "via", str(lab.isps[0].addresses.gateway4.ip)])
    if kind == "bare":
        masquerade(lab)
    elif kind == "nft_only":
        lab.run("router", ["nft", "-f", "-"], input=render_with(tree, n))
    else:
        ctl_dir = workdir / variant
        ctl_dir.mkdir()
        env = {"PYTHONPATH": str(tree / "controller")} if tree is not None else None
        c = LabDaemon(lab.router, config(n), workdir=ctl_dir, env=env, verbose=False)
        stack.callback(c.stop)
        c.start()
        tables = {100 + i: name for i, name in enumerate(names(n), start=1)}
        wait_until(
            lambda: len(group_members(lab.router, tables)) == n, timeout=30, what="every uplink in the group"
        )
        if kind == "bands_only":
            c.stop()  # fail static: the rules, routes and group stay
            lab.run("router", ["nft", "delete", "table", "inet", "uplinkd"])
            masquerade(lab)
    if how == "loose":
        loose_rp_filter(lab)
    return Router(variant, lab, start_iperf_server(lab))


def loose_rp_filter(lab: Lab) -> None:
    """The router's reverse-path settings before uplinkd's own check: loose mode, no
    accept_local, so the kernel checks every packet's source by walking the rule bands."""
    links = [link["ifname"] for link in json.loads(lab.run("router", ["ip", "-json", "link", "show"]).stdout)]
    for conf in ("all", "default", *links):
        lab.run("router", ["sysctl", "-qw", f"net.ipv4.conf.{conf}.rp_filter=2"])
    lab.run("router", ["sysctl", "-qw", "net.ipv4.conf.all.accept_local=0"])


@contextmanager
def routers(
    n: int, variants: Sequence[str], base: Path | None, *, br_netfilter: bool
) -> Iterator[list[Router]]:
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="uplinkd-fwd-") as tmp:
        yield [build(v, n, stack, Path(tmp), base, br_netfilter=br_netfilter) for v in variants]


def rotated(items: Sequence[Router], k: int) -> list[Router]:
    k %= len(items)
    return [*items[k:], *items[:k]]


def measure(
    rs: Sequence[Router], *, rounds: int, seconds: float, directions: Sequence[str]
) -> dict[str, Any]:
    """Alternating runs: per round, each variant once (rotated order), per direction."""
    samples: dict[str, dict[str, list[dict[str, float]]]] = {
        d: {r.variant: [] for r in rs} for d in directions
    }
    softirqd = ksoftirqd_pids()
    for k in range(rounds):
        for d in directions:
            for r in rotated(rs, k):
                samples[d][r.variant].append(r.iperf(seconds=seconds, reverse=d == "down", softirqd=softirqd))
    return {d: summarize(samples[d]) for d in directions}


def summarize(samples: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """Per variant: medians, and ratios to bare. `ratio`: throughput, ratio of medians;
    `paired_ratio`: median of the per-round throughput ratios; `cpu_ratio`: bare's CPU time
    per packet over the variant's, median of the per-round ratios (1.0 = as cheap as bare;
    it holds up when other load on the machine takes CPU away from the runs)."""
    bare = samples["bare"]
    out: dict[str, Any] = {}
    for variant, runs in samples.items():
        rates = [s["mbit_s"] for s in runs]
        costs = [s["cpu_us_per_packet"] for s in runs]
        paired = [v["mbit_s"] / b["mbit_s"] for v, b in zip(runs, bare, strict=True)]
        cpu = [b["cpu_us_per_packet"] / v["cpu_us_per_packet"] for v, b in zip(runs, bare, strict=True)]
        out[variant] = {
            "mbit_s": round(statistics.median(rates), 1),
            "kpps": round(statistics.median(s["kpps"] for s in runs), 1),
            "cpu_us_per_packet": round(statistics.median(costs), 3),
            "ratio": round(statistics.median(rates) / statistics.median(s["mbit_s"] for s in bare), 3),
            "paired_ratio": round(statistics.median(paired), 3),
            "cpu_ratio": round(statistics.median(cpu), 3),
            "samples_mbit_s": [round(x, 1) for x in rates],
            "samples_cpu_us_per_packet": [round(x, 3) for x in costs],
        }
    return out


def table(results: dict[str, Any]) -> str:
    variants = results["variants"]
    head = f"{'uplinks':>7} {'mode':10} {'dir':4} " + " ".join(f"{v:>26}" for v in variants)
    lines = [
        "bare: median Mbit/s, CPU µs/packet; others: Mbit/s, ratio to bare in throughput (median",
        "of per-round ratios) / in CPU per packet (bare's over theirs, median of per-round ratios)",
        head,
        "-" * len(head),
    ]
    for run in results["runs"]:
        for d, by_variant in run["results"].items():
            cells = []
            for v in variants:
                s = by_variant[v]
                if v == "bare":
                    cells.append(f"{s['mbit_s']:.0f} {s['cpu_us_per_packet']:.2f} µs".rjust(26))
                else:
                    cell = f"{s['mbit_s']:.0f} {s['paired_ratio']:.3f} / {s['cpu_ratio']:.3f}"
                    cells.append(cell.rjust(26))
            lines.append(f"{run['uplinks']:>7} {run['mode']:10} {d:4} " + " ".join(cells))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/forwarding.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2,4,8", help="uplink counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per size and mode")
    parser.add_argument("--seconds", type=float, default=3.0, help="iperf3 run length")
    parser.add_argument("--directions", default="up,down", help="up (LAN → server), down (-R)")
    parser.add_argument("--bulk-sizes", default="2", help="uplink counts also run with offloads on")
    parser.add_argument("--bulk-rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 uplinks, 2 rounds of 1 s (smoke)")
    parser.add_argument(
        "--base",
        type=Path,
        help="another checkout (e.g. `git worktree add /tmp/base main`): its uplinkd and nft table run "
        "too, as variants uplinkd@base and nft_only@base (before/after in one run)",
    )
    parser.add_argument("--variants", help="a subset, comma-separated (bare is always run)")
    parser.add_argument(
        "--br-netfilter",
        action="store_true",
        help="leave bridged frames crossing the inet hooks where the kernel has br_netfilter "
        "(by default the labs turn that off, as a router without br_netfilter has it)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces)")
    for tool in ("iperf3", "ethtool"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (scripts/setup.sh installs it)")
    if args.quick:
        args.sizes, args.rounds, args.seconds, args.bulk_sizes, args.bulk_rounds = "2", 2, 1.0, "2", 1
    sizes = [int(s) for s in args.sizes.split(",") if s]
    bulk_sizes = {int(s) for s in args.bulk_sizes.split(",") if s}
    directions = [d for d in args.directions.split(",") if d]
    if not all(d in DIRECTIONS for d in directions):
        parser.error(f"--directions: use {', '.join(DIRECTIONS)}")
    variants = [*VARIANTS, *(("uplinkd@base", "nft_only@base") if args.base else ())]
    if args.variants:
        wanted = {"bare", *args.variants.split(",")}
        known = {*variants, *(f"{v}~loose" for v in variants if v.startswith("uplinkd"))}
        if not wanted <= known:
            parser.error(f"--variants: choose from {', '.join(sorted(known))}")
        variants = [*variants, *sorted(wanted - set(variants))]
        variants = [v for v in variants if v in wanted]
    started = time.monotonic()
    results: dict[str, Any] = {
        "benchmark": "forwarding",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "method": {
            "rounds": args.rounds,
            "bulk_rounds": args.bulk_rounds,
            "seconds": args.seconds,
            "streams": 1,
            "affinity": "client CPU 0, server CPU 1",
            "bridged_frames_cross_inet_hooks": args.br_netfilter,
        },
        "variants": variants,
        "base": str(args.base) if args.base else None,
        "runs": [],
    }
    for n in sizes:
        log(f"{n} uplinks: building {len(variants)} labs")
        with routers(n, variants, args.base, br_netfilter=args.br_netfilter) as rs:
            modes: list[tuple[str, bool, int]] = [("per_packet", False, args.rounds)]
            if n in bulk_sizes:
                modes.append(("bulk", True, args.bulk_rounds))
            for mode, on, rounds in modes:
                for r in rs:
                    offloads(r.lab, on=on)
                log(f"{n} uplinks, {mode}: {rounds} rounds")
                res = measure(rs, rounds=rounds, seconds=args.seconds, directions=directions)
                results["runs"].append({"uplinks": n, "mode": mode, "results": res})
                for line in table({"variants": variants, "runs": results["runs"][-1:]}).splitlines()[4:]:
                    log(line)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    publish(results, args.output, table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
