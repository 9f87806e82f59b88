"""Hotplug against the real kernel: sticks plugged and unplugged under a running uplinkd,
DHCP leases granted, renewed, refused and expired, boots with nothing plugged in.

A lab ISP plugged in is a veth appearing in the router namespace, like a USB stick; its
dnsmasq is the ISP's DHCP server. Where a test needs a server the lab does not make (short
leases, another pool), it runs its own dnsmasq in the ISP's namespace, stopped by pid.
Assertions read the kernel back independently (`ip -json`, `nft -j`, `conntrack -L`) and
look at what packets do. Every test builds its own lab and controller and tears both down.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from uplinkd.lab import Isp, Lab
from uplinkd.lab.isp import IspOptions, dnsmasq_argv
from uplinkd.lab.launcher import LabDaemon

from harness.readback import (
    NH_BASE,
    PROTO,
    conntrack_marks,
    group_members,
    ip_json,
    nexthops,
    nhid,
    routes,
    rules,
    wait_until,
)

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("dnsmasq") is None or shutil.which("conntrack") is None,
        reason="needs root, dnsmasq and conntrack",
    ),
    pytest.mark.timeout(120),
]

BALANCE = 200
WAITING = "waiting for a DHCP lease"


# --- config and lab helpers ---------------------------------------------------------------------


def dhcp_uplink(table: int, match: dict[str, Any], weight: int = 1) -> dict[str, Any]:
    return {"match": match, "address": {"mode": "dhcp"}, "table": table, "weight": weight}


def config(**uplinks: dict[str, Any]) -> dict[str, Any]:
    return {"uplinks": uplinks, "balance": {"table": BALANCE}}


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        lab.add_client()
        yield lab


@pytest.fixture
def start(lab: Lab, tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], LabDaemon]]:
    """Starts the daemon with a config; every controller started is stopped at the end."""
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


def v4_addresses(lab: Lab, ifname: str) -> list[ipaddress.IPv4Interface]:
    return [
        ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}")
        for link in ip_json(lab.router, "-4", "address", "show", "dev", ifname)
        for a in link["addr_info"]
        if a["family"] == "inet"
    ]


def in_pool(isp: Isp, address: ipaddress.IPv4Interface) -> bool:
    first, last = isp.addresses.dhcp_pool
    return first <= address.ip <= last


def table_routes(lab: Lab, table: int | str, family: str = "-4") -> list[dict[str, Any]]:
    """`ip -json route show table T`; [] when the kernel has no such table (any more)."""
    done = lab.run("router", ["ip", "-json", family, "route", "show", "table", str(table)], check=False)
    if done.returncode != 0:
        assert "FIB table does not exist" in done.stderr, done.stderr
        return []
    return list(json.loads(done.stdout)) if done.stdout.strip() else []


def default_route(lab: Lab, table: int | str) -> dict[str, Any] | None:
    return next((r for r in table_routes(lab, table) if r["dst"] == "default"), None)


def nft_table(lab: Lab) -> list[dict[str, Any]]:
    """`nft -j list table inet uplinkd`: the table's objects (set, chains, rules)."""
    out = lab.run("router", ["nft", "-j", "list", "table", "inet", "uplinkd"]).stdout
    return [obj for obj in json.loads(out)["nftables"] if "metainfo" not in obj]


def nft_mentions(lab: Lab, ifname: str, mark: int | None = None) -> list[str]:
    """Every set element and rule of our nft table that names `ifname` or carries `mark`."""
    found = []
    for obj in nft_table(lab):
        if "set" in obj and ifname in json.dumps(obj["set"].get("elem", [])):
            found.append(f"set {obj['set']['name']}: element {ifname}")
        if "rule" in obj:
            text = json.dumps(obj["rule"]["expr"])
            if f'"{ifname}"' in text or (mark is not None and f": {mark}" in text):
                found.append(f"chain {obj['rule']['chain']}: {text}")
    return found


