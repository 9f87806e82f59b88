#!/usr/bin/env python3
"""Control-plane benchmark: how long uplinkd takes to plan and apply, and what it costs idle.

    sudo python3 bench/control_plane.py [--quick] [--sizes 1,4,16,64] [--reps 5] [--idle 60]

Needs root (network namespaces).  Builds its own pair of namespaces, ``cpb<hex>-r`` (the
router) and ``cpb<hex>-p`` (the gateways), with N veth pairs between them, and deletes both
at the end whatever happens.  Nothing leaves those namespaces.

1. Plan and apply, in process (the script re-executes itself inside the router namespace
   with ``--worker``, imports uplinkd and drives ``Kernel.read`` / ``desired`` / ``diff`` /
   ``Kernel.apply`` exactly as one daemon pass does).  For each size N (uplinks ``u1..uN``,
   ``static`` mode, table 1000+i, mark i, weight i%4+1), each repetition:

   - from empty (everything uplinkd owns flushed first, untimed): read, plan
     (desired + diff), apply; the number of kernel writes;
   - a second pass (read + plan) on the converged kernel: must plan zero writes;
   - one change: drain ``u1`` (read + plan + apply): the writes it takes.

   Reported as median and p95 (nearest rank) over the repetitions, in milliseconds.

2. Idle cost: the real daemon (``python3 -m uplinkd.daemon``) in the router namespace with
   4 uplinks, once without probes and once with probes (default profile, ICMP, each uplink
   probing its gateway in the peer namespace).  After it is ready and has settled, its RSS
   (/proc/PID/status VmRSS) and CPU time (/proc/PID/stat utime+stime) are sampled for
   ``--idle`` seconds (60; 10 with ``--quick``).  It is stopped by pid.

Prints a table, and the JSON (also written to bench/results/control_plane.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from uplinkd.lab.launcher import LabDaemon

import bootstrap  # noqa: F401 - harness on sys.path
from harness.stats import markdown_table, publish, summary

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "control_plane.json"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
SETTLE_S = 5.0
IDLE_UPLINKS = 4


# --- topology -------------------------------------------------------------------------------


def run(argv: list[str], *, input: str | None = None, check: bool = True) -> str:
    done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=60, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def gateway(i: int) -> str:
    return f"10.200.{i}.1"


def router_cidr(i: int) -> str:
    return f"10.200.{i}.2/24"


def build(router: str, peer: str, n: int) -> None:
    """N veth pairs: ``u<i>`` in the router, ``p<i>`` (gateway 10.200.i.1/24) in the peer."""
    run(
        ["ip", "-n", router, "-batch", "-"],
        input="".join(f"link add u{i} type veth peer name p{i} netns {peer}\n" for i in range(1, n + 1))
        + "".join(f"link set dev u{i} up\n" for i in range(1, n + 1)),
    )
    run(
        ["ip", "-n", peer, "-batch", "-"],
        input="".join(
            f"address add {gateway(i)}/24 dev p{i}\nlink set dev p{i} up\n" for i in range(1, n + 1)
        ),
    )


def unbuild(router: str, n: int) -> None:
    run(["ip", "-n", router, "-batch", "-"], input="".join(f"link del u{i}\n" for i in range(1, n + 1)))


def config(n: int, *, probes: bool = False) -> dict[str, Any]:
    uplinks: dict[str, Any] = {}
    for i in range(1, n + 1):
        up: dict[str, Any] = {
            "match": {"name": f"u{i}"},
            "address": {"mode": "static", "cidr": router_cidr(i), "gateway": gateway(i)},
            "table": 1000 + i,
            "mark": i,
            "weight": i % 4 + 1,
        }
        if probes:
            up["probe"] = {"targets": [gateway(i)], "profile": "default"}
        uplinks[f"u{i}"] = up
    return {"uplinks": uplinks}


# --- the worker: runs inside the router namespace ---------------------------------------------


async def measure(n: int, reps: int) -> dict[str, Any]:
    from uplinkd.config import parse  # noqa: PLC0415 - the parent process does not need uplinkd
    from uplinkd.kernel.state import Kernel  # noqa: PLC0415
    from uplinkd.model import KernelState  # noqa: PLC0415
    from uplinkd.plan import Facts, desired, diff  # noqa: PLC0415

    cfg = parse(config(n))
    kernel = Kernel(cfg)

    def ms(a: float, b: float) -> float:
        return (b - a) * 1000

    keys = ("read", "plan", "apply", "total", "noop_pass", "drain_plan", "drain_apply", "drain_total")
    times: dict[str, list[float]] = {k: [] for k in keys}
    ops: dict[str, set[int]] = {"from_empty": set(), "noop": set(), "drain": set()}
    drain_ops: list[str] = []
    try:
        for _ in range(reps):
            _, actual = await kernel.read()
            flushed = await kernel.apply(diff(actual, KernelState()))
            if not flushed.ok:
                raise RuntimeError(f"flush failed: {flushed.failed}")
            # from empty
            t0 = time.perf_counter()
            observed, actual = await kernel.read()
            t1 = time.perf_counter()
            plan = diff(actual, desired(cfg, Facts(observed)).kernel)
            t2 = time.perf_counter()
            result = await kernel.apply(plan)
            t3 = time.perf_counter()
            if not result.ok:
                raise RuntimeError(f"apply failed: {result.failed}")
            ops["from_empty"].add(len(plan))
            times["read"].append(ms(t0, t1))
            times["plan"].append(ms(t1, t2))
            times["apply"].append(ms(t2, t3))
            times["total"].append(ms(t0, t3))
            # converged: a pass plans nothing
            t0 = time.perf_counter()
            observed, actual = await kernel.read()
            again = diff(actual, desired(cfg, Facts(observed)).kernel)
            t1 = time.perf_counter()
            ops["noop"].add(len(again))
            times["noop_pass"].append(ms(t0, t1))
            # one change: drain u1
            t0 = time.perf_counter()
            observed, actual = await kernel.read()
            change = diff(actual, desired(cfg, Facts(observed, drained=frozenset({"u1"}))).kernel)
            t1 = time.perf_counter()
            result = await kernel.apply(change)
            t2 = time.perf_counter()
            if not result.ok:
                raise RuntimeError(f"drain failed: {result.failed}")
            ops["drain"].add(len(change))
            drain_ops = [str(op) for op in change.ops]
            times["drain_plan"].append(ms(t0, t1))
            times["drain_apply"].append(ms(t1, t2))
            times["drain_total"].append(ms(t0, t2))
        _, actual = await kernel.read()
        await kernel.apply(diff(actual, KernelState()))
    finally:
        kernel.close()
    return {
        "uplinks": n,
        "reps": reps,
        "ms": {k: summary(v, stats=("median", "p95"), digits=3) for k, v in times.items()},
        "writes": {k: sorted(v) for k, v in ops.items()},
        "drain_ops": drain_ops,
    }


def worker(n: int, reps: int) -> int:
    print(json.dumps(asyncio.run(measure(n, reps))))
    return 0


# --- the idle daemon ----------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def all_up(status: dict[str, Any] | None) -> bool:
    ups = status["uplinks"] if status is not None else []
    return len(ups) == IDLE_UPLINKS and all(u["state"] == "up" and u["in_group"] for u in ups)


def idle(router: str, workdir: Path, *, probes: bool, seconds: float) -> dict[str, Any]:
    name = "probes" if probes else "no_probes"
    (workdir / name).mkdir()
    daemon = LabDaemon(router, config(IDLE_UPLINKS, probes=probes), workdir=workdir / name, verbose=False)
    started = time.monotonic()
    with daemon:  # started: its first pass is done
        ready_s = time.monotonic() - started
        daemon.wait_for(lambda: all_up(daemon.status_or_none()), timeout=30, what="every uplink up")
        up_s = time.monotonic() - started
        time.sleep(SETTLE_S)
        pid = daemon.pid
        assert pid is not None
        before = daemon.status()
        t0, c0 = time.monotonic(), cpu_ticks(pid)
        rss: list[int] = []
        while (left := t0 + seconds - time.monotonic()) > 0:
            rss.append(rss_kib(pid))
            time.sleep(min(1.0, left))
        t1, c1 = time.monotonic(), cpu_ticks(pid)
        rss.append(rss_kib(pid))
        after = daemon.status()
        probe_bytes = sum((u.get("probe") or {}).get("bytes_per_minute", 0) for u in after.get("uplinks", []))
    cpu_s = (c1 - c0) / CLK_TCK
    return {
        "uplinks": IDLE_UPLINKS,
        "probes": "default profile, 1 ICMP target per uplink" if probes else "none",
        "seconds": round(t1 - t0, 1),
        "start_to_first_pass_s": round(ready_s, 2),
        "start_to_all_up_s": round(up_s, 2),
        "cpu_s": round(cpu_s, 2),
        "cpu_pct": round(100 * cpu_s / (t1 - t0), 3),
        "rss_mib": round(statistics.median(rss) / 1024, 1),
        "rss_max_mib": round(max(rss) / 1024, 1),
        "passes": after.get("passes", 0) - before.get("passes", 0),
        "writes": after.get("writes", 0) - before.get("writes", 0),
        "probe_bytes_per_minute": probe_bytes,
    }


# --- the parent -------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    rows = [
        ("uplinks", "read", "plan", "apply", "from empty", "writes", "no-op pass", "writes",
         "drain pass", "writes"),
    ]  # fmt: skip

    def cell(d: dict[str, float]) -> str:
        return f"{d['median']:.1f} / {d['p95']:.1f}"

    for r in results["plan_apply"]:
        m, w = r["ms"], r["writes"]
        rows.append(
            (str(r["uplinks"]), cell(m["read"]), cell(m["plan"]), cell(m["apply"]), cell(m["total"]),
             "/".join(map(str, w["from_empty"])), cell(m["noop_pass"]), "/".join(map(str, w["noop"])),
             cell(m["drain_total"]), "/".join(map(str, w["drain"])))
        )  # fmt: skip
    out = [f"Plan and apply, ms (median / p95 of {results['reps']} runs):", markdown_table(rows), ""]
    rows2 = [("daemon, 4 uplinks", "CPU %", "RSS MiB", "passes", "writes", "probe B/min", "ready s")]
    for key, label in (("no_probes", "idle, no probes"), ("probes", "idle, probes (default)")):
        r = results["idle"].get(key)
        if r:
            rows2.append(
                (label, f"{r['cpu_pct']:.2f}", f"{r['rss_mib']:.1f}", str(r["passes"]), str(r["writes"]),
                 str(r["probe_bytes_per_minute"]), f"{r['start_to_all_up_s']:.1f}")
            )  # fmt: skip
    idle_s = max((r["seconds"] for r in results["idle"].values()), default=0)
    out += [f"Idle daemon over {idle_s:g} s:", markdown_table(rows2)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1,4,16,64", help="uplink counts, comma-separated")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--idle", type=float, default=None, help="idle sampling seconds (default 60)")
    p.add_argument("--quick", action="store_true", help="idle 10 s, for CI smoke runs")
    p.add_argument("--no-idle", action="store_true", help="skip the idle daemon runs")
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument("--worker", type=int, metavar="N", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        return worker(args.worker, args.reps)
    if os.geteuid() != 0:
        print("control_plane: needs root (network namespaces)", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    if not all(1 <= n <= 250 for n in sizes):
        print("control_plane: sizes must be 1..250", file=sys.stderr)
        return 2
    idle_s = args.idle if args.idle is not None else (10.0 if args.quick else 60.0)

    tag = secrets.token_hex(3)
    router, peer = f"cpb{tag}-r", f"cpb{tag}-p"
    workdir = Path(tempfile.mkdtemp(prefix=f"uplinkd-cpb{tag}-"))
    began = time.monotonic()
    results: dict[str, Any] = {
        "benchmark": "control_plane",
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "reps": args.reps,
        "plan_apply": [],
        "idle": {},
    }
    try:
        for ns in (router, peer):
            run(["ip", "netns", "add", ns])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        for n in sizes:
            build(router, peer, n)
            try:
                out = run(
                    ["ip", "netns", "exec", router, sys.executable, str(Path(__file__).resolve()),
                     "--worker", str(n), "--reps", str(args.reps)]
                )  # fmt: skip
            finally:
                unbuild(router, n)
            results["plan_apply"].append(json.loads(out))
            print(f"  {n} uplinks done ({time.monotonic() - began:.0f} s)", file=sys.stderr)
        if not args.no_idle:
            build(router, peer, IDLE_UPLINKS)
            for probes in (False, True):
                key = "probes" if probes else "no_probes"
                results["idle"][key] = idle(router, workdir, probes=probes, seconds=idle_s)
                print(f"  idle {key} done ({time.monotonic() - began:.0f} s)", file=sys.stderr)
    finally:
        for ns in (router, peer):
            run(["ip", "netns", "delete", ns], check=False)
        shutil.rmtree(workdir, ignore_errors=True)
    results["wall_s"] = round(time.monotonic() - began, 1)
    publish(results, args.output, table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
