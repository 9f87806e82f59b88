"""A WireGuard tunnel home that rides the healthy uplinks, end to end on the real kernel.

The lab's router has two uplinks (wan, lte1); "home" is a wireguard-go peer in the lab's
internet namespace (the server's), listening on the server's address, that routes the LAN
prefix back into its tunnel. The router's tunnel is wireguard-go started by uplinkd's
worker. Every ISP counts, before its fault chain, what arrives from the router: the
tunnel's encrypted packets (UDP to home's port) and anything addressed to OUTSIDE (an
address the LAN client tries to reach around the tunnel), so "left by this uplink" is read
at the ISP, not inferred from the router's tables.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from uplinkd import control
from uplinkd.lab import Lab
from uplinkd.lab.launcher import LabDaemon

from harness.readback import wait_until
from harness.tunnel_home import (
    HOME_PORT,
    LAN_INNER6,
    NAMES,
    OUTSIDE4,
    Counted,
    Home,
    home_peer,
    leak_attempts,
    router_config,
    router_wireguard_go,
    tunnel_lab,
    upstream,
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.timeout(240),
]

WAIT = 30.0


@pytest.fixture
def lab() -> Iterator[Lab]:
    with tunnel_lab() as lab:
        yield lab


@pytest.fixture
def home(lab: Lab, tmp_path: Path) -> Iterator[Home]:
    with home_peer(lab, tmp_path) as h:
        yield h


@pytest.fixture
def setup(lab: Lab, home: Home, tmp_path: Path) -> Iterator[tuple[LabDaemon, str, dict[str, Any]]]:
    cfg, router_public = router_config(tmp_path, home)
    daemon = LabDaemon(lab.router, cfg, workdir=tmp_path)
    try:
        yield daemon, router_public, cfg
    finally:
        daemon.stop()


def status(c: LabDaemon) -> dict[str, Any]:
    return dict(control.call(c.socket, {"command": "status"}))


def tunnel(c: LabDaemon) -> dict[str, Any]:
    return dict(status(c)["tunnels"][0])


def wait_tunnel(c: LabDaemon, state: str) -> dict[str, Any]:
    return dict(
        wait_until(
            lambda: tunnel(c) if tunnel(c)["state"] == state else None,
            timeout=WAIT,
            what=f"tunnel {state} (log {c.log_path})",
        )
    )


def wait_up(c: LabDaemon, name: str) -> None:
    def up() -> bool:
        return any(u["name"] == name and u["state"] == "up" for u in status(c)["uplinks"])

    wait_until(up, timeout=WAIT, what=f"uplink {name} up")


def tunnel_running(home: Home, setup: tuple[LabDaemon, str, dict[str, Any]]) -> dict[str, Any]:
    """Home answering, the daemon started, both uplinks and the tunnel up: the tunnel's status."""
    daemon, router_public, _ = setup
    home.start(router_public)
    daemon.start()
    for name in NAMES:
        wait_up(daemon, name)
    return wait_tunnel(daemon, "up")


def explain_lan(daemon: LabDaemon) -> tuple[str, str]:
    """`uplinkctl explain` for a LAN client's packet to the server: its tunnel, and the
    uplink the tunnel's encrypted packets leave by."""
    out = daemon.ctl("explain", "--iif", "lan0", "--from", "192.168.50.11", "198.51.100.100", "--json")
    ex = json.loads(out.stdout)
    return ex.get("tunnel"), ex.get("encrypted_via")


def assert_nothing_leaks_while_down(lab: Lab, daemon: LabDaemon, *, audit_names: str) -> None:
    """Start the daemon with home unreachable: the tunnel is down, `audit` passes and its
    report names `audit_names`, and the LAN client's leak attempts reach no ISP."""
    daemon.start()
    for name in NAMES:
        wait_up(daemon, name)
    assert tunnel(daemon)["state"] == "down"
    audited = daemon.ctl("audit", "--config", str(daemon.config_path), check=False)
    assert audited.returncode == 0 and audit_names in audited.stdout, audited.stdout + audited.stderr
    seen = Counted(lab)
    leak_attempts(lab)
    for name in NAMES:
        got = seen[name]
        assert got["leak4"] == 0 and got["leak6"] == 0, (name, got)


