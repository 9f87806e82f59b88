"""Policies and steering rules on the real kernel, with real traffic: a source subnet steered
to one uplink, a port steered to another, a metered uplink kept as the last tier, explain.

Every test builds its own lab (three ISPs, two LAN clients) and tears it down. Waits are
generous; assertions are about which uplink the server saw each flow come from. LAN IPv6
leaves only as `lan` allows (see test_lan_ipv6): the LAN is `translate`d, its clients hold
addresses in LAN6, and the ISPs route the uplinks' /64s, so the server sees which one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any, Literal

import pytest

from uplinkd import control
from uplinkd.lab import NO_REPLY, Lab
from uplinkd.lab.flows import DEFAULT_PORT
from uplinkd.lab.launcher import LabDaemon

from harness.lab_config import static_uplink
from harness.readback import group_members, nexthops, nhid, routes, rules, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.timeout(180),
]

NAMES = ("wan", "lte1", "lte2")
TABLES = {101 + i: name for i, name in enumerate(NAMES)}
SERVER = "198.51.100.100"
WAIT = 30.0
Family = Literal[4, 6]
LAN6 = "2001:db8:ff::"  # the LAN's inner IPv6 prefix (a /64; not ULA: see test_lan_ipv6)
LAN = {"lan0": {"ipv6": {"mode": "translate", "prefix": f"{LAN6}/64"}}}


def uplink(index: int, name: str, **extra: Any) -> dict[str, Any]:
    """ISP number `index` as uplink `name`, static v4 and v6 addresses set by the controller."""
    return static_uplink(index, name, **extra)


def uplinks(**extra: dict[str, Any]) -> dict[str, Any]:
    return {name: uplink(i + 1, name, **extra.get(name, {})) for i, name in enumerate(NAMES)}


STEERED: dict[str, Any] = {
    "lan": LAN,
    "uplinks": uplinks(),
    "policies": {
        "guest": {"tiers": [["lte2"]], "table": 150, "last_resort": "unreachable"},
        "voip": {"tiers": [{"lte1": 1}], "table": 151, "last_resort": "unreachable"},
    },
    "rules": {
        "steer": [
            # the second LAN client stands for a guest subnet
            {"src": ["192.168.50.12/32", f"{LAN6}12/128"], "policy": "guest"},
            {"protocol": "udp", "dport": DEFAULT_PORT, "policy": "voip"},
        ]
    },
}


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        for name in NAMES:
            lab.add_isp(name, address="none", routed6=True)
        for k in (1, 2):
            lab.add_client()
            lab.run(f"lan{k}", ["ip", "address", "add", f"{LAN6}1{k}/64", "dev", "eth0", "nodad"])
        yield lab


def status(c: LabDaemon) -> dict[str, Any]:
    return dict(control.call(c.socket, {"command": "status"}))


def wait_state(c: LabDaemon, name: str, *states: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        up = next(u for u in status(c)["uplinks"] if u["name"] == name)
        return up if up["state"] in states else None

    return dict(wait_until(reached, timeout=WAIT, what=f"{name} to be {'/'.join(states)} ({c.log_path})"))


def policy_members(lab: Lab, table: int, v6: bool = False) -> set[str]:
    """The uplinks in a policy's group (its id: base + 2·table)."""
    group = nexthops(lab.router).get(nhid(table, v6))
    by_id = {nhid(t, v6): name for t, name in TABLES.items()}
    return set() if group is None else {by_id[m["id"]] for m in group["group"]}


def both_groups_ready(lab: Lab) -> bool:
    return all(
        len(group_members(lab.router, TABLES, v6=v6)) == 3 and policy_members(lab, 150, v6) == {"lte2"}
        for v6 in (False, True)
    )


@pytest.mark.parametrize("family", [4, 6])
def test_source_subnet_and_port_are_steered(lab: Lab, make_controller: Any, family: Family) -> None:
    c = make_controller(STEERED)
    c.start()
    wait_until(lambda: both_groups_ready(lab), timeout=WAIT, what="balance and policy groups")
    # the kernel layout: one fwmark rule per policy between the uplink and source bands
    band = sorted(
        (r["priority"], str(r["table"]), r.get("fwmark")) for r in rules(lab.router) if r["priority"] == 10015
    )
    assert band == [(10015, "150", "0x960000"), (10015, "151", "0x970000")]
    (route,) = routes(lab.router, 151, "-4" if family == 4 else "-6")
    assert route["nhid"] == nhid(151, family == 6)

    lan1 = lab.flows(client="lan1", tcp=20, udp=20, interval_ms=50, duration=1.5, family=family)
    tcp = {lan1.uplink(f.first_source) for f in lan1.flows if f.proto == "tcp"}
    udp = {lan1.uplink(f.first_source) for f in lan1.flows if f.proto == "udp"}
    assert udp == {"lte1"}, f"UDP to port {DEFAULT_PORT} must use the voip policy (lte1 only): {udp}"
    assert len(tcp) >= 2, f"TCP from lan1 is not steered and should be balanced over the uplinks: {tcp}"
    assert lan1.lost() == 0 and not lan1.moved()

    lan2 = lab.flows(client="lan2", tcp=10, udp=10, interval_ms=50, duration=1.5, family=family)
    assert set(lan2.by_uplink(at="first")) == {"lte2"}, "the guest subnet's flows (UDP too: first match wins)"
    assert lan2.lost() == 0 and not lan2.moved()