def leftovers(lab: Lab, *, ifname: str, table: int, mark: int, address: str | None) -> list[str]:
    """Whatever the kernel still holds of an uplink that is gone, read back independently."""
    left: list[str] = []
    for family in ("-4", "-6"):
        for r in ip_json(lab.router, family, "rule", "show"):
            if str(r.get("table")) == str(table) or (address is not None and r.get("src") == address):
                left.append(f"rule {r}")
        left += [f"route {r}" for r in table_routes(lab, table, family)]
        left += [f"route {r}" for r in ip_json(lab.router, family, "route", "show", "table", "all")
                 if r.get("dev") == ifname]  # fmt: skip
    for nh in nexthops(lab.router).values():
        if nh.get("dev") == ifname or nh["id"] in (nhid(table), nhid(table, True)):
            left.append(f"nexthop {nh}")
        if any(m["id"] in (nhid(table), nhid(table, True)) for m in nh.get("group", [])):
            left.append(f"group member {nh}")
    left += nft_mentions(lab, ifname, mark)
    left += [f"conntrack mark {m:#x}" for m in conntrack_marks(lab.router) if m == mark]
    return left


class Dnsmasq:
    """An ISP's DHCP server run by the test (the ISP is added with dhcp="silent"), with what
    the lab's cannot do: leases of a few seconds, short T1/T2, another pool. dnsmasq refuses
    lease times under 2 minutes but sends an option 51 it is given, and the client goes by
    that. (dnsmasq 2.90 ignores T1/T2 under 3 s.) Its lease file is the lab's, so
    `isp.leases()` reads it."""

    def __init__(self, lab: Lab, isp: Isp) -> None:
        self.lab, self.isp = lab, isp
        self.proc: subprocess.Popen[str] | None = None

    def start(
        self, *, lease_s: int | None = None, t1: int | None = None, t2: int | None = None,
        pool: tuple[int, int] | None = None, router: bool = True,
    ) -> Dnsmasq:  # fmt: skip
        assert self.proc is None
        argv = dnsmasq_argv(
            addresses=self.isp.addresses,
            options=IspOptions(address="dhcp"),
            workdir=self.lab.workdir,
            name=f"isp{self.isp.index}",
        )
        if pool is not None:
            net = f"10.{100 + self.isp.index}.0"
            argv = [
                f"--dhcp-range={net}.{pool[0]},{net}.{pool[1]},255.255.255.0,120"
                if a.startswith("--dhcp-range=") else a
                for a in argv
            ]  # fmt: skip
        if not router:  # an empty option 3: no router at all (not even dnsmasq's own address)
            argv = [a for a in argv if not a.startswith("--dhcp-option=option:router,")] + ["--dhcp-option=3"]
        for option, value in (("51", lease_s), ("option:T1", t1), ("option:T2", t2)):  # 51: lease time
            if value is not None:
                argv.append(f"--dhcp-option={option},{value}")
        self.proc = self.lab.popen(f"isp{self.isp.index}", argv)
        ns = self.lab.netns(f"isp{self.isp.index}")
        wait_until(
            lambda: f"pid={self.proc.pid}," in subprocess.run(  # type: ignore[union-attr]
                ["ip", "netns", "exec", ns, "ss", "-H", "-u", "-l", "-n", "-p", "sport = :67"],
                capture_output=True, text=True, check=False,
            ).stdout,
            timeout=5, what="dnsmasq listening",
        )  # fmt: skip
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.lab.stop(self.proc)
            self.proc = None

    def said(self, word: str) -> int:
        return dnsmasq_said(self.lab, self.isp, word)


def dnsmasq_said(lab: Lab, isp: Isp, word: str) -> int:
    """How many times the ISP's dnsmasq logged `word` (DHCPACK, DHCPNAK, ...)."""
    log = lab.workdir / f"isp{isp.index}.dnsmasq.log"
    return log.read_text(errors="replace").count(word) if log.exists() else 0


