"""LAN IPv6 `extend` and IPv6 by RA on `dhcp` uplinks, end to end (issue 13).

The ISP is a 3GPP-like network: dnsmasq leases IPv4 and advertises the ISP's /64 by RA, and
the ISP routes the whole /64 to the router's link-local address (``routed6`` with ``ra``),
passing IPv6 upstream unchanged, so the server sees exactly the source that left the router.
The LAN client configures itself by the kernel's SLAAC from uplinkd's own RAs (its static
default route is removed; it accepts RAs as a host does).

What is timed (how fast deprecation and router lifetime 0 reach the LAN, the client's outage)
is in bench/lan_extend.py; here only what the kernel holds and what the server sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from ipaddress import IPv6Address, IPv6Interface, IPv6Network
from pathlib import Path
from typing import Any

import pytest

from uplinkd import control
from uplinkd.lab import Lab
from uplinkd.lab.launcher import LabDaemon

from harness.readback import wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.timeout(180),
]

PREFIX = IPv6Network("2001:db8:1::/64")
RENUMBERED = IPv6Network("2001:db8:1:1::/64")
SERVER6 = "2001:db8:100::100"
TABLE = 101
WAIT = 20.0


def config(*, extend: bool = True) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "uplinks": {
            "lte1": {
                "match": {"name": "lte1"},
                "address": {"mode": "dhcp"},
                "table": TABLE,
                "probe": {"targets": ["198.51.100.100", SERVER6]},
            }
        },
        "probe": {"profile": "fast"},
        "balance": {"table": 200},
    }
    if extend:
        cfg["lan"] = {"lan0": {"ipv6": {"mode": "extend", "uplink": "lte1"}}}
    return cfg


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        lab.add_isp("lte1", address="dhcp", ra=True, routed6=True, ra_mtu=1428)
        lab.add_client()
        # a host on the LAN: its IPv6 default route comes by RA, not by hand
        lab.run("lan1", ["ip", "-6", "route", "del", "default"])
        lab.run("lan1", ["sysctl", "-qw", "net.ipv6.conf.eth0.accept_ra=1", "net.ipv6.conf.eth0.autoconf=1"])
        yield lab


@pytest.fixture
def daemon(
    lab: Lab, make_controller: Callable[[dict[str, Any]], LabDaemon]
) -> Callable[[dict[str, Any]], LabDaemon]:
    """A started daemon for a config, stopped at the end (conftest's `make_controller`)."""

    def make(cfg: dict[str, Any]) -> LabDaemon:
        c = make_controller(cfg)
        c.start()
        c.wait_state("lte1", "up", "degraded", timeout=WAIT)  # a loaded machine may lose a probe
        return c

    return make


def addresses(lab: Lab, role: str, dev: str) -> list[dict[str, Any]]:
    out = lab.run(role, ["ip", "-6", "-json", "address", "show", "dev", dev, "scope", "global"]).stdout
    entries = json.loads(out or "[]")
    return [info for entry in entries for info in entry.get("addr_info", []) if "local" in info]


def slaac(lab: Lab, prefix: IPv6Network, *, deprecated: bool = False) -> IPv6Address | None:
    """The client's SLAAC address in `prefix` (deprecated or preferred, as asked)."""
    for info in addresses(lab, "lan1", "eth0"):
        address = IPv6Address(info["local"])
        if address in prefix and bool(info.get("deprecated")) == deprecated and not info.get("tentative"):
            return address
    return None


def client_default(lab: Lab) -> list[dict[str, Any]]:
    out = lab.run("lan1", ["ip", "-6", "-json", "route", "show", "default"]).stdout
    return list(json.loads(out or "[]"))


def ipv6_state(lab: Lab) -> str:
    """What client, router and ISP hold for IPv6 (addresses, routes, neighbours, rules), for
    a failure's message."""
    show = "ip -6 address; ip -6 route show table all; ip -6 neigh; ip -6 rule"
    roles = (("client", "lan1"), ("router", "router"), ("isp", lab.isp("lte1").netns))
    outs = [f"--- {what}:\n{lab.run(ns, ['sh', '-c', show], check=False).stdout}" for what, ns in roles]
    return "\n".join(outs)


def sources(lab: Lab) -> set[str]:
    report = lab.flows(tcp=3, udp=3, duration=0.6, family=6)
    if report.lost():
        raise AssertionError(f"{report.lost()} lost: {report.by_uplink()}\n{ipv6_state(lab)}")
    return {flow.last_source or "" for flow in report.flows}


def test_extend_gives_the_lan_the_uplinks_64_by_slaac_and_the_server_sees_it_unchanged(
    lab: Lab, daemon: Any
) -> None:
    c = daemon(config())
    client = wait_until(lambda: slaac(lab, PREFIX), timeout=WAIT, what="a SLAAC address in the uplink's /64")
    assert sources(lab) == {str(client)}
    assert lab.isp("lte1").foreign_sources() == {"ipv4": 0, "ipv6": 0}

    # the uplink: no address and no on-link route for the /64 (it lives on the LAN now), the
    # RA's router in the uplink's table only, and the RA's MTU
    assert [a["local"] for a in addresses(lab, "router", "lte1")] == []
    routes = json.loads(lab.run("router", ["ip", "-6", "-json", "route", "show", "dev", "lte1"]).stdout)
    assert [r for r in routes if r["dst"] == str(PREFIX)] == []
    assert lab.run("router", ["ip", "-6", "route", "show", "default", "table", "main"]).stdout.strip() == ""
    table = lab.run("router", ["ip", "-6", "-json", "route", "show", "table", str(TABLE)]).stdout
    (default,) = json.loads(table)
    assert default["dst"] == "default" and IPv6Address(default["gateway"]).is_link_local, default
    assert default["dev"] == "lte1" and default["protocol"] in ("77", "uplinkd"), default
    assert lab.run("router", ["sysctl", "-n", "net.ipv6.conf.lte1.mtu"]).stdout.strip() == "1428"
    # the LAN: the router's address in the /64, and the client's MTU from uplinkd's RA
    on_lan = {f"{a['local']}/{a['prefixlen']}" for a in addresses(lab, "router", "lan0")}
    assert f"{PREFIX.network_address + 1}/64" in on_lan
    assert lab.run("lan1", ["sysctl", "-n", "net.ipv6.conf.eth0.mtu"]).stdout.strip() == "1428"
    (route,) = client_default(lab)
    assert route["protocol"] == "ra" and IPv6Address(route["gateway"]).is_link_local, route

    st = control.call(c.socket, {"command": "status"})
    (lan,) = st["lan"]
    assert lan["mode"] == "extend" and lan["prefixes"] == [str(PREFIX)], lan
    (up,) = st["uplinks"]
    assert up["prefixes6"] == [str(PREFIX)], up
    assert f"extend lte1's {PREFIX}" in c.ctl("status").stdout


def test_a_restart_writes_nothing(lab: Lab, daemon: Any) -> None:
    c = daemon(config())
    wait_until(lambda: slaac(lab, PREFIX), timeout=WAIT, what="a SLAAC address")
    wait_until(lambda: c.status()["writes"] > 0 and not c.status()["pending"], what="settled")
    assert c.stop() == 0
    c.start()
    status = c.status()
    assert status["passes"] >= 1 and status["writes"] == 0, c.log()[-3000:]


def test_renumbering_deprecates_the_old_prefix_and_losing_the_uplink_ends_the_default_route(
    lab: Lab, daemon: Any
) -> None:
    c = daemon(config())
    old = wait_until(lambda: slaac(lab, PREFIX), timeout=WAIT, what="a SLAAC address in the first /64")
    lab.isp("lte1").renumber6(RENUMBERED)
    new = wait_until(lambda: slaac(lab, RENUMBERED), timeout=WAIT, what="a SLAAC address in the new /64")
    wait_until(lambda: slaac(lab, PREFIX, deprecated=True), timeout=WAIT, what="the old address deprecated")
    assert sources(lab) == {str(new)}  # new connections take the new prefix
    assert IPv6Interface(f"{PREFIX.network_address + 1}/64").ip not in {
        IPv6Address(a["local"]) for a in addresses(lab, "router", "lan0")
    }
    assert lab.isp("lte1").foreign_sources() == {"ipv4": 0, "ipv6": 0}
    assert old != new
    (lan,) = c.status()["lan"]
    assert (lan["prefixes"], lan["deprecated"], lan["router_lifetime"]) == (
        [str(RENUMBERED)],
        [str(PREFIX)],
        1800,
    )

    lab.unplug("lte1")
    wait_until(lambda: client_default(lab) == [], timeout=WAIT, what="router lifetime 0 on the LAN")
    wait_until(lambda: slaac(lab, RENUMBERED, deprecated=True), timeout=WAIT, what="the prefix deprecated")
    (lan,) = c.status()["lan"]
    assert lan["router_lifetime"] == 0 and lan["prefixes"] == [], lan
    assert str(RENUMBERED) in lan["deprecated"] and "the uplink is not there" in lan["reason"], lan


def test_a_dhcp_uplink_takes_its_ipv6_by_ra_into_its_own_table_only(lab: Lab, daemon: Any) -> None:
    """No `lan` section: the uplink keeps its SLAAC address and on-link route; the RA's router
    is in T_u (never main), its MTU is the uplink's IPv6 MTU, and the router reaches the server."""
    daemon(config(extend=False))

    def slaac_on_uplink() -> list[str]:
        return [a["local"] for a in addresses(lab, "router", "lte1") if IPv6Address(a["local"]) in PREFIX]

    wait_until(slaac_on_uplink, timeout=WAIT, what="a SLAAC address on the uplink")
    assert lab.run("router", ["sysctl", "-n", "net.ipv6.conf.lte1.accept_ra"]).stdout.strip() == "2"
    assert lab.run("router", ["ip", "-6", "route", "show", "default", "table", "main"]).stdout.strip() == ""
    show = ["ip", "-6", "route", "show", "table", str(TABLE)]
    wait_until(lambda: "default via fe80:" in lab.run("router", show).stdout, what="the RA's router in T_u")
    assert lab.run("router", ["sysctl", "-n", "net.ipv6.conf.lte1.mtu"]).stdout.strip() == "1428"
    ping = lab.run(
        "router", ["ping", "-6", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", SERVER6], check=False
    )
    assert ping.returncode == 0, ping.stdout


ECHO = """
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", 7007))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(4096)
    s.sendto(data, peer)
"""

TRIES = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(2.0)
got = 0
for _ in range(12):
    s.sendto(b"x" * 1400, (sys.argv[1], 7007))
    try:
        data, _ = s.recvfrom(4096)
        got += len(data) == 1400
    except OSError:
        pass
print(got)
"""


def test_path_mtu_a_1400_byte_exchange_over_a_1428_byte_uplink(lab: Lab, daemon: Any) -> None:
    """The stick's link is 1428 bytes on both ends; the client's LAN link stays at 1500 (as if
    it ignored the RA's MTU). A 1400-byte UDP payload (a 1448-byte packet) each way: the
    router answers the client's first with Packet Too Big (through its own nft table), the
    ISP answers the server's echo likewise; both sides then fragment, and the router forwards
    the fragments. Of 12 exchanges at most the first ones are lost while the path MTU is learnt."""
    isp = lab.isp("lte1")
    lab.run(isp.netns, ["ip", "link", "set", "dev", "down", "mtu", "1428"])
    lab.run("router", ["ip", "link", "set", "dev", "lte1", "mtu", "1428"])
    daemon(config())
    wait_until(lambda: slaac(lab, PREFIX), timeout=WAIT, what="a SLAAC address")
    lab.run("lan1", ["sysctl", "-qw", "net.ipv6.conf.eth0.mtu=1500"])
    lab.run(
        "lan1",
        [
            "ip",
            "-6",
            "route",
            "change",
            "default",
            "via",
            client_default(lab)[0]["gateway"],
            "dev",
            "eth0",
            "proto",
            "ra",
        ],
    )
    echo = lab.popen("inet", [sys.executable, "-c", ECHO], stdout=subprocess.PIPE)
    try:
        assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
        out = lab.run("lan1", [sys.executable, "-c", TRIES, SERVER6], check=False)
        assert out.returncode == 0, out.stderr
        # the first ones may teach the path MTU
        assert int(out.stdout.strip()) >= 9, f"{out.stdout.strip()} of 12\n{ipv6_state(lab)}"
    finally:
        lab.stop(echo)
    assert isp.foreign_sources() == {"ipv4": 0, "ipv6": 0}


def test_an_ethernet_style_stick_finds_lan_hosts_by_neighbour_discovery_through_the_router(
    tmp_path: Path,
) -> None:
    """The ISP keeps the /64 on-link and resolves each address on the uplink's link (no route
    to the router): the router answers its solicitations for the extended /64, so the client's
    address is reachable from the server, unchanged; duplicate address detection is not answered."""
    with Lab() as lab:
        isp = lab.add_isp("lte1", address="dhcp", ra=True, routed6=True, onlink6=True)
        lab.add_client()
        lab.run("lan1", ["ip", "-6", "route", "del", "default"])
        with LabDaemon(lab.router, config(), workdir=tmp_path) as c:
            c.wait_state("lte1", "up", "degraded", timeout=WAIT)
            client = wait_until(lambda: slaac(lab, PREFIX), timeout=WAIT, what="a SLAAC address")
            assert sources(lab) == {str(client)}
            neighbours = lab.run(isp.netns, ["ip", "-6", "neigh", "show", "dev", "down", "to", str(client)])
            assert "lladdr" in neighbours.stdout, neighbours.stdout  # learnt from the router's answer
            mac = lab.link("router", "lte1")["address"]
            assert mac in neighbours.stdout
            assert isp.foreign_sources() == {"ipv4": 0, "ipv6": 0}
            # DAD of an address in the /64 on the ISP's side finds no one claiming it
            lab.run(isp.netns, ["ip", "address", "add", f"{PREFIX.network_address + 0x99}/64", "dev", "down"])
            flags = wait_until(
                lambda: lab.run(isp.netns, ["ip", "-6", "address", "show", "dev", "down"]).stdout,
                what="the address",
            )
            assert "dadfailed" not in flags
