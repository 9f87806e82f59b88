#!/usr/bin/env python3
"""Metrics benchmark: what watching uplinkd costs the idle daemon, and what the exporter costs.

    sudo python3 bench/metrics.py [--seconds 180] [--rounds 2] [--scrape 15] [--baseline DIR]

Needs root (network namespaces). Builds its own pair of namespaces, ``mtb<hex>-r`` (the
router) and ``mtb<hex>-p`` (the gateways), with 4 veth pairs between them, and deletes both
at the end whatever happens. Nothing leaves those namespaces.

The real daemon (``python3 -m uplinkd.daemon``) runs in the router namespace with 4 static
uplinks probed with the default profile (one ICMP target each, its gateway), as in
bench/control_plane.py's idle run. Each mode starts a fresh daemon, waits for every uplink
to be up, lets it settle, then samples its CPU time (/proc/PID/stat utime+stime) and RSS
(/proc/PID/status VmRSS every second; the table shows the peak, since on a busy machine the
kernel reclaims pages from idle processes and lowers the median) for ``--seconds``:

- ``off``: no exporter (the daemon still keeps its in-memory counters: they are not optional);
- ``metrics``: uplinkd-exporter with ``--listen 127.0.0.1:9477``, scraped every ``--scrape``
  seconds (15, Prometheus' usual) with curl inside the namespace; each scrape is checked to
  be a 200 holding ``uplinkd_up 1.0``;
- ``metrics+page``: the same plus the status page on another address, which samples the
  daemon every 10 s (its default) for the page's history, even with no browser watching;
- ``baseline`` (only with ``--baseline DIR``): the daemon from another checkout's controller
  directory (e.g. main's, without the counters), no exporter.

The exporter's own CPU and RSS are measured the same way, in their own columns. Modes run
in turn, ``--rounds`` times (interleaved, so a busy neighbour hurts all of them alike); the
table shows the median over rounds. Prints a table and the JSON (also written to
bench/results/metrics.json).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from uplinkd import control

import bootstrap  # noqa: F401 - harness on sys.path
from harness.stats import publish

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "metrics.json"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SETTLE_S = 5.0
UPLINKS = 4
METRICS = "127.0.0.1:9477"
PAGE = "127.0.0.2:8080"


def run(argv: list[str], *, input: str | None = None, check: bool = True) -> str:
    done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=60, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def build(router: str, peer: str) -> None:
    run(
        ["ip", "-n", router, "-batch", "-"],
        input="".join(f"link add u{i} type veth peer name p{i} netns {peer}\n" for i in range(1, UPLINKS + 1))
        + "".join(f"link set dev u{i} up\n" for i in range(1, UPLINKS + 1))
        + "address add 127.0.0.2/8 dev lo\n",
    )
    run(
        ["ip", "-n", peer, "-batch", "-"],
        input="".join(
            f"address add 10.201.{i}.1/24 dev p{i}\nlink set dev p{i} up\n" for i in range(1, UPLINKS + 1)
        ),
    )


def config(socket: Path) -> dict[str, Any]:
    return {
        "uplinks": {
            f"u{i}": {
                "match": {"name": f"u{i}"},
                "address": {"mode": "static", "cidr": f"10.201.{i}.2/24", "gateway": f"10.201.{i}.1"},
                "table": 1000 + i,
                "mark": i,
                "weight": i % 4 + 1,
                "probe": {"targets": [f"10.201.{i}.1"], "profile": "default"},
            }
            for i in range(1, UPLINKS + 1)
        },
        "control": {"socket": str(socket)},
    }


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def inner_pid(proc: subprocess.Popen[bytes]) -> int:
    """`ip netns exec` execs the program, so the pid is the program's own."""
    return proc.pid


