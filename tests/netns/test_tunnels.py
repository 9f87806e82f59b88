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
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from uplinkd import control
from uplinkd.lab import Lab
from uplinkd.lab.launcher import LabDaemon
from uplinkd.tunnel.wireguard import PrivateKey

from harness.readback import wait_until
from harness.tunnel_lab import kill_pid, new_key, write_key

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.timeout(240),
]

SERVER = "198.51.100.100"
HOME_PORT = 51820
OUTSIDE4, OUTSIDE6 = "198.51.100.200", "2001:db8:100::200"
INNER_ROUTER, INNER_HOME = "10.99.0.2/24", "10.99.0.1/24"
NAMES = ("wan", "lte1")
WAIT = 30.0


def upstream(index: int) -> str:
    return f"198.51.100.{index}"


def uplink(index: int, *, v6: bool = False) -> dict[str, Any]:
    address: dict[str, Any] = {
        "mode": "static",
        "cidr": f"10.{100 + index}.0.2/24",
        "gateway": f"10.{100 + index}.0.1",
    }
    if v6:
        address.update(cidr6=f"2001:db8:{index}::2/64", gateway6=f"2001:db8:{index}::1")
    return {
        "match": {"name": NAMES[index - 1]},
        "address": address,
        "table": 100 + index,
        "probe": {"targets": [SERVER, upstream(index)]},
    }


class Home:
    """The home end: wireguard-go in the lab's internet namespace."""

    def __init__(self, lab: Lab, workdir: Path) -> None:
        self.lab = lab
        self.ifname = "wgh" + uuid.uuid4().hex[:8]
        self.key = new_key()
        self.public = PrivateKey(self.key).public_key.base64
        self.key_file = write_key(workdir / "home.key", self.key)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, router_public: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.inet, "wireguard-go", "-f", self.ifname],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        sock = Path(f"/var/run/wireguard/{self.ifname}.sock")
        wait_until(sock.exists, timeout=10, what="home's wireguard-go socket")
        self.run(
            "wg", "set", self.ifname, "listen-port", str(HOME_PORT), "private-key", str(self.key_file),
            "peer", router_public, "allowed-ips", "10.99.0.2/32,192.168.50.0/24,fd50::/64",
        )  # fmt: skip
        for cmd in (
            f"address add {INNER_HOME} dev {self.ifname}",
            f"link set dev {self.ifname} up",
            f"route add 192.168.50.0/24 dev {self.ifname}",
            f"route add fd50::/64 dev {self.ifname}",
        ):
            self.run("ip", *cmd.split())

    def run(self, *argv: str) -> str:
        return subprocess.run(
            ["ip", "netns", "exec", self.lab.inet, *argv], check=True, capture_output=True, text=True
        ).stdout

    def endpoint(self) -> str:
        return self.run("wg", "show", self.ifname, "endpoints").split()[-1]

    def handshake(self) -> int:
        return int(self.run("wg", "show", self.ifname, "latest-handshakes").split()[-1])

    def stop(self) -> None:
        if self.proc is not None:
            kill_pid(self.proc.pid)
            self.proc.wait()


def count_at_isps(lab: Lab) -> None:
    """At every ISP, count what arrives from the router, before the fault chain drops it."""
    for isp in lab.isps:
        script = f"""
table inet tuntest {{
    chain c {{
        type filter hook prerouting priority -400; policy accept;
        iifname "down" udp dport {HOME_PORT} counter comment "encrypted"
        iifname "down" ip daddr {OUTSIDE4} counter comment "leak4"
        iifname "down" ip6 daddr {OUTSIDE6} counter comment "leak6"
        iifname "down" counter comment "all"
    }}
}}
"""
        subprocess.run(
            ["ip", "netns", "exec", isp.netns, "nft", "-f", "-"], input=script, text=True, check=True
        )