# --- plug and unplug ----------------------------------------------------------------------------


def test_plug_gets_a_lease_into_its_own_table_and_carries_flows(lab: Lab, start: Any) -> None:
    isp = lab.add_isp("usb", address="dhcp", plugged=False)
    c = start(config(usb=dhcp_uplink(101, {"name": "usb*"})))
    assert c.uplink("usb")["state"] == "absent"
    lab.plug(isp, "usb0")
    u = c.wait_state("usb", "up")

    # the address on the interface is the one dnsmasq leased, from its pool
    (addr,) = v4_addresses(lab, "usb0")
    assert in_pool(isp, addr) and addr.network.prefixlen == 24
    assert addr.ip in [lease.address for lease in isp.leases()]
    assert u["addresses"] == [str(addr)] and u["gateway4"] == "10.101.0.1"
    # the default route goes into T_u, ours; the router's own traffic from it uses T_u
    route = default_route(lab, 101)
    assert route is not None
    assert (route["gateway"], route["dev"], route["protocol"]) == ("10.101.0.1", "usb0", str(PROTO))
    assert any(r.get("src") == str(addr.ip) and str(r["table"]) == "101" for r in rules(lab.router))
    # ... and never into main
    assert default_route(lab, "main") is None, routes(lab.router, "main")
    assert not [r for r in routes(lab.router, "main") if r.get("gateway")], routes(lab.router, "main")
    assert group_members(lab.router, {101: "usb"}) == {"usb": 1}
    report = lab.flows(tcp=5, udp=5, duration=1.0)
    assert report.by_uplink() == {"usb": 10} and report.lost() == 0


def test_unplug_leaves_nothing_behind(lab: Lab, start: Any) -> None:
    lab.add_isp("wan", address="none")
    isp = lab.add_isp("usb", address="dhcp", plugged=False)
    c = start(
        config(
            wan={"match": {"name": "wan"}, "table": 101,
                 "address": {"mode": "static", "cidr": "10.101.0.2/24", "gateway": "10.101.0.1"}},
            usb=dhcp_uplink(102, {"name": "usb*"}, weight=5),
        )
    )  # fmt: skip
    lab.plug(isp, "usb0")
    u = c.wait_state("usb", "up")
    wait_until(lambda: set(group_members(lab.router, {101: "wan", 102: "usb"})) == {"wan", "usb"},
               what="both uplinks in the group")  # fmt: skip
    mark, address = u["mark"], u["addresses"][0].split("/")[0]
    flows = lab.start_flows(tcp=20, udp=20, interval_ms=20, duration=4.0)
    assert mark in conntrack_marks(lab.router), "no connection went through usb; the test proves nothing"
    assert nft_mentions(lab, "usb0", mark), "the nft table never named usb0; the test proves nothing"

    lab.unplug("usb0")
    c.wait_state("usb", "absent")
    wait_until(lambda: not leftovers(lab, ifname="usb0", table=102, mark=mark, address=address),
               timeout=5, what="usb's kernel state gone")  # fmt: skip
    assert leftovers(lab, ifname="usb0", table=102, mark=mark, address=address) == []
    assert c.uplink("usb")["addresses"] == [] and not c.uplink("usb")["in_group"]
    # the other uplink is untouched and carries everything
    assert group_members(lab.router, {101: "wan", 102: "usb"}) == {"wan": 1}
    assert default_route(lab, 101) is not None
    flows.result()
    report = lab.flows(tcp=5, udp=5, duration=1.0)
    assert report.by_uplink() == {"wan": 10} and report.lost() == 0


