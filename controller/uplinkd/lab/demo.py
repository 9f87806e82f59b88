"""``uplinkd lab``: a one-minute tour of uplinkd on this machine, without any hardware.

    sudo uplinkd lab              # or: sudo python3 -m uplinkd.lab.demo

It builds a lab (network namespaces only: nothing on the host changes and no packet leaves
the lab), with a router that has three uplinks: ``wan`` (wired, weight 3) and ``lte1``,
``lte2`` (standing for two USB LTE sticks, weight 1 each), each behind its own ISP, a
server standing for the internet, and a LAN client.  Then, narrating each step:

1. starts the real daemon in the router namespace, as systemd would start it on a router;
2. shows ``uplinkctl status`` and ``uplinkctl explain`` for a LAN client's packet;
3. sends 100 flows from the client and counts them per uplink next to the weights;
4. drains ``lte1``: new flows avoid it, the flows already on it carry on without loss;
5. blackholes ``lte2`` at its ISP (carrier stays up, the LTE network is gone): the probes
   take it out of service, its flows move to live uplinks, the others are not disturbed;
6. tears everything down (also on failure or Ctrl-C).

Exit status: 0 when every step behaved as described; 1 when one did not (the step and
what was seen are printed, and the daemon's log); 2 when it cannot run here (not root,
missing tools).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from uplinkd.lab.addresses import SERVER4
from uplinkd.lab.flows import FlowReport
from uplinkd.lab.launcher import LabDaemon
from uplinkd.lab.netns import LabError, wait_until
from uplinkd.lab.topology import LAN_BRIDGE, Lab

T = TypeVar("T")

PROBE_TARGET = str(SERVER4.ip)
WEIGHTS = {"wan": 3, "lte1": 1, "lte2": 1}
TABLES = {"wan": 101, "lte1": 102, "lte2": 103}
TOOLS = {"ip": "iproute2", "tc": "iproute2", "nft": "nftables", "sysctl": "procps"}
READY_TIMEOUT_S = 20.0
STATE_TIMEOUT_S = 10.0
BUSY_RETRIES = 5


class DemoError(Exception):
    """A step did not behave as the demo says it does."""


def demo_config() -> dict[str, Any]:
    """The router's uplinkd config: wan learned from someone else's setup, the LTE sticks
    given static addresses by uplinkd itself, every uplink probed with the fast profile."""
    probe = {"targets": [PROBE_TARGET], "profile": "fast"}
    return {
        "uplinks": {
            "wan": {
                "match": {"name": "wan"},
                "address": {"mode": "external"},
                "table": TABLES["wan"],
                "weight": WEIGHTS["wan"],
                "probe": probe,
            },
            "lte1": {
                "match": {"name": "lte1"},
                "address": {"mode": "static", "cidr": "10.102.0.2/24", "gateway": "10.102.0.1"},
                "table": TABLES["lte1"],
                "weight": WEIGHTS["lte1"],
                "probe": probe,
            },
            "lte2": {
                "match": {"name": "lte2"},
                "address": {"mode": "static", "cidr": "10.103.0.2/24", "gateway": "10.103.0.1"},
                "table": TABLES["lte2"],
                "weight": WEIGHTS["lte2"],
                "probe": probe,
            },
        },
        "balance": {"table": 200},
    }


# --- narration ---------------------------------------------------------------------------------


class Narrator:
    def __init__(self, total: int) -> None:
        self.total = total
        self.step = 0
        self.title = "starting"
        self.started = time.monotonic()

    def heading(self, title: str) -> None:
        self.step += 1
        self.title = title
        print(f"\n[{self.step}/{self.total}] {title}  (t={self.elapsed():.1f} s)", flush=True)

    def say(self, text: str = "") -> None:
        for line in text.splitlines() or [""]:
            print(f"    {line}".rstrip(), flush=True)

    def command(self, shown: str, output: str) -> None:
        self.say(f"$ {shown}")
        self.say(output.rstrip("\n"))

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def _poll(predicate: Callable[[], T | None], *, timeout: float, what: str) -> T:
    try:
        return wait_until(predicate, timeout=timeout, what=what, interval=0.05)  # type: ignore[return-value]
    except LabError as e:
        raise DemoError(str(e)) from None


# --- the daemon ----------------------------------------------------------------------------------


def uplinks(daemon: LabDaemon) -> dict[str, dict[str, Any]]:
    status = daemon.status_or_none() or {"uplinks": []}
    return {u["name"]: u for u in status["uplinks"]}


def wait(daemon: LabDaemon, what: str, predicate: Callable[[dict[str, dict[str, Any]]], bool],
         timeout: float) -> None:  # fmt: skip
    _poll(lambda: predicate(uplinks(daemon)), timeout=timeout, what=what)


def ctl(daemon: LabDaemon, *args: str) -> str:
    """``uplinkctl ARGS`` inside the router namespace; its stdout.

    A request the daemon answers with "busy" is asked again: `explain` shares the
    daemon's netlink socket with its reconcile pass and can collide with a dump."""
    for attempt in range(BUSY_RETRIES + 1):
        daemon.check_alive()
        done = daemon.ctl(*args, check=False)
        if done.returncode == 0:
            return done.stdout
        if "resource busy" not in done.stderr or attempt == BUSY_RETRIES:
            break
        time.sleep(0.1)
    raise DemoError(f"uplinkctl {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")