def test_flows_inside_the_tunnel_survive_an_underlay_blackhole(
    lab: Lab, home: Home, setup: tuple[LabDaemon, str, dict[str, Any]]
) -> None:
    daemon = setup[0]
    t = tunnel_running(home, setup)
    assert t["underlay4"] == "wan"
    # the preference list: the encrypted packets leave by wan only, and reach home from
    # wan's ISP (no loop: a packet looping into the tunnel would never reach an ISP)
    seen = Counted(lab)
    time.sleep(2)
    assert seen["wan"]["encrypted"] > 0
    assert seen["lte1"]["encrypted"] == 0
    assert home.endpoint().startswith(upstream(1) + ":")
    assert explain_lan(daemon) == ("home", "wan")

    run = lab.start_flows(tcp=5, udp=5, interval_ms=20, duration=10.0)
    time.sleep(2)
    lab.isp("wan").blackhole()
    report = run.result()
    assert report.reconnects() == 0, report
    assert all(f.received > 0 and f.reconnects == 0 for f in report.flows), report
    assert all(f.proto == "udp" or f.lost == 0 for f in report.flows), report  # TCP: nothing lost
    # the longest silence inside the tunnel, for the record (timing is the benchmark's business)
    print(f"max gap inside the tunnel: {report.max_gap_ms():.0f} ms, lost {report.lost()} of {report.sent()}")
    assert tunnel(daemon)["underlay4"] == "lte1"

    # afterwards: nothing encrypted leaves by wan; lte1 carries it, with lte1's address
    seen = Counted(lab)
    time.sleep(3)
    assert seen["wan"]["encrypted"] == 0
    assert seen["lte1"]["encrypted"] > 0
    assert home.endpoint().startswith(upstream(2) + ":")
    assert explain_lan(daemon) == ("home", "lte1")

    # back to wan for new handshakes when it returns (fail_back immediate)
    lab.isp("wan").blackhole(False)
    wait_until(lambda: tunnel(daemon)["underlay4"] == "wan", timeout=WAIT, what="tunnel back on wan")


def test_kill_switch_leaks_nothing_v4_or_v6_while_home_is_unreachable(
    lab: Lab, setup: tuple[LabDaemon, str, dict[str, Any]]
) -> None:
    daemon, _, _ = setup  # home never starts: the tunnel stays down
    assert_nothing_leaks_while_down(lab, daemon, audit_names="ok: lan0")


def test_a_steering_rule_does_not_take_lan_traffic_around_a_full_tunnel(
    lab: Lab, setup: tuple[LabDaemon, str, dict[str, Any]]
) -> None:
    """A policy steers the LAN to wan (issue 12): the full tunnel's route still comes first,
    so with the tunnel down the kill switch holds for the steered traffic too, and audit,
    which asks the kernel with each policy's mark, finds no path around the tunnel."""
    daemon, _, _ = setup  # home never starts: the tunnel stays down
    cfg = json.loads(json.dumps(daemon.config))
    cfg["policies"] = {"wired": {"tiers": [["wan"]], "table": 160}}
    cfg["rules"] = {"steer": [{"src": ["192.168.50.0/24", LAN_INNER6], "policy": "wired"}]}
    daemon.write_config(cfg)
    assert_nothing_leaks_while_down(lab, daemon, audit_names="policy wired")