def test_replug_under_another_name_is_the_same_uplink(lab: Lab, start: Any) -> None:
    isp = lab.add_isp("usb", address="dhcp", plugged=False)
    c = start(config(usb=dhcp_uplink(101, {"name": "usb*", "driver": "veth"}, weight=3)))
    lab.plug(isp, "usb0")
    before = c.wait_state("usb", "up")
    lab.unplug("usb0")
    c.wait_state("usb", "absent")
    lab.plug(isp, "usb3")  # another port: the kernel names it differently
    after = c.wait_state("usb", "up")
    assert after["dev"] == "usb3"
    same = ("table", "mark", "weight", "gateway4")
    assert (
        {k: after[k] for k in same}
        == {k: before[k] for k in same}
        == {"table": 101, "mark": 0x6500, "weight": 3, "gateway4": "10.101.0.1"}
    )
    route = default_route(lab, 101)
    assert route is not None and route["dev"] == "usb3"
    assert nexthops(lab.router)[nhid(101)]["dev"] == "usb3"
    assert group_members(lab.router, {101: "usb"}) == {"usb": 3}
    assert nft_mentions(lab, "usb3", 0x6500) and not nft_mentions(lab, "usb0")
    assert lab.flows(tcp=3, udp=3, duration=0.5).by_uplink() == {"usb": 6}


def test_two_identical_sticks_are_told_apart_by_name(lab: Lab, start: Any) -> None:
    a = lab.add_isp("a", address="dhcp", plugged=False)
    b = lab.add_isp("b", address="dhcp", plugged=False)
    c = start(
        config(
            a=dhcp_uplink(101, {"name": "usb0", "driver": "veth"}),
            b=dhcp_uplink(102, {"name": "usb1", "driver": "veth"}),
        )
    )
    lab.plug(b, "usb1")  # b's stick first: plug order does not decide which is which
    lab.plug(a, "usb0")
    ua, ub = c.wait_state("a", "up"), c.wait_state("b", "up")
    assert (ua["dev"], ub["dev"]) == ("usb0", "usb1")
    (addr_a,), (addr_b,) = v4_addresses(lab, "usb0"), v4_addresses(lab, "usb1")
    assert addr_a.ip in [lease.address for lease in a.leases()] and in_pool(a, addr_a)
    assert addr_b.ip in [lease.address for lease in b.leases()] and in_pool(b, addr_b)
    ra, rb = default_route(lab, 101), default_route(lab, 102)
    assert ra is not None and (ra["gateway"], ra["dev"]) == ("10.101.0.1", "usb0")
    assert rb is not None and (rb["gateway"], rb["dev"]) == ("10.102.0.1", "usb1")
    assert ua["mark"] != ub["mark"]
    wait_until(lambda: group_members(lab.router, {101: "a", 102: "b"}) == {"a": 1, "b": 1},
               what="both in the group")  # fmt: skip
    report = lab.flows(tcp=20, udp=20, duration=1.0)
    assert set(report.by_uplink()) == {"a", "b"} and report.lost() == 0


def test_boot_with_nothing_plugged_then_two_sticks_at_once(lab: Lab, start: Any) -> None:
    one = lab.add_isp("one", address="dhcp", plugged=False)
    two = lab.add_isp("two", address="dhcp", plugged=False)
    glob = {"name": "usb*", "driver": "veth"}
    c = start(config(one=dhcp_uplink(101, glob), two=dhcp_uplink(102, glob)))
    # nothing present: the balance table refuses rather than falling through to main
    for family in ("-4", "-6"):
        (balance,) = routes(lab.router, BALANCE, family)
        assert balance["type"] == "unreachable", balance
    assert {u["state"] for u in c.status()["uplinks"]} == {"absent"}
    assert not any(n["id"] >= NH_BASE for n in nexthops(lab.router).values())
    lab.plug(one, "usb0")
    lab.plug(two, "usb1")
    u1, u2 = c.wait_state("one", "up"), c.wait_state("two", "up")
    assert {u1["dev"], u2["dev"]} == {"usb0", "usb1"}
    # each uplink has the lease of the stick it got, in its own table
    for u in (u1, u2):
        isp = one if u["dev"] == "usb0" else two
        (addr,) = v4_addresses(lab, u["dev"])
        assert addr.ip in [lease.address for lease in isp.leases()]
        route = default_route(lab, u["table"])
        assert route is not None and (route["gateway"], route["dev"]) == (
            str(isp.addresses.gateway4.ip),
            u["dev"],
        )
    wait_until(
        lambda: len(group_members(lab.router, {101: "one", 102: "two"})) == 2, what="both in the group"
    )
    assert routes(lab.router, BALANCE)[0].get("nhid") == NH_BASE
    report = lab.flows(tcp=20, udp=20, duration=1.0)
    assert set(report.by_uplink()) == {"one", "two"} and report.lost() == 0


