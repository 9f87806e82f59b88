"""MTU over the tunnel and the VXLAN segment, with an uplink MTU of 1428 (a PPPoE-ish link
with a little less). Lab as in test_vxlan.py; the uplinks' veths (both ends) get 1428.

- tunnel `auto`: 1428 - 60 = 1368; segment `auto`: 1368 - 50 = 1318.
- L3 (a LAN client to home's inner address, through the tunnel): a DF ping of 1368 bytes
  passes, 1369 gets "fragmentation needed" naming 1368; a TCP bulk transfer shows no outer
  fragment at any ISP (counted before the ISP's conntrack could reassemble anything).
- L2 (segment hosts at 1318): the same bulk transfer, no outer fragments.
- 1500-byte frames from hosts on the segment (hosts sending as on a cable: no TSO/GSO/GRO;
  bridges without br_netfilter): lost without a word at `auto` when the hosts stay at 1500;
  fine when the segment's DHCP hands out 1318 (option 26), or with the segment at 1500.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from uplinkd.lab import Lab
from uplinkd.lab.launcher import LabDaemon

from harness.readback import wait_until
from harness.tunnel_home import NAMES, Home, home_peer, tunnel_lab
from harness.tunnel_lab import kill_pid
from harness.vxlan_home import (
    HOME_HOST,
    HOME_INNER,
    ROUTER_HOST,
    SEGMENT_MTU,
    TUNNEL_MTU,
    UPLINK_MTU,
    Segment,
    bulk,
    dhcp_lease,
    exec_in,
    fragments,
    ip,
    mtu_lab,
    start_segment,
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.timeout(300),
]

WAIT = 30.0


@pytest.fixture
def lab() -> Iterator[Lab]:
    with tunnel_lab(mtu_lab) as lab:
        yield lab


@pytest.fixture
def home(lab: Lab, tmp_path: Path) -> Iterator[Home]:
    with home_peer(lab, tmp_path) as h:
        yield h


def start(lab: Lab, home: Home, tmp_path: Path, **segment: Any) -> tuple[LabDaemon, Segment]:
    return start_segment(lab, home, tmp_path, **segment)


def ping(ns: str, dst: str, *, packet: int, df: bool) -> subprocess.CompletedProcess[str]:
    """Three pings whose IP packets are `packet` bytes long, with DF or without."""
    argv = [
        "ping",
        "-n",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        "-M",
        "do" if df else "dont",
        "-s",
        str(packet - 28),
    ]
    return exec_in(ns, *argv, dst, check=False)


def df_ping(ns: str, dst: str, *, packet: int) -> subprocess.CompletedProcess[str]:
    return ping(ns, dst, packet=packet, df=True)


def test_tunnel_and_segment_sizes_and_no_outer_fragments(lab: Lab, home: Home, tmp_path: Path) -> None:
    daemon, seg = start(lab, home, tmp_path)
    try:
        tunnel_if = daemon.config["tunnels"]["home"]["interface"]
        assert json.loads(ip(lab.router, "-j", "link", "show", tunnel_if))[0]["mtu"] == TUNNEL_MTU
        vx = daemon.config["vxlan"]["home"]["interface"]
        assert json.loads(ip(lab.router, "-j", "link", "show", vx))[0]["mtu"] == SEGMENT_MTU

        client = lab.clients[0].netns
        fits = df_ping(client, HOME_INNER, packet=TUNNEL_MTU)
        assert fits.returncode == 0, fits.stdout
        over = df_ping(client, HOME_INNER, packet=TUNNEL_MTU + 1)
        print("L3, one byte over:", over.stdout.strip().splitlines()[1:3], over.stderr.strip())
        assert over.returncode != 0
        assert f"mtu = {TUNNEL_MTU}" in over.stdout or "message too long" in over.stderr.lower(), over

        before = fragments(lab)
        size = 20_000_000
        assert bulk(client, lab.inet, HOME_INNER, size=size) == size
        l3 = {k: v - before[k] for k, v in fragments(lab).items()}
        print("L3 bulk at the ISPs:", l3)
        assert l3["later"] == 0 and l3["first"] == 0 and l3["all"] > size // UPLINK_MTU

        seg.set_host_mtu(SEGMENT_MTU)
        home_ip = HOME_HOST.split("/")[0]
        assert df_ping(seg.router_host, home_ip, packet=SEGMENT_MTU).returncode == 0
        before = fragments(lab)
        assert bulk(seg.router_host, seg.home_host, home_ip, size=size) == size
        l2 = {k: v - before[k] for k, v in fragments(lab).items()}
        print("L2 bulk at the ISPs:", l2)
        assert l2["later"] == 0 and l2["first"] == 0 and l2["all"] > size // UPLINK_MTU

        # the carrying uplinks' MTU drops to 1400: the tunnel and the segment follow
        for name in NAMES:
            ip(lab.router, "link", "set", "dev", name, "mtu", "1400")
        wait_until(
            lambda: json.loads(ip(lab.router, "-j", "link", "show", vx))[0]["mtu"] == 1400 - 60 - 50,
            timeout=WAIT,
            what="the segment's MTU to follow the uplinks'",
        )
        assert json.loads(ip(lab.router, "-j", "link", "show", tunnel_if))[0]["mtu"] == 1400 - 60
    finally:
        daemon.stop()


def test_full_size_frames_vanish_at_auto_without_a_lower_host_mtu(
    lab: Lab, home: Home, tmp_path: Path
) -> None:
    """The failure the two tests below avoid: segment MTU `auto` (1318) with hosts left at
    1500. The bridge drops a frame larger than its VXLAN port's MTU without a word: DF or
    not, no reply and no "fragmentation needed"; TCP stalls after its handshake."""
    daemon, seg = start(lab, home, tmp_path)
    try:
        seg.like_a_wire()
        home_ip = HOME_HOST.split("/")[0]
        assert df_ping(seg.router_host, home_ip, packet=1000).returncode == 0
        lost = df_ping(seg.router_host, home_ip, packet=1500)
        assert lost.returncode != 0 and "Frag needed" not in lost.stdout, lost.stdout
        assert ping(seg.router_host, home_ip, packet=1500, df=False).returncode != 0
        assert bulk(seg.router_host, seg.home_host, home_ip, size=2_000_000, timeout=5) == -1
    finally:
        daemon.stop()


def test_segment_dhcp_hands_out_the_lower_mtu(lab: Lab, home: Home, tmp_path: Path) -> None:
    """Segment MTU `auto`; the segment's DHCP server (dnsmasq at home) sends option 26 =
    1318, and the router-side host's DHCP client (udhcpc) applies it: full-size traffic
    from it fits, and crosses without outer fragments."""
    daemon, seg = start(lab, home, tmp_path)
    dnsmasq = subprocess.Popen(
        ["ip", "netns", "exec", lab.inet, "dnsmasq", "--no-daemon", "--port=0", "--interface=brhome",
         "--bind-interfaces", "--dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,1h",
         f"--dhcp-option=26,{SEGMENT_MTU}", f"--dhcp-leasefile={tmp_path / 'leases'}", "--pid-file="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        seg.like_a_wire()
        dhcp_lease(seg.router_host, tmp_path / "udhcpc.sh")
        assert json.loads(ip(seg.router_host, "-j", "link", "show", "eth0"))[0]["mtu"] == SEGMENT_MTU
        ip(seg.home_host, "link", "set", "eth0", "mtu", str(SEGMENT_MTU))  # a home host's lease says the same
        home_ip = HOME_HOST.split("/")[0]
        assert df_ping(seg.router_host, home_ip, packet=SEGMENT_MTU).returncode == 0
        before = fragments(lab)
        assert bulk(seg.router_host, seg.home_host, home_ip, size=10_000_000) == 10_000_000
        got = {k: v - before[k] for k, v in fragments(lab).items()}
        assert got["later"] == 0 and got["first"] == 0, got
    finally:
        kill_pid(dnsmasq.pid)
        dnsmasq.wait()
        daemon.stop()


def test_segment_at_1500_carries_full_frames(lab: Lab, home: Home, tmp_path: Path) -> None:
    """Segment `mtu = 1500` at both ends, hosts at 1500: a DF packet too large for the tunnel
    is answered by the VXLAN port with "fragmentation needed" naming 1318 (the kernel's PMTU
    discovery for bridged tunnels, Linux 5.9+), so TCP finds its size; a packet without DF
    is carried, its VXLAN datagram fragmented inside the tunnel: no outer fragments."""
    daemon, seg = start(lab, home, tmp_path, mtu=1500)
    try:
        seg.like_a_wire()
        vx = daemon.config["vxlan"]["home"]["interface"]
        assert json.loads(ip(lab.router, "-j", "link", "show", vx))[0]["mtu"] == 1500
        home_ip, router_ip = HOME_HOST.split("/")[0], ROUTER_HOST.split("/")[0]
        told = df_ping(seg.router_host, home_ip, packet=1500)
        assert f"Frag needed and DF set (mtu = {SEGMENT_MTU})" in told.stdout, told.stdout
        before = fragments(lab)
        assert ping(seg.router_host, home_ip, packet=1500, df=False).returncode == 0
        assert bulk(seg.router_host, seg.home_host, home_ip, size=10_000_000) == 10_000_000
        assert bulk(seg.home_host, seg.router_host, router_ip, size=10_000_000) == 10_000_000
        got = {k: v - before[k] for k, v in fragments(lab).items()}
        assert got["later"] == 0 and got["first"] == 0, got
    finally:
        daemon.stop()
