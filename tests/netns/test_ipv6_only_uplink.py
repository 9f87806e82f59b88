"""An IPv6-only uplink next to a dual-stack one (issue 13: "an IPv6-only uplink works, IPv4 via
the others"), with real packets.

``lte1`` is an LTE network that gives no IPv4 at all (``ipv4=False``: no IPv4 address on its
side, no DHCPv4 server, IPv4 from the router dropped and counted) and IPv6 by RA, routing
the /64 to the router's link-local address (the uplink is `dhcp` with ``families =
["ipv6"]``: no DHCPv4 client), or statically (`static` with only ``cidr6``). ``wan`` is
dual-stack with static addresses. The LAN is `translate`: its internal /64 leaves each
uplink translated to that uplink's /64.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from uplinkd.lab import Lab
from uplinkd.lab.launcher import LabDaemon

from harness.lab_config import static_uplink
from harness.readback import ct_udp6, group_members, routes, udp6_flow, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.timeout(180),
]

TABLES = {101: "wan", 102: "lte1"}
SERVER4 = "198.51.100.100"
SERVER6 = "2001:db8:100::100"
INNER = "2001:db8:ff::/64"
WAIT = 30.0
NO_LEAK = {"ipv4": 0, "ipv6": 0}


LTE_ADDRESS = {
    "ra": {"mode": "dhcp"},  # IPv6 by RA/SLAAC; no DHCPv4 client (families)
    "static": {"mode": "static", "cidr6": "2001:db8:2::2/64", "gateway6": "2001:db8:2::1"},
}


def config(how: str) -> dict[str, Any]:
    return {
        "uplinks": {
            "wan": static_uplink(1, "wan"),
            "lte1": {
                "match": {"name": "lte1"},
                "address": LTE_ADDRESS[how],
                "table": 102,
                "families": ["ipv6"],
            },
        },
        # one list for both: lte1 is judged on the IPv6 target alone
        "probe": {"profile": "fast", "targets": [SERVER4, SERVER6]},
        "balance": {"table": 200},
        "lan": {"lan0": {"ipv6": {"mode": "translate", "prefix": INNER}}},
    }


@pytest.fixture(params=["ra", "static"])
def how(request: pytest.FixtureRequest) -> str:
    """How lte1 gets its IPv6: by RA (SLAAC, the /64 routed to its link-local address) or
    statically (2001:db8:2::2, the /64 routed to it)."""
    return str(request.param)


@pytest.fixture
def lab(how: str) -> Iterator[Lab]:
    with Lab() as lab:
        lab.add_isp("wan", address="none", routed6=True)
        if how == "ra":
            lab.add_isp("lte1", address="dhcp", ra=True, routed6=True, ipv4=False)
        else:
            lab.add_isp("lte1", address="none", routed6=True, ipv4=False)  # uplinkd adds 2001:db8:2::2
        lab.add_client()
        lab.run("lan1", ["ip", "address", "add", "2001:db8:ff::11/64", "dev", "eth0", "nodad"])
        yield lab


@pytest.fixture
def daemon(lab: Lab, how: str, tmp_path: Path) -> Iterator[LabDaemon]:
    c = LabDaemon(lab.router, config(how), workdir=tmp_path)
    try:
        c.start()
        wait_until(lambda: set(group_members(lab.router, TABLES, v6=True)) == {"wan", "lte1"},
                   timeout=WAIT, what="an IPv6 group of wan and lte1")  # fmt: skip
        wait_until(lambda: set(group_members(lab.router, TABLES)) == {"wan"}, what="an IPv4 group of wan")
        c.wait_state("lte1", "up", "degraded", timeout=WAIT)  # the group holds it while probing too
        yield c
    finally:
        c.stop()


def foreign(lab: Lab) -> dict[str, dict[str, int]]:
    return {isp.name: isp.foreign_sources() for isp in lab.isps}


def ping(lab: Lab, family: int) -> bool:
    server = SERVER4 if family == 4 else SERVER6
    argv = ["ping", f"-{family}", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", server]
    return lab.run("lan1", argv, check=False).returncode == 0


def uplink(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(u for u in status["uplinks"] if u["name"] == name)


def test_ipv4_leaves_only_by_the_ipv4_uplink_and_ipv6_uses_both(
    lab: Lab, how: str, daemon: LabDaemon
) -> None:
    lte = uplink(daemon.status(), "lte1")
    assert lte["state"] in ("up", "degraded") and lte["gateway4"] is None, lte
    assert (lte["families"], lte["routes"], lte["groups"]) == (["ipv6"], ["ipv6"], ["ipv6"]), lte
    assert [a for a in lte["addresses"] if "." in a] == [], lte
    line = next(x for x in daemon.ctl("status").stdout.splitlines() if x.startswith("lte1 "))
    assert "ipv6 only" in line, line  # the text view's GROUP column
    wan = uplink(daemon.status(), "wan")
    assert (wan["routes"], wan["groups"]) == (["ipv4", "ipv6"], ["ipv4", "ipv6"]), wan
    # lte1's table refuses IPv4 (nothing marked for it can leave elsewhere); IPv6 via the RA's router
    (v4,) = routes(lab.router, 102)
    assert v4["type"] == "unreachable", v4
    (v6,) = routes(lab.router, 102, "-6")
    gateway = "fe80:" if how == "ra" else "2001:db8:2::1"
    assert v6["dev"] == "lte1" and v6["gateway"].startswith(gateway), v6
    assert "DHCP client started on lte1" not in daemon.log()  # families: no DHCPv4 asked for

    four = lab.flows(tcp=10, udp=10, interval_ms=50, duration=1.0, family=4)
    assert four.by_uplink() == {"wan": 20} and four.lost() == 0, four.by_uplink()
    six = lab.flows(tcp=20, udp=20, interval_ms=50, duration=1.0, family=6)
    assert set(six.by_uplink()) == {"wan", "lte1"} and six.lost() == 0, six.by_uplink()
    assert foreign(lab) == {"wan": NO_LEAK, "lte1": NO_LEAK}

    # a restart adopts all of it (lte1's refused IPv4 too): not one kernel write
    assert daemon.stop() == 0
    daemon.start()
    status = daemon.status()
    assert status["passes"] >= 1 and status["writes"] == 0, daemon.log()[-6000:]


def test_losing_the_ipv4_uplink_refuses_ipv4_and_ipv6_goes_on(lab: Lab, daemon: LabDaemon) -> None:
    """A blackhole of wan (carrier up): IPv4 stays on wan (the last resort of its family, with
    carrier), never on lte1; IPv6 moves to lte1. wan's carrier lost: IPv4 is refused by the
    router (unreachable), IPv6 flows all go by lte1, and lte1's ISP never sees IPv4."""
    wan = lab.isp("wan")
    wan.blackhole()
    daemon.wait_state("wan", "down", timeout=WAIT)
    wait_until(lambda: set(group_members(lab.router, TABLES, v6=True)) == {"lte1"}, what="IPv6 on lte1 alone")
    assert set(group_members(lab.router, TABLES)) == {"wan"}  # last resort: carrier, IPv4 only
    six = lab.flows(tcp=10, udp=10, interval_ms=50, duration=1.0, family=6)
    assert six.by_uplink() == {"lte1": 20} and six.lost() == 0, six.by_uplink()
    assert not ping(lab, 4)
    wan.blackhole(False)
    daemon.wait_state("wan", "up", "degraded", timeout=WAIT)

    wan.carrier(False)
    # the kernel drops wan's nexthops with its carrier; uplinkd then refuses IPv4 outright
    wait_until(lambda: [r.get("type") for r in routes(lab.router, 200)] == ["unreachable"],
               timeout=WAIT, what="IPv4 refused in T_balance")  # fmt: skip
    assert group_members(lab.router, TABLES) == {}
    refused = lab.run("lan1", ["ping", "-4", "-n", "-c", "1", "-W", "1", SERVER4], check=False)
    assert refused.returncode != 0 and "Unreachable" in refused.stdout, refused.stdout
    four = lab.flows(tcp=0, udp=10, interval_ms=50, duration=0.6, family=4)
    assert four.received() == 0, four.by_uplink()
    six = lab.flows(tcp=10, udp=10, interval_ms=50, duration=1.0, family=6)
    assert six.by_uplink() == {"lte1": 20} and six.lost() == 0, six.by_uplink()
    assert ping(lab, 6)
    assert foreign(lab)["lte1"] == NO_LEAK
    status = daemon.status()
    assert status["balance"]["ipv4"] == "no usable uplink", status["balance"]
    asked = daemon.ctl("explain", SERVER4, "--from", "192.168.50.11", "--iif", "lan0", "--json", check=False)
    explained = json.loads(asked.stdout)
    assert explained["type"] == "unreachable" and explained["table"] == 200, explained


