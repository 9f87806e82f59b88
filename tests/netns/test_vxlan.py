"""VXLAN over the controller's WireGuard tunnel: an Ethernet segment from a bridge on the
router to the home LAN, end to end on the real kernel (wireguard-go at both ends).

The lab of test_tunnels.py (two uplinks, home = wireguard-go in the internet namespace),
plus `harness.vxlan_home.Segment`: a bridge `brl2` on the router with a host behind it, and
at home a VXLAN interface by hand in a bridge with the home router's address and a host.
uplinkd owns the router's VXLAN interface (`vxlan.home`): created, its flood entry, its
bridge port and MTU; asserted from what the kernel holds and what crosses.
"""

from __future__ import annotations

import json
import os
import signal
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
    NAMES,
    Home,
    home_peer,
    router_config,
    tunnel_lab,
)
from harness.vxlan_home import (
    BRIDGE,
    HOME_HOST,
    ROUTER_HOST,
    ROUTER_SEGMENT_ADDRESS,
    Segment,
    bulk,
    exec_in,
    ip,
    vxlan_config,
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.timeout(240),
]

WAIT = 30.0
TUNNEL_MTU = 1440  # auto: the uplinks' 1500 - 60 (WireGuard over IPv4)
SEGMENT_MTU = TUNNEL_MTU - 50  # auto: - 50 (VXLAN between IPv4 inner addresses)


@pytest.fixture
def lab() -> Iterator[Lab]:
    with tunnel_lab() as lab:
        yield lab


@pytest.fixture
def home(lab: Lab, tmp_path: Path) -> Iterator[Home]:
    with home_peer(lab, tmp_path) as h:
        yield h


def status(c: LabDaemon) -> dict[str, Any]:
    return dict(control.call(c.socket, {"command": "status"}))


def link(ns: str, dev: str) -> dict[str, Any]:
    (data,) = json.loads(ip(ns, "-d", "-j", "link", "show", dev))
    assert isinstance(data, dict)
    return data


def start(lab: Lab, home: Home, tmp_path: Path, **segment: Any) -> tuple[LabDaemon, Segment, str]:
    cfg, router_public = router_config(tmp_path, home)
    cfg["vxlan"] = {"home": vxlan_config(**segment)}
    home.start(router_public)
    ip(lab.inet, "link", "set", home.ifname, "mtu", str(TUNNEL_MTU))
    seg = Segment(lab, home, home_mtu=SEGMENT_MTU)
    daemon = LabDaemon(lab.router, cfg, workdir=tmp_path)
    daemon.start()
    wait_until(
        lambda: status(daemon)["tunnels"][0]["state"] == "up",
        timeout=WAIT,
        what=f"tunnel up ({daemon.log_path})",
    )
    return daemon, seg, cfg["vxlan"]["home"]["interface"]


