#!/usr/bin/env python3
"""LAN IPv6 `extend`: how fast the LAN hears of a renumbered or lost uplink, and what a client's
new connections see meanwhile.

    sudo python3 bench/lan_extend.py [--repeat 5]

One LTE-like uplink (dnsmasq leases IPv4 and advertises a /64 that the ISP routes to the
router's link-local address; `fast` probes); a LAN client configured by the kernel's SLAAC from
uplinkd's RAs. The client opens a new UDP exchange with the server every 10 ms (a fresh
socket each time, so the kernel picks the source anew) and notes the source the server saw.
Per run, from the moment of the event (for renumbering, also when uplinkd's listener heard
the ISP's new RA: dnsmasq itself takes about a second to advertise an address change, which
is the ISP's share, not the router's):

- renumber: the ISP moves to another /64. Times until the client's old address is deprecated,
  until the server first sees the new /64, and the longest stretch without an answer (the
  client's IPv6 outage for new connections).
- blackhole: the ISP drops everything from the router while the client is busy (its exchanges
  go unanswered, so probing turns fast). Time until the client's RA default route is gone
  (router lifetime 0 once probes call the uplink down).
- unplug: the stick is pulled. Time until the client's default route is gone.

The client's side is timed by `ip -ts monitor` in its namespace (microseconds), uplinkd's
hearing of the ISP's RA by its own log (milliseconds). Prints JSON (also
bench/results/lan_extend.json) and a table. Needs root.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from uplinkd.lab import Lab
from uplinkd.lab.flows import DEFAULT_PORT
from uplinkd.lab.launcher import LabDaemon

import bootstrap  # noqa: F401 - harness on sys.path
from harness.readback import wait_until
from harness.stats import markdown_table, publish, summary

RESULTS = Path(__file__).resolve().parent / "results" / "lan_extend.json"
PREFIXES = (IPv6Network("2001:db8:1::/64"), IPv6Network("2001:db8:1:1::/64"))
SERVER6 = "2001:db8:100::100"
POLL_S = 0.005
TIMEOUT_S = 15.0

PROBER = """
import json, socket, sys, time
end = time.monotonic() + float(sys.argv[2])
seq = 0
while time.monotonic() < end:
    seq += 1
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.settimeout(0.01)
    sent = time.monotonic()
    seen = None
    try:
        s.sendto(b"%d" % seq, (sys.argv[1], int(sys.argv[3])))
        seen = s.recv(200).split()[1].decode()
    except OSError:
        pass
    s.close()
    print(json.dumps([sent, seen]), flush=True)
    time.sleep(max(0.0, 0.01 - (time.monotonic() - sent)))