def test_unplugging_one_of_two_glob_matched_sticks_leaves_the_other_alone(lab: Lab, start: Any) -> None:
    one = lab.add_isp("one", address="dhcp", plugged=False)
    two = lab.add_isp("two", address="dhcp", plugged=False)
    glob = {"name": "usb*", "driver": "veth"}
    c = start(config(one=dhcp_uplink(101, glob), two=dhcp_uplink(102, glob)))
    lab.plug(one, "usb0")
    c.wait_state("one", "up")
    lab.plug(two, "usb1")
    before = c.wait_state("two", "up")
    assert before["dev"] == "usb1"
    flows = lab.start_flows(tcp=10, udp=10, duration=3.0)
    lab.unplug("usb0")
    wait_until(lambda: c.uplink("one")["dev"] != "usb0", timeout=5, what="one to lose usb0")
    time.sleep(1.0)
    assert c.uplink("one")["state"] == "absent", c.uplink("one")
    after = c.uplink("two")
    assert (after["dev"], after["state"]) == ("usb1", "up"), after
    report = flows.result()
    assert not [f for f in report.started_on("two") if f.moved or f.lost], "two's connections were disturbed"


def test_flows_waiting_for_an_uplink_are_masqueraded_when_it_comes(lab: Lab, start: Any) -> None:
    """Flows (a VPN, say) keep sending while no uplink is there; the stick comes up at once
    (here: while the controller is paused, so one pass sees it up with carrier and does all)."""
    isp = lab.add_isp("usb", address="none", plugged=False)
    static = {"mode": "static", "cidr": "10.101.0.2/24", "gateway": "10.101.0.1"}
    c = start(config(usb={"match": {"name": "usb*"}, "address": static, "table": 101}))
    flows = lab.start_flows(tcp=0, udp=10, interval_ms=1, duration=4.0, wait_established=False)
    time.sleep(0.3)
    c.signal(signal.SIGSTOP)
    try:
        lab.plug(isp, "usb0")
    finally:
        c.signal(signal.SIGCONT)
    c.wait_state("usb", "up")
    report = flows.result()
    assert report.by_uplink(at="last") == {"usb": 10}, report.by_uplink(at="last")


# --- DHCP: no server, expiry, NAK ---------------------------------------------------------------


def test_a_silent_dhcp_server_keeps_the_uplink_out(lab: Lab, start: Any) -> None:
    lab.add_isp("wan", address="none")
    lab.add_isp("usb", address="dhcp", dhcp="silent")
    c = start(
        config(
            wan={"match": {"name": "wan"}, "table": 101,
                 "address": {"mode": "static", "cidr": "10.101.0.2/24", "gateway": "10.101.0.1"}},
            usb=dhcp_uplink(102, {"name": "usb"}),
        )
    )  # fmt: skip
    c.wait_state("wan", "up")
    deadline = time.monotonic() + 3.0  # the client sends DISCOVERs all along (retries after 4 s)
    while time.monotonic() < deadline:
        u = c.uplink("usb")
        assert (u["state"], u["reason"], u["in_group"]) == ("present", WAITING, False), u
        assert table_routes(lab, 102) == [] and table_routes(lab, 102, "-6") == []
        assert v4_addresses(lab, "usb") == []
        assert group_members(lab.router, {101: "wan", 102: "usb"}) == {"wan": 1}
        time.sleep(0.2)
    assert not any(r.get("src") not in (None, "all") and str(r["table"]) == "102" for r in rules(lab.router))
    assert default_route(lab, "main") is None
    report = lab.flows(tcp=5, udp=5, duration=1.0)
    assert report.by_uplink() == {"wan": 10} and report.lost() == 0


