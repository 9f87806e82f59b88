"""IPv6 on a `dhcp` uplink whose ISP hands out addresses only by DHCPv6 (issue 13: "DHCPv6 where
the ISP requires it").

The ISP is dnsmasq: DHCPv4, and stateful DHCPv6 (IA_NA) from its /64 with RAs that set the M
flag and leave the prefix's A flag clear, so nothing on the link gets an address by SLAAC. The
ISP keeps its /64 on-link (it finds the router's address by neighbour discovery) and passes IPv6
upstream unchanged, so the server sees the very source that left the router. The router's
DHCPv6 client (`address.dhcp6 = "auto"`: it follows the RA's M flag) gets the address, the
controller puts it on the uplink as a /128 and uses it like a SLAAC one: a source rule into
T_u, the RA's router in T_u only, probes and the router's own flows from it, translated LANs
behind it; a restart writes nothing; the address goes with its lease (ISC Kea, whose
lifetimes can be seconds, where dnsmasq's are two minutes at least) or with the ISP.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv6Address, IPv6Network
from typing import Any

import pytest

from uplinkd.lab import Lab
from uplinkd.lab.launcher import LabDaemon
from uplinkd.lab.pd import PdTimes

from harness.readback import wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.timeout(180),
]

PREFIX = IPv6Network("2001:db8:1::/64")  # the ISP's /64, on-link
POOL = (IPv6Address("2001:db8:1::1000"), IPv6Address("2001:db8:1::1fff"))  # DHCP6_POOL of it
INNER = IPv6Network("2001:db8:ff::/64")  # the translated LAN's internal prefix
LAN_HOST = str(INNER.network_address + 0x11)
SERVER6 = "2001:db8:100::100"
TABLE = 101
WAIT = 30.0


def config(*, dhcp6: str = "auto", lan: bool = False) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "uplinks": {
            "wan": {
                "match": {"name": "wan"},
                "address": {"mode": "dhcp", "dhcp6": dhcp6},
                "table": TABLE,
                "probe": {"targets": [SERVER6]},  # health over IPv6 only: over the DHCPv6 address
            }
        },
        "probe": {"profile": "fast"},
        "balance": {"table": 200},
    }
    if lan:
        cfg["lan"] = {"lan0": {"ipv6": {"mode": "translate", "prefix": str(INNER)}}}
    return cfg


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """The ISP's dnsmasq serves DHCPv6 addresses; with the parameter "kea", it only sends RAs
    (SLAAC) and the test starts Kea for DHCPv6."""
    kea = getattr(request, "param", "dnsmasq") == "kea"
    with Lab() as lab:
        lab.add_isp("wan", address="dhcp", ra=True, dhcp6=not kea, routed6=True, onlink6=True)
        lab.add_client()
        lab.run("lan1", ["ip", "address", "add", f"{LAN_HOST}/64", "dev", "eth0", "nodad"])
        yield lab


@pytest.fixture
def daemon(make_controller: Callable[[dict[str, Any]], LabDaemon]) -> Callable[[dict[str, Any]], LabDaemon]:
    def start(cfg: dict[str, Any]) -> LabDaemon:
        c = make_controller(cfg)
        c.start()
        c.wait_state("wan", "up", "degraded", timeout=WAIT)
        return c

    return start


def globals6(lab: Lab, dev: str = "wan") -> list[dict[str, Any]]:
    out = lab.run("router", ["ip", "-6", "-json", "address", "show", "dev", dev, "scope", "global"]).stdout
    return [
        info for entry in json.loads(out or "[]") for info in entry.get("addr_info", []) if "local" in info
    ]


def dhcp6_address(lab: Lab) -> str | None:
    """The router's /128 from the ISP's pool on wan, once DAD is done."""
    for info in globals6(lab):
        address = IPv6Address(info["local"])
        if POOL[0] <= address <= POOL[1] and info["prefixlen"] == 128 and not info.get("tentative"):
            return str(address)
    return None


def rules6(lab: Lab) -> str:
    return lab.run("router", ["ip", "-6", "rule", "show"]).stdout


def route6(lab: Lab, table: int | str) -> str:
    return lab.run("router", ["ip", "-6", "route", "show", "table", str(table)]).stdout


def test_an_isp_that_gives_ipv6_only_by_dhcpv6_gives_the_uplink_its_address(
    lab: Lab, daemon: Callable[[dict[str, Any]], LabDaemon]
) -> None:
    c = daemon(config())
    address = wait_until(lambda: dhcp6_address(lab), timeout=WAIT, what="a DHCPv6 address on wan")
    # no SLAAC: the only global address on wan is the leased /128, and it is ours
    assert [(a["local"], a["prefixlen"]) for a in globals6(lab)] == [(address, 128)]
    assert address in {a for _, a in lab.isp("wan").leases6()}
    assert lab.run("router", ["sysctl", "-n", "net.ipv6.conf.wan.accept_ra"]).stdout.strip() == "2"
    # used like a SLAAC address: its source rule at P+20, the RA's router in T_u, never in main
    wait_until(
        lambda: f"10020:\tfrom {address} lookup {TABLE} proto 77" in rules6(lab), what="its source rule"
    )
    assert "default via fe80:" in route6(lab, TABLE)
    assert lab.run("router", ["ip", "-6", "route", "show", "default", "table", "main"]).stdout.strip() == ""
    wan = c.uplink("wan")
    assert wan["dhcp6"]["address"] == address and 0 < wan["dhcp6"]["valid_s"] <= 120, wan
    assert wan["ra"]["managed"] is True and wan["prefixes6"] == [f"{address}/128"]
    assert f"ipv6: wan has {address} by DHCPv6" in c.ctl("status").stdout
    # the probes (IPv6 only) and the router's own flows leave from it; the server sees it
    assert c.uplink("wan")["state"] == "up"
    report = lab.flows(client="router", tcp=3, udp=3, interval_ms=50, duration=1.0, family=6)
    assert report.lost() == 0 and report.received() > 0
    assert {f.last_source for f in report.flows} == {address}
    assert lab.isp("wan").foreign_sources() == {"ipv4": 0, "ipv6": 0}

    # a restart keeps the lease: no kernel write, the same address, the server still agrees
    assert c.stop() == 0
    writes_before = len(c.writes())
    c.start()
    c.wait_state("wan", "up", "degraded", timeout=WAIT)
    status = c.status()
    assert status["passes"] >= 1 and status["writes"] == 0, c.writes()[writes_before:]
    time.sleep(2.0)  # the restarted client rebinds at once; dnsmasq answers with the same address
    assert dhcp6_address(lab) == address and len(c.writes()) == writes_before
    assert c.uplink("wan")["dhcp6"]["address"] == address

    # the ISP goes away (unplugged): the address and its rule go with it; back, the same one
    lab.unplug("wan")
    wait_until(lambda: f"from {address}" not in rules6(lab), what="no source rule for the address")
    assert "dhcp6" not in c.uplink("wan")
    lab.plug(lab.isp("wan"), "wan")
    again = wait_until(lambda: dhcp6_address(lab), timeout=WAIT, what="the DHCPv6 address back")
    assert again == address


def test_never_keeps_the_uplink_without_an_address_and_the_m_flag_is_only_heard(
    lab: Lab, daemon: Callable[[dict[str, Any]], LabDaemon]
) -> None:
    """`dhcp6 = "never"`: no DHCPv6 client runs, so an ISP that gives addresses only by DHCPv6
    leaves the uplink without IPv6 (IPv4 carries on); status still shows the RA's M flag."""
    cfg = config(dhcp6="never")
    cfg["uplinks"]["wan"]["probe"] = {"targets": ["198.51.100.100"]}
    c = daemon(cfg)
    wait_until(lambda: (c.uplink("wan").get("ra") or {}).get("managed"), timeout=WAIT, what="the RA")
    time.sleep(3.0)  # as long as a client would take to get the address
    assert globals6(lab) == [] and "dhcp6" not in c.uplink("wan")
    assert lab.isp("wan").leases6() == []