"""


def config() -> dict[str, Any]:
    return {
        "uplinks": {
            "lte1": {
                "match": {"name": "lte1"},
                "address": {"mode": "dhcp"},
                "table": 101,
                "probe": {"targets": ["198.51.100.100", SERVER6]},
            }
        },
        "probe": {"profile": "fast"},
        "lan": {"lan0": {"ipv6": {"mode": "extend", "uplink": "lte1"}}},
    }


def client_addresses(lab: Lab) -> list[dict[str, Any]]:
    out = lab.run("lan1", ["ip", "-6", "-json", "address", "show", "dev", "eth0", "scope", "global"]).stdout
    return [i for e in json.loads(out or "[]") for i in e.get("addr_info", []) if "local" in i]


def has(lab: Lab, prefix: IPv6Network, *, deprecated: bool) -> bool:
    return any(
        IPv6Address(i["local"]) in prefix
        and bool(i.get("deprecated")) == deprecated
        and not i.get("tentative")
        for i in client_addresses(lab)
    )


def no_default(lab: Lab) -> bool:
    return lab.run("lan1", ["ip", "-6", "route", "show", "default"]).stdout.strip() == ""


def until(check: Callable[[], bool], since: float) -> float:
    """Milliseconds from `since` until `check()` holds (polled)."""
    deadline = time.monotonic() + TIMEOUT_S
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(check)
        time.sleep(POLL_S)
    return round((time.monotonic() - since) * 1000, 1)


class Monitor:
    """`ip -ts -6 monitor address route` in the client: when the kernel changed what, to the
    microsecond (wall clock, as the daemon's log)."""

    def __init__(self, lab: Lab, path: Path) -> None:
        self.lab, self.path = lab, path
        with path.open("w") as out:
            self.proc = lab.popen("lan1", ["ip", "-ts", "-6", "monitor", "address", "route"], stdout=out)
        time.sleep(0.2)

    def stop(self) -> list[tuple[float, str]]:
        self.lab.stop(self.proc)
        events: list[tuple[float, str]] = []
        for line in self.path.read_text().splitlines():
            if line.startswith("[") and "]" in line:
                stamp, text = line[1:].split("]", 1)
                events.append((_wall(stamp.replace("T", " ")), text.strip()))
            elif events:  # a continuation line (lifetimes)
                events[-1] = (events[-1][0], events[-1][1] + " " + line.strip())
        return events


def _wall(stamp: str) -> float:
    """A local 'YYYY-MM-DD HH:MM:SS[.ffffff|,mmm]' as seconds since the epoch."""
    head, _, frac = stamp.replace(",", ".").partition(".")
    return time.mktime(time.strptime(head.strip(), "%Y-%m-%d %H:%M:%S")) + float(f"0.{frac.strip() or 0}")


def first(events: list[tuple[float, str]], since: float, test: Callable[[str], bool]) -> float | None:
    """Milliseconds from `since` (wall clock) to the first event whose text passes `test`."""
    at = next((t for t, text in events if t >= since and test(text)), None)
    return round((at - since) * 1000, 1) if at is not None else None


def address_in(text: str, prefix: IPv6Network) -> bool:
    words = text.split()
    if "inet6" not in words or "Deleted" in words:
        return False
    return IPv6Address(words[words.index("inet6") + 1].split("/")[0]) in prefix


def heard_at(c: LabDaemon, prefix: IPv6Network, since: float) -> float | None:
    """Milliseconds from `since` until the daemon logged hearing its uplink's router offer
    `prefix` as preferred (its log's stamps are milliseconds)."""
    for line in c.log().splitlines():
        if " INFO lte1: router " not in line or f"{prefix} (preferred " not in line:
            continue
        if f"{prefix} (preferred 0 s" in line:
            continue
        at = _wall(line[:23])
        if at >= since:
            return round((at - since) * 1000, 1)
    return None


def gap_ms(answers: list[list[Any]]) -> float:
    """The longest stretch between two answered exchanges."""
    gap, last_ok = 0.0, None
    for at, seen in answers:
        if seen is not None:
            if last_ok is not None:
                gap = max(gap, at - last_ok)
            last_ok = at
    return round(gap * 1000, 1)


def start_prober(lab: Lab, seconds: float) -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", PROBER, SERVER6, str(seconds), str(DEFAULT_PORT)]
    return lab.popen("lan1", argv, stdout=subprocess.PIPE)


def answers_of(prober: subprocess.Popen[str]) -> list[list[Any]]:
    out, _ = prober.communicate(timeout=30)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def renumber(lab: Lab, c: LabDaemon, new: IPv6Network, old: IPv6Network, log: Path) -> dict[str, Any]:
    prober = start_prober(lab, 4.0)
    monitor = Monitor(lab, log)
    time.sleep(0.8)
    t0, wall0 = time.monotonic(), time.time()
    lab.isp("lte1").renumber6(new)
    until(lambda: has(lab, new, deprecated=False) and has(lab, old, deprecated=True), t0)
    answers = answers_of(prober)
    events = monitor.stop()
    first_new = next((at for at, seen in answers if at >= t0 and seen and IPv6Address(seen) in new), None)
    heard = heard_at(c, new, wall0)
    deprecated = first(events, wall0, lambda t: address_in(t, old) and " deprecated " in f" {t} ")
    return {
        "router_heard_ms": heard,
        "deprecated_ms": deprecated,
        "uplinkd_share_ms": round(deprecated - heard, 1) if deprecated is not None and heard else None,
        "server_sees_new_ms": round((first_new - t0) * 1000, 1) if first_new is not None else None,
        "outage_ms": gap_ms(answers),
        "probes": len(answers),
        "answered": sum(1 for _, seen in answers if seen),
    }


def default_gone(text: str) -> bool:
    return text.startswith("Deleted default via fe80:")


def one_run(lab: Lab, c: LabDaemon, index: int, log: Path) -> dict[str, Any]:
    old, new = PREFIXES[index % 2], PREFIXES[(index + 1) % 2]
    wait_until(
        lambda: has(lab, old, deprecated=False) and not no_default(lab), timeout=TIMEOUT_S, what="ready"
    )
    run: dict[str, Any] = {"renumber": renumber(lab, c, new, old, log)}
    isp = lab.isp("lte1")
    prober = start_prober(lab, 4.0)  # a client in use: probes turn fast when answers stop
    monitor = Monitor(lab, log)
    time.sleep(0.8)
    t0, wall0 = time.monotonic(), time.time()
    isp.blackhole()
    until(lambda: no_default(lab), t0)
    answers_of(prober)
    run["blackhole_router_lifetime_0_ms"] = first(monitor.stop(), wall0, default_gone)
    isp.blackhole(False)
    c.wait_state("lte1", "up", "degraded", timeout=TIMEOUT_S)
    wait_until(lambda: not no_default(lab), timeout=TIMEOUT_S, what="the default route back")
    monitor = Monitor(lab, log)
    t0, wall0 = time.monotonic(), time.time()
    lab.unplug("lte1")
    until(lambda: no_default(lab), t0)
    run["unplug_router_lifetime_0_ms"] = first(monitor.stop(), wall0, default_gone)
    lab.plug(isp, "lte1")
    c.wait_state("lte1", "up", "degraded", timeout=TIMEOUT_S)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/lan_extend.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    runs = []
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="uplinkd-bench-") as tmp:
        lab.add_isp("lte1", address="dhcp", ra=True, routed6=True)
        lab.add_client()
        lab.run("lan1", ["ip", "-6", "route", "del", "default"])
        lab.start_server()
        with LabDaemon(lab.router, config(), workdir=Path(tmp)) as c:
            c.wait_state("lte1", "up", "degraded", timeout=TIMEOUT_S)
            for i in range(args.repeat):
                runs.append(one_run(lab, c, i, Path(tmp) / "monitor.txt"))
        foreign = lab.isp("lte1").foreign_sources()
    stats = ("p50", "p95", "max", "n")

    def of(key: str, sub: str | None = None) -> dict[str, Any]:
        values = [r[key][sub] if sub else r[key] for r in runs]
        return summary([v for v in values if v is not None], stats=stats, digits=1)

    results = {
        "runs": runs,
        "renumber_router_heard_ms": of("renumber", "router_heard_ms"),
        "renumber_deprecated_ms": of("renumber", "deprecated_ms"),
        "renumber_uplinkd_share_ms": of("renumber", "uplinkd_share_ms"),
        "renumber_server_sees_new_ms": of("renumber", "server_sees_new_ms"),
        "renumber_outage_ms": of("renumber", "outage_ms"),
        "blackhole_router_lifetime_0_ms": of("blackhole_router_lifetime_0_ms"),
        "unplug_router_lifetime_0_ms": of("unplug_router_lifetime_0_ms"),
        "foreign_sources": foreign,
    }

    def cell(s: dict[str, Any]) -> str:
        return f"{s['p50']} / {s['p95']} / {s['max']}"

    table = markdown_table(
        [
            ["event (IPv6 extend, fast probes)", "what the client sees", "p50 / p95 / max (ms)"],
            ["ISP renumbers", "(uplinkd hears the ISP's RA)", cell(results["renumber_router_heard_ms"])],
            ["ISP renumbers", "old address deprecated", cell(results["renumber_deprecated_ms"])],
            [
                "ISP renumbers",
                "of which uplinkd (RA heard → deprecated)",
                cell(results["renumber_uplinkd_share_ms"]),
            ],
            ["ISP renumbers", "server sees the new /64", cell(results["renumber_server_sees_new_ms"])],
            ["ISP renumbers", "longest gap, new connections", cell(results["renumber_outage_ms"])],
            [
                "blackhole",
                "router lifetime 0 (default gone)",
                cell(results["blackhole_router_lifetime_0_ms"]),
            ],
            [
                "stick unplugged",
                "router lifetime 0 (default gone)",
                cell(results["unplug_router_lifetime_0_ms"]),
            ],
        ]
    )
    publish(results, RESULTS, table)


if __name__ == "__main__":
    main()