def test_an_expired_lease_takes_the_uplink_out_and_a_new_one_brings_it_back(lab: Lab, start: Any) -> None:
    """True expiry, in a running client: the server grants 6 s leases, then goes away;
    renewals and rebinds go unanswered until the lease runs out."""
    lab.add_isp("wan", address="none")
    isp = lab.add_isp("usb", address="dhcp", dhcp="silent")
    server = Dnsmasq(lab, isp).start(lease_s=6, t1=3, t2=4)
    c = start(
        config(
            wan={"match": {"name": "wan"}, "table": 101,
                 "address": {"mode": "static", "cidr": "10.101.0.2/24", "gateway": "10.101.0.1"}},
            usb=dhcp_uplink(102, {"name": "usb"}),
        )
    )  # fmt: skip
    u = c.wait_state("usb", "up")
    address = u["addresses"][0].split("/")[0]
    lease_file = c.workdir / "state" / "usb.lease.json"
    assert lease_file.exists()
    flows = lab.start_flows(tcp=10, udp=10, duration=2.0)
    flows.result()
    server.stop()
    gone = c.wait_state("usb", "present", timeout=15)
    assert gone["reason"] == WAITING and not gone["in_group"]
    wait_until(lambda: v4_addresses(lab, "usb") == [], timeout=5, what="the expired address removed")
    assert table_routes(lab, 102) == [] and nhid(102) not in nexthops(lab.router)
    assert group_members(lab.router, {101: "wan", 102: "usb"}) == {"wan": 1}
    assert not any(r.get("src") == address for r in rules(lab.router))
    assert 0x6600 not in conntrack_marks(lab.router)
    assert not lease_file.exists(), "an expired lease was kept for the next start"
    assert lab.flows(tcp=5, udp=5, duration=0.5).by_uplink() == {"wan": 10}
    # the server comes back: the client, looking for a lease all along, gets one
    server.start(lease_s=60)
    c.wait_state("usb", "up", timeout=45)
    assert default_route(lab, 102) is not None and len(v4_addresses(lab, "usb")) == 1


def test_a_nak_on_renewal_replaces_the_lease(lab: Lab, start: Any) -> None:
    """The ISP renumbers: the renewal is refused (NAK), the lease and its address go, and
    the client gets an address from the new pool."""
    isp = lab.add_isp("usb", address="dhcp", dhcp="silent")
    server = Dnsmasq(lab, isp).start(lease_s=30, t1=3, t2=20)
    c = start(config(usb=dhcp_uplink(101, {"name": "usb"})))
    old = ipaddress.IPv4Interface(c.wait_state("usb", "up")["addresses"][0])
    assert in_pool(isp, old)
    server.stop()
    server.start(lease_s=30, t1=3, t2=20, pool=(200, 210))
    wait_until(lambda: server.said("DHCPNAK"), timeout=10, what="dnsmasq to refuse the renewal")
    new = wait_until(
        lambda: (u := c.uplink("usb"))["state"] == "up" and u["addresses"] != [str(old)] and u["addresses"],
        timeout=15, what="a lease from the new pool",
    )  # fmt: skip
    (now,) = v4_addresses(lab, "usb")
    assert [str(now)] == new and 200 <= int(now.ip.packed[3]) <= 210
    assert old.ip not in [a.ip for a in v4_addresses(lab, "usb")]
    assert not any(r.get("src") == str(old.ip) for r in rules(lab.router))
    assert any(r.get("src") == str(now.ip) for r in rules(lab.router))
    route = default_route(lab, 101)
    assert route is not None and route["gateway"] == "10.101.0.1"
    assert lab.flows(tcp=3, udp=3, duration=0.5).by_uplink() == {"usb": 6}
    # added once: deleting the old (primary) address did not take the new one with it
    adds = [w for w in c.writes() if f"ip address {now} dev usb add" in w or f"address add {now}" in w]
    assert len(adds) == 1, c.writes()