def test_a_translated_lan_reaches_the_server_behind_the_dhcpv6_address(
    lab: Lab, daemon: Callable[[dict[str, Any]], LabDaemon]
) -> None:
    """A `translate` LAN over an uplink that holds one address and no /64: every LAN source
    becomes that address (ports told apart by conntrack), and the ISP sees nothing else."""
    c = daemon(config(lan=True))
    address = wait_until(lambda: dhcp6_address(lab), timeout=WAIT, what="a DHCPv6 address on wan")
    wait_until(
        lambda: f"wan={address}/128" in " ".join(c.status()["lan"][0]["via"]),
        what="the LAN translated to the address",
    )
    report = lab.flows(tcp=10, udp=10, interval_ms=50, duration=1.0, family=6)
    assert report.lost() == 0 and report.received() > 0
    assert {f.last_source for f in report.flows} == {address}
    assert lab.isp("wan").forwarded6() > 0
    assert lab.isp("wan").foreign_sources() == {"ipv4": 0, "ipv6": 0}


@pytest.mark.parametrize("lab", ["kea"], indirect=True)
def test_the_address_goes_when_its_lease_runs_out(
    lab: Lab, daemon: Callable[[dict[str, Any]], LabDaemon]
) -> None:
    """With `dhcp6 = "always"` the client asks whatever the RA says; here the ISP's server is
    ISC Kea (dnsmasq's shortest lease is two minutes) beside dnsmasq's RAs (SLAAC, no M flag).
    Renewed while Kea answers; when Kea stops, the address and its rule go at the valid
    lifetime, and the SLAAC address stays."""
    times = PdTimes(t1=2, t2=3, preferred=4, valid=6)
    pool = (str(PREFIX.network_address + 0x2000), str(PREFIX.network_address + 0x20FF))
    server = lab.serve_pd("wan", pool="2001:db8:e9::/48", addresses=pool, times=times)
    c = daemon(config(dhcp6="always"))

    def leased() -> str | None:
        for info in globals6(lab):
            held = IPv6Address(info["local"])
            if info["prefixlen"] == 128 and IPv6Address(pool[0]) <= held <= IPv6Address(pool[1]):
                return str(held)
        return None

    address = wait_until(leased, timeout=WAIT, what="Kea's address on wan")
    time.sleep(times.valid + 1)  # renewed at T1 while Kea answers: still there
    assert leased() == address and f"from {address}" in rules6(lab)
    assert len(server.address_rows()) > 1
    server.stop()
    gone = time.monotonic()
    wait_until(
        lambda: leased() is None and f"from {address}" not in rules6(lab),
        timeout=times.valid + 10,
        what="the address gone",
    )
    print(f"address gone {time.monotonic() - gone:.2f} s after the server stopped (valid {times.valid} s)")
    assert "dhcp6" not in c.uplink("wan")
    assert any(a["prefixlen"] == 64 for a in globals6(lab))  # SLAAC from the RA stays


