"""LAN IPv6 end to end (issue 13): `off` and the default never forward or NAT66 a LAN's IPv6
through an uplink; `translate` swaps the LAN's internal /64 for each uplink's /64 (the
interface ID kept), rides the weighted IPv6 group, fails over like IPv4, and no ISP ever sees
a source outside its own prefix (nft counters in every ISP namespace).

The ISPs route their /64 to the router (``routed6``, as a 3GPP network routes a UE's /64) and
pass IPv6 upstream unchanged, so the server sees exactly what left the router.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv6Address, IPv6Network
from typing import Any

import pytest

from uplinkd import control
from uplinkd.lab import Lab
from uplinkd.lab.launcher import LabDaemon

from harness.lab_config import static_uplink
from harness.readback import group_members, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.timeout(180),
]

NAMES = ("wan", "lte1", "lte2")
TABLES = {101 + i: name for i, name in enumerate(NAMES)}
WEIGHTS = {"wan": 3, "lte1": 1, "lte2": 1}
SERVER4 = "198.51.100.100"
SERVER6 = "2001:db8:100::100"
INNER = IPv6Network("2001:db8:ff::/64")  # the LAN's internal prefix: not ULA (see the README)
CLIENT_IID = "::11"
WAIT = 30.0


def uplink(index: int, name: str) -> dict[str, Any]:
    targets = [SERVER4, f"198.51.100.{index}"]
    return static_uplink(index, name, weight=WEIGHTS[name], probe={"targets": targets})


def config(lan: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "uplinks": {name: uplink(i + 1, name) for i, name in enumerate(NAMES)},
        "probe": {"profile": "fast"},
        "balance": {"table": 200},
    }
    if lan is not None:
        cfg["lan"] = lan
    return cfg


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        for name in NAMES:
            lab.add_isp(name, address="none", routed6=True)
        lab.add_client()
        yield lab


@pytest.fixture
def daemon(
    lab: Lab, make_controller: Callable[[dict[str, Any]], LabDaemon]
) -> Callable[[dict[str, Any]], LabDaemon]:
    """A started daemon for a config, stopped at the end (conftest's `make_controller`)."""

    def make(cfg: dict[str, Any]) -> LabDaemon:
        c = make_controller(cfg)
        c.start()
        wait_until(lambda: len(group_members(lab.router, TABLES, v6=True)) == 3, what="a v6 group of three")
        wait_until(lambda: len(group_members(lab.router, TABLES)) == 3, what="a v4 group of three")
        return c

    return make


def ping6(lab: Lab, source: str | None = None) -> bool:
    argv = ["ping", "-6", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", SERVER6]
    if source is not None:
        argv[3:3] = ["-I", source]
    return lab.run("lan1", argv, check=False).returncode == 0


def foreign(lab: Lab) -> dict[str, dict[str, int]]:
    """Per ISP, packets from the router whose source was outside that ISP's prefix."""
    return {isp.name: isp.foreign_sources() for isp in lab.isps}


NO_LEAK = {name: {"ipv4": 0, "ipv6": 0} for name in NAMES}


def test_default_and_off_forward_no_lan_ipv6_and_nat66_nothing(lab: Lab, daemon: Any) -> None:
    """No `lan` section: the LAN's ULA IPv6 is not NAT66'd (the masquerade is IPv4 only) and
    the guard keeps its unique-local source off every uplink. `off`: not even a source in an
    uplink's own prefix is forwarded from that LAN. IPv4 works throughout."""
    c = daemon(config())
    assert lab.flows(tcp=3, udp=3, duration=0.5).lost() == 0  # IPv4 is unaffected
    assert not ping6(lab)
    report = lab.flows(tcp=0, udp=6, duration=0.5, family=6)
    assert report.received() == 0, report.by_uplink()
    assert foreign(lab) == NO_LEAK
    assert [isp.forwarded6() for isp in lab.isps] == [0, 0, 0], "IPv6 from the LAN left, NAT66'd"
    c.stop()

    # `off`: a client that even holds an address in wan's own prefix gets nothing through
    lab.run(
        "lan1", ["ip", "address", "add", f"2001:db8:1::{CLIENT_IID.strip(':')}/64", "dev", "eth0", "nodad"]
    )
    c = daemon(config({"lan0": {"ipv6": {"mode": "off"}}}))
    for _ in range(3):
        assert not ping6(lab, source="2001:db8:1::11")
    assert not ping6(lab)
    assert foreign(lab) == NO_LEAK
    assert [isp.forwarded6() for isp in lab.isps] == [0, 0, 0]
    st = control.call(c.socket, {"command": "status"})
    (lan,) = st["lan"]
    assert (lan["name"], lan["mode"]) == ("lan0", "off")
    assert lab.flows(tcp=3, udp=3, duration=0.5).lost() == 0


def translate(lab: Lab) -> dict[str, Any]:
    lab.run("lan1", ["ip", "address", "add", f"{INNER.network_address + 0x11}/64", "dev", "eth0", "nodad"])
    return config({"lan0": {"ipv6": {"mode": "translate", "prefix": str(INNER)}}})


def test_translate_keeps_the_interface_id_and_splits_by_weight(lab: Lab, daemon: Any) -> None:
    c = daemon(translate(lab))
    report = lab.flows(tcp=50, udp=50, interval_ms=50, duration=1.5, family=6)
    assert report.lost() == 0 and not report.moved()
    counts = report.by_uplink()
    assert set(counts) == set(NAMES), counts
    assert sum(counts.values()) == 100
    # weights 3:1:1 over 100 flows: wan carries clearly more than either LTE uplink
    assert counts["wan"] > max(counts["lte1"], counts["lte2"]), counts
    for flow in report.flows:
        source = IPv6Address(flow.last_source or "::")
        index = NAMES.index(report.uplink(str(source))) + 1
        assert source in IPv6Network(f"2001:db8:{index}::/64"), source
        assert int(source) & ((1 << 64) - 1) == 0x11, f"interface ID changed: {source}"
    assert foreign(lab) == NO_LEAK
    assert all(isp.forwarded6() > 0 for isp in lab.isps)  # the counter the off test reads counts
    st = control.call(c.socket, {"command": "status"})
    (lan,) = st["lan"]
    assert lan["mode"] == "translate" and lan["prefixes"] == [str(INNER)]
    assert sorted(lan["via"]) == sorted(f"{n}=2001:db8:{i + 1}::/64" for i, n in enumerate(NAMES))
    wan = next(u for u in st["uplinks"] if u["name"] == "wan")
    assert wan["prefixes6"] == ["2001:db8:1::/64"]
    # explain: a new connection from the LAN's internal prefix takes the IPv6 balance table
    client = str(INNER.network_address + 0x11)
    explained = json.loads(c.ctl("explain", SERVER6, "--from", client, "--iif", "lan0", "--json").stdout)
    assert explained["rule"] == "10030: from all lookup 200" and explained["uplink"] in NAMES, explained
    text = c.ctl("status").stdout
    assert "lan lan0: ipv6 translate (2001:db8:ff::/64); translate 2001:db8:ff::/64 via wan as" in text
    assert "ipv6: lte1 has 2001:db8:2::/64" in text


def test_translate_restart_makes_no_writes_and_interrupts_no_ipv6_flow(lab: Lab, daemon: Any) -> None:
    """The table's IPv6 part and the LAN's router address read back as planned: a restart
    with the same config writes nothing, and translated flows carry on."""
    c = daemon(translate(lab))
    address = lab.run("router", ["ip", "-6", "address", "show", "dev", "lan0", "to", str(INNER)]).stdout
    assert f"{INNER.network_address + 1}/64" in address
    flows = lab.start_flows(tcp=10, udp=10, interval_ms=20, duration=4.0, family=6)
    assert c.stop() == 0
    writes_before = len(c.writes())
    c.start()
    status = c.status()
    assert status["passes"] >= 1 and status["writes"] == 0, c.writes()[writes_before:]
    report = flows.result()
    assert report.lost() == 0 and not report.moved() and report.reconnects() == 0


def test_translate_drain_and_a_weight_change_move_no_ipv6_connection(lab: Lab, daemon: Any) -> None:
    """The IPv4 bars for IPv6: draining an uplink sends only new flows elsewhere, and a new
    weight changes where new flows go; connections already open keep their uplink (the ct
    mark pins them) and lose nothing."""
    c = daemon(translate(lab))
    before = lab.start_flows(tcp=20, udp=30, interval_ms=20, duration=5.0, family=6)
    time.sleep(1.0)
    c.ctl("drain", "lte1")
    assert set(group_members(lab.router, TABLES, v6=True)) == {"wan", "lte2"}
    after = lab.flows(tcp=15, udp=25, interval_ms=50, duration=1.0, family=6)
    assert "lte1" not in after.by_uplink() and after.lost() == 0, after.by_uplink()
    c.config["uplinks"]["wan"]["weight"] = 1
    c.write_config(c.config)
    c.ctl("reload")
    wait_until(lambda: group_members(lab.router, TABLES, v6=True).get("wan") == 1, what="wan's new v6 weight")
    old = before.result()
    assert old.by_uplink(at="first").get("lte1", 0) > 0, "no flow started on lte1; the test proves nothing"
    assert not old.moved(), [old.uplinks_of(f) for f in old.moved()]
    assert old.lost() == 0 and old.reconnects() == 0
    c.ctl("undrain", "lte1")
    assert set(group_members(lab.router, TABLES, v6=True)) == set(NAMES)
    assert foreign(lab) == NO_LEAK


def test_translate_blackhole_breaks_only_that_uplinks_ipv6(lab: Lab, daemon: Any) -> None:
    c = daemon(translate(lab))
    flows = lab.start_flows(tcp=15, udp=30, interval_ms=20, duration=6.0, family=6)
    time.sleep(1.0)
    lab.isp("lte1").blackhole()

    def lte1_down() -> bool:
        st = control.call(c.socket, {"command": "status"})
        return any(u["name"] == "lte1" and u["state"] == "down" for u in st["uplinks"])

    wait_until(lte1_down, timeout=WAIT, what="lte1 down")
    assert set(group_members(lab.router, TABLES, v6=True)) == {"wan", "lte2"}
    report = flows.result()
    on_lte1 = report.started_on("lte1")
    assert on_lte1, "no flow started on lte1; the test proves nothing"
    for f in on_lte1:
        # the flush by lte1's mark moved it: it resumed through a healthy uplink, same IID
        assert report.uplink(f.last_source) in {"wan", "lte2"}, report.uplinks_of(f)
        assert int(IPv6Address(f.last_source or "::")) & ((1 << 64) - 1) == 0x11
    healthy = [f for f in report.flows if report.uplink(f.first_source) in {"wan", "lte2"}]
    assert healthy
    assert not [f for f in healthy if f.moved]
    assert sum(f.lost for f in healthy) == 0, "flows on healthy uplinks lost packets"
    assert sum(f.reconnects for f in healthy) == 0
    assert foreign(lab) == NO_LEAK


def test_audit_names_a_lan_ipv6_path_the_mode_does_not_allow(lab: Lab, daemon: Any) -> None:
    """`uplinkctl audit` follows each configured LAN's IPv6 through the kernel's routing and
    uplinkd's nft table. A translate LAN passes; then an admin puts a stray prefix on the LAN
    (one nobody translates, so it would leave untranslated): audit exits 1 naming the LAN,
    the source and the uplink, and a packet from that prefix does reach an ISP as a foreign
    source, so the audit was right. Removing the prefix makes it pass again."""
    c = daemon(translate(lab))
    audited = c.ctl("audit", "--config", str(c.config_path), check=False)
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert "ok: lan0 (ipv6 translate): 2001:db8:ff::2 → 2001:db8:ffff::1: unicast dev" in audited.stdout
    assert "translated to" in audited.stdout

    stray = "2001:db8:99::1/64"
    lab.run("router", ["ip", "address", "add", stray, "dev", "lan0", "nodad"])
    lab.run("lan1", ["ip", "address", "add", "2001:db8:99::11/64", "dev", "eth0", "nodad"])
    audited = c.ctl("audit", "--config", str(c.config_path), check=False)
    assert audited.returncode == 1, audited.stdout + audited.stderr
    (leak,) = [line for line in audited.stdout.splitlines() if line.startswith("LEAK:")]
    assert leak.startswith("LEAK: lan0 (ipv6 translate): 2001:db8:99::2 → 2001:db8:ffff::1: unicast"), leak
    assert "with source 2001:db8:99::2 (untranslated); mode translate does not allow that" in leak, leak
    assert not ping6(lab, source="2001:db8:99::11")  # no route back to a prefix nobody owns
    assert sum(isp.foreign_sources()["ipv6"] for isp in lab.isps) > 0  # but it did leave

    lab.run("router", ["ip", "address", "del", stray, "dev", "lan0"])
    audited = c.ctl("audit", "--config", str(c.config_path), check=False)
    assert audited.returncode == 0, audited.stdout + audited.stderr