def test_a_nak_at_restart_replaces_the_stored_lease(lab: Lab, start: Any) -> None:
    """The controller restarts while the ISP has renumbered: it adopts its stored lease,
    asks for it again (INIT-REBOOT), is refused, and takes the new pool's address."""
    isp = lab.add_isp("usb", address="dhcp", dhcp="silent")
    server = Dnsmasq(lab, isp).start()
    c = start(config(usb=dhcp_uplink(101, {"name": "usb"})))
    old = ipaddress.IPv4Interface(c.wait_state("usb", "up")["addresses"][0])
    c.stop()
    server.stop()
    server.start(pool=(200, 210))
    c.start()
    wait_until(lambda: server.said("DHCPNAK"), timeout=10, what="dnsmasq to refuse the stored lease")
    u = wait_until(lambda: (u := c.uplink("usb"))["state"] == "up" and u["addresses"] != [str(old)] and u,
                   timeout=15, what="a lease from the new pool")  # fmt: skip
    # status follows the kernel: the address it reports is on the interface already
    assert {a for a in u["addresses"] if ":" not in a} <= {str(a) for a in v4_addresses(lab, "usb")}, u
    # the old address may still be going (its removal is the same pass's last write): wait on the kernel
    (now,) = wait_until(lambda: len(found := v4_addresses(lab, "usb")) == 1 and found,
                        timeout=5, what="only the new lease's address on usb")  # fmt: skip
    assert 200 <= int(now.ip.packed[3]) <= 210
    assert not any(r.get("src") == str(old.ip) for r in rules(lab.router))


def test_a_lease_without_a_router_is_still_taken(lab: Lab, start: Any) -> None:
    """Option 3 is optional (a point-to-point modem may leave it out): the address is used."""
    isp = lab.add_isp("usb", address="dhcp", dhcp="silent")
    Dnsmasq(lab, isp).start(router=False)
    c = start(config(usb=dhcp_uplink(101, {"name": "usb"})))
    u = wait_until(lambda: (u := c.uplink("usb"))["addresses"] and u, timeout=10, what="the lease taken")
    assert u["reason"] != WAITING and u["gateway4"] is None, u
    (addr,) = v4_addresses(lab, "usb")
    assert [str(addr)] == u["addresses"] and addr.ip in [lease.address for lease in isp.leases()]


def test_a_stored_lease_that_runs_out_while_nobody_answers_is_dropped(lab: Lab, start: Any) -> None:
    """The controller restarts within a lease, but the server is gone: the stored lease is
    adopted (nothing changes at restart), and must still go when it runs out."""
    isp = lab.add_isp("usb", address="dhcp", dhcp="silent")
    server = Dnsmasq(lab, isp).start(lease_s=8, t1=6, t2=7)
    c = start(config(usb=dhcp_uplink(101, {"name": "usb"})))
    c.wait_state("usb", "up")
    c.stop()
    server.stop()
    c.start()
    gone = c.wait_state("usb", "present", timeout=20)
    assert gone["reason"] == WAITING
    wait_until(lambda: v4_addresses(lab, "usb") == [] and table_routes(lab, 101) == [],
               timeout=5, what="the lease's address and route removed")  # fmt: skip