@pytest.mark.parametrize("lab", ["kea"], indirect=True)
def test_an_address_another_host_holds_is_declined(
    lab: Lab, daemon: Callable[[dict[str, Any]], LabDaemon]
) -> None:
    """Kea's only address is already in use on the link (by the ISP itself): the kernel's
    duplicate-address detection fails on it, the client declines it to Kea (RFC 8415 §18.2.8),
    and the address leaves the uplink without ever getting a source rule."""
    taken = str(PREFIX.network_address + 0x3000)
    isp = lab.isp("wan")
    lab.run(isp.netns, ["ip", "-6", "address", "add", f"{taken}/128", "dev", "down", "nodad"])
    lab.run("router", ["sysctl", "-qw", "net.ipv6.conf.wan.accept_dad=1"])  # the lab turns DAD off
    server = lab.serve_pd("wan", pool="2001:db8:e9::/48", addresses=(taken, taken))
    c = daemon(config(dhcp6="always"))
    wait_until(
        lambda: any(row.get("address") == taken and row.get("state") == "1" for row in server.address_rows()),
        timeout=WAIT,
        what="Kea recording the address as declined",
    )
    wait_until(lambda: taken not in json.dumps(globals6(lab)), what="the declined address off wan")
    assert f"from {taken}" not in rules6(lab)
    assert "dhcp6" not in c.uplink("wan")
    assert f"duplicate-address detection failed for {taken} on wan; declining it" in c.log()


@pytest.mark.parametrize("lab", ["kea"], indirect=True)
def test_one_client_asks_for_the_address_and_a_delegated_prefix_in_one_exchange(
    lab: Lab, daemon: Callable[[dict[str, Any]], LabDaemon]
) -> None:
    """A `delegate` LAN on an uplink that also asks for its own address: one DHCPv6 client, one
    Solicit carrying IA_NA and IA_PD (RFC 8415 §6.6); Kea grants both to the same DUID. The
    uplink gets its /128, the LAN its /64 of the delegation, both reach the server, and a
    restart writes nothing."""
    pool = (str(PREFIX.network_address + 0x2000), str(PREFIX.network_address + 0x20FF))
    out = lab.run("router", ["ip", "-6", "-o", "address", "show", "dev", "wan", "scope", "link"]).stdout
    server = lab.serve_pd("wan", pool="2001:db8:e9::/48", addresses=pool, via=out.split()[3].split("/")[0])
    cfg = config(dhcp6="always")
    cfg["lan"] = {"lan0": {"ipv6": {"mode": "delegate", "uplink": "wan", "subnet": 1}}}
    c = daemon(cfg)
    lan64 = IPv6Network("2001:db8:e9:1::/64")
    wait_until(
        lambda: (
            f"{lan64.network_address + 1}/64"
            in lab.run("router", ["ip", "-6", "address", "show", "dev", "lan0"]).stdout
        ),
        timeout=WAIT,
        what="the delegated /64 on lan0",
    )
    address = wait_until(lambda: c.uplink("wan").get("dhcp6", {}).get("address"), what="the address too")
    assert "DHCPv6 client started on wan for an address (IA_NA) and a delegated prefix (IA_PD)" in c.log()
    assert c.log().count("DHCPv6 client started") == 1
    duids = {row["duid"] for row in server.rows() + server.address_rows()}
    assert len(duids) == 1 and server.leases() == ["2001:db8:e9::/56"]
    assert {row["address"] for row in server.address_rows()} == {address}
    host = str(lan64.network_address + 0x11)
    lab.run("lan1", ["ip", "address", "add", f"{host}/64", "dev", "eth0", "nodad"])
    ping = ["ping", "-6", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", "-I", host, SERVER6]
    assert lab.run("lan1", ping, check=False).returncode == 0
    report = lab.flows(client="router", tcp=2, udp=2, interval_ms=50, duration=0.6, family=6)
    assert report.lost() == 0 and {f.last_source for f in report.flows} <= {address} | {
        a["local"] for a in globals6(lab) if a["prefixlen"] == 64
    }
    assert lab.isp("wan").foreign_sources() == {"ipv4": 0, "ipv6": 0}
    assert c.stop() == 0
    writes = len(c.writes())
    c.start()
    c.wait_state("wan", "up", "degraded", timeout=WAIT)
    assert c.status()["writes"] == 0, c.writes()[writes:]
