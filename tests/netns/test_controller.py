"""The controller core against the real kernel: layout, spread, drain, restart, ownership,
drift, carrier, nftables, config reloads. Every test builds its own lab and tears it down."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from uplinkd.lab import Lab
from uplinkd.lab.addresses import SERVER4
from uplinkd.lab.launcher import LabDaemon

from harness.readback import (
    NH_BASE,
    PROTO,
    all_rules,
    conntrack_marks,
    group_members,
    ip_json,
    nexthops,
    nft_tables,
    nhid,
    routes,
    rules,
    wait_until,
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.timeout(120),
]

TABLES = {101: "wan", 102: "lte1", 103: "lte2"}


def three_uplinks() -> dict[str, Any]:
    """wan: learned from a default route someone else put in main (external);
    lte1, lte2: static addresses the controller puts on the interface."""
    return {
        "uplinks": {
            "wan": {"match": {"name": "wan"}, "address": {"mode": "external"}, "table": 101, "weight": 3},
            "lte1": {
                "match": {"name": "lte1"},
                "address": {"mode": "static", "cidr": "10.102.0.2/24", "gateway": "10.102.0.1"},
                "table": 102,
            },
            "lte2": {
                "match": {"name": "lte*", "driver": "veth"},
                "address": {"mode": "static", "cidr": "10.103.0.2/24", "gateway": "10.103.0.1"},
                "table": 103,
            },
        },
        "balance": {"table": 200},
    }


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        wan = lab.add_isp("wan")  # the lab puts 10.101.0.2/24 on it, like networkd would
        lab.add_isp("lte1", address="none")
        lab.add_isp("lte2", address="none")
        lab.add_client()
        # someone else's default route on wan (a DHCP client's, say), in main
        lab.run("router", ["ip", "route", "add", "default", "via", str(wan.addresses.gateway4.ip),
                           "dev", "wan", "metric", "100"])  # fmt: skip
        yield lab


@pytest.fixture
def controller(lab: Lab, tmp_path: Path) -> Iterator[LabDaemon]:
    c = LabDaemon(lab.router, three_uplinks(), workdir=tmp_path)
    try:
        yield c
    finally:
        c.stop()


def test_layout_after_start(lab: Lab, controller: LabDaemon) -> None:
    controller.start()
    wait_until(lambda: len(group_members(lab.router, TABLES)) == 3, what="three uplinks in the group")
    r = lab.router
    expected_v4 = [
        (10000, None, None, "main", 0),
        (10010, None, "0x6500/0xff00", "101", None),
        (10010, None, "0x6600/0xff00", "102", None),
        (10010, None, "0x6700/0xff00", "103", None),
        (10020, "10.101.0.2", None, "101", None),
        (10020, "10.102.0.2", None, "102", None),
        (10020, "10.103.0.2", None, "103", None),
        (10030, None, None, "200", None),
    ]
    got = sorted(
        (
            x["priority"],
            x.get("src") if x.get("src") != "all" else None,
            f"{x['fwmark']}/{x['fwmask']}" if "fwmark" in x else None,
            str(x["table"]),
            x.get("suppress_prefixlen"),
        )
        for x in rules(r)
    )
    assert got == sorted(expected_v4, key=lambda t: (t[0], t[1] or "", t[2] or "", t[3]))
    v6 = {(x["priority"], str(x["table"])) for x in rules(r, "-6")}
    assert v6 == {(10000, "main"), (10010, "101"), (10010, "102"), (10010, "103"), (10030, "200")}
    # per-uplink tables: one default each, ours
    for table, gw, dev in (
        (101, "10.101.0.1", "wan"),
        (102, "10.102.0.1", "lte1"),
        (103, "10.103.0.1", "lte2"),
    ):
        (route,) = routes(r, table)
        assert (route["dst"], route["gateway"], route["dev"], route["protocol"]) == (
            "default",
            gw,
            dev,
            str(PROTO),
        )
    # balance: a resilient group of the three nexthops, weights from config
    nhs = nexthops(r)
    group = nhs[NH_BASE]
    assert group["type"] == "resilient"
    assert {(m["id"], m.get("weight", 1)) for m in group["group"]} == {
        (nhid(101), 3),
        (nhid(102), 1),
        (nhid(103), 1),
    }
    assert nhs[nhid(101)]["gateway"] == "10.101.0.1" and nhs[nhid(101)]["dev"] == "wan"
    (balance,) = routes(r, 200)
    assert balance["nhid"] == NH_BASE and balance["protocol"] == str(PROTO)
    # no IPv6 uplink: IPv6 is refused, not leaked to main's routes
    (balance6,) = routes(r, 200, "-6")
    assert balance6["type"] == "unreachable"
    assert ("inet", "uplinkd") in nft_tables(r)
    # the static addresses are on their interfaces, tagged as ours
    addrs = {
        a["ifname"]: [i["local"] for i in a["addr_info"] if i["family"] == "inet"] for a in ip_json(r, "addr")
    }
    assert addrs["lte1"] == ["10.102.0.2"] and addrs["lte2"] == ["10.103.0.2"]


def test_flows_spread_by_weight(lab: Lab, controller: LabDaemon) -> None:
    controller.start()
    wait_until(lambda: len(group_members(lab.router, TABLES)) == 3, what="three uplinks in the group")
    report = lab.flows(tcp=40, udp=60, interval_ms=50, duration=2.0)
    counts = report.by_uplink()
    assert sum(counts.values()) == 100 and "no reply" not in counts, counts
    # weights 3:1:1 → expect 60/20/20; allow 3 standard deviations of the binomial
    assert 45 <= counts.get("wan", 0) <= 75, counts
    assert 8 <= counts.get("lte1", 0) <= 32 and 8 <= counts.get("lte2", 0) <= 32, counts
    assert not report.moved(), "a flow changed uplink while nothing changed"


def test_drain_moves_only_new_flows_of_the_drained_uplink(lab: Lab, controller: LabDaemon) -> None:
    controller.start()
    wait_until(lambda: len(group_members(lab.router, TABLES)) == 3, what="three uplinks in the group")
    before = lab.start_flows(tcp=30, udp=30, interval_ms=20, duration=5.0)
    controller.ctl("drain", "lte1")
    assert set(group_members(lab.router, TABLES)) == {"wan", "lte2"}
    after = lab.flows(tcp=20, udp=40, interval_ms=50, duration=1.5)
    old = before.result()
    assert not old.moved(), "draining moved an existing connection"
    assert old.lost() == 0, "draining lost packets of existing connections"
    assert old.by_uplink(at="first").get("lte1", 0) > 0, "no flow started on lte1; the test proves nothing"
    assert "lte1" not in after.by_uplink(), "a new flow went out of a drained uplink"
    controller.ctl("undrain", "lte1")
    assert set(group_members(lab.router, TABLES)) == {"wan", "lte1", "lte2"}


def test_restart_makes_no_writes_and_interrupts_no_flow(lab: Lab, controller: LabDaemon) -> None:
    controller.start()
    wait_until(lambda: len(group_members(lab.router, TABLES)) == 3, what="three uplinks in the group")
    before_rules, before_nh = rules(lab.router), nexthops(lab.router)
    flows = lab.start_flows(tcp=20, udp=20, interval_ms=20, duration=4.0)
    assert controller.stop() == 0
    assert rules(lab.router) == before_rules and nexthops(lab.router) == before_nh, (
        "SIGTERM changed the kernel"
    )
    writes_before = len(controller.writes())
    controller.start()
    status = controller.status()  # start() waited for the first full pass
    assert status["passes"] >= 1 and status["writes"] == 0
    assert len(controller.writes()) == writes_before, controller.writes()[writes_before:]
    report = flows.result()
    assert report.lost() == 0 and not report.moved() and report.reconnects() == 0


def test_foreign_objects_are_never_touched(lab: Lab, controller: LabDaemon) -> None:
    r = lab.router
    foreign = [
        ["ip", "route", "add", "default", "via", "10.101.0.1", "dev", "wan", "table", "50"],
        ["ip", "rule", "add", "priority", "500", "fwmark", "0x6500", "lookup", "50"],
        ["ip", "rule", "add", "priority", "10010", "from", "192.0.2.0/24", "lookup", "50"],
        ["ip", "nexthop", "add", "id", "5", "via", "10.101.0.1", "dev", "wan"],
        ["ip", "route", "add", "198.18.0.0/15", "nhid", "5", "table", "101"],
        # someone else's address on lte2 (the kernel drops a device's routes with its last
        # address, so the route below must not hang on ours alone), and their default route
        # at the very key of lte2's table: never taken over
        ["ip", "address", "add", "10.103.0.9/24", "dev", "lte2"],
        ["ip", "route", "add", "default", "via", "10.103.0.1", "dev", "lte2", "table", "103"],
        ["nft", "add", "table", "inet", "foreign"],
    ]
    for argv in foreign:
        lab.run("router", argv)
    snapshot = lambda: (  # noqa: E731
        [x for x in all_rules(r) if x.get("protocol") != str(PROTO)],
        routes(r, 50),
        [x for x in routes(r, 101) if x.get("protocol") != str(PROTO)],
        routes(r, 103),
        nexthops(r)[5],
        [
            a
            for a in ip_json(r, "-4", "addr", "show", "dev", "lte2")[0]["addr_info"]
            if a["local"] != "10.103.0.2"
        ],
    )
    before = snapshot()
    controller.start()
    wait_until(lambda: len(group_members(r, TABLES)) == 3, what="three uplinks in the group")
    assert any(
        "a route uplinkd does not own holds this key" in f["error"] for f in controller.status()["failures"]
    )
    lab.isp("lte1").carrier(False)  # a reconcile with changes
    wait_until(lambda: len(group_members(r, TABLES)) == 2, what="lte1 out of the group")
    assert snapshot() == before
    controller.stop()
    out = controller.ctl("flush", "--config", str(controller.config_path))
    assert "removed" in out.stderr
    assert snapshot() == before
    assert ("inet", "foreign") in nft_tables(r) and ("inet", "uplinkd") not in nft_tables(r)
    assert rules(r) == [] and routes(r, 200) == [] and NH_BASE not in nexthops(r)


def test_drift_is_healed(lab: Lab, controller: LabDaemon) -> None:
    r = lab.router
    controller.start()
    wait_until(lambda: len(group_members(r, TABLES)) == 3, what="three uplinks in the group")
    lab.run("router", ["ip", "rule", "del", "priority", "10030"])
    wait_until(lambda: any(x["priority"] == 10030 for x in rules(r)), what="the balance rule back")
    lab.run("router", ["ip", "route", "del", "default", "table", "102"])
    wait_until(lambda: routes(r, 102), what="lte1's default route back")
    lab.run("router", ["ip", "nexthop", "replace", "id", str(nhid(103)), "dev", "lte2"])
    wait_until(lambda: nexthops(r)[nhid(103)].get("gateway") == "10.103.0.1", what="lte2's nexthop restored")
    lab.run("router", ["ip", "nexthop", "del", "id", str(NH_BASE)])
    wait_until(lambda: len(group_members(r, TABLES)) == 3, what="the group rebuilt")
    assert routes(r, 200)[0].get("nhid") == NH_BASE


def test_carrier_loss_and_return(lab: Lab, controller: LabDaemon) -> None:
    r = lab.router
    controller.start()
    wait_until(lambda: len(group_members(r, TABLES)) == 3, what="three uplinks in the group")
    lab.isp("lte1").carrier(False)
    controller.wait_state("lte1", "present")
    assert set(group_members(r, TABLES)) == {"wan", "lte2"}
    report = lab.flows(tcp=10, udp=20, duration=1.0)
    assert "lte1" not in report.by_uplink() and report.lost() == 0
    lab.isp("lte1").carrier(True)
    controller.wait_state("lte1", "up")
    wait_until(
        lambda: set(group_members(r, TABLES)) == {"wan", "lte1", "lte2"}, what="lte1 back in the group"
    )
    assert routes(r, 102)[0]["gateway"] == "10.102.0.1"


def test_nft_table_restored_after_flush_ruleset(lab: Lab, controller: LabDaemon) -> None:
    controller.start()
    wait_until(lambda: ("inet", "uplinkd") in nft_tables(lab.router), what="our nft table")
    lab.run("router", ["nft", "flush", "ruleset"])
    wait_until(
        lambda: ("inet", "uplinkd") in nft_tables(lab.router), timeout=5, what="our nft table restored"
    )
    report = lab.flows(tcp=5, udp=5, duration=1.0)
    assert report.lost() == 0 and "no reply" not in report.by_uplink()


def test_invalid_config_is_refused_and_sighup_keeps_the_running_one(lab: Lab, controller: LabDaemon) -> None:
    bad = controller.workdir / "bad.json"
    bad.write_text(json.dumps({"uplinks": {"x": {"match": {"name": "x"}, "table": 254}}}))
    run = subprocess.run(
        ["ip", "netns", "exec", lab.router, sys.executable, "-m", "uplinkd.daemon", "--config", str(bad)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert "uplinks.x.table: 254 is the kernel's 'main' table" in run.stderr
    assert rules(lab.router) == [], "an invalid config changed the kernel"

    controller.start()
    wait_until(lambda: len(group_members(lab.router, TABLES)) == 3, what="three uplinks in the group")
    before = (rules(lab.router), nexthops(lab.router))
    controller.write_config('{"uplinks": {"wan": {"table": "x"')
    controller.signal(signal.SIGHUP)
    wait_until(lambda: "keeping the running config" in controller.log(), what="the reload to be refused")
    assert controller.running
    assert (rules(lab.router), nexthops(lab.router)) == before
    # a good config takes effect on SIGHUP: lte2 leaves
    good = three_uplinks()
    del good["uplinks"]["lte2"]
    good["control"] = controller.config["control"]
    controller.write_config(good)
    controller.signal(signal.SIGHUP)
    wait_until(
        lambda: set(group_members(lab.router, TABLES)) == {"wan", "lte1"}, what="lte2 removed by reload"
    )
    assert not routes(lab.router, 103)


def test_bad_control_requests_get_clear_errors(lab: Lab, controller: LabDaemon) -> None:
    controller.start()
    out = controller.ctl("drain", "nosuch", check=False)
    assert out.returncode == 2 and "uplink: 'nosuch' is not configured; known: wan, lte1, lte2" in out.stderr
    for raw, expected in (
        (b"hello\n", "not JSON"),
        (b"[]\n", "send a JSON object"),
        (b'{"command": "explode"}\n', "command: 'explode' is unknown"),
        (b'{"command": "explain", "dst": "nope"}\n', "dst"),
    ):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(controller.socket))
            s.sendall(raw)
            answer = json.loads(s.makefile().readline())
        assert answer["ok"] is False and expected in answer["error"], answer
    assert controller.running and controller.status()["passes"] > 0


def test_ipv6_uplinks_get_their_own_resilient_group(tmp_path: Path) -> None:
    """IPv6 mirrors IPv4: per-uplink v6 tables and a v6 group; v6 flows from a `translate`
    LAN spread over both (without a `lan` section nothing is NAT66'd: see test_lan_ipv6)."""
    with Lab() as lab:
        lab.add_isp("wan", address="none", routed6=True)
        lab.add_isp("lte1", address="none", routed6=True)
        lab.add_client()
        lab.run("lan1", ["ip", "address", "add", "2001:db8:ff::11/64", "dev", "eth0", "nodad"])
        config = {
            "lan": {"lan0": {"ipv6": {"mode": "translate", "prefix": "2001:db8:ff::/64"}}},
            "uplinks": {
                name: {
                    "match": {"name": name},
                    "address": {
                        "mode": "static",
                        "cidr": f"10.{100 + n}.0.2/24",
                        "gateway": f"10.{100 + n}.0.1",
                        "cidr6": f"2001:db8:{n}::2/64",
                        "gateway6": f"2001:db8:{n}::1",
                    },
                    "table": 100 + n,
                }
                for n, name in ((1, "wan"), (2, "lte1"))
            }
        }
        c = LabDaemon(lab.router, config, workdir=tmp_path)
        try:
            c.start()
            tables = {101: "wan", 102: "lte1"}
            wait_until(lambda: len(group_members(lab.router, tables, v6=True)) == 2, what="a v6 group of two")
            (route6,) = routes(lab.router, 101, "-6")
            assert route6["gateway"] == "2001:db8:1::1" and route6["protocol"] == str(PROTO)
            (balance6,) = routes(lab.router, 200, "-6")
            assert balance6["nhid"] == NH_BASE + 1
            report = lab.flows(tcp=20, udp=30, interval_ms=50, duration=1.5, family=6)
            counts = report.by_uplink()
            assert set(counts) == {"wan", "lte1"}, counts
            assert report.lost() == 0 and not report.moved()
        finally:
            c.stop()


def test_explain_shows_the_kernels_choice(lab: Lab, controller: LabDaemon) -> None:
    controller.start()
    wait_until(lambda: len(group_members(lab.router, TABLES)) == 3, what="three uplinks in the group")

    def explain(*args: str) -> dict[str, Any]:
        return dict(json.loads(controller.ctl("explain", *args, "--json", check=False).stdout))

    new = explain("198.51.100.100", "--from", "192.168.50.11", "--iif", "lan0", "--ipproto", "udp",
                  "--sport", "40000", "--dport", "9000")  # fmt: skip
    assert new["rule"] == "10030: from all lookup 200" and new["table"] == 200
    assert new["uplink"] in TABLES.values() and new["dev"] == new["uplink"]
    pinned = explain("198.51.100.100", "--from", "192.168.50.11", "--iif", "lan0", "--mark", "0x6600")
    assert (pinned["rule"], pinned["table"], pinned["uplink"], pinned["gateway"]) == (
        "10010: from all fwmark 0x6600/0xff00 lookup 102",
        102,
        "lte1",
        "10.102.0.1",
    )
    own = explain("198.51.100.100", "--from", "10.103.0.2")
    assert (own["rule"], own["uplink"]) == ("10020: from 10.103.0.2/32 lookup 103", "lte2")
    lan = explain("192.168.50.11")
    assert (lan["rule"], lan["table"], lan["dev"], lan["uplink"]) == (
        "10000: from all lookup main suppress_prefixlength 0",
        254,
        "lan0",
        None,
    )
    v6 = controller.ctl("explain", "2001:db8:100::100", "--json", check=False)
    assert v6.returncode == 1
    refused = json.loads(v6.stdout)
    assert (refused["rule"], refused["table"], refused["type"]) == (
        "10030: from all lookup 200",
        200,
        "unreachable",
    )
    # the same flow asked twice picks the same uplink (the multipath hash uses the ports)
    again = explain("198.51.100.100", "--from", "192.168.50.11", "--iif", "lan0", "--ipproto", "udp",
                    "--sport", "40000", "--dport", "9000")  # fmt: skip
    assert again["uplink"] == new["uplink"]


def test_systemd_notify_ready_status_watchdog_and_socket_mode(lab: Lab, tmp_path: Path) -> None:
    """Type=notify: READY=1 after the first pass, a one-line STATUS, WATCHDOG=1 pings when
    WATCHDOG_USEC is set; the control socket is mode 0660."""
    notify = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    listener.settimeout(20)
    env = {"NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "400000"}
    c = LabDaemon(lab.router, three_uplinks(), workdir=tmp_path, env=env).start(wait=False)
    try:
        messages: list[str] = []
        while not (any("READY=1" in m for m in messages) and sum("WATCHDOG=1" in m for m in messages) >= 3):
            messages.append(listener.recv(4096).decode())
        ready = next(m for m in messages if "READY=1" in m)
        assert "STATUS=" in ready and "uplinks in service" in ready, ready
        assert (c.socket.stat().st_mode & 0o777) == 0o660
    finally:
        c.stop()
        listener.close()


def test_tcp_mss_is_clamped_to_the_uplinks_mtu(lab: Lab, controller: LabDaemon) -> None:
    """A LAN host advertises MSS 1460; leaving through an uplink with MTU 1400 the SYN must
    carry 1360 (counted by nft in the ISP's namespace, where the SYN arrives)."""
    controller.start()
    wait_until(lambda: len(group_members(lab.router, TABLES)) == 3, what="three uplinks in the group")
    controller.ctl("drain", "wan")
    controller.ctl("drain", "lte2")
    lab.run("router", ["ip", "link", "set", "lte1", "mtu", "1400"])
    isp = lab.netns("isp2")
    counting = (
        "table inet msscheck {\n chain pre {\n  type filter hook prerouting priority -300; policy accept;\n"
        '  iifname "down" tcp flags syn tcp option maxseg size 1360 counter\n'
        '  iifname "down" tcp flags syn tcp option maxseg size 1460 counter\n }\n}\n'
    )
    subprocess.run(["ip", "netns", "exec", isp, "nft", "-f", "-"], input=counting, text=True, check=True)
    report = lab.flows(tcp=4, udp=0, duration=1.0)
    assert report.by_uplink() == {"lte1": 4}, report.by_uplink()
    listing = subprocess.run(
        ["ip", "netns", "exec", isp, "nft", "-j", "list", "table", "inet", "msscheck"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    counts = {}
    for item in json.loads(listing)["nftables"]:
        rule = item.get("rule")
        if rule:
            size = next(
                e["match"]["right"]
                for e in rule["expr"]
                if "match" in e and e["match"]["right"] in (1360, 1460)
            )
            counts[size] = next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
    assert counts[1360] >= 4 and counts[1460] == 0, counts


def test_only_the_masks_bits_of_the_marks_are_written(lab: Lab, controller: LabDaemon) -> None:
    """Another table sets bits outside kernel.mark_mask (0xff00) in both marks before
    uplinkd's chains run: the connection's ct mark gets lte1's mark beside them, and every
    later packet's meta mark gets it restored beside them (counted after uplinkd's chains)."""
    controller.start()
    wait_until(lambda: len(group_members(lab.router, TABLES)) == 3, what="three uplinks in the group")
    controller.ctl("drain", "wan")
    controller.ctl("drain", "lte2")
    foreign = (
        "table inet foreign {\n"
        " chain pre {\n  type filter hook prerouting priority -160; policy accept;\n"
        "  meta mark set meta mark | 0x1\n  ct mark set ct mark | 0x10000\n }\n"
        " chain counted {\n  type filter hook forward priority 0; policy accept;\n"
        "  ct state established ct mark 0x16600 meta mark 0x6601 counter\n"
        "  ct state established meta mark != 0x6601 counter\n }\n}\n"
    )
    lab.run("router", ["nft", "-f", "-"], input=foreign)
    report = lab.flows(tcp=4, udp=4, duration=1.0)
    assert report.by_uplink() == {"lte1": 8}, report.by_uplink()
    counted = lab.run("router", ["nft", "-j", "list", "chain", "inet", "foreign", "counted"]).stdout
    listing = json.loads(counted)
    good, bad = (
        next(e["counter"]["packets"] for e in item["rule"]["expr"] if "counter" in e)
        for item in listing["nftables"]
        if "rule" in item
    )
    assert good >= 8 and bad == 0, (good, bad)
    assert 0x16600 in conntrack_marks(lab.router)


def test_flush_with_the_daemon_running_pauses_it_until_resume(lab: Lab, controller: LabDaemon) -> None:
    r = lab.router
    controller.start()
    wait_until(lambda: len(group_members(r, TABLES)) == 3, what="three uplinks in the group")
    out = controller.ctl("flush")
    assert "paused" in out.stderr
    assert rules(r) == [] and routes(r, 200) == [] and NH_BASE not in nexthops(r)
    assert ("inet", "uplinkd") not in nft_tables(r)
    passes = controller.status()["passes"]
    lab.isp("lte2").carrier(False)  # an event: a pass runs, and writes nothing
    wait_until(lambda: controller.status()["passes"] > passes, what="the pass after the event")
    assert rules(r) == [] and controller.status()["paused"] is True
    assert controller.ctl("plan", check=False).returncode == 1  # there is work it is holding back
    controller.ctl("resume")
    wait_until(lambda: set(group_members(r, TABLES)) == {"wan", "lte1"}, what="the kernel handed back")
    assert ("inet", "uplinkd") in nft_tables(r)


def test_an_edited_nft_table_is_healed_and_still_flushed(lab: Lab, controller: LabDaemon) -> None:
    r = lab.router

    def counters() -> int:
        return lab.run("router", ["nft", "list", "chain", "inet", "uplinkd", "postrouting"]).stdout.count(
            "counter"
        )

    controller.start()
    wait_until(lambda: ("inet", "uplinkd") in nft_tables(r), what="our nft table")
    lab.run("router", ["nft", "add", "rule", "inet", "uplinkd", "postrouting", "counter"])
    wait_until(lambda: counters() == 0, timeout=5, what="the edit undone")
    controller.stop()
    lab.run("router", ["nft", "add", "rule", "inet", "uplinkd", "postrouting", "counter"])
    controller.ctl("flush", "--config", str(controller.config_path))
    assert ("inet", "uplinkd") not in nft_tables(r)


def test_a_match_that_fits_two_interfaces_is_reported(lab: Lab, tmp_path: Path) -> None:
    """`lte*` fits lte1 and lte2 and only one uplink uses it: the uplink takes the lower
    index, and status (JSON and text) and the log name the one it left out."""
    config = three_uplinks()
    config["uplinks"].pop("lte2")
    config["uplinks"]["lte1"]["match"] = {"name": "lte*"}
    with LabDaemon(lab.router, config, workdir=tmp_path) as c:
        lte = wait_until(lambda: c.uplink("lte1") if c.uplink("lte1")["state"] == "up" else None,
                         what="lte1 up")  # fmt: skip
        left = {"lte1", "lte2"} - {lte["dev"]}
        assert lte["also_matches"] == sorted(left)
        assert f"ambiguous: lte1 uses {lte['dev']}, but {left.pop()} match it too" in c.ctl("status").stdout
        assert "also matches its match criteria" in c.log()
        assert c.uplink("wan")["also_matches"] == []


def test_a_failed_nft_load_shows_in_each_uplinks_status(lab: Lab, tmp_path: Path) -> None:
    """`nft` refuses the table (here: an `nft` first on PATH that fails as nft does on a kernel
    without nf_tables): routing still follows the uplinks, and status says, per uplink, that
    it has no masquerade or pinning, with nft's words."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    refusal = "Error: Could not process rule: Operation not supported"
    (fake / "nft").write_text(f"#!/bin/sh\necho '{refusal}' >&2\nexit 1\n")
    (fake / "nft").chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ['PATH']}"}
    with LabDaemon(lab.router, three_uplinks(), workdir=tmp_path, env=env) as c:
        wan = wait_until(lambda: (u := c.uplink("wan"))["state"] == "up" and u, what="wan up")
        assert "its nftables rules are not loaded" in wan["reason"], wan
        assert "Operation not supported" in wan["reason"]
        assert any("nft" in f["op"] for f in c.status()["failures"])
    assert nft_tables(lab.router) == []  # nothing of ours got in


SPOOF_SEND = r"""
import socket, sys
source, server, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((source, 0))
for i in range(20):
    s.sendto(b"x", (server, port))
"""


def test_a_lan_packet_claiming_the_routers_own_address_is_dropped(lab: Lab, controller: LabDaemon) -> None:
    """The router runs with rp_filter 0 and accept_local 1 (the kernel's per-packet source
    check walks every rule band once policy rules exist), so uplinkd's table does what loose
    mode did: a LAN host sending from the router's own uplink address reaches nobody, while
    the same datagrams from its own address reach the server (counted in the server's
    namespace)."""
    controller.start()
    wait_until(lambda: len(group_members(lab.router, TABLES)) == 3, what="three uplinks in the group")
    client = lab.clients[0]
    server = str(SERVER4.ip)
    counting = (
        "table inet spoofcheck {\n chain pre {\n  type filter hook prerouting priority -300; policy accept;\n"
        "  udp dport 40001 counter\n  udp dport 40002 counter\n }\n}\n"
    )
    lab.run("inet", ["nft", "-f", "-"], input=counting)
    # The client takes the router's wan address as a second address of its own; ARP keeps
    # using its first (arp_announce 2), so only the datagrams carry the claim.
    lab.run(client.name, ["sysctl", "-qw", "net.ipv4.conf.eth0.arp_announce=2"])
    lab.run(client.name, ["ip", "address", "add", "10.101.0.2/32", "dev", "eth0"])
    own = str(client.addresses.host4.ip)
    lab.run(client.name, [sys.executable, "-c", SPOOF_SEND, "10.101.0.2", server, "40001"])
    lab.run(client.name, [sys.executable, "-c", SPOOF_SEND, own, server, "40002"])

    def counts() -> list[int]:
        chain = lab.run("inet", ["nft", "-j", "list", "chain", "inet", "spoofcheck", "pre"]).stdout
        listing = json.loads(chain)
        return [
            next(e["counter"]["packets"] for e in item["rule"]["expr"] if "counter" in e)
            for item in listing["nftables"]
            if "rule" in item
        ]

    wait_until(lambda: counts()[1] == 20, what="the client's own datagrams at the server")
    assert counts() == [0, 20]
    assert lab.run("router", ["sysctl", "-n", "net.ipv4.conf.all.accept_local"]).stdout.strip() == "1"
