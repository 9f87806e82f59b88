"""The tunnels' config section and planning contributor, on hand-built facts."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any

import pytest

from uplinkd import plan
from uplinkd.config import Config, ConfigError, parse
from uplinkd.kernel import nft as knft
from uplinkd.model import (
    AF_INET,
    AF_INET6,
    ROUTES,
    RULES,
    Addr,
    ConntrackFlush,
    Gateway,
    Health,
    HealthVerdict,
    KernelState,
    Link,
    NftState,
    NftUplink,
    Observed,
    Route,
    RouteKey,
    Rule,
)
from uplinkd.model.kinds.addresses import StaticAddr
from uplinkd.model.kinds.links import LinkUp
from uplinkd.model.kinds.tuning import LinkTuning
from uplinkd.plan import Facts
from uplinkd.plan.failover import step
from uplinkd.tunnel.health import TunnelHealth

HOME_KEY = "GW7cTEnbLLp+3AJ8jqYLWmH1Ed1p3ZMhUiqFs6rEOGI="
WG = "wg0"


def tunnel(**over: Any) -> dict[str, Any]:
    t: dict[str, Any] = {
        "interface": WG,
        "private_key_file": "/run/credentials/uplinkd/wg.key",
        "addresses": ["10.99.0.2/24"],
        "table": 150,
        "peers": [{"public_key": HOME_KEY, "endpoint": "198.51.100.100:51820", "allowed_ips": ["0.0.0.0/0"]}],
        "underlay": ["wan", "lte1"],
        "route": "full",
    }
    t.update(over)
    return t


def config(**over: Any) -> Config:
    return parse(
        {
            "uplinks": {
                "wan": {
                    "match": {"name": "wan"},
                    "address": {
                        "mode": "static",
                        "cidr": "10.101.0.2/24",
                        "gateway": "10.101.0.1",
                        "cidr6": "2001:db8:1::2/64",
                        "gateway6": "2001:db8:1::1",
                    },
                    "table": 101,
                    "probe": {"targets": ["198.51.100.100"]},
                },
                "lte1": {
                    "match": {"name": "lte1"},
                    "address": {"mode": "static", "cidr": "10.102.0.2/24", "gateway": "10.102.0.1"},
                    "table": 102,
                    "probe": {"targets": ["198.51.100.100"]},
                },
            },
            "tunnels": {"home": tunnel(**over)},
        }
    )


def observed(*, wg: bool = True) -> Observed:
    links = [
        Link(index=2, name="wan", up=True, carrier=True),
        Link(index=3, name="lte1", up=True, carrier=True),
    ]
    if wg:
        links.append(Link(index=9, name=WG, up=True, carrier=True))
    addrs = (
        Addr(2, ipaddress.ip_interface("10.101.0.2/24")),
        Addr(2, ipaddress.ip_interface("2001:db8:1::2/64")),
        Addr(3, ipaddress.ip_interface("10.102.0.2/24")),
    )
    gws = (
        Gateway(2, AF_INET, ipaddress.ip_address("10.101.0.1")),
        Gateway(2, AF_INET6, ipaddress.ip_address("2001:db8:1::1")),
        Gateway(3, AF_INET, ipaddress.ip_address("10.102.0.1")),
    )
    return Observed(links={li.index: li for li in links}, addrs=addrs, gateways=gws)


UP = HealthVerdict(Health.UP, "ok")
DOWN = HealthVerdict(Health.DOWN, "dead")


def intent(cfg: Config, *, wan: HealthVerdict = UP, tunnel_up: bool = True, wg: bool = True) -> plan.Intent:
    health = TunnelHealth(state="up" if tunnel_up else "down", reason="test", ifname=WG)
    return plan.desired(
        cfg, Facts(observed(wg=wg), health={"wan": wan, "lte1": UP}, tunnels={"home": health})
    )


def table(i: plan.Intent, number: int, family: int) -> Route | None:
    routes = i.kernel[ROUTES]
    key = RouteKey(family, number, "0.0.0.0/0" if family == AF_INET else "::/0")
    found = routes.get(key)
    return found if isinstance(found, Route) else None


# --- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"underlay": ["wan", "nope"]}, "tunnels.home.underlay: 'nope' is not an uplink"),
        ({"table": 101}, "tunnels.home.table: 101 is already used by uplinks.wan.table"),
        ({"fwmark": 0x6500}, "tunnels.home.fwmark: 0x6500 must be non-zero and outside kernel.mark_mask"),
        ({"interface": "wan"}, "tunnels.home.interface: 'wan' is an uplink's interface"),
        ({"private_key_file": "wg.key"}, "tunnels.home.private_key_file"),
        ({"mtu": 100}, "tunnels.home.mtu"),
        ({"peers": [{"public_key": "short"}]}, "tunnels.home.peers.0.public_key"),
        (
            {"peers": [{"public_key": HOME_KEY, "endpoint": "home_example:51820"}]},
            "tunnels.home.peers.0.endpoint",
        ),
    ],
)
def test_config_errors_name_the_field(over: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as e:
        config(**over)
    assert field in str(e.value), str(e.value)


def test_tunnels_beside_policies_keep_their_tables_and_mark_bits_apart() -> None:
    """A policy's table is not a tunnel's, and with policies a tunnel's fwmark stays out of
    kernel.policy_mask (a steering rule rewrites those bits; a policy mark could match the
    tunnel's `fwmark T/T` rule)."""
    base = config().model_dump(mode="json", exclude_none=True)

    def with_policy(table: int, **over: Any) -> dict[str, Any]:
        doc = {**base, "tunnels": {"home": tunnel(**over)}}
        return {**doc, "policies": {"wired": {"tiers": [{"wan": 1}], "table": table}}}

    with pytest.raises(ConfigError) as e:
        parse(with_policy(150, fwmark=0x1000000))
    assert "tunnels.home.table: 150 is already used by policies.wired.table" in str(e.value)
    # the default mark is a bit of its own outside both masks: adding a policy changes nothing
    assert parse(with_policy(160)).tunnels["home"].mark == 0x80000000
    with pytest.raises(ConfigError) as e:
        parse(with_policy(160, fwmark=0x960000))  # under policy_mask 0xff0000
    assert "tunnels.home.fwmark: 0x960000 shares bits with the policies' marks" in str(e.value)
    assert "e.g. 0x80000000" in str(e.value)
    assert parse(with_policy(160, fwmark=0x1000000)).tunnels["home"].mark == 0x1000000


def test_each_tunnel_gets_a_mark_bit_no_other_mark_contains() -> None:
    """`fwmark T/T` matches any mark with T's bits: two tunnels' marks must not contain one
    another, or one tunnel's packets would follow the other's underlay."""
    base = config().model_dump(mode="json", exclude_none=True)
    two = {
        **base,
        "tunnels": {
            "b": tunnel(interface="wgb", table=160),
            "a": tunnel(interface="wga", table=170),
        },
    }
    marks = {n: t.mark for n, t in parse(two).tunnels.items()}
    assert marks == {"a": 0x80000000, "b": 0x40000000}  # by name, whatever the order given
    clash = {**two, "tunnels": {"a": tunnel(interface="wga", table=170, fwmark=0x30000000),
                                "b": tunnel(interface="wgb", table=160, fwmark=0x10000000)}}
    with pytest.raises(ConfigError) as e:
        parse(clash)
    assert "tunnels.b.fwmark: 0x10000000 contains or is contained in tunnels.a's 0x30000000" in str(e.value)


def test_kill_switch_defaults_on_for_full_only() -> None:
    assert config().tunnels["home"].kills
    assert not config(route=["10.0.0.0/8"]).tunnels["home"].kills
    assert not config(kill_switch=False).tunnels["home"].kills


# --- planning ---------------------------------------------------------------------------------


def test_the_mark_rule_sits_above_the_uplinks_rules_and_the_route_table_below() -> None:
    i = intent(config())
    rules = i.kernel[RULES]
    bit = 0x80000000  # the first tunnel's default mark: bit 31, outside the uplink and policy masks
    mark = Rule(AF_INET, 10005, 150, fwmark=bit, fwmask=bit)
    assert mark in rules and Rule(AF_INET6, 10005, 150, fwmark=bit, fwmask=bit) in rules
    assert Rule(AF_INET, 10025, 151) in rules
    assert mark.priority < min(r.priority for r in rules if isinstance(r, Rule) and r.src is not None)


def test_preference_list_wan_while_healthy_then_lte1() -> None:
    cfg = config()
    up = table(intent(cfg), 150, AF_INET)
    assert up is not None and up.oif == 2 and str(up.gateway) == "10.101.0.1"
    failed = table(intent(cfg, wan=DOWN), 150, AF_INET)
    assert failed is not None and failed.oif == 3 and str(failed.gateway) == "10.102.0.1"
    # never the tunnel itself, never main: a route out of an uplink or unreachable
    for i in (intent(cfg), intent(cfg, wan=DOWN)):
        for family in (AF_INET, AF_INET6):
            r = table(i, 150, family)
            assert r is not None and (r.type == "unreachable" or r.oif in (2, 3))


def test_balance_underlay_uses_the_group() -> None:
    r = table(intent(config(underlay="balance")), 150, AF_INET)
    assert r is not None and r.nhid == 100_000_000


def test_full_route_into_the_tunnel_while_up_and_ipv6_refused_around_a_v4_tunnel() -> None:
    i = intent(config())
    v4, v6 = table(i, 151, AF_INET), table(i, 151, AF_INET6)
    assert v4 is not None and v4.oif == 9
    assert v6 is not None and v6.type == "unreachable"


@pytest.mark.parametrize("wg", [True, False])
def test_kill_switch_while_down_both_families(wg: bool) -> None:
    i = intent(config(), tunnel_up=False, wg=wg)
    for family in (AF_INET, AF_INET6):
        r = table(i, 151, family)
        assert r is not None and r.type == "unreachable"


def test_without_kill_switch_down_falls_through() -> None:
    i = intent(config(kill_switch=False), tunnel_up=False)
    assert table(i, 151, AF_INET) is None and table(i, 151, AF_INET6) is None


def test_an_underlay_change_flushes_the_uplink_left() -> None:
    cfg = config()
    before, after = intent(cfg), intent(cfg, wan=DOWN)
    p = step(KernelState(), after, before=before, mask=0xFF00)
    flushes = [op.obj for op in p.ops if isinstance(op.obj, ConntrackFlush)]
    assert [f.mark for f in flushes] == [101 << 8]


def test_leaving_a_healthy_uplink_flushes_only_the_tunnels_flow_there() -> None:
    cfg = config()  # underlay [wan, lte1], fail-back immediate
    on_lte1, back_on_wan = intent(cfg, wan=DOWN), intent(cfg)
    p = step(KernelState(), back_on_wan, before=on_lte1, mask=0xFF00, config=cfg)
    flushes = [op.obj for op in p.ops if isinstance(op.obj, ConntrackFlush)]
    t = cfg.tunnels["home"].mark
    assert [(f.uplink, f.mark, f.mask) for f in flushes] == [("lte1", (102 << 8) | t, 0xFF00 | t)]
    # without the config (no tunnel marks known) the whole uplink is flushed, as before
    p = step(KernelState(), back_on_wan, before=on_lte1, mask=0xFF00)
    flushes = [op.obj for op in p.ops if isinstance(op.obj, ConntrackFlush)]
    assert [(f.mark, f.mask) for f in flushes] == [(102 << 8, 0xFF00)]


def test_nft_table_carries_the_tunnel_and_reads_back() -> None:
    i = intent(config())
    state = next(o for o in i.kernel if isinstance(o, NftState))
    assert state.tunnel_ifnames == (WG,)
    assert state.tunnel_peers == (("198.51.100.100", 51820, ("wan",)),)
    text = knft.render(state)
    assert 'ip saddr 198.51.100.100 udp sport 51820 iifname != { "wan" } drop' in text
    assert 'oifname "wg0" tcp option maxseg size set rt mtu' in text
    assert state.tunnel_marks == (1 << 31,)  # its packets keep that mark in the output hook
    assert "meta mark & 0x80000000 == 0x80000000 ct mark set ct mark | 0x80000000 return" in text
    plain = NftState("uplinkd", 0xFF00, (NftUplink("wan", 0x6500),))
    assert "tunnel" not in knft.render(plain)


@pytest.mark.parametrize(
    ("line", "marks"),
    [
        ("meta mark & 0x40000000 == 0x40000000 ct mark set ct mark | 0x40000000 return", (0x40000000,)),
        ("meta mark 0x80000000/1 ct mark set ct mark | 0x80000000 return", (0x80000000,)),  # bit 31
        ("meta mark 0xc0000000/2 ct mark set ct mark | 0xc0000000 return", (0xC0000000,)),
        ("meta mark & 0x00001234 == 0x00001234 ct mark set ct mark | 0x00001234 return", (0x1234,)),
        ("meta mark & 0x00000030 == 0x00000010 ct mark set ct mark | 0x00000030 return", ()),  # not one
        ("meta mark & 0x40000000 == 0x40000000 ct mark set ct mark | 0x00000040 return", ()),  # other bits
        ("meta mark & 0x40000000 == 0x40000000 return", ()),  # a table before v6: loaded again
    ],
)
def test_tunnel_marks_read_back_in_both_forms_nft_lists_them(line: str, marks: tuple[int, ...]) -> None:
    assert knft._tunnel_marks(f"\tchain output {{\n\t\t{line}\n\t}}\n") == marks


def test_mtu_auto_follows_the_smallest_carrying_uplink() -> None:
    obs = observed()
    links = dict(obs.links)
    links[2] = replace(links[2], mtu=1500)
    links[3] = replace(links[3], mtu=1428)
    links[9] = replace(links[9], mtu=1420)
    facts = Facts(
        replace(obs, links=links),
        health={"wan": UP, "lte1": UP},
        tunnels={"home": TunnelHealth(state="up", reason="test", ifname=WG)},
    )
    mtus = [o for o in plan.desired(config(), facts).kernel if isinstance(o, LinkTuning)]
    assert mtus == [LinkTuning(9, mtu=1428 - 60)]  # an IPv4 endpoint: 60 bytes of WireGuard
    fixed = [o for o in plan.desired(config(mtu=1280), facts).kernel if isinstance(o, LinkTuning)]
    assert fixed == [LinkTuning(9, mtu=1280)]


def test_a_link_by_the_tunnels_name_is_not_ours_until_its_worker_holds_it() -> None:
    """Before the worker has read the device (no health), a link by that name may be anyone's
    (the worker refuses one it did not make): no address, MTU, up or route into it."""
    mine = (LinkTuning, LinkUp, StaticAddr)
    held = plan.desired(config(), Facts(observed(), health={"wan": UP, "lte1": UP}, tunnels={
        "home": TunnelHealth(state="up", reason="test", ifname=WG)}))  # fmt: skip
    on_wg = [type(o) for o in held.kernel if isinstance(o, mine) and o.dev == WG]
    assert set(on_wg) == {LinkUp, StaticAddr}  # no MTU: the uplinks' are unknown here
    foreign = plan.desired(config(), Facts(observed(), health={"wan": UP, "lte1": UP}))
    assert [o for o in foreign.kernel if isinstance(o, mine) and o.dev == WG] == []
    route = table(foreign, 151, AF_INET)
    assert route is not None and route.oif is None  # the kill switch's unreachable, not the link
    assert foreign.reasons["tunnel home"] == "down: not checked yet"