def test_restart_with_policies_makes_no_writes(lab: Lab, make_controller: Any) -> None:
    c = make_controller(STEERED)
    c.start()
    wait_until(lambda: both_groups_ready(lab), timeout=WAIT, what="balance and policy groups")
    assert c.stop() == 0
    c.start()
    assert status(c)["writes"] == 0, c.writes()


def test_policy_without_a_healthy_tier_is_unreachable_not_leaked(lab: Lab, make_controller: Any) -> None:
    cfg = {**STEERED, "uplinks": uplinks(lte2={"match": {"name": "nosuch"}})}
    c = make_controller(cfg)
    c.start()
    wait_until(lambda: routes(lab.router, 150), timeout=WAIT, what="the guest table")
    (route,) = routes(lab.router, 150)
    assert route["type"] == "unreachable"
    report = lab.flows(client="lan2", tcp=0, udp=5, interval_ms=50, duration=1.0)
    assert set(report.by_uplink(at="first")) == {NO_REPLY}, "guest traffic leaked to another uplink"


@pytest.mark.parametrize("family", [4, 6])
def test_metered_uplink_is_the_last_tier(lab: Lab, make_controller: Any, family: Family) -> None:
    probe = {"profile": "fast"}
    cfg = {
        "lan": LAN,
        "uplinks": {
            "wan": uplink(1, "wan", probe={"targets": [SERVER, "198.51.100.1"]}),
            "lte1": uplink(2, "lte1", metered=True, probe={"targets": [SERVER, "198.51.100.2"]}),
        },
        "probe": probe,
    }
    lab.unplug("lte2")
    c = make_controller(cfg)
    c.start()
    wait_state(c, "wan", "up")
    wait_state(c, "lte1", "up")
    tables = {101: "wan", 102: "lte1"}
    v6 = family == 6
    wait_until(lambda: group_members(lab.router, tables, v6=v6) == {"wan": 1}, timeout=WAIT, what="wan alone")
    quiet = lab.flows(tcp=10, udp=10, interval_ms=50, duration=1.5, family=family)
    assert set(quiet.by_uplink(at="first")) == {"wan"}, (
        "the metered uplink carried traffic while wan was healthy"
    )

    # wan dies (a blackhole: carrier stays up, only probes can tell): lte1 takes new flows,
    # and the flows that were on wan move there
    running = lab.start_flows(tcp=5, udp=10, interval_ms=20, duration=10.0, family=family)
    lab.isp("wan").blackhole()
    wait_state(c, "wan", "down")
    wait_until(lambda: group_members(lab.router, tables, v6=v6) == {"lte1": 1}, timeout=WAIT, what="lte1 in")
    during = lab.start_flows(tcp=5, udp=10, interval_ms=20, duration=8.0, family=family)
    report = running.result()
    assert all(report.uplink(f.last_source) == "lte1" for f in report.flows), report.by_uplink()

    # wan returns: new flows go back to it, the ones on lte1 stay there
    lab.isp("wan").blackhole(False)
    wait_state(c, "wan", "up")
    wait_until(lambda: group_members(lab.router, tables, v6=v6) == {"wan": 1}, timeout=WAIT, what="wan back")
    after = lab.flows(tcp=5, udp=5, interval_ms=50, duration=1.0, family=family)
    assert set(after.by_uplink(at="first")) == {"wan"}
    kept = during.result()
    assert set(kept.by_uplink(at="first")) == {"lte1"}
    assert not kept.moved() and kept.reconnects() == 0, "wan's return moved existing connections"


def test_explain_names_the_rule_and_tier(lab: Lab, make_controller: Any) -> None:
    c = make_controller(STEERED)
    c.start()
    wait_until(lambda: both_groups_ready(lab), timeout=WAIT, what="balance and policy groups")

    def explain(*args: str) -> dict[str, Any]:
        return dict(json.loads(c.ctl("explain", *args, "--json", check=False).stdout))

    guest = explain(SERVER, "--from", "192.168.50.12", "--iif", "lan0")
    assert (guest["steer"]["rule"], guest["steer"]["policy"], guest["steer"]["tier"]) == (0, "guest", 0)
    assert guest["uplink"] == "lte2" and guest["table"] == 150
    voip = explain(SERVER, "--from", "192.168.50.11", "--iif", "lan0", "--ipproto", "udp",
                   "--sport", "40000", "--dport", str(DEFAULT_PORT))  # fmt: skip
    assert (voip["steer"]["rule"], voip["steer"]["policy"], voip["uplink"]) == (1, "voip", "lte1")
    plain = explain(SERVER, "--from", "192.168.50.11", "--iif", "lan0", "--ipproto", "tcp",
                    "--sport", "40000", "--dport", "443")  # fmt: skip
    assert plain["steer"]["rule"] is None and plain["steer"]["policy"] == "default"
    v6 = explain("2001:db8:100::100", "--from", f"{LAN6}12", "--iif", "lan0")
    assert v6["steer"]["policy"] == "guest" and v6["uplink"] == "lte2"