def _all_up(ups: dict[str, dict[str, Any]]) -> bool:
    return len(ups) == len(WEIGHTS) and all(u["state"] == "up" and u["in_group"] for u in ups.values())


# --- the story -----------------------------------------------------------------------------------


def _spread_table(report: FlowReport, weights: dict[str, int]) -> str:
    counts = report.by_uplink()
    total = sum(counts.values())
    wsum = sum(weights.values())
    rows = [("uplink", "weight", "expected", "flows", "share")]
    for name in sorted(set(weights) | set(counts), key=lambda n: (n not in weights, n)):
        w = weights.get(name, 0)
        n = counts.get(name, 0)
        rows.append(
            (name, str(w) if w else "-", f"{100 * w / wsum:.0f}%" if wsum else "-", str(n),
             f"{100 * n / total:.0f}%" if total else "-")
        )  # fmt: skip
    return _table(rows)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _flows_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items()) or "none"


def story(lab: Lab, daemon: LabDaemon, say: Narrator) -> None:
    say.heading("Building the lab: a router with three uplinks, their ISPs, a server, a LAN client")
    wan = lab.add_isp("wan")  # the lab puts 10.101.0.2/24 on the router's wan, as networkd would
    lab.add_isp("lte1", address="none")  # uplinkd itself puts the address on these two
    lab.add_isp("lte2", address="none")
    client = lab.add_client()
    # someone else's default route for wan (a DHCP client's, say); uplinkd learns wan from it
    lab.run("router", ["ip", "route", "add", "default", "via", str(wan.addresses.gateway4.ip),
                       "dev", "wan", "metric", "100"])  # fmt: skip
    lab.start_server()
    say.say(f"namespaces: {', '.join(lab.namespaces)}")
    rows = [("uplink", "stands for", "ISP gateway", "weight", "address")]
    for isp in lab.isps:
        kind = "wired ISP" if isp.name == "wan" else "USB LTE stick"
        how = "learned (external)" if isp.name == "wan" else "static, set by uplinkd"
        rows.append((isp.name, kind, str(isp.addresses.gateway4.ip), str(WEIGHTS[isp.name]), how))
    say.say(_table(rows))
    say.say(f"server ('the internet'): {PROBE_TARGET}   LAN client {client.name}: "
            f"{client.addresses.host4.ip}")  # fmt: skip

    say.heading("Starting uplinkd in the router namespace")
    say.say(f"$ uplinkd --config {daemon.config_path}   (log: {daemon.log_path})")
    say.say(f"every uplink is probed with ICMP to {PROBE_TARGET} (profile 'fast'), through itself only")
    start = time.monotonic()
    try:
        daemon.start(timeout=READY_TIMEOUT_S)
    except LabError as e:
        raise DemoError(str(e)) from None
    ready = time.monotonic() - start
    wait(daemon, "all three uplinks up and in the balance group", _all_up, READY_TIMEOUT_S)
    say.say(f"answering after {ready:.1f} s; all three uplinks up after {time.monotonic() - start:.1f} s")

    say.heading("What uplinkd set up")
    say.command("uplinkctl status", ctl(daemon, "status"))
    say.say()
    src = str(client.addresses.host4.ip)
    say.command(
        f"uplinkctl explain {PROBE_TARGET} --from {src} --iif {LAN_BRIDGE} --ipproto tcp --sport 40000 "
        "--dport 443",
        ctl(daemon, "explain", PROBE_TARGET, "--from", src, "--iif", LAN_BRIDGE,
                   "--ipproto", "tcp", "--sport", "40000", "--dport", "443"),
    )  # fmt: skip

    say.heading("100 new connections from the LAN client spread by weight")
    report = lab.flows(tcp=40, udp=60, interval_ms=50, duration=1.5)
    say.say(_spread_table(report, WEIGHTS))
    counts = report.by_uplink()
    if sum(counts.get(name, 0) for name in WEIGHTS) != 100:
        raise DemoError(f"not every flow got through an uplink: {counts}")
    if any(counts.get(name, 0) == 0 for name in WEIGHTS):
        raise DemoError(f"an uplink carried no flow: {counts}")
    if report.moved() or report.lost():
        raise DemoError(f"{len(report.moved())} flows moved and {report.lost()} packets were lost")
    say.say("each flow stays on the uplink it started on (the server saw one source address per flow)")

    say.heading("Draining lte1: new connections avoid it, existing ones carry on")
    before = lab.start_flows(tcp=20, udp=40, interval_ms=20, duration=4.0)
    say.command("uplinkctl drain lte1", ctl(daemon, "drain", "lte1"))
    after = lab.flows(tcp=20, udp=40, interval_ms=50, duration=1.5)
    old = before.result()
    on_lte1 = len(old.started_on("lte1"))
    say.say(f"flows started before the drain:  {_flows_text(old.by_uplink('first'))}")
    say.say(f"  ... still on the same uplink:  {len(old.flows) - len(old.moved())} of {len(old.flows)}, "
            f"{old.lost()} packets lost of {old.sent()}, {old.reconnects()} reconnects")  # fmt: skip
    say.say(f"flows started after the drain:   {_flows_text(after.by_uplink())}")
    if on_lte1 == 0:
        raise DemoError("no flow happened to start on lte1 before the drain; nothing to show")
    if old.moved() or old.lost() or old.reconnects():
        raise DemoError("draining disturbed existing connections")
    if "lte1" in after.by_uplink():
        raise DemoError("a new connection went out of the drained lte1")
    say.command("uplinkctl undrain lte1", ctl(daemon, "undrain", "lte1"))
    wait(daemon, "lte1 back in the group", _all_up, STATE_TIMEOUT_S)

    say.heading("lte2's network dies (blackholed at its ISP; carrier stays up)")
    flows = lab.start_flows(tcp=20, udp=40, interval_ms=20, duration=5.0)
    time.sleep(0.5)
    lab.isp("lte2").blackhole(True)
    cut = time.monotonic()
    wait(
        daemon,
        "lte2 to go down",
        lambda ups: ups.get("lte2", {}).get("state") == "down" and not ups["lte2"]["in_group"],
        STATE_TIMEOUT_S,
    )
    lte2 = uplinks(daemon)["lte2"]
    seen = time.monotonic() - lte2["since_s"] - cut  # when the daemon changed it, not when we looked
    say.say(f"lte2 taken out of service {seen:.1f} s after the cut: {lte2['reason']}")
    report = flows.result()
    hit = [f for f in report.flows if report.uplink(f.first_source) == "lte2"]
    others = [f for f in report.flows if report.uplink(f.first_source) in ("wan", "lte1")]
    moved_to = {report.uplink(f.last_source) for f in hit}
    say.say(f"{len(hit)} flows were on lte2: each went on via {', '.join(sorted(moved_to)) or '-'} "
            f"(TCP ones reconnected: {sum(f.reconnects for f in hit)} times); "
            f"longest silence {max((f.max_gap_ms for f in hit), default=0):.0f} ms")  # fmt: skip
    say.say(f"{len(others)} flows on wan and lte1: "
            f"{sum(f.lost for f in others)} packets lost, {sum(f.moved for f in others)} moved, "
            f"{sum(f.reconnects for f in others)} reconnects")  # fmt: skip
    if any(report.uplink(f.last_source) == "lte2" or f.last_source is None for f in hit):
        raise DemoError("a flow from the dead lte2 did not recover")
    if any(f.lost or f.moved or f.reconnects for f in others):
        raise DemoError("flows on healthy uplinks were disturbed")
    say.command("uplinkctl status", ctl(daemon, "status"))
    lab.isp("lte2").blackhole(False)
    start = time.monotonic()
    wait(daemon, "lte2 back up", _all_up, STATE_TIMEOUT_S)
    say.say(f"network back: lte2 up and in the group again after {time.monotonic() - start:.1f} s")