def test_the_tunnel_carries_ipv4_and_refuses_ipv6_around_it(
    lab: Lab, home: Home, setup: tuple[LabDaemon, str, dict[str, Any]]
) -> None:
    """Up, IPv4-only tunnel, wan has native IPv6: LAN IPv4 reaches OUTSIDE through the
    tunnel (never in clear at an ISP), LAN IPv6 goes nowhere."""
    tunnel_running(home, setup)
    seen = Counted(lab)
    client = lab.clients[0].netns
    ping = ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", OUTSIDE4]
    ok = subprocess.run(["ip", "netns", "exec", client, *ping], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout
    leak_attempts(lab)
    for name in NAMES:
        got = seen[name]
        assert got["leak4"] == 0 and got["leak6"] == 0, (name, got)


def test_the_tunnels_own_packets_leave_with_only_the_tunnels_mark(
    lab: Lab, home: Home, setup: tuple[LabDaemon, str, dict[str, Any]]
) -> None:
    """The encrypted packets are routed by the tunnel's `fwmark T/T` rule, so the output hook
    leaves their mark as the socket set it: restoring the uplink's bits from the ct mark would
    change it and make the kernel route each packet a second time. Their connection carries
    the tunnel's bits and wan's in its ct mark (a move off a healthy uplink deletes just that
    entry). Counted after uplinkd's output chain, on their way to home."""
    tunnel_running(home, setup)
    t = 1 << 31  # the only tunnel's default mark
    wan = 101 << 8  # wan's uplink mark (table 101)
    counting = (
        "table inet markcheck {\n chain out {\n  type filter hook output priority 0; policy accept;\n"
        f"  udp dport {HOME_PORT} meta mark {t:#x} counter\n"
        f"  udp dport {HOME_PORT} meta mark != {t:#x} counter\n"
        f"  udp dport {HOME_PORT} ct mark & {t | 0xFF00:#x} == {t | wan:#x} counter\n }}\n}}\n"
    )
    lab.run("router", ["nft", "-f", "-"], input=counting)
    ping = ["ping", "-n", "-c", "5", "-i", "0.2", "-W", "2", OUTSIDE4]
    ok = lab.run(lab.clients[0].netns, ping, check=False)
    assert ok.returncode == 0, ok.stdout
    listing = json.loads(lab.run("router", ["nft", "-j", "list", "chain", "inet", "markcheck", "out"]).stdout)
    own, other, ct_marked = (
        next(e["counter"]["packets"] for e in item["rule"]["expr"] if "counter" in e)
        for item in listing["nftables"]
        if "rule" in item
    )
    assert own >= 5 and other == 0, (own, other)
    assert ct_marked == own, (ct_marked, own)


def test_restart_writes_nothing_and_flush_removes_only_the_tunnel(
    lab: Lab, home: Home, setup: tuple[LabDaemon, str, dict[str, Any]]
) -> None:
    daemon = setup[0]
    ifname = tunnel_running(home, setup)["interface"]
    # mtu auto: the uplinks' 1500 minus WireGuard over IPv4 (the endpoint's family)
    assert json.loads(lab.run("router", ["ip", "-j", "link", "show", ifname]).stdout)[0]["mtu"] == 1440
    handshake = home.handshake()
    daemon.stop(signal.SIGTERM)
    links_before = lab.run("router", ["ip", "-o", "link", "show"]).stdout
    assert ifname in links_before  # fail static: the tunnel outlives the daemon
    daemon.start()
    wait_tunnel(daemon, "up")
    time.sleep(2)
    assert status(daemon)["writes"] == 0, daemon.writes()
    assert home.handshake() == handshake
    shown = daemon.ctl("status").stdout
    assert "TUNNEL" in shown and ifname in shown, shown

    flushed = daemon.ctl("flush")
    assert flushed.returncode == 0, flushed.stderr
    links = lab.run("router", ["ip", "-o", "link", "show"]).stdout
    assert ifname not in links
    for name in (*NAMES, "lan0"):
        assert f" {name}:" in links or f" {name}@" in links
    wait_until(lambda: not router_wireguard_go(lab), timeout=10, what="the router's wireguard-go to end")


def test_without_the_kill_switch_the_same_traffic_leaks(
    lab: Lab, setup: tuple[LabDaemon, str, dict[str, Any]]
) -> None:
    """The control for the kill-switch test: its counters do see a leak when there is one."""
    daemon, _, _ = setup
    cfg = json.loads(json.dumps(daemon.config))
    cfg["tunnels"]["home"]["kill_switch"] = False
    daemon.write_config(cfg)
    daemon.start()
    for name in NAMES:
        wait_up(daemon, name)
    assert tunnel(daemon)["state"] == "down"
    seen = Counted(lab)
    leak_attempts(lab)
    assert sum(seen[n]["leak4"] for n in NAMES) > 0
    assert seen["wan"]["leak6"] > 0  # wan's native IPv6 carries LAN IPv6 around the tunnel
    # and `uplinkctl audit` names the path
    audited = daemon.ctl("audit", "--config", str(daemon.config_path), check=False)
    assert audited.returncode == 1, audited.stdout + audited.stderr
    assert "LEAK: lan0" in audited.stdout and "leaves by uplink wan" in audited.stdout, audited.stdout