def reach_across(seg: Segment, *, mtu: int, size: int) -> None:
    """The hosts at both ends reach each other at L2: the router-side host learns the home
    host's MAC (ARP) from a ping across, a ping comes back the other way, and `size` bytes of
    TCP cross each way with both hosts at `mtu`. The first pings may be lost while the path
    settles (an IPv6 inner address of the tunnel may still be in duplicate address detection)."""
    home_ip, router_ip = HOME_HOST.split("/")[0], ROUTER_HOST.split("/")[0]
    ping = ["ping", "-n", "-c", "1", "-W", "1", home_ip]
    wait_until(
        lambda: exec_in(seg.router_host, *ping, check=False).returncode == 0,
        timeout=WAIT, what="a ping across the segment",
    )  # fmt: skip
    neigh = json.loads(ip(seg.router_host, "-j", "neigh", "show", home_ip))
    assert neigh and neigh[0]["lladdr"] == link(seg.home_host, "eth0")["address"]
    back = exec_in(seg.home_host, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", router_ip, check=False)
    assert back.returncode == 0, back.stdout
    seg.set_host_mtu(mtu)
    assert bulk(seg.router_host, seg.home_host, home_ip, size=size) == size
    assert bulk(seg.home_host, seg.router_host, router_ip, size=size) == size


def test_hosts_on_both_ends_of_the_segment_reach_each_other_at_l2(
    lab: Lab, home: Home, tmp_path: Path
) -> None:
    daemon, seg, vx = start(lab, home, tmp_path)
    try:
        shown = wait_until(
            lambda: d if (d := link(lab.router, vx)).get("master") == BRIDGE else None,
            timeout=WAIT,
            what="the VXLAN interface in its bridge",
        )
        info = shown["linkinfo"]["info_data"]
        assert (info["id"], info["local"], info["port"], info["learning"]) == (42, "10.99.0.2", 4789, False)
        assert (shown["mtu"], shown["ifalias"]) == (SEGMENT_MTU, "uplinkd")
        assert "UP" in shown["flags"]
        fdb = json.loads(exec_in(lab.router, "bridge", "-j", "fdb", "show", "dev", vx).stdout)
        assert {(e["mac"], e.get("dst")) for e in fdb if "dst" in e} == {("00:00:00:00:00:00", "10.99.0.1")}

        reach_across(seg, mtu=SEGMENT_MTU, size=20_000_000)

        # TCP MSS is clamped on the tunnel, the segment and its bridge (what is routed onto it)
        table = exec_in(lab.router, "nft", "list", "table", "inet", "uplinkd").stdout
        for dev in (daemon.config["tunnels"]["home"]["interface"], vx, BRIDGE):
            assert f'oifname "{dev}" tcp option maxseg size set rt mtu' in table, table

        shown_status = daemon.ctl("status").stdout
        assert "VXLAN" in shown_status and vx in shown_status and str(SEGMENT_MTU) in shown_status, (
            shown_status
        )
        (entry,) = status(daemon)["vxlan"]
        assert (entry["interface"], entry["vni"], entry["remotes"], entry["mtu"]) == (
            vx,
            42,
            ["10.99.0.1"],
            SEGMENT_MTU,
        )
    finally:
        daemon.stop()


ROUTER6, HOME6 = "fd99::2", "fd99::1"  # the tunnel's IPv6 inner addresses (/64)


def test_a_segment_between_the_tunnels_ipv6_addresses(lab: Lab, home: Home, tmp_path: Path) -> None:
    """The same segment over the tunnel's IPv6 inner addresses: local is the tunnel's IPv6
    address (the remote's family), MTU auto = tunnel - 70 (VXLAN over IPv6), and hosts at
    both ends reach each other at L2 (ARP, ping, TCP both ways at that MTU)."""
    cfg, router_public = router_config(tmp_path, home, addresses=["10.99.0.2/24", f"{ROUTER6}/64"])
    cfg["tunnels"]["home"]["peers"][0]["allowed_ips"].append("::/0")  # home's IPv6 comes back
    cfg["vxlan"] = {"home": vxlan_config(remotes=[HOME6])}
    vx = cfg["vxlan"]["home"]["interface"]
    home.start(router_public)
    home.run("ip", "-6", "address", "add", f"{HOME6}/64", "dev", home.ifname, "nodad")
    peer = home.run("wg", "show", home.ifname, "peers").split()[0]
    allowed = f"10.99.0.2/32,192.168.50.0/24,fd50::/64,{ROUTER6}/128"
    home.run("wg", "set", home.ifname, "peer", peer, "allowed-ips", allowed)
    ip(lab.inet, "link", "set", home.ifname, "mtu", str(TUNNEL_MTU))
    segment_mtu = TUNNEL_MTU - 70
    seg = Segment(lab, home, home_mtu=segment_mtu, inner=(HOME6, ROUTER6))
    daemon = LabDaemon(lab.router, cfg, workdir=tmp_path)
    daemon.start()
    try:
        wait_until(lambda: status(daemon)["tunnels"][0]["state"] == "up", timeout=WAIT, what="tunnel up")
        shown = wait_until(
            lambda: d if (d := link(lab.router, vx)).get("master") == BRIDGE else None,
            timeout=WAIT,
            what="the VXLAN interface in its bridge",
        )
        info = shown["linkinfo"]["info_data"]
        assert (info["id"], info["local6"], info["port"]) == (42, ROUTER6, 4789), info
        assert shown["mtu"] == segment_mtu
        fdb = json.loads(exec_in(lab.router, "bridge", "-j", "fdb", "show", "dev", vx).stdout)
        assert {(e["mac"], e.get("dst")) for e in fdb if "dst" in e} == {("00:00:00:00:00:00", HOME6)}
        reach_across(seg, mtu=segment_mtu, size=5_000_000)
    finally:
        daemon.stop()


def test_restart_writes_nothing_and_flush_removes_the_segment_and_nothing_else(
    lab: Lab, home: Home, tmp_path: Path
) -> None:
    daemon, _, vx = start(lab, home, tmp_path)
    try:
        wait_until(lambda: link(lab.router, vx).get("master") == BRIDGE, timeout=WAIT, what="vxlan in bridge")
        mac = link(lab.router, vx)["address"]
        daemon.stop(signal.SIGTERM)
        assert link(lab.router, vx)["master"] == BRIDGE  # fail static: it outlives the daemon
        daemon.start()
        wait_until(lambda: status(daemon)["tunnels"][0]["state"] == "up", timeout=WAIT, what="tunnel up")
        time.sleep(2)
        assert status(daemon)["writes"] == 0, daemon.writes()
        assert link(lab.router, vx)["address"] == mac  # a stable MAC, not the kernel's random one

        before = {d["ifname"] for d in json.loads(ip(lab.router, "-j", "link", "show"))}
        flushed = daemon.ctl("flush")
        assert flushed.returncode == 0, flushed.stderr
        after = {d["ifname"] for d in json.loads(ip(lab.router, "-j", "link", "show"))}
        tunnel_if = daemon.config["tunnels"]["home"]["interface"]
        assert before - after == {vx, tunnel_if}  # the segment and its tunnel: nothing else
        assert {BRIDGE, "l2p", "lan0", *NAMES} <= after
    finally:
        daemon.stop()


def test_the_routers_segment_address_answers_the_way_it_was_asked(
    lab: Lab, home: Home, tmp_path: Path
) -> None:
    """Source in, source out: the router's own address on the segment (10.77.0.2) answers a
    request from beyond the segment (the home router's other address, 198.51.100.100) back
    over the segment, by the rule at P+3, not into the tunnel (whose peer would drop the
    segment's source) nor by an uplink."""
    daemon, seg, _ = start(
        lab, home, tmp_path, address=ROUTER_SEGMENT_ADDRESS, gateway="10.77.0.1", table=160
    )
    try:
        mine = ROUTER_SEGMENT_ADDRESS.split("/")[0]
        rules = json.loads(ip(lab.router, "-j", "rule", "show", "table", "160"))
        assert [(r["priority"], r["src"], r.get("protocol")) for r in rules] == [(10003, mine, "77")], rules
        route = ip(lab.router, "route", "get", "198.51.100.100", "from", mine)
        assert "via 10.77.0.1 dev brl2 table 160" in route, route
        beyond = ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", "-I", "198.51.100.100", mine]
        asked = exec_in(lab.inet, *beyond, check=False)
        assert asked.returncode == 0, asked.stdout
        on_link = exec_in(seg.home_host, "ping", "-n", "-c", "2", "-i", "0.2", "-W", "2", mine, check=False)
        assert on_link.returncode == 0, on_link.stdout
        # the control: without the rule (daemon stopped, rule deleted by hand) the reply goes
        # into the full tunnel, and home's WireGuard drops the segment's source
        daemon.stop(signal.SIGTERM)
        ip(lab.router, "rule", "del", "priority", "10003", "from", mine, "table", "160")
        assert "table 160" not in ip(lab.router, "route", "get", "198.51.100.100", "from", mine)
        unanswered = exec_in(lab.inet, *beyond, check=False)
        assert unanswered.returncode != 0, unanswered.stdout
    finally:
        daemon.stop()


def test_an_interface_of_that_name_that_is_not_ours_is_left_alone(
    lab: Lab, home: Home, tmp_path: Path
) -> None:
    """Someone else's VXLAN interface holds the configured name: uplinkd reports it (status
    `failures`), writes nothing to it (no flood entry, no bridge, no MTU) and a flush leaves
    it; the rest (the tunnel) runs."""
    cfg, router_public = router_config(tmp_path, home)
    cfg["vxlan"] = {"home": vxlan_config()}
    vx = cfg["vxlan"]["home"]["interface"]
    home.start(router_public)
    Segment(lab, home, home_mtu=SEGMENT_MTU)
    ip(lab.router, "link", "add", vx, "type", "vxlan", "id", "7", "dstport", "4789", "local", "10.99.0.2")
    before = link(lab.router, vx)
    daemon = LabDaemon(lab.router, cfg, workdir=tmp_path)
    daemon.start()
    try:
        wait_until(lambda: status(daemon)["tunnels"][0]["state"] == "up", timeout=WAIT, what="tunnel up")
        failures = wait_until(
            lambda: [f for f in status(daemon)["failures"] if vx in f["op"]] or None,
            timeout=WAIT,
            what="the refusal reported",
        )
        assert any("does not own" in f["error"] for f in failures), failures
        assert link(lab.router, vx) == before
        assert not json.loads(exec_in(lab.router, "bridge", "-j", "fdb", "show", "dev", vx).stdout)
        assert daemon.ctl("flush").returncode == 0
        assert link(lab.router, vx) == before
    finally:
        daemon.stop()
