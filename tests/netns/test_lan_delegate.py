"""LAN IPv6 `delegate` (issue 13): the controller's own DHCPv6 client asks the wired ISP for a
prefix (IA_PD); a real server, ISC Kea, delegates a /56 from the ISP's pool and the ISP routes
it to the router. The LAN gets /64 number `subnet` of it, its IPv6 leaves by that uplink only
(even where the weights favour another), the delegation survives a daemon restart without a
kernel write, and its expiry takes the LAN's prefix away again. No ISP ever sees a source
outside its own prefixes (nft counters at every ISP).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import pytest

from uplinkd import control
from uplinkd.lab import Lab
from uplinkd.lab.launcher import LabDaemon
from uplinkd.lab.pd import PdServer, PdTimes

from harness.lab_config import static_uplink
from harness.readback import group_members, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.timeout(180),
]

NAMES = ("wan", "lte1")
TABLES = {101: "wan", 102: "lte1"}
WEIGHTS = {
    "wan": 1,
    "lte1": 5,
}  # the balance favours lte1: a delegated LAN must still use wan
SERVER6 = "2001:db8:100::100"
POOL = "2001:db8:e1::/48"  # wan's ISP delegates /56s of it
FIRST = IPv6Network("2001:db8:e1::/56")  # what Kea hands the only client
SUBNET = 1
LAN64 = IPv6Network("2001:db8:e1:1::/64")  # subnet 1 of FIRST
CLIENT = "2001:db8:e1:1::11"
NO_LEAK = {name: {"ipv4": 0, "ipv6": 0} for name in NAMES}


def uplink(index: int, name: str) -> dict[str, Any]:
    return static_uplink(
        index, name, weight=WEIGHTS[name], probe={"targets": ["198.51.100.100", f"198.51.100.{index}"]}
    )


CONFIG: dict[str, Any] = {
    "uplinks": {name: uplink(i + 1, name) for i, name in enumerate(NAMES)},
    "probe": {"profile": "fast"},
    "balance": {"table": 200},
    "lan": {"lan0": {"ipv6": {"mode": "delegate", "uplink": "wan", "subnet": SUBNET}}},
}


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        for name in NAMES:
            lab.add_isp(name, address="none", routed6=True)
        lab.add_client()
        lab.run("lan1", ["ip", "address", "add", f"{CLIENT}/64", "dev", "eth0", "nodad"])
        yield lab


@pytest.fixture
def daemon(
    lab: Lab, make_controller: Callable[[dict[str, Any]], LabDaemon]
) -> Callable[[dict[str, Any]], LabDaemon]:
    """A started daemon for a config, stopped at the end (conftest's `make_controller`)."""

    def make(cfg: dict[str, Any]) -> LabDaemon:
        c = make_controller(cfg)
        c.start()
        wait_until(
            lambda: len(group_members(lab.router, TABLES, v6=True)) == 2,
            what="a v6 group of two",
        )
        return c

    return make


def lan_of(c: LabDaemon) -> dict[str, Any]:
    (lan,) = control.call(c.socket, {"command": "status"})["lan"]
    return dict(lan)


def router_has(lab: Lab, net: IPv6Network) -> bool:
    out = lab.run("router", ["ip", "-6", "address", "show", "dev", "lan0", "to", str(net)]).stdout
    return f"{net.network_address + 1}/64" in out


def source_rule(lab: Lab) -> str:
    return lab.run("router", ["ip", "-6", "rule", "show", "from", str(LAN64)]).stdout.strip()


def unreachable(lab: Lab) -> str:
    return lab.run("router", ["ip", "-6", "route", "show", "table", "main", "type", "unreachable"]).stdout


def ping6(lab: Lab) -> bool:
    argv = [
        "ping",
        "-6",
        "-n",
        "-q",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "1",
        "-I",
        CLIENT,
        SERVER6,
    ]
    return lab.run("lan1", argv, check=False).returncode == 0


def foreign(lab: Lab) -> dict[str, dict[str, int]]:
    return {isp.name: isp.foreign_sources() for isp in lab.isps}


def test_delegated_64_reaches_the_server_by_its_uplink_and_survives_a_restart(lab: Lab, daemon: Any) -> None:
    server: PdServer = lab.serve_pd("wan", pool=POOL)
    began = time.monotonic()
    c = daemon(CONFIG)
    wait_until(
        lambda: router_has(lab, LAN64) and source_rule(lab),
        timeout=30,
        what=f"{LAN64} on lan0",
    )
    print(f"delegated /64 on the LAN {time.monotonic() - began:.2f} s after the daemon started")
    stamps = {}
    for line in c.log_path.read_text().splitlines():
        for what in (
            "DHCPv6 client started",
            "delegated prefix 2001:db8:e1::/56",
            "ip address add 2001:db8:e1",
        ):
            if what in line and what not in stamps:
                stamps[what] = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    first, bound, added = stamps.values()
    to_bound, to_lan = (bound - first).total_seconds(), (added - first).total_seconds()
    print(f"client start → bound {to_bound:.3f} s, → /64 on lan0 {to_lan:.3f} s")
    assert source_rule(lab) == f"10012:\tfrom {LAN64} lookup 101 proto 77"
    assert str(FIRST) in unreachable(lab)
    lan = lan_of(c)
    assert (lan["mode"], lan["prefixes"]) == ("delegate", [str(LAN64)]), lan
    wan_status = next(u for u in c.status()["uplinks"] if u["name"] == "wan")
    assert wan_status["delegated6"]["prefix"] == str(FIRST) and 0 < wan_status["delegated6"]["valid_s"] <= 90
    assert f"ipv6: wan delegates {FIRST} (DHCPv6-PD, valid" in c.ctl("status").stdout
    explained = json.loads(c.ctl("explain", SERVER6, "--from", CLIENT, "--iif", "lan0", "--json").stdout)
    assert (explained["rule"], explained["uplink"]) == (f"10012: from {LAN64} lookup 101", "wan"), explained
    assert server.leases() == [str(FIRST)]

    assert ping6(lab)
    report = lab.flows(tcp=10, udp=10, interval_ms=50, duration=1.0, family=6)
    assert report.lost() == 0 and report.received() > 0
    assert {f.last_source for f in report.flows} == {CLIENT}  # no translation: the server sees it
    # every LAN packet left by wan although the balance gives lte1 five times its weight
    wan, lte1 = (isp.forwarded6() for isp in lab.isps)
    assert wan > 0 and lte1 == 0, (wan, lte1)
    assert foreign(lab) == NO_LEAK

    # a restart keeps the delegation: no kernel write, same prefix, the server still agrees
    flows = lab.start_flows(tcp=5, udp=5, interval_ms=20, duration=3.0, family=6)
    assert c.stop() == 0
    records = len(server.rows())
    writes_before = len(c.writes())
    c.start()
    status = c.status()
    assert status["passes"] >= 1 and status["writes"] == 0, c.writes()[writes_before:]
    report = flows.result()
    assert report.lost() == 0 and report.reconnects() == 0
    # the restarted client rebinds at once (RFC 8415 §18.2.2) and Kea extends the lease
    wait_until(lambda: len(server.rows()) > records, timeout=10, what="Kea extending the lease")
    assert lan_of(c)["prefixes"] == [str(LAN64)]
    assert server.leases() == [str(FIRST)]
    assert len(c.writes()) == writes_before
    assert foreign(lab) == NO_LEAK


def test_expiry_removes_the_prefix_and_a_new_server_brings_one_back(lab: Lab, daemon: Any) -> None:
    times = PdTimes(t1=2, t2=3, preferred=4, valid=6)
    server: PdServer = lab.serve_pd("wan", pool=POOL, times=times)
    c = daemon(CONFIG)
    wait_until(lambda: router_has(lab, LAN64), timeout=30, what="the delegated /64 on lan0")
    time.sleep(times.valid + 1)  # renewed at T1 while the server answers: still there
    assert router_has(lab, LAN64) and source_rule(lab)
    server.stop()
    gone = time.monotonic()
    wait_until(
        lambda: not router_has(lab, LAN64) and not source_rule(lab),
        timeout=times.valid + 10,
        what="no /64",
    )
    print(f"delegation gone {time.monotonic() - gone:.2f} s after the server stopped (valid {times.valid} s)")
    assert source_rule(lab) == ""
    assert str(FIRST) not in unreachable(lab)
    lan = lan_of(c)
    assert lan["prefixes"] == [] and "waiting for a prefix" in lan["reason"], lan
    assert not ping6(lab)
    assert foreign(lab) == NO_LEAK
    server.start()
    wait_until(
        lambda: router_has(lab, LAN64),
        timeout=60,
        what="the /64 back after the server returned",
    )
    assert ping6(lab)
    assert foreign(lab) == NO_LEAK


def link_local(lab: Lab, role: str, dev: str) -> str:
    out = lab.run(role, ["ip", "-6", "-o", "address", "show", "dev", dev, "scope", "link"]).stdout
    return out.split()[3].split("/")[0]


def test_an_unnumbered_wan_with_only_the_ras_router_carries_the_delegated_lan(
    lab: Lab, tmp_path: Path
) -> None:
    """Many ISPs that delegate a prefix give the WAN no global address: only its link-local
    one and the router their RA names. Here wan has no IPv6 address of its own; the kernel's
    RA default route (put in main, as accept_ra would) is all uplinkd learns, and the
    delegated LAN still leaves by wan (T_wan gets that router), the ISP routing the prefix to
    the router's link-local address."""
    isp = lab.isp("wan")
    router_ll = link_local(lab, "router", "wan")
    lab.serve_pd("wan", pool=POOL, via=router_ll)
    gateway = link_local(lab, isp.netns, "down")
    lab.run("router", ["ip", "-6", "route", "add", "default", "via", gateway, "dev", "wan", "proto", "ra"])
    cfg = json.loads(json.dumps(CONFIG))
    for key in ("cidr6", "gateway6"):
        del cfg["uplinks"]["wan"]["address"][key]
    c = LabDaemon(lab.router, cfg, workdir=tmp_path)
    try:
        c.start()
        wait_until(lambda: router_has(lab, LAN64) and source_rule(lab), timeout=30, what=f"{LAN64} on lan0")
        t_wan = lab.run("router", ["ip", "-6", "route", "show", "table", "101"]).stdout
        assert f"default via {gateway} dev wan proto 77" in t_wan, t_wan
        assert ping6(lab)
        wan, lte1 = (i.forwarded6() for i in lab.isps)
        assert wan > 0 and lte1 == 0, (wan, lte1)
        assert foreign(lab) == NO_LEAK
        audited = c.ctl("audit", "--config", str(c.config_path), check=False)
        assert audited.returncode == 0, audited.stdout + audited.stderr
        assert (
            f"ok: lan0 (ipv6 delegate): {LAN64.network_address + 2} → 2001:db8:ffff::1: unicast dev wan"
            in (audited.stdout)
        )
    finally:
        c.stop()


def slaac_addresses(lab: Lab) -> dict[str, dict[str, Any]]:
    """The client's dynamic (SLAAC) addresses in the delegated /64, by address."""
    out = lab.run("lan1", ["ip", "-6", "-j", "address", "show", "dev", "eth0"]).stdout
    found: dict[str, dict[str, Any]] = {}
    for info in json.loads(out)[0]["addr_info"]:
        if info.get("dynamic") and IPv6Address(info["local"]) in LAN64:
            found[info["local"]] = info
    return found


def test_a_lan_client_gets_its_address_by_slaac_from_the_router_advertising_what_uplinkd_put(
    lab: Lab, daemon: Any
) -> None:
    """What examples/home-router.nix does: dnsmasq advertises (RA only) every /64 on the LAN
    interface (`constructor:`), so the delegated /64 uplinkd puts there reaches the clients by
    SLAAC without anyone configuring it; when the delegation expires, dnsmasq deprecates it."""
    times = PdTimes(t1=2, t2=3, preferred=4, valid=6)
    server = lab.serve_pd("wan", pool=POOL, times=times)
    pidfile = lab.workdir / "ra.pid"
    argv = [
        "dnsmasq", "--keep-in-foreground", "--port=0", "--enable-ra", "--interface=lan0",
        "--dhcp-range=::,constructor:lan0,ra-only", f"--pid-file={pidfile}", "--conf-file=/dev/null",
    ]  # fmt: skip
    lab.popen("router", argv)
    c = daemon(CONFIG)
    wait_until(lambda: router_has(lab, LAN64), timeout=30, what="the delegated /64 on lan0")
    got = wait_until(lambda: slaac_addresses(lab), timeout=30, what="a SLAAC address in the delegated /64")
    address = next(iter(got))
    argv = ["ping", "-6", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", "-I", address, SERVER6]
    assert lab.run("lan1", argv, check=False).returncode == 0
    assert foreign(lab) == NO_LEAK
    server.stop()
    wait_until(lambda: not router_has(lab, LAN64), timeout=times.valid + 10, what="the /64 gone from lan0")

    def deprecated() -> bool:
        now = slaac_addresses(lab)
        return address not in now or now[address].get("preferred_life_time") == 0

    removed = time.monotonic()
    wait_until(deprecated, timeout=15, what="the client's SLAAC address deprecated")
    print(f"client's SLAAC address deprecated {time.monotonic() - removed:.2f} s after the /64 left lan0")
    assert c.status()["lan"][0]["prefixes"] == []


def test_a_new_prefix_from_the_isp_replaces_the_old_one_on_the_lan(lab: Lab, daemon: Any) -> None:
    """The ISP renumbers: its server forgets the binding and delegates from another pool. At
    the next Renew Kea hands the client a new /56 (and the old one with lifetimes 0); the LAN
    moves to the new /64 in one pass, the old prefix's address, rule and unreachable route go,
    and a client in the new /64 reaches the server by wan."""
    times = PdTimes(t1=2, t2=3, preferred=4, valid=30)
    server = lab.serve_pd("wan", pool=POOL, times=times)
    c = daemon(CONFIG)
    wait_until(lambda: router_has(lab, LAN64) and source_rule(lab), timeout=30, what=f"{LAN64} on lan0")
    server.stop()
    server.lease_file.unlink()
    renumbered = lab.serve_pd("wan", pool="2001:db8:e2::/48", times=times)
    new64 = IPv6Network("2001:db8:e2:1::/64")
    began = time.monotonic()
    wait_until(
        lambda: router_has(lab, new64) and not router_has(lab, LAN64) and not source_rule(lab),
        timeout=30,
        what=f"{new64} instead of {LAN64} on lan0",
    )
    print(f"renumbered: the new /64 on lan0 {time.monotonic() - began:.2f} s after the server changed pools")
    assert str(FIRST) not in unreachable(lab) and "2001:db8:e2::/56" in unreachable(lab)
    assert c.status()["lan"][0]["prefixes"] == [str(new64)]
    assert renumbered.leases() == ["2001:db8:e2::/56"]
    client = "2001:db8:e2:1::11"
    lab.run("lan1", ["ip", "address", "add", f"{client}/64", "dev", "eth0", "nodad"])
    argv = ["ping", "-6", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", "-I", client, SERVER6]
    assert lab.run("lan1", argv, check=False).returncode == 0
    assert not ping6(lab)  # the old prefix goes nowhere now
    assert foreign(lab) == NO_LEAK
