"""Policies and steering rules, pure: config errors, the policies contributor's choice of
tier, metered uplinks in the default policy, the nft steering state, flush on recovery,
and which rule explain names. No kernel, no root."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from uplinkd import plan, usage
from uplinkd.config import Config, ConfigError, parse
from uplinkd.model import (
    AF_INET,
    AF_INET6,
    GROUPS,
    NFT,
    ROUTES,
    RULES,
    ConntrackFlush,
    Health,
    HealthVerdict,
    Link,
    Observed,
    RouteKey,
    Rule,
)
from uplinkd.plan import Facts, policies
from uplinkd.plan.nft import steering

BASE = 100_000_000
ip = ipaddress.ip_address


def up(name: str, table: int, **fields: Any) -> dict[str, Any]:
    n = table - 100
    return {
        "match": {"name": name},
        "address": {
            "mode": "static",
            "cidr": f"10.{table}.0.2/24",
            "gateway": f"10.{table}.0.1",
            "cidr6": f"2001:db8:{n}::2/64",
            "gateway6": f"2001:db8:{n}::1",
        },
        "table": table,
        **fields,
    }


UPLINKS = {"wan": up("wan", 101, weight=3), "lte1": up("lte1", 102, metered=True), "lte2": up("lte2", 103)}
POLICIES = {
    "wired": {"tiers": [["wan"]], "table": 150, "last_resort": "unreachable"},
    "backup": {"tiers": [{"wan": 2, "lte2": 1}, {"lte1": 1}], "table": 151, "flush_on_recovery": True},
    "chain": {"tiers": [["lte2"]], "table": 152, "last_resort": "wired"},
}
STEER = [
    {"src": ["192.168.2.0/24", "fd02::/64"], "policy": "backup"},
    {"protocol": "udp", "dport": [5060, "10000-20000"], "policy": "wired"},
    {"iif": "wg*", "policy": "default"},
    {"local": True, "policy": "chain"},
]


def cfg(**over: Any) -> Config:
    data: dict[str, Any] = {"uplinks": UPLINKS, "policies": POLICIES, "rules": {"steer": STEER}}
    data.update(over)
    return parse(data)


def observed() -> Observed:
    links = {
        i: Link(index=i, name=n, up=True, carrier=True) for i, n in ((2, "wan"), (3, "lte1"), (4, "lte2"))
    }
    return Observed(links=links, addrs=(), gateways=())


def facts(**health: Health) -> Facts:
    return Facts(observed(), health={n: HealthVerdict(h) for n, h in health.items()})


def group_of(intent: plan.Intent, table: int, family: int = AF_INET) -> set[tuple[int, int]] | None:
    route = intent.kernel[ROUTES][RouteKey(family, table, "0.0.0.0/0" if family == AF_INET else "::/0")]
    if route.nhid is None:
        return None
    return {(m.id, m.weight) for m in intent.kernel[GROUPS][route.nhid].members}


def nh(table: int, family: int = AF_INET) -> int:
    return BASE + 2 * table + (family == AF_INET6)


# --- config ----------------------------------------------------------------------------------


def errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse(data)
    return list(e.value.problems)


@pytest.mark.parametrize(
    ("policies", "steer", "expected"),
    [
        (
            {"p": {"tiers": [["nope"]], "table": 150}},
            [],
            "policies.p.tiers.0.nope: no uplink is named 'nope'",
        ),
        ({"p": {"tiers": [], "table": 150}}, [], "policies.p.tiers: "),
        ({"p": {"tiers": [[]], "table": 150}}, [], "tier 0 is empty"),
        (
            {"p": {"tiers": [["wan"]], "table": 101}},
            [],
            "policies.p.table: 101 is already used by uplinks.wan.table",
        ),
        (
            {"p": {"tiers": [["wan"]], "table": 150, "last_resort": "x"}},
            [],
            "policies.p.last_resort: 'x' is no policy",
        ),
        ({"default": {"tiers": [["wan"]], "table": 150}}, [], "policies.default: 'default' is built in"),
        ({}, [{"policy": "nope"}], "rules.steer.0.policy: 'nope' is no policy"),
        (
            {},
            [
                {"src": "10.0.0.0/8", "policy": "default"},
                {"src": "10.1.0.0/16", "protocol": "tcp", "policy": "default"},
            ],
            "rules.steer.1: can never match, rules.steer.0 matches everything it does first",
        ),
        ({}, [{"src": "10.0.0.0/8", "dst": "fd00::/8", "policy": "default"}], "different address families"),
        ({}, [{"dport": 5060, "protocol": "icmp", "policy": "default"}], "ports need a protocol with ports"),
        ({}, [{"uid": 0, "policy": "default"}], "set local = true"),
        ({}, [{"dport": "70000", "policy": "default"}], "out of range"),
    ],
)
def test_errors_name_the_field(policies: dict[str, Any], steer: list[Any], expected: str) -> None:
    text = "\n".join(errors({"uplinks": UPLINKS, "policies": policies, "rules": {"steer": steer}}))
    assert expected in text, text


def test_fallback_cycle_is_refused() -> None:
    pol = {"a": {"tiers": [["wan"]], "table": 150, "last_resort": "b"},
           "b": {"tiers": [["wan"]], "table": 151, "last_resort": "a"}}  # fmt: skip
    text = "\n".join(errors({"uplinks": UPLINKS, "policies": pol}))
    assert "policies.a.last_resort: the fallbacks go round in a circle (a → b → a)" in text


def test_a_narrower_rule_after_a_broader_one_with_other_ports_is_fine() -> None:
    cfg(rules={"steer": [{"protocol": "udp", "dport": 5060, "policy": "wired"},
                         {"protocol": "udp", "dport": "5000-6000", "policy": "backup"}]})  # fmt: skip


def test_policy_mask_defaults_next_to_the_mark_mask() -> None:
    assert parse({}).kernel.policy_bits == 0xFF0000
    assert parse({"kernel": {"mark_mask": "0xff000000"}}).kernel.policy_bits == 0xFF0000
    assert "overlaps mark_mask" in "\n".join(errors({"kernel": {"policy_mask": "0xff00"}}))


# --- the contributor -----------------------------------------------------------------------------


def test_first_tier_with_a_healthy_member_is_used() -> None:
    c = cfg()
    intent = plan.desired(c, facts())
    assert group_of(intent, 151) == {(nh(101), 2), (nh(103), 1)}
    assert group_of(intent, 151, AF_INET6) == {(nh(101, AF_INET6), 2), (nh(103, AF_INET6), 1)}
    assert intent.reasons["policy backup ipv4"] == "tier 0: wan, lte2"
    # the group id is the one the policy's table would give an uplink
    assert intent.kernel[ROUTES][RouteKey(AF_INET, 151, "0.0.0.0/0")].nhid == nh(151)
    rules = {r for r in intent.kernel[RULES] if r.priority == 10015}
    assert Rule(AF_INET, 10015, 151, fwmark=151 << 16, fwmask=0xFF0000) in rules and len(rules) == 6

    down = plan.desired(c, facts(wan=Health.DOWN, lte2=Health.DOWN))
    assert group_of(down, 151) == {(nh(102), 1)} and down.reasons["policy backup ipv4"] == "tier 1: lte1"


def test_last_resorts() -> None:
    c = cfg()
    down = plan.desired(c, facts(wan=Health.DOWN, lte1=Health.DOWN, lte2=Health.DOWN))
    assert down.kernel[ROUTES][RouteKey(AF_INET, 150, "0.0.0.0/0")].type == "unreachable"  # wired
    assert group_of(down, 151) == {(nh(101), 2), (nh(103), 1), (nh(102), 1)}  # carrier
    # chain falls back to wired, which is unreachable too
    assert down.kernel[ROUTES][RouteKey(AF_INET, 152, "0.0.0.0/0")].type == "unreachable"
    lte2_down = plan.desired(c, facts(lte2=Health.DOWN))
    assert group_of(lte2_down, 152) == {(nh(101), 3)}
    assert lte2_down.reasons["policy chain ipv4"].startswith(
        "last resort: no tier is healthy, as policy wired"
    )


def test_drained_uplink_leaves_every_policy() -> None:
    intent = plan.desired(cfg(), Facts(observed(), drained=frozenset({"lte2"})))
    assert group_of(intent, 151) == {(nh(101), 2)}


def test_metered_uplink_is_the_default_policys_last_tier() -> None:
    c = cfg()
    intent = plan.desired(c, facts())
    assert group_of(intent, 200) == {(nh(101), 3), (nh(103), 1)}
    only_metered = plan.desired(c, facts(wan=Health.DOWN, lte2=Health.DOWN))
    assert group_of(only_metered, 200) == {(nh(102), 1)}
    assert "no unmetered uplink (with budget left) is healthy" in only_metered.balance_reason[AF_INET]


def test_without_policies_nothing_changes() -> None:
    c = parse({"uplinks": {"wan": up("wan", 101)}})
    intent = plan.desired(c, facts())
    assert not [r for r in intent.kernel[RULES] if r.priority == 10015]
    (nft,) = intent.kernel[NFT].values()
    assert nft.steer == () and nft.steer_digest == "" and nft.policy_mask == 0


# --- nft -------------------------------------------------------------------------------------------


def test_steering_rules_split_by_family_only_when_needed() -> None:
    rules = steering(cfg())
    assert [(r.rule, r.family, r.src) for r in rules] == [
        (0, 4, ("192.168.2.0/24",)),
        (0, 6, ("fd02::/64",)),
        (1, None, ()),
        (2, None, ()),
        (3, None, ()),
    ]
    assert [r.mark for r in rules] == [151 << 16, 151 << 16, 150 << 16, 0, 152 << 16]
    assert rules[4].local


def test_read_back_state_equals_the_wanted_one_by_digest() -> None:
    (want,) = plan.desired(cfg(), facts()).kernel[NFT].values()
    read = type(want)(  # what kernel/nft.read makes of the listing: no steering rules, their digest
        want.table,
        want.mask,
        want.uplinks,
        ipv6=want.ipv6,
        tunnel_ifnames=want.tunnel_ifnames,
        tunnel_peers=want.tunnel_peers,
        policy_mask=want.policy_mask,
        steer_digest=want.steer_digest,
    )
    assert not read.steer and want.steer
    assert read == want and read.digest == want.digest
    (other,) = plan.desired(cfg(rules={"steer": STEER[:2]}), facts()).kernel[NFT].values()
    assert other != want


# --- flush on recovery -------------------------------------------------------------------------------


def test_flush_on_recovery_moves_only_that_policys_connections_off_lower_tiers() -> None:
    c = cfg()
    before = plan.desired(c, facts(wan=Health.DOWN, lte2=Health.DOWN))
    after = plan.desired(c, facts())
    ops = policies.recoveries(c, before.reasons, after.reasons)
    mask = 0xFF0000 | 0xFF00
    assert {(op.obj.uplink, op.obj.mark, op.obj.mask) for op in ops} == {
        ("lte1", (151 << 16) | (102 << 8), mask)
    }
    assert all(isinstance(op.obj, ConntrackFlush) for op in ops)
    # the other way round (a tier lost), or a policy without the option: nothing
    assert policies.recoveries(c, after.reasons, before.reasons) == ()
    step = plan.step(after.kernel, after, before=before, mask=0xFF00, config=c)
    assert [op.obj.uplink for op in step.ops if isinstance(op.obj, ConntrackFlush)] == ["lte1"]


# --- explain ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        (policies.Packet(ip("198.51.100.1"), ip("192.168.2.7"), "lan0", "tcp", 1, 443), (0, "backup")),
        (policies.Packet(ip("2001:db8::1"), ip("fd02::7"), "lan0"), (0, "backup")),
        (policies.Packet(ip("198.51.100.1"), ip("192.168.1.7"), "lan0", "udp", 4000, 5060), (1, "wired")),
        (policies.Packet(ip("198.51.100.1"), ip("192.168.1.7"), "lan0", "udp", 4000, 15000), (1, "wired")),
        (
            policies.Packet(ip("198.51.100.1"), ip("192.168.1.7"), "lan0", "tcp", 4000, 5060),
            (None, "default"),
        ),
        (policies.Packet(ip("198.51.100.1"), ip("10.9.0.2"), "wg0"), (2, "default")),
        (policies.Packet(ip("198.51.100.1")), (3, "chain")),
    ],
)
def test_explain_evaluates_the_rules_in_order(
    packet: policies.Packet, expected: tuple[int | None, str]
) -> None:
    assert policies.steer_for(cfg(), packet) == expected


def test_tier_of_reads_the_reason() -> None:
    assert policies.tier_of("tier 1: lte1") == 1
    assert policies.tier_of("last resort: no tier is healthy") is None


# --- budgets ---------------------------------------------------------------------------------------


def test_budget_parses_units() -> None:
    c = parse({"uplinks": {"lte1": up("lte1", 102, budget="1.5G")}})
    assert c.uplinks["lte1"].budget == 1_500_000_000
    assert "is not an amount of bytes" in "\n".join(
        errors({"uplinks": {"lte1": up("lte1", 102, budget="lots")}})
    )


def test_a_spent_uplink_counts_only_in_a_last_tier() -> None:
    c = cfg(uplinks={**UPLINKS, "lte2": up("lte2", 103, budget=1000)})
    spent = Facts(observed(), spent=frozenset({"lte2"}))
    intent = plan.desired(c, spent)
    assert group_of(intent, 151) == {(nh(101), 2)}  # backup's tier 0 without lte2
    assert group_of(intent, 152) == {(nh(103), 1)}  # chain has one tier: the last, so lte2 stays
    assert group_of(intent, 200) == {(nh(101), 3)}  # default: lte2 joins only as a last tier
    wan_down = plan.desired(
        c, Facts(observed(), spent=frozenset({"lte2"}), health={"wan": HealthVerdict(Health.DOWN)})
    )
    assert group_of(wan_down, 200) == {(nh(102), 1), (nh(103), 1)}


def test_usage_arithmetic_and_keeping(tmp_path: Any) -> None:
    assert usage.moved_since(None, 500) == 0  # the first reading is a baseline
    assert usage.moved_since(500, 800) == 300
    assert usage.moved_since(800, 100) == 100  # replugged: the counter started again
    u = usage.account(None, month="2026-12", moved=10)
    assert usage.account(u, month="2026-12", moved=5) == usage.Usage("2026-12", 15)
    assert usage.account(u, month="2027-01", moved=5) == usage.Usage("2027-01", 5)
    path = tmp_path / "usage.json"
    usage.save(path, {"lte1": usage.Usage("2026-12", 15)})
    assert usage.load(path) == {"lte1": usage.Usage("2026-12", 15)}
    path.write_text("{not json")
    assert usage.load(path) == {}
    assert usage.load(tmp_path / "none.json") == {}