def status(sock: Path) -> dict[str, Any] | None:
    try:
        return dict(control.call(sock, {"command": "status"}, timeout=2))
    except control.ControlError:
        return None


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def scrape(router: str) -> bool:
    done = subprocess.run(
        ["ip", "netns", "exec", router, "curl", "-sS", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}",
         f"http://{METRICS}/metrics"],
        capture_output=True, text=True, timeout=15, check=False,
    )  # fmt: skip
    return done.returncode == 0 and done.stdout.endswith("\n200") and "uplinkd_up 1.0" in done.stdout


def one_run(
    router: str, workdir: Path, *, mode: str, seconds: float, scrape_s: float, baseline: Path | None
) -> dict[str, Any]:
    sock = workdir / f"{mode}.sock"
    cfg = workdir / f"{mode}.json"
    cfg.write_text(json.dumps(config(sock)))
    env = dict(os.environ)
    if mode == "baseline" and baseline is not None:
        env["PYTHONPATH"] = str(baseline)
    with (workdir / f"{mode}.log").open("ab") as log:
        daemon = subprocess.Popen(
            ["ip", "netns", "exec", router, sys.executable, "-m", "uplinkd.daemon", "--config", str(cfg)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    exporter: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 60
        while True:
            if daemon.poll() is not None:
                raise RuntimeError(f"uplinkd exited {daemon.returncode}; see {workdir / f'{mode}.log'}")
            st = status(sock)
            ups = st["uplinks"] if st and st["passes"] > 0 else []
            if len(ups) == UPLINKS and all(u["state"] == "up" for u in ups):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"uplinks not all up after 60 s: {st}")
            time.sleep(0.2)
        if mode.startswith("metrics"):
            args = ["--listen", METRICS] + (["--page", PAGE] if mode == "metrics+page" else [])
            with (workdir / f"{mode}.exporter.log").open("ab") as log:
                exporter = subprocess.Popen(
                    ["ip", "netns", "exec", router, sys.executable, "-m", "uplinkd.exporter.server",
                     "--socket", str(sock), *args],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                )  # fmt: skip
            deadline = time.monotonic() + 20
            while not scrape(router):
                if time.monotonic() > deadline:
                    raise RuntimeError("the exporter did not answer")
                time.sleep(0.5)
        time.sleep(SETTLE_S)
        pids = {"daemon": inner_pid(daemon)}
        if exporter is not None:
            pids["exporter"] = inner_pid(exporter)
        t0 = time.monotonic()
        ticks0 = {k: cpu_ticks(p) for k, p in pids.items()}
        rss: dict[str, list[int]] = {k: [] for k in pids}
        scrapes = failed = 0
        next_scrape = t0
        while (now := time.monotonic()) < t0 + seconds:
            if exporter is not None and now >= next_scrape:
                scrapes += 1
                failed += not scrape(router)
                next_scrape += scrape_s
            for k, p in pids.items():
                rss[k].append(rss_kib(p))
            time.sleep(min(1.0, max(0.0, t0 + seconds - time.monotonic())))
        t1 = time.monotonic()
        ticks1 = {k: cpu_ticks(p) for k, p in pids.items()}
    finally:
        if exporter is not None:
            stop(exporter)
        stop(daemon)
    out: dict[str, Any] = {
        "mode": mode,
        "seconds": round(t1 - t0, 1),
        "scrapes": scrapes,
        "failed_scrapes": failed,
    }
    for k in pids:
        cpu_s = (ticks1[k] - ticks0[k]) / CLK_TCK
        out[k] = {
            "cpu_s": round(cpu_s, 2),
            "cpu_pct": round(100 * cpu_s / (t1 - t0), 3),
            "rss_mib": round(statistics.median(rss[k]) / 1024, 1),
            "rss_max_mib": round(max(rss[k]) / 1024, 1),
        }
    return out


def summarise(runs: list[dict[str, Any]], modes: list[str]) -> dict[str, Any]:
    by_mode: dict[str, Any] = {}
    for mode in modes:
        rs = [r for r in runs if r["mode"] == mode]
        entry: dict[str, Any] = {"rounds": len(rs), "scrapes": sum(r["scrapes"] for r in rs)}
        for who in ("daemon", "exporter"):
            if who in rs[0]:
                entry[who] = {
                    "cpu_pct": round(statistics.median(r[who]["cpu_pct"] for r in rs), 3),
                    "rss_mib": round(statistics.median(r[who]["rss_mib"] for r in rs), 1),
                    "rss_max_mib": round(statistics.median(r[who]["rss_max_mib"] for r in rs), 1),
                }
        by_mode[mode] = entry
    off = by_mode["off"]["daemon"]
    for entry in by_mode.values():
        entry["daemon_over_off"] = {
            "cpu_pp": round(entry["daemon"]["cpu_pct"] - off["cpu_pct"], 3),
            "rss_max_mib": round(entry["daemon"]["rss_max_mib"] - off["rss_max_mib"], 1),
        }
    return by_mode


def table(results: dict[str, Any]) -> str:
    rows = [
        ("mode", "daemon CPU %", "daemon peak RSS MiB", "Δ daemon CPU pp", "Δ daemon peak RSS MiB",
         "exporter CPU %", "exporter peak RSS MiB", "scrapes"),
    ]  # fmt: skip
    for mode, e in results["modes"].items():
        ex = e.get("exporter")
        rows.append(
            (mode, f"{e['daemon']['cpu_pct']:.3f}", f"{e['daemon']['rss_max_mib']:.1f}",
             f"{e['daemon_over_off']['cpu_pp']:+.3f}", f"{e['daemon_over_off']['rss_max_mib']:+.1f}",
             f"{ex['cpu_pct']:.3f}" if ex else "-", f"{ex['rss_max_mib']:.1f}" if ex else "-",
             str(e["scrapes"]))
        )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    head = (
        f"Idle daemon, {UPLINKS} uplinks, default probes; {results['seconds']:g} s per run, median of "
        f"{results['rounds']} rounds; scraped every {results['scrape_s']:g} s:"
    )
    return "\n".join([head, *lines])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=180.0, help="sampling per run (default %(default)s)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--scrape", type=float, default=15.0, help="scrape interval, seconds")
    p.add_argument("--baseline", type=Path, help="a controller directory to run as 'baseline' (e.g. main's)")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("metrics: needs root (network namespaces)", file=sys.stderr)
        return 2
    modes = ["off", "metrics", "metrics+page"] + (["baseline"] if args.baseline else [])
    tag = secrets.token_hex(3)
    router, peer = f"mtb{tag}-r", f"mtb{tag}-p"
    workdir = Path(tempfile.mkdtemp(prefix=f"uplinkd-mtb{tag}-"))
    began = time.monotonic()
    runs: list[dict[str, Any]] = []
    try:
        for ns in (router, peer):
            run(["ip", "netns", "add", ns])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        build(router, peer)
        for round_ in range(args.rounds):
            for mode in modes:
                runs.append(
                    one_run(
                        router,
                        workdir,
                        mode=mode,
                        seconds=args.seconds,
                        scrape_s=args.scrape,
                        baseline=args.baseline,
                    )
                )
                print(f"  round {round_ + 1} {mode} done ({time.monotonic() - began:.0f} s)", file=sys.stderr)
    finally:
        for ns in (router, peer):
            run(["ip", "netns", "delete", ns], check=False)
        shutil.rmtree(workdir, ignore_errors=True)
    results = {
        "benchmark": "metrics",
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "uplinks": UPLINKS,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "scrape_s": args.scrape,
        "baseline": str(args.baseline) if args.baseline else None,
        "baseline_commit": run(["git", "-C", str(args.baseline), "rev-parse", "HEAD"], check=False).strip()
        if args.baseline
        else None,
        "modes": summarise(runs, modes),
        "runs": runs,
        "wall_s": round(time.monotonic() - began, 1),
    }
    publish(results, args.output, table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