def counters(lab: Lab, name: str) -> dict[str, int]:
    out = subprocess.run(
        ["ip", "netns", "exec", lab.isp(name).netns, "nft", "-j", "list", "chain", "inet", "tuntest", "c"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    found: dict[str, int] = {}
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule:
            packets = next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
            found[rule["comment"]] = int(packets)
    return found


class Counted:
    """What the ISPs count from now on (nft's inline counters cannot be reset: deltas)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.start = {isp.name: counters(lab, isp.name) for isp in lab.isps}

    def __getitem__(self, name: str) -> dict[str, int]:
        now = counters(self.lab, name)
        return {k: v - self.start[name].get(k, 0) for k, v in now.items()}


def router_wireguard_go(lab: Lab) -> list[int]:
    """Pids of the wireguard-go processes in the router (our daemon under test starts them)."""
    out = subprocess.run(["ip", "netns", "pids", lab.router], capture_output=True, text=True, check=False)
    found = []
    for pid in out.stdout.split():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "wireguard-go":
                found.append(int(pid))
        except OSError:
            continue
    return found


def kill_router_wireguard_go(lab: Lab) -> None:
    for pid in router_wireguard_go(lab):
        kill_pid(pid)


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        for name in NAMES:
            lab.add_isp(name, address="none")
        lab.add_client()
        lab.run("inet", ["ip", "address", "add", f"{OUTSIDE4}/32", "dev", "br0"])
        lab.run("inet", ["ip", "address", "add", f"{OUTSIDE6}/128", "dev", "br0", "nodad"])
        count_at_isps(lab)
        try:
            yield lab
        finally:
            kill_router_wireguard_go(lab)


@pytest.fixture
def home(lab: Lab, tmp_path: Path) -> Iterator[Home]:
    h = Home(lab, tmp_path)
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture
def setup(lab: Lab, home: Home, tmp_path: Path) -> Iterator[tuple[LabDaemon, str, dict[str, Any]]]:
    key_file = write_key(tmp_path / "router.key", new_key())
    router_public = PrivateKey(bytes(__import__("base64").b64decode(key_file.read_text()))).public_key.base64
    ifname = "wgt" + uuid.uuid4().hex[:8]
    cfg: dict[str, Any] = {
        "uplinks": {"wan": uplink(1, v6=True), "lte1": uplink(2)},
        "probe": {"profile": "fast"},
        "tunnels": {
            "home": {
                "interface": ifname,
                "private_key_file": str(key_file),
                "addresses": [INNER_ROUTER],
                "table": 150,
                "peers": [
                    {
                        "public_key": home.public,
                        "endpoint": f"{SERVER}:{HOME_PORT}",
                        # the endpoint lies inside AllowedIPs: the mark rule must keep it out
                        "allowed_ips": ["0.0.0.0/0"],
                        "keepalive": 1,
                    }
                ],
                "underlay": ["wan", "lte1"],
                "route": "full",
            }
        },
    }
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


def test_flows_inside_the_tunnel_survive_an_underlay_blackhole(
    lab: Lab, home: Home, setup: tuple[LabDaemon, str, dict[str, Any]]
) -> None:
    daemon, router_public, _ = setup
    home.start(router_public)
    daemon.start()
    for name in NAMES:
        wait_up(daemon, name)
    t = wait_tunnel(daemon, "up")
    assert t["underlay4"] == "wan"
    # the preference list: the encrypted packets leave by wan only, and reach home from
    # wan's ISP (no loop: a packet looping into the tunnel would never reach an ISP)
    seen = Counted(lab)
    time.sleep(2)
    assert seen["wan"]["encrypted"] > 0
    assert seen["lte1"]["encrypted"] == 0
    assert home.endpoint().startswith(upstream(1) + ":")

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

    # back to wan for new handshakes when it returns (fail_back immediate)
    lab.isp("wan").blackhole(False)
    wait_until(lambda: tunnel(daemon)["underlay4"] == "wan", timeout=WAIT, what="tunnel back on wan")


def leak_attempts(lab: Lab) -> None:
    """From the LAN client, for a few seconds: TCP, UDP and ICMP to OUTSIDE, IPv4 and IPv6."""
    script = f"""
import socket, time
end = time.monotonic() + 4
while time.monotonic() < end:
    for fam, dst in ((socket.AF_INET, "{OUTSIDE4}"), (socket.AF_INET6, "{OUTSIDE6}")):
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(fam, kind)
            s.settimeout(0.2)
            try:
                if kind == socket.SOCK_STREAM:
                    s.connect((dst, 80))
                else:
                    s.sendto(b"x", (dst, 53))
            except OSError:
                pass
            s.close()
    time.sleep(0.1)
"""
    client = lab.clients[0].netns
    pings = [
        subprocess.Popen(
            ["ip", "netns", "exec", client, "ping", "-n", "-c", "8", "-i", "0.5", "-W", "1", dst],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for dst in (OUTSIDE4, OUTSIDE6)
    ]
    subprocess.run(["ip", "netns", "exec", client, "python3", "-c", script], check=True, timeout=30)
    for p in pings:
        p.wait(timeout=30)


def test_kill_switch_leaks_nothing_v4_or_v6_while_home_is_unreachable(
    lab: Lab, setup: tuple[LabDaemon, str, dict[str, Any]]
) -> None:
    daemon, _, _ = setup  # home never starts: the tunnel stays down
    daemon.start()
    for name in NAMES:
        wait_up(daemon, name)
    assert tunnel(daemon)["state"] == "down"
    seen = Counted(lab)
    leak_attempts(lab)
    for name in NAMES:
        got = seen[name]
        assert got["leak4"] == 0 and got["leak6"] == 0, (name, got)


def test_the_tunnel_carries_ipv4_and_refuses_ipv6_around_it(
    lab: Lab, home: Home, setup: tuple[LabDaemon, str, dict[str, Any]]
) -> None:
    """Up, IPv4-only tunnel, wan has native IPv6: LAN IPv4 reaches OUTSIDE through the
    tunnel (never in clear at an ISP), LAN IPv6 goes nowhere."""
    daemon, router_public, _ = setup
    home.start(router_public)
    daemon.start()
    for name in NAMES:
        wait_up(daemon, name)
    wait_tunnel(daemon, "up")
    seen = Counted(lab)
    client = lab.clients[0].netns
    ping = ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", OUTSIDE4]
    ok = subprocess.run(["ip", "netns", "exec", client, *ping], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout
    leak_attempts(lab)
    for name in NAMES:
        got = seen[name]
        assert got["leak4"] == 0 and got["leak6"] == 0, (name, got)


def test_restart_writes_nothing_and_flush_removes_only_the_tunnel(
    lab: Lab, home: Home, setup: tuple[LabDaemon, str, dict[str, Any]]
) -> None:
    daemon, router_public, _ = setup
    home.start(router_public)
    daemon.start()
    for name in NAMES:
        wait_up(daemon, name)
    ifname = wait_tunnel(daemon, "up")["interface"]
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