STEPS = 7


def _preflight() -> str | None:
    if os.geteuid() != 0:
        return "needs root (it creates network namespaces); run it with sudo"
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        return f"missing tools; install them with: apt-get install {' '.join(missing)}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="uplinkd lab",
        description="A one-minute tour of uplinkd in network namespaces (needs root; changes nothing "
        "outside the lab).",
    )
    parser.add_argument("what", nargs="?", choices=["demo"], default="demo", help="what to run (demo)")
    parser.parse_args(argv)
    problem = _preflight()
    if problem is not None:
        print(f"uplinkd lab: {problem}", file=sys.stderr)
        return 2
    say = Narrator(STEPS)
    print("uplinkd lab: a router with a wired uplink and two LTE sticks, all in network namespaces")
    failure: str | None = None
    try:
        with Lab() as lab:
            daemon = LabDaemon(lab.router, demo_config(), workdir=lab.workdir)
            try:
                story(lab, daemon, say)
            except (DemoError, LabError, subprocess.SubprocessError, OSError, ValueError) as e:
                failure = f"step {say.step} ({say.title}): {e}"
                tail = daemon.log_tail(25)
                if tail:
                    failure += f"\n--- last lines of uplinkd's log ---\n{tail}"
            except KeyboardInterrupt:
                failure = "interrupted"
            finally:
                say.heading("Cleaning up: stopping uplinkd, deleting the lab's namespaces")
                code = daemon.stop()
                if code not in (None, 0) and failure is None:
                    failure = f"uplinkd exited with status {code} when stopped"
    except (LabError, OSError) as e:
        failure = f"{failure}\n" if failure else ""
        failure += f"cleanup: {e}"
    if failure is not None:
        print(f"\nuplinkd lab: FAILED at {failure}", file=sys.stderr)
        return 130 if failure == "interrupted" else 1
    print(f"\nDone in {say.elapsed():.1f} s; nothing is left behind.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
