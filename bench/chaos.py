#!/usr/bin/env python3
"""Chaos soak: random faults, one at a time, against the real daemon with traffic flowing.

    sudo python3 bench/chaos.py [--short] [--seed N]      # 10 min (--short: ~2 min)

A netns lab (`uplinkd.lab`): a router with three uplinks of the three address modes (`wan`
external: the lab puts its address and someone else's default route there; `lte1` static: the
daemon puts the address; `stick` dhcp, matched as `usb*`, hot-plugged, the ISP's dnsmasq leases
it), one LAN client, the lab's server as the internet, the `fast` probe profile. Traffic only
goes to the lab's own server.

The soak is a sequence of windows, one fault each, drawn with `--seed` (every kind once per
round, in random order, on a random uplink where the kind takes one). In a window: fresh TCP +
UDP flows from the LAN client (one request every 50 ms each, for the whole window) and a poller
opening a new UDP flow every 50 ms; a second of calm; the fault; wait until the kernel shows
the wanted layout; hold it a second; undo it; wait until the kernel is back to the baseline
layout; a settle period. The kinds:

    blackhole      the uplink's ISP drops everything from the router, carrier up
    carrier        the ISP end of the uplink goes down (the router's end loses carrier)
    replug         the stick is unplugged, then plugged back under a new name (usb0 → usb1 …)
    drain          `drain` over the control socket, then `undrain`
    sighup_valid   a weight changed in the file + SIGHUP; then the old file back + SIGHUP
    sighup_invalid a broken file (bad JSON, or an invalid value) + SIGHUP: the running config
                   must be kept; the good file is put back (no signal)
    nft_flush      `nft flush ruleset` in the router
    delete_rule    an admin deletes one of uplinkd's IPv4 rules (`ip rule del`)
    delete_route   an admin deletes one of uplinkd's IPv4 routes (`ip route del`)
    sigkill        SIGKILL to the daemon, then a restart

Measured, from outside the daemon (the kernel is read with `ip -json` and `nft -j`, see
`chaos_kernel.py`; the flows' and poller's replies say which uplink carried them):

- crashes: daemon exits other than the SIGKILLs the soak sends (it is restarted, the soak goes on);
- losses on flows of uplinks without a fault (every flow, for faults that target no uplink):
  requests that never got a reply, flows that moved or reconnected; goal 0;
- new flows through an uplink while it is out of the group (down, unplugged or drained): a
  poller request answered through it, sent while the kernel's group did not hold it; goal 0;
- convergence, fault → the kernel shows the wanted layout (`converge_ms`: blackhole, carrier,
  drain: the group without the uplink; replug: the group without the stick and nothing left
  that names its old interface or address; sighup_valid: the group with the new weight;
  sighup_invalid: the daemon logged the refusal, the layout unchanged; nft_flush, delete_*:
  the whole layout equal to the baseline again; sigkill: kill → restarted and the layout equal
  to the baseline), and undo → the whole layout equal to the baseline (`recover_ms`). A read of
  the layout takes ~8 subprocesses: that is the resolution (`read_ms` in the results);
- leftovers: the kernel's uplinkd state after the soak (daemon stopped with SIGTERM, which
  leaves the kernel as it is) against a fresh daemon's on the same lab after `uplinkctl flush`.

JSON in bench/results/chaos.json (also on stdout), a table after it. Needs root.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import chaos_kernel as kernel
from chaos_lab import POLLER, ROOT, SERVER, TABLES, config, config_file, exit_status, launch
from chaos_report import summarize, table

from uplinkd import control
from uplinkd.lab import FlowsRun, Lab, LabError
from uplinkd.lab.flows import DEFAULT_PORT
from uplinkd.lab.launcher import LabDaemon

import bootstrap  # noqa: F401 - harness on sys.path
from harness.stats import publish

KINDS = (
    "blackhole", "carrier", "replug", "drain", "sighup_valid", "sighup_invalid",
    "nft_flush", "delete_rule", "delete_route", "sigkill",
)  # fmt: skip
UPLINKS = ("wan", "lte1", "stick")
WEIGHTS = {"wan": 3, "lte1": 2, "stick": 1}
FLOWS_TCP, FLOWS_UDP, INTERVAL_MS = 6, 6, 50
POLL_EVERY_S = 0.05
PRE_S, HOLD_S, SETTLE_S = 1.0, 1.0, 1.0
# How long a window's traffic runs beyond calm + hold + settle: what the fault usually needs
# to converge and to recover (the window waits for the traffic to end either way).
BUDGET_S = {"blackhole": 2.0, "carrier": 2.0, "replug": 4.0, "drain": 1.0, "sighup_valid": 1.5,
            "sighup_invalid": 1.0, "nft_flush": 0.5, "delete_rule": 0.5, "delete_route": 0.5,
            "sigkill": 5.0}  # fmt: skip
CONVERGE_TIMEOUT_S = 30.0
RESULTS = ROOT / "bench" / "results" / "chaos.json"
REFUSED = "keeping the running config"


def say(msg: str) -> None:
    print(f"[chaos] {msg}", file=sys.stderr, flush=True)


# --- the soak -------------------------------------------------------------------------------------


class Soak:
    def __init__(self, lab: Lab, workdir: Path, seed: int) -> None:
        self.lab = lab
        self.rng = random.Random(seed)
        self.stick = lab.isp("stick")
        self.weights = dict(WEIGHTS)
        self.daemon: LabDaemon = launch(lab, config(self.weights), workdir)
        self.crashes: list[dict[str, Any]] = []
        self.events: dict[tuple[float, str, str], dict[str, Any]] = {}
        self.read_ms: list[float] = []
        self.samples: list[tuple[float, float, dict[str, int]]] = []
        self.baseline = kernel.Layout(())
        self.window: dict[str, Any] = {}
        self.killed = False

    # reading the kernel
    def names(self) -> kernel.Names:
        devices = {"wan": "wan", "lte1": "lte1"}
        addresses: dict[str, str] = {}
        if self.stick.ifname is not None:
            devices[self.stick.ifname] = "stick"
            addresses = {a: "stick-addr" for a in kernel.ipv4_addresses(self.lab.router, self.stick.ifname)}
        return kernel.Names(devices=devices, addresses=addresses)

    def layout(self) -> kernel.Layout:
        t = time.monotonic()
        names = self.names()
        lay = kernel.read(self.lab.router, names, tuple(names.devices))
        self.read_ms.append((time.monotonic() - t) * 1000)
        return lay

    def sample_group(self) -> dict[str, int]:
        """The group, with the wall-clock interval it was read in (for the new-flow check)."""
        before = time.time()
        members = kernel.group(self.lab.router, self.names())
        self.samples.append((before, time.time(), members))
        return members

    def check_daemon(self, phase: str) -> None:
        code = exit_status(self.daemon)
        if code is None or self.killed:
            return
        tail = self.daemon.log().splitlines()[-30:]
        crash = {"window": self.window.get("index"), "kind": self.window.get("kind"), "phase": phase,
                 "returncode": code, "log_tail": tail}  # fmt: skip
        self.crashes.append(crash)
        say(f"CRASH in {crash['kind']} ({phase}): exit {code}\n" + "\n".join(tail[-10:]))
        self.daemon.start()

    def collect_events(self) -> None:
        try:
            for e in self.daemon.status()["events"]:
                self.events[(e["at"], e["uplink"], e["to"])] = e
        except control.ControlError:
            pass

    def wait(self, what: str, predicate: Callable[[], bool], since: float) -> float | None:
        """ms from `since` (monotonic) to the end of the first check that held; None on timeout."""
        while True:
            self.check_daemon(what)
            self.sample_group()
            if predicate():
                return round((time.monotonic() - since) * 1000, 1)
            if time.monotonic() - since > CONVERGE_TIMEOUT_S:
                self.window.setdefault("timeouts", []).append(what)
                say(f"timeout: {what}")
                return None
            time.sleep(0.01)

    def at_baseline(self) -> bool:
        lay = self.layout()
        self.window["last_diff"] = lay.diff(self.baseline)
        return lay == self.baseline

    def group_is(self, members: dict[str, int]) -> Callable[[], bool]:
        return lambda: kernel.group(self.lab.router, self.names()) == members

    def idle(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.check_daemon("idle")
            self.sample_group()
            time.sleep(0.05)

    # setting up
    def start(self) -> None:
        self.daemon.start()
        all_in = {u: WEIGHTS[u] for u in UPLINKS}
        if self.wait("start-up", self.group_is(all_in), time.monotonic()) is None:
            raise RuntimeError(f"not every uplink in the group after start: {self.layout().lines}")
        time.sleep(2.0)  # probes settle, the stick's lease is stored
        self.baseline = self.layout()
        stable = self.layout()
        if stable != self.baseline:
            raise RuntimeError(f"the layout is not stable at start: {stable.diff(self.baseline)}")

    # one window
    def run_window(self, index: int, kind: str) -> dict[str, Any]:
        self.window = rec = {"index": index, "kind": kind, "started": round(time.time(), 3)}
        if not self.at_baseline():
            waited = self.wait("baseline before the window", self.at_baseline, time.monotonic())
            rec["baseline_wait_ms"] = waited
        self.samples = []
        duration = PRE_S + HOLD_S + SETTLE_S + BUDGET_S[kind]
        flows = self.lab.start_flows(tcp=FLOWS_TCP, udp=FLOWS_UDP, interval_ms=INTERVAL_MS, duration=duration)
        argv = [sys.executable, "-c", POLLER, SERVER, str(DEFAULT_PORT), str(duration), str(POLL_EVERY_S)]
        poller = self.lab.popen("lan1", argv, stdout=subprocess.PIPE)
        traffic_end = time.monotonic() + duration
        self.idle(PRE_S)
        faulted = getattr(self, f"fault_{kind}")(rec)
        rec["faulted"] = sorted(faulted)  # none: a router-wide fault, every flow counts as healthy
        self.idle(max(SETTLE_S, traffic_end - time.monotonic()))
        rec["overrun_s"] = round(max(0.0, time.monotonic() - traffic_end - SETTLE_S), 2)
        self.collect_events()
        self.judge(rec, flows, poller, faulted)
        rec["loadavg"] = [round(x, 2) for x in os.getloadavg()]
        return rec

    def judge(
        self, rec: dict[str, Any], flows: FlowsRun, poller: subprocess.Popen[str], faulted: set[str]
    ) -> None:
        try:
            report = flows.result(timeout=20)  # it has ended by now (the window outlasts it)
        except LabError as e:
            rec["traffic_error"] = str(e)[:500]
            report = None
        out, _ = poller.communicate(timeout=30)
        self.lab.stop(poller)
        if report is not None:
            healthy = [f for f in report.flows if report.uplink(f.first_source) not in faulted]
            hit = [f for f in healthy if f.lost or f.moved or f.reconnects]
            hit_flows = [{"proto": f.proto, "uplinks": report.uplinks_of(f), "lost": f.lost,
                          "reconnects": f.reconnects, "max_gap_ms": f.max_gap_ms} for f in hit[:10]]
            rec["healthy"] = {"flows": len(healthy), "lost": sum(f.lost for f in healthy), "hit": len(hit),
                              "hit_flows": hit_flows}  # fmt: skip
            at_fault = [f for f in report.flows if f not in healthy]
            rec["at_fault"] = {"flows": len(at_fault), "lost": sum(f.lost for f in at_fault),
                               "max_gap_ms": max((f.max_gap_ms for f in at_fault), default=None)}  # fmt: skip
            rec["by_uplink"] = report.by_uplink("first")
        lines = out.splitlines()
        replies = [line.split() for line in lines[1:] if line.strip()]
        names = self.lab.uplink_names()
        rec["new_flows"] = {"sent": int(lines[0]) if lines else 0, "answered": len(replies),
                            "by_uplink": dict(sorted(Counter(names.get(s, s) for _, s in replies).items()))}
        wrong = []
        for sent, source in replies:
            uplink = names.get(source, source)
            for start, end in self.out_of_group(uplink):
                if start < float(sent) < end:
                    wrong.append({"uplink": uplink, "sent": float(sent), "out": [start, end]})
        rec["new_flows"]["through_out_uplink"] = len(wrong)
        rec["new_flows"]["examples"] = wrong[:5]

    def out_of_group(self, uplink: str) -> list[tuple[float, float]]:
        """Wall-clock intervals during which every group read of this window lacked `uplink`:
        from the end of the first read that lacked it to the start of the last one."""
        spans: list[tuple[float, float]] = []
        run: list[tuple[float, float]] = []
        for before, after, members in [*self.samples, (float("inf"), float("inf"), {uplink: 0})]:
            if uplink not in members:
                run.append((before, after))
            elif run:
                if len(run) > 1:
                    spans.append((run[0][1], run[-1][0]))
                run = []
        return spans

    # the faults: each applies itself, waits, undoes itself; returns the uplinks it hit
    def target(self, rec: dict[str, Any]) -> str:
        rec["target"] = self.rng.choice(UPLINKS)
        return str(rec["target"])

    def without(self, name: str) -> dict[str, int]:
        return {u: self.weights[u] for u in UPLINKS if u != name}

    def out_and_back(
        self, rec: dict[str, Any], name: str, do: Callable[[], None], undo: Callable[[], None]
    ) -> None:
        t = time.monotonic()
        do()
        rec["do_call_ms"] = round((time.monotonic() - t) * 1000, 1)
        rec["converge_ms"] = self.wait(f"{name} out of the group", self.group_is(self.without(name)), t)
        time.sleep(HOLD_S)
        t = time.monotonic()
        undo()
        rec["undo_call_ms"] = round((time.monotonic() - t) * 1000, 1)
        rec["recover_ms"] = self.wait("baseline after undo", self.at_baseline, t)

    def fault_blackhole(self, rec: dict[str, Any]) -> set[str]:
        isp = self.lab.isp(name := self.target(rec))
        self.out_and_back(rec, name, lambda: isp.blackhole(True), lambda: isp.blackhole(False))
        return {name}

    def fault_carrier(self, rec: dict[str, Any]) -> set[str]:
        isp = self.lab.isp(name := self.target(rec))
        self.out_and_back(rec, name, lambda: isp.carrier(False), lambda: isp.carrier(True))
        return {name}

    def fault_drain(self, rec: dict[str, Any]) -> set[str]:
        name = self.target(rec)
        self.out_and_back(rec, name, lambda: self.daemon.call({"command": "drain", "uplink": name}),
                          lambda: self.daemon.call({"command": "undrain", "uplink": name}))  # fmt: skip
        return {name}

    def fault_replug(self, rec: dict[str, Any]) -> set[str]:
        old = self.stick.ifname
        assert old is not None
        old_addrs = kernel.ipv4_addresses(self.lab.router, old)
        new = f"usb{int(old[3:]) + 1}"
        rec["target"], rec["names"], rec["old_addresses"] = "stick", [old, new], old_addrs

        def gone() -> bool:
            lay = self.layout()
            left = [line for needle in [f'"{old}"', *old_addrs] for line in lay.mentions(needle)]
            rec["left_after_unplug"] = left
            return "stick" not in lay.group() and not left

        t = time.monotonic()
        self.lab.unplug(old)
        rec["converge_ms"] = self.wait("the old stick gone", gone, t)
        time.sleep(HOLD_S)
        t = time.monotonic()
        self.lab.plug(self.stick, new)
        rec["undo_call_ms"] = round((time.monotonic() - t) * 1000, 1)  # veth, ISP side up, dnsmasq
        rec["recover_ms"] = self.wait("baseline after the plug", self.at_baseline, t)
        rec["new_addresses"] = kernel.ipv4_addresses(self.lab.router, new)
        return {"stick"}

    def fault_sighup_valid(self, rec: dict[str, Any]) -> set[str]:
        name = self.target(rec)
        weight = self.rng.choice([w for w in range(1, 6) if w != WEIGHTS[name]])
        rec["weight"] = weight
        self.weights = {**WEIGHTS, name: weight}
        t = time.monotonic()
        config_file(self.daemon, config(self.weights))
        self.daemon.signal(signal.SIGHUP)
        rec["converge_ms"] = self.wait("the new weight", self.group_is(dict(self.weights)), t)
        time.sleep(HOLD_S)
        self.weights = dict(WEIGHTS)
        t = time.monotonic()
        config_file(self.daemon, config(self.weights))
        self.daemon.signal(signal.SIGHUP)
        rec["recover_ms"] = self.wait("baseline after the old file", self.at_baseline, t)
        return set()

    def fault_sighup_invalid(self, rec: dict[str, Any]) -> set[str]:
        broken: dict[str, dict[str, Any] | str] = {
            "truncated JSON": '{"uplinks": {"wan": {"table": ',
            "main table": config(WEIGHTS) | {"balance": {"table": 254}},
            "weight out of range": {**config(WEIGHTS), "uplinks": {
                **config(WEIGHTS)["uplinks"], "lte1": {**config(WEIGHTS)["uplinks"]["lte1"], "weight": 999}}},
            "unknown field": config(WEIGHTS) | {"uplinx": {}},
        }  # fmt: skip
        rec["broken"] = what = self.rng.choice(sorted(broken))
        refusals = self.daemon.log().count(REFUSED)
        t = time.monotonic()
        config_file(self.daemon, broken[what])
        self.daemon.signal(signal.SIGHUP)
        refused = lambda: self.daemon.log().count(REFUSED) > refusals  # noqa: E731
        rec["converge_ms"] = self.wait("the refusal logged", refused, t)
        time.sleep(HOLD_S)
        rec["kept"] = exit_status(self.daemon) is None and self.at_baseline()
        config_file(self.daemon, config(WEIGHTS))
        return set()

    def admin(self, rec: dict[str, Any], argv: list[str]) -> None:
        rec["command"] = " ".join(argv)
        t = time.monotonic()
        self.lab.run("router", argv)
        rec["converge_ms"] = self.wait("baseline after the admin's command", self.at_baseline, t)

    def fault_nft_flush(self, rec: dict[str, Any]) -> set[str]:
        self.admin(rec, ["nft", "flush", "ruleset"])
        return set()

    def owner(self, table: Any) -> set[str]:
        return {u for u, t in TABLES.items() if str(t) == str(table)}

    def fault_delete_rule(self, rec: dict[str, Any]) -> set[str]:
        rule = self.rng.choice(sorted(kernel.our_rules(self.lab.router), key=str))
        self.admin(rec, kernel.rule_delete_argv(rule))
        return self.owner(rule.get("table"))

    def fault_delete_route(self, rec: dict[str, Any]) -> set[str]:
        route = self.rng.choice(sorted(kernel.our_routes(self.lab.router), key=str))
        self.admin(rec, kernel.route_delete_argv(route))
        return self.owner(route.get("table"))

    def fault_sigkill(self, rec: dict[str, Any]) -> set[str]:
        t = time.monotonic()
        self.killed = True
        rec["returncode"] = self.daemon.stop(signal.SIGKILL)
        self.killed = False
        rec["layout_kept_while_dead"] = self.at_baseline()
        time.sleep(HOLD_S)
        self.daemon.start()
        rec["restart_writes"] = self.daemon.status().get("writes")
        rec["converge_ms"] = self.wait("baseline after the restart", self.at_baseline, t)
        return set()

    # after the soak
    def leftovers(self) -> dict[str, Any]:
        """The soak's kernel state against a fresh daemon's on the same lab (after a flush)."""
        self.wait("baseline at the end", self.at_baseline, time.monotonic())
        soak = self.layout()
        self.killed = True
        self.daemon.stop(signal.SIGTERM)
        after_stop = self.layout()
        flush = self.daemon.ctl("flush", "--config", str(self.daemon.config_path), check=False)
        flushed = self.layout()
        self.killed = False
        self.daemon.start()
        self.weights = dict(WEIGHTS)
        self.wait("a fresh daemon's layout", self.group_is(dict(WEIGHTS)), time.monotonic())
        time.sleep(2.0)
        fresh = self.layout()
        diff = soak.diff(fresh)
        return {
            "leftovers": diff["extra"],
            "missing_after_soak": diff["missing"],
            "sigterm_kept_layout": after_stop == soak,
            "flush_exit": flush.returncode,
            "after_flush": list(flushed.lines),
            "fresh_equals_baseline": fresh == self.baseline,
            "fresh_lines": len(fresh.lines),
        }


def run(args: argparse.Namespace) -> dict[str, Any]:
    seconds = 120.0 if args.short else args.seconds
    load_before = [round(x, 2) for x in os.getloadavg()]
    rng = random.Random(args.seed)
    windows: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="uplinkd-chaos-"))
    try:
        with Lab() as lab:
            wan = lab.add_isp("wan")  # the lab puts 10.101.0.2/24 on it, as networkd would
            lab.run("router", ["ip", "route", "add", "default", "via", str(wan.addresses.gateway4.ip),
                               "dev", "wan", "metric", "100"])  # fmt: skip
            lab.add_isp("lte1", address="none")
            lab.add_isp("stick", address="dhcp", ifname="usb0")
            lab.add_client()
            lab.start_server()
            soak = Soak(lab, workdir, args.seed)
            try:
                soak.start()
                say(f"baseline: {len(soak.baseline.lines)} lines; soaking {seconds:g} s, seed {args.seed}")
                began = time.monotonic()
                bag: list[str] = []
                while time.monotonic() - began < seconds:
                    if not bag:
                        bag = list(KINDS)
                        rng.shuffle(bag)
                    kind = bag.pop()
                    soak.rng = random.Random(rng.random())  # each window's own draws
                    try:
                        rec = soak.run_window(len(windows), kind)
                    except (LabError, control.ControlError) as e:  # a window that broke: on with the next
                        rec = {**soak.window, "error": f"{type(e).__name__}: {e}"[:2000]}
                        soak.check_daemon("after an error")
                    windows.append(rec)
                    say(f"{len(windows):3} {kind:14} {rec.get('target', ''):6} "
                        f"converge {rec.get('converge_ms')} "
                        f"recover {rec.get('recover_ms')} healthy lost {rec.get('healthy', {}).get('lost')} "
                        f"new-through-out {rec.get('new_flows', {}).get('through_out_uplink')} "
                        f"load {rec.get('loadavg', ['-'])[0]} {rec.get('error', '')}")
                soaked = time.monotonic() - began
                end = soak.leftovers()
            finally:
                soak.killed = True
                soak.daemon.stop()
                if args.keep_log:
                    shutil.copy(soak.daemon.log_path, args.keep_log)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "bench": "chaos",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": f"sudo python3 bench/chaos.py{' --short' if args.short else ''} --seed {args.seed}",
        "machine": {"kernel": platform.release(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "loadavg_before": load_before, "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "setup": {"uplinks": {"wan": "external", "lte1": "static", "stick": "dhcp (usb*, hot-plugged)"},
                  "weights": WEIGHTS, "probe_profile": "fast", "flows": {"tcp": FLOWS_TCP, "udp": FLOWS_UDP,
                  "interval_ms": INTERVAL_MS}, "new_flow_every_ms": POLL_EVERY_S * 1000,
                  "calm_hold_settle_s": [PRE_S, HOLD_S, SETTLE_S]},
        "soaked_s": round(soaked, 1),
        "crashes": soak.crashes,
        "summary": summarize(windows, soak.read_ms),
        "end": end,
        "events": sorted(soak.events.values(), key=lambda e: e["at"])[-200:],
        "windows": windows,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/chaos.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="~2 minutes of faults instead of 10")
    parser.add_argument("--seconds", type=float, default=600.0, help="how long to soak (default 600)")
    parser.add_argument("--seed", type=int, default=1, help="draws the faults and their targets")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--keep-log", type=Path, help="copy the daemon's log here at the end")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("chaos: needs root (network namespaces)", file=sys.stderr)
        return 2
    results = run(args)
    publish(results, args.output, table(results))
    return 1 if results["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