def test_explain_of_translated_lan_ipv6_matches_what_the_kernel_does(lab: Lab, daemon: LabDaemon) -> None:
    """For UDP flows from the translate LAN: a new one's `explain` names a member of the IPv6
    group (which member a real packet gets depends on its own flow hash, set by the sender's
    stack or a NIC, not only on the ports: the lab showed ~half of the predictions by ports
    wrong), and once the flow exists, `explain` with its conntrack mark names exactly the
    uplink the kernel used and the translated source its packets left with."""
    marks = {0x6500: "wan", 0x6600: "lte1"}
    prefixes = {"wan": "2001:db8:1::", "lte1": "2001:db8:2::"}
    seen: set[str] = set()

    def explain(sport: int, *mark: str) -> dict[str, Any]:
        asked = daemon.ctl(
            "explain", SERVER6, "--from", "2001:db8:ff::11", "--iif", "lan0", "--ipproto", "udp",
            "--sport", str(sport), "--dport", "9", *mark, "--json",
        )  # fmt: skip
        return dict(json.loads(asked.stdout))

    for sport in range(41000, 41012):
        new = explain(sport)
        assert new["rule"] == "10030: from all lookup 200" and new["uplink"] in prefixes, new
        assert "flow hash" in new["note"], new  # it says so
        udp6_flow(lab.netns("lan1"), src="2001:db8:ff::11", sport=sport, dst=SERVER6, dport=9)
        entry = wait_until(lambda p=sport: ct_udp6(lab.router, p), what="the flow's conntrack entry")
        uplink = marks[entry["mark"]]
        pinned = explain(sport, "--mark", hex(entry["mark"]))
        lan6 = pinned["lan6"]
        assert "note" not in pinned, pinned
        table = 101 if uplink == "wan" else 102
        rule = f"10010: from all fwmark {hex(entry['mark'])}/0xff00 lookup {table}"
        assert (pinned["rule"], pinned["uplink"]) == (rule, uplink), pinned
        assert (lan6["mode"], lan6["leaves"], lan6["allowed"]) == ("translate", True, True), pinned
        assert lan6["source"] == entry["reply_dst"], (pinned, entry)  # the source it really left with
        assert lan6["source"] == prefixes[uplink] + "11" and lan6["how"] == f"translated to {lan6['source']}"
        seen.add(uplink)
    assert seen == {"wan", "lte1"}  # both uplinks carried some of them
