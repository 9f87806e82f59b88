"""A stick whose DHCP server starts after the device appears (issue 9, item 9).

Sticks' firmware often brings its DHCP server up a moment after the USB device shows up, so
the controller's first DISCOVERs go unanswered. The stick must still get its lease from the
same running client (no restart, no replug) and carry traffic. How soon is the benchmark's
business (bench/hotplug_late_server.py); these tests assert what the kernel holds and what
packets do.

A lab ISP plugged in is a veth appearing in the router namespace; its dnsmasq is started by
the test (the ISP is added with dhcp="silent"), in the ISP's namespace, once the stick is in.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from uplinkd.lab import Isp, Lab, LabDaemon
from uplinkd.lab.isp import IspOptions, dnsmasq_argv

from harness.readback import PROTO, group_members, ip_json, wait_until

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("dnsmasq") is None,
        reason="needs root and dnsmasq",
    ),
    pytest.mark.timeout(120),
]

SERVER_DELAY_S = 1.0


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        lab.add_client()
        yield lab


@pytest.fixture
def start(lab: Lab, tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], LabDaemon]]:
    started: list[LabDaemon] = []

    def start(cfg: dict[str, Any]) -> LabDaemon:
        c = LabDaemon(lab.router, cfg, workdir=tmp_path)
        started.append(c)
        return c.start()

    try:
        yield start
    finally:
        for c in started:
            c.stop()


def start_server(lab: Lab, isp: Isp) -> subprocess.Popen[str]:
    """The ISP's dnsmasq, as the lab would run it; the lab stops it (by pid) at the end."""
    argv = dnsmasq_argv(
        addresses=isp.addresses, options=IspOptions(address="dhcp"), workdir=lab.workdir,
        name=f"isp{isp.index}",
    )  # fmt: skip
    return lab.popen(f"isp{isp.index}", argv)


def v4_addresses(lab: Lab, ifname: str) -> list[ipaddress.IPv4Interface]:
    return [
        ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}")
        for link in ip_json(lab.router, "-4", "address", "show", "dev", ifname)
        for a in link["addr_info"]
        if a["family"] == "inet"
    ]


def dhcp_uplink(table: int) -> dict[str, Any]:
    return {"match": {"name": "usb*"}, "address": {"mode": "dhcp"}, "table": table}


def test_a_stick_whose_server_starts_after_the_plug_gets_its_lease_and_carries_flows(
    lab: Lab, start: Callable[[dict[str, Any]], LabDaemon]
) -> None:
    isp = lab.add_isp("usb", address="dhcp", dhcp="silent", plugged=False)
    c = start({"uplinks": {"usb": dhcp_uplink(101)}, "balance": {"table": 200}})
    lab.plug(isp, "usb0")
    c.wait_state("usb", "present")
    time.sleep(SERVER_DELAY_S)  # the stick's firmware is still booting its server
    u = c.uplink("usb")
    assert (u["state"], u["addresses"], u["in_group"]) == ("present", [], False), u
    assert v4_addresses(lab, "usb0") == []
    start_server(lab, isp)

    u = c.wait_state("usb", "up", timeout=30)
    (addr,) = v4_addresses(lab, "usb0")
    first, last = isp.addresses.dhcp_pool
    assert first <= addr.ip <= last
    assert addr.ip in [lease.address for lease in isp.leases()]
    assert u["addresses"] == [str(addr)] and u["gateway4"] == str(isp.addresses.gateway4.ip)
    routes = ip_json(lab.router, "-4", "route", "show", "table", "101")
    default = next(r for r in routes if r["dst"] == "default")
    assert (default["gateway"], default["dev"], default["protocol"]) == ("10.101.0.1", "usb0", str(PROTO))
    wait_until(lambda: group_members(lab.router, {101: "usb"}) == {"usb": 1}, what="usb in the group")
    report = lab.flows(tcp=5, udp=5, duration=1.0)
    assert report.by_uplink() == {"usb": 10} and report.lost() == 0


def test_a_late_server_beside_a_working_uplink_adds_the_stick_without_disturbing_the_other(
    lab: Lab, start: Callable[[dict[str, Any]], LabDaemon]
) -> None:
    """The wired uplink carries everything while the stick waits; when its server comes,
    the stick joins the group and the wired uplink's flows are left alone."""
    lab.add_isp("wan", address="none")
    isp = lab.add_isp("usb", address="dhcp", dhcp="silent", plugged=False)
    static = {"mode": "static", "cidr": "10.101.0.2/24", "gateway": "10.101.0.1"}
    c = start(
        {
            "uplinks": {"wan": {"match": {"name": "wan"}, "address": static, "table": 101},
                        "usb": dhcp_uplink(102)},
            "balance": {"table": 200},
        }
    )  # fmt: skip
    c.wait_state("wan", "up")
    flows = lab.start_flows(tcp=10, udp=10, interval_ms=20, duration=4.0)
    lab.plug(isp, "usb0")
    time.sleep(SERVER_DELAY_S)
    assert c.uplink("usb")["state"] == "present"
    start_server(lab, isp)
    c.wait_state("usb", "up", timeout=30)
    wait_until(lambda: group_members(lab.router, {101: "wan", 102: "usb"}) == {"wan": 1, "usb": 1},
               what="both uplinks in the group")  # fmt: skip
    report = flows.result()
    assert report.by_uplink() == {"wan": 20} and report.lost() == 0 and not report.moved()
    later = lab.flows(tcp=20, udp=20, duration=1.0)
    assert set(later.by_uplink()) == {"wan", "usb"} and later.lost() == 0