def test_an_administrative_down_up_does_not_kill_the_dhcp_client(lab: Lab, start: Any) -> None:
    """Someone sets the stick down and up (the controller raises it again): the DHCP client's
    socket saw ENETDOWN; it must still renew, so the uplink outlives its lease time."""
    isp = lab.add_isp("usb", address="dhcp", dhcp="silent")
    Dnsmasq(lab, isp).start(lease_s=6, t1=3, t2=4)
    c = start(config(usb=dhcp_uplink(101, {"name": "usb"})))
    c.wait_state("usb", "up")
    lab.run("router", ["ip", "link", "set", "dev", "usb", "down"])
    wait_until(lambda: any(e["uplink"] == "usb" and e["to"] == "present" for e in c.status()["events"]),
               timeout=5, what="usb to go down")  # fmt: skip
    wait_until(
        lambda: "UP" in lab.link("router", "usb")["flags"], timeout=5, what="the controller to raise usb"
    )
    c.wait_state("usb", "up", timeout=10)
    deadline = time.monotonic() + 9.0  # half as long again as the lease
    while time.monotonic() < deadline:
        u = c.uplink("usb")
        assert u["state"] == "up" and u["in_group"], u
        time.sleep(0.2)
    assert default_route(lab, 101) is not None


# --- flaps and restarts -------------------------------------------------------------------------


def test_a_link_flap_restores_everything_without_a_restart(lab: Lab, start: Any) -> None:
    isp = lab.add_isp("usb", address="dhcp")
    c = start(config(usb=dhcp_uplink(101, {"name": "usb"}, weight=2)))
    before = c.wait_state("usb", "up")
    pid = c.proc.pid
    isp.carrier(False)
    down = c.wait_state("usb", "present")
    assert down["reason"] == "no carrier"
    wait_until(lambda: default_route(lab, 101) is None and not group_members(lab.router, {101: "usb"}),
               what="usb out of T_u and the group")  # fmt: skip
    assert routes(lab.router, BALANCE)[0]["type"] == "unreachable"
    isp.carrier(True)
    after = c.wait_state("usb", "up")
    assert c.running and c.proc.pid == pid
    assert after["addresses"] == before["addresses"], "the lease changed over a carrier flap"
    wait_until(lambda: group_members(lab.router, {101: "usb"}) == {"usb": 2}, what="usb back in the group")
    route = default_route(lab, 101)
    assert route is not None and (route["gateway"], route["dev"]) == ("10.101.0.1", "usb")
    assert nexthops(lab.router)[nhid(101)]["gateway"] == "10.101.0.1"
    assert routes(lab.router, BALANCE)[0].get("nhid") == NH_BASE
    assert lab.flows(tcp=5, udp=5, duration=0.5).by_uplink() == {"usb": 10}


def test_restart_with_a_dhcp_uplink_up_makes_no_kernel_writes(lab: Lab, start: Any) -> None:
    isp = lab.add_isp("usb", address="dhcp")
    c = start(config(usb=dhcp_uplink(101, {"name": "usb"})))
    before = c.wait_state("usb", "up")
    state = (rules(lab.router), nexthops(lab.router), routes(lab.router, 101), v4_addresses(lab, "usb"))
    flows = lab.start_flows(tcp=10, udp=10, interval_ms=20, duration=4.0)
    assert c.stop() == 0
    writes_before = len(c.writes())
    acks = dnsmasq_said(lab, isp, "DHCPACK")
    c.start()
    assert c.status()["writes"] == 0
    # the client asks for the stored lease again (INIT-REBOOT) and gets it: still nothing to write
    wait_until(
        lambda: dnsmasq_said(lab, isp, "DHCPACK") > acks, timeout=10, what="the stored lease confirmed"
    )
    time.sleep(0.3)
    status = c.status()
    assert status["writes"] == 0, c.writes()[writes_before:]
    assert len(c.writes()) == writes_before, c.writes()[writes_before:]
    assert c.uplink("usb")["addresses"] == before["addresses"]
    assert (
        rules(lab.router),
        nexthops(lab.router),
        routes(lab.router, 101),
        v4_addresses(lab, "usb"),
    ) == state
    report = flows.result()
    assert report.lost() == 0 and not report.moved()