@pytest.mark.parametrize("family", [4, 6])
def test_budget_demotes_the_uplink_and_survives_a_restart(
    lab: Lab, make_controller: Any, family: Family
) -> None:
    """lan1 prefers lte1 (tier 0) over wan (tier 1); lte1's budget is small. Once spent,
    lte1 counts only as a last tier: lan1's new flows go by wan, also after a restart."""
    cfg = {
        "lan": LAN,
        "uplinks": {"wan": uplink(1, "wan"), "lte1": uplink(2, "lte1", metered=True, budget="60K")},
        "policies": {"lte-first": {"tiers": [["lte1"], ["wan"]], "table": 150}},
        "rules": {"steer": [{"src": ["192.168.50.11/32", f"{LAN6}11/128"], "policy": "lte-first"}]},
    }
    lab.unplug("lte2")
    c = make_controller(cfg)
    c.start()
    v6 = family == 6
    wait_until(lambda: policy_members(lab, 150, v6) == {"lte1"}, timeout=WAIT, what="lte1 as tier 0")
    first = lab.flows(tcp=5, udp=5, interval_ms=20, duration=1.0, family=family)
    assert set(first.by_uplink(at="first")) == {"lte1"}

    def spent() -> dict[str, Any] | None:
        usage = next(u for u in status(c)["uplinks"] if u["name"] == "lte1")["usage"]
        return usage if usage["spent"] else None

    for _ in range(20):  # bounded: each round moves ~100 KB through lte1 until the budget is gone
        if spent() is not None:
            break
        lab.flows(tcp=5, udp=5, interval_ms=10, duration=1.0, family=family)
    usage = wait_until(spent, timeout=WAIT, what="lte1's budget to be spent")
    assert usage["bytes"] >= 60_000 and usage["budget"] == 60_000
    wait_until(lambda: policy_members(lab, 150, v6) == {"wan"}, timeout=WAIT, what="wan for lan1")
    after = lab.flows(tcp=5, udp=5, interval_ms=50, duration=1.0, family=family)
    assert set(after.by_uplink(at="first")) == {"wan"}

    kept = json.loads((c.state_dir / "usage.json").read_text())["uplinks"]["lte1"]
    assert kept["bytes"] >= 60_000
    assert c.stop() == 0
    c.start()
    assert next(u for u in status(c)["uplinks"] if u["name"] == "lte1")["usage"]["spent"]
    assert policy_members(lab, 150, v6) == {"wan"}, "a restart forgot the spent budget"
    again = lab.flows(tcp=5, udp=5, interval_ms=50, duration=1.0, family=family)
    assert set(again.by_uplink(at="first")) == {"wan"}


def test_flush_on_recovery_moves_existing_connections_back_to_the_top_tier(
    lab: Lab, make_controller: Any
) -> None:
    """A policy with flush_on_recovery: when its top tier returns, the connections it carried
    on the lower tier are deleted and (UDP, same socket) continue through the top tier; the
    default policy's connections on the same lower-tier uplink stay."""
    probe = {"targets": [SERVER]}
    cfg = {
        "uplinks": {"wan": uplink(1, "wan", probe=probe), "lte1": uplink(2, "lte1", probe=probe)},
        "probe": {"profile": "fast"},
        "policies": {"lte-first": {"tiers": [["lte1"], ["wan"]], "table": 150, "flush_on_recovery": True}},
        "rules": {"steer": [{"src": "192.168.50.11/32", "policy": "lte-first"}]},
    }
    lab.unplug("lte2")
    c = make_controller(cfg)
    c.start()
    wait_state(c, "lte1", "up")
    wait_until(lambda: policy_members(lab, 150) == {"lte1"}, timeout=WAIT, what="lte1 as tier 0")
    lab.isp("lte1").blackhole()
    wait_state(c, "lte1", "down")
    wait_until(lambda: policy_members(lab, 150) == {"wan"}, timeout=WAIT, what="wan as the next tier")
    steered = lab.start_flows(client="lan1", tcp=0, udp=8, interval_ms=20, duration=8.0)
    other = lab.start_flows(client="lan2", tcp=0, udp=8, interval_ms=20, duration=8.0)
    time.sleep(0.5)
    lab.isp("lte1").blackhole(False)
    wait_state(c, "lte1", "up")
    wait_until(lambda: policy_members(lab, 150) == {"lte1"}, timeout=WAIT, what="lte1 back as tier 0")
    moved = steered.result()
    assert set(moved.by_uplink(at="first")) == {"wan"}
    assert set(moved.by_uplink(at="last")) == {"lte1"}, "the policy's connections did not return"
    stayed = other.result()
    assert not stayed.moved(), "a default-policy connection was moved by another policy's recovery"
