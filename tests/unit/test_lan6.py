"""LAN IPv6 (config `lan`, plan.lan6, kernel.nft6) without a kernel: every config message,
what the planner wants for off / translate / nothing configured, and the nft table's IPv6
part read back from its own rendering."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from uplinkd import plan
from uplinkd.config import ConfigError, parse
from uplinkd.kernel import nft, nft6
from uplinkd.model import (
    ADDRESSES,
    AF_INET6,
    NFT,
    ROUTES,
    RULES,
    Addr,
    Delegation,
    Gateway,
    Link,
    NftDelegated,
    NftIpv6,
    NftPrefix,
    NftState,
    NftTranslation,
    NftUplink,
    Observed,
    RouteKey,
    Rule,
    StaticAddr,
)
from uplinkd.plan import Facts, leaks
from uplinkd.plan.lan6 import lan_mode

iface = ipaddress.ip_interface


def uplinks() -> dict[str, Any]:
    return {
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


def lan(**ipv6: Any) -> dict[str, Any]:
    return {"lan0": {"ipv6": ipv6}}


def problems(lan_section: dict[str, Any]) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as e:
        parse({"uplinks": uplinks(), "lan": lan_section})
    return e.value.problems


# --- config ------------------------------------------------------------------------------------


def test_lan_defaults_to_off_and_nothing_configured_means_no_lan() -> None:
    assert parse({"uplinks": uplinks()}).lan == {}
    unset = parse({"uplinks": uplinks(), "lan": {"lan0": {}}})
    assert unset.lan["lan0"].ipv6.mode is None and lan_mode(unset, unset.lan["lan0"]) == "off"
    section = lan(mode="translate", prefix="2001:db8:ff::/64", uplinks=["wan"])
    cfg = parse({"uplinks": uplinks(), "lan": section})
    v6 = cfg.lan["lan0"].ipv6
    assert (v6.mode, str(v6.prefix), v6.uplinks) == ("translate", "2001:db8:ff::/64", ("wan",))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            lan(mode="translate"),
            'lan.lan0.ipv6.prefix: is required for translate; '
            'add the LAN\'s internal /64, e.g. "2001:db8:ff::/64"',
        ),
        (
            lan(mode="translate", prefix="2001:db8:ff::1/64"),
            "lan.lan0.ipv6.prefix: '2001:db8:ff::1/64' has host bits set; "
            "write the prefix itself, '2001:db8:ff::/64'",
        ),
        (
            lan(mode="translate", prefix="2001:db8:ff::/56"),
            "lan.lan0.ipv6.prefix: 2001:db8:ff::/56 is a /56; "
            "translation keeps the interface ID, so use a /64 like the uplinks' prefixes",
        ),
        (
            lan(mode="translate", prefix="fe80::/64"),
            "lan.lan0.ipv6.prefix: fe80::/64 cannot be routed; "
            "use a unicast /64",
        ),
        (
            lan(mode="translate", prefix=64),
            'lan.lan0.ipv6.prefix: 64 is not a prefix; '
            'write it in quotes, e.g. "2001:db8:ff::/64"',
        ),
        (
            lan(mode="translate", prefix="nope"),
            "lan.lan0.ipv6.prefix: 'nope' is not an IPv6 prefix; "
            "write e.g. \"2001:db8:ff::/64\"",
        ),
        (
            lan(mode="translate", prefix="2001:db8:ff::/64", uplinks=["lte9"]),
            "lan.lan0.ipv6.uplinks: 'lte9' is not an uplink; "
            "use one of: lte1, wan",
        ),
        (
            lan(mode="off", prefix="2001:db8:ff::/64"),
            "lan.lan0.ipv6.prefix: is only used with mode 'translate' or 'tunnel'; "
            "remove it",
        ),
        (
            lan(mode="extend"),
            "lan.lan0.ipv6.uplink: is required for extend; "
            "name the uplink whose /64 moves here, e.g. \"lte1\"",
        ),
        (
            lan(mode="extend", uplink="lte9"),
            "lan.lan0.ipv6.uplink: 'lte9' is not an uplink; use one of: lte1, wan",
        ),
        (
            lan(mode="extend", uplink="lte1", prefix="2001:db8:ff::/64"),
            "lan.lan0.ipv6.prefix: is only used with mode 'translate' or 'tunnel'; remove it",
        ),
        (
            lan(mode="translate", prefix="2001:db8:ff::/64", uplink="lte1"),
            "lan.lan0.ipv6.uplink: is only used with mode 'delegate' or 'extend'; remove it",
        ),
        (
            {
                "lan0": {"ipv6": {"mode": "extend", "uplink": "lte1"}},
                "lan1": {"ipv6": {"mode": "extend", "uplink": "lte1"}},
            },
            "lan.lan1.ipv6.uplink: 'lte1' is already extended to lan.lan0; "
            "an uplink's /64 can go to one LAN only",
        ),
        (
            lan(mode="delegate"),
            "lan.lan0.ipv6.uplink: is required for delegate; "
            "name the uplink whose ISP delegates a prefix",
        ),
        (
            lan(mode="delegate", uplink="lte9"),
            "lan.lan0.ipv6.uplink: 'lte9' is not an uplink; use one of: lte1, wan",
        ),
        (
            lan(mode="delegate", uplink="wan", subnet=65536),
            "lan.lan0.ipv6.subnet: 65536 is not a subnet number; use a whole number from 0 to 65535 "
            "(the /64s of the delegated prefix, counted from 0)",
        ),
        (
            lan(mode="delegate", uplink="wan", subnet="1"),
            "lan.lan0.ipv6.subnet: '1' is not a subnet number; use a whole number from 0 to 65535 "
            "(the /64s of the delegated prefix, counted from 0)",
        ),
        (
            lan(mode="delegate", uplink="wan", prefix="2001:db8:ff::/64"),
            "lan.lan0.ipv6.prefix: is only used with mode 'translate' or 'tunnel'; remove it",
        ),
        (
            lan(mode="translate", prefix="2001:db8:ff::/64", subnet=1),
            "lan.lan0.ipv6.subnet: is only used with mode 'delegate'; remove it",
        ),
        (
            {
                "lan0": {"ipv6": {"mode": "delegate", "uplink": "wan"}},
                "lan1": {"ipv6": {"mode": "delegate", "uplink": "wan", "subnet": 0}},
            },
            "lan.lan1.ipv6.subnet: 0 of wan's delegation is also lan.lan0's; "
            "give each LAN its own subnet number",
        ),
        (
            lan(mode="tunnel"),
            "lan.lan0.ipv6.tunnel: mode 'tunnel' needs a tunnel; "
            'name one (none configured) or configure one with route = "full"',
        ),
        (
            lan(mode="tunnel", tunnel="home"),
            "lan.lan0.ipv6.tunnel: 'home' is not a tunnel; none is configured; add it under tunnels",
        ),
        (
            lan(mode="tunnel", prefix="2001:db8:ff::/60"),
            "lan.lan0.ipv6.prefix: 2001:db8:ff::/60 is a /60; SLAAC on the LAN needs a /64",
        ),
        (
            lan(mode="nat66"),
            "lan.lan0.ipv6.mode: 'nat66' is not allowed; "
            "use 'off', 'translate', 'extend', 'delegate' or 'tunnel'",
        ),
        (lan(mode="off", colour="red"), "lan.lan0.ipv6.colour: unknown key; remove it or check its spelling"),
        ({"wan": {}}, "lan.wan: 'wan' is also an uplink's interface; a LAN cannot be an uplink"),
        ({"lan*": {}}, "lan.lan*: 'lan*' is a glob; name the LAN interface exactly, e.g. 'lan0'"),
        (
            {"a/b": {}},
            "lan.a/b: 'a/b' cannot be an interface name; "
            "use 1-15 characters without '/' or spaces",
        ),
        (
            {
                "lan0": {"ipv6": {"mode": "translate", "prefix": "2001:db8:ff::/64"}},
                "lan1": {"ipv6": {"mode": "translate", "prefix": "2001:db8:ff::/64"}},
            },
            "lan.lan1.ipv6.prefix: 2001:db8:ff::/64 overlaps lan.lan0.ipv6.prefix; give each LAN its own /64",
        ),
    ],
)  # fmt: skip
def test_every_lan_mistake_names_the_field_and_the_fix(section: dict[str, Any], message: str) -> None:
    assert message in problems(section)


# --- planning ----------------------------------------------------------------------------------


def facts() -> Facts:
    names = ((2, "wan"), (3, "lte1"), (4, "lan0"))
    links = {i: Link(index=i, name=n, up=True, carrier=True) for i, n in names}
    addrs = [Addr(2, iface("10.101.0.2/24")), Addr(3, iface("10.102.0.2/24"))]
    addrs += [Addr(2, iface("2001:db8:1::2/64")), Addr(3, iface("2001:db8:2::2/64"))]
    addrs += [Addr(2, iface("fe80::1/64"))]
    return Facts(Observed(links=links, addrs=tuple(addrs), gateways=(Gateway(2, AF_INET6, None),)))


def intent(section: dict[str, Any] | None) -> plan.Intent:
    cfg = parse({"uplinks": uplinks(), **({"lan": section} if section is not None else {})})
    return plan.desired(cfg, facts())


def table(i: plan.Intent) -> NftState:
    (found,) = i.kernel[NFT].values()
    return found


def test_nothing_configured_translates_nothing_and_closes_nothing() -> None:
    i = intent(None)
    v6 = table(i).ipv6
    assert v6.translations == () and v6.closed == ()
    assert v6.prefixes == (NftPrefix("lte1", "2001:db8:2::/64"), NftPrefix("wan", "2001:db8:1::/64"))
    text = nft.render(table(i))
    assert "meta nfproto ipv4 oifname @uplinks masquerade" in text
    assert "snat ip6" not in text and "\t\toifname @uplinks masquerade" not in text


def test_off_closes_the_lan_and_adds_no_address() -> None:
    i = intent(lan(mode="off"))
    assert table(i).ipv6.closed == ("lan0",)
    assert not [a for a in i.kernel[ADDRESSES].values() if a.dev == "lan0"]
    assert i.reasons["lan lan0 ipv6"] == "off: no IPv6 from this LAN to any uplink"
    assert 'meta nfproto ipv6 iifname { "lan0" } oifname @uplinks drop' in nft.render(table(i))


def test_translate_maps_the_inner_prefix_to_every_uplinks_64_and_puts_the_router_on_the_lan() -> None:
    i = intent(lan(mode="translate", prefix="2001:db8:ff::/64"))
    assert table(i).ipv6.translations == (
        NftTranslation("lan0", "2001:db8:ff::/64", "lte1", "2001:db8:2::/64"),
        NftTranslation("lan0", "2001:db8:ff::/64", "wan", "2001:db8:1::/64"),
    )
    assert StaticAddr(4, iface("2001:db8:ff::1/64"), dev="lan0") in i.kernel[ADDRESSES].values()
    assert i.reasons["lan lan0 ipv6"] == (
        "translate 2001:db8:ff::/64 via wan as 2001:db8:1::/64, lte1 as 2001:db8:2::/64"
    )
    only = intent(lan(mode="translate", prefix="2001:db8:ff::/64", uplinks=["lte1"]))
    assert [t.ifname for t in table(only).ipv6.translations] == ["lte1"]


def test_translate_without_an_ipv6_uplink_says_so() -> None:
    cfg = parse({"uplinks": uplinks(), "lan": lan(mode="translate", prefix="2001:db8:ff::/64")})
    bare = Facts(Observed(links={4: Link(index=4, name="lan0", up=True, carrier=True)}))
    i = plan.desired(cfg, bare)
    assert table(i).ipv6 == NftIpv6()
    why = "translate 2001:db8:ff::/64: no uplink has an IPv6 /64 or address yet"
    assert i.reasons["lan lan0 ipv6"] == why


# --- the nft table's IPv6 part -------------------------------------------------------------------


def state() -> NftState:
    return NftState(
        "uplinkd",
        0xFF00,
        (NftUplink("lte1", 0x6600), NftUplink("wan", 0x6500)),
        NftIpv6(
            (NftPrefix("lte1", "2001:db8:2::/64"), NftPrefix("wan", "2001:db8:1::/64")),
            (NftTranslation("lan0", "2001:db8:ff::/64", "lte1", "2001:db8:2::/64"),),
            ("lan9",),
        ),
    )


def test_the_ipv6_part_reads_back_from_the_rendered_table() -> None:
    s = state()
    assert nft6.read(nft.render(s)) == s.ipv6


def test_the_guard_lets_each_uplink_carry_only_its_own_prefix() -> None:
    text = nft6.guard_rule(state()) + nft6.guard_chains(state())
    assert 'meta nfproto ipv6 oifname vmap { "lte1" : goto guard6_6600, "wan" : goto guard6_6500 }' in text
    wan = text[text.index("chain guard6_6500") :].split("}")[0]
    assert [line.strip() for line in wan.splitlines()[1:] if line.strip()] == [
        'ip6 saddr 2001:db8:1::/64 accept comment "uplinkd6 own wan 2001:db8:1::/64"',
        "ip6 saddr fc00::/7 drop",
        "ip6 saddr 2001:db8:2::/64 drop",
        "ip6 saddr 2001:db8:ff::/64 drop",
    ]


def test_the_digest_covers_the_ipv6_part() -> None:
    s = state()
    assert NftState(s.table, s.mask, s.uplinks).digest != s.digest


# --- delegate --------------------------------------------------------------------------------------


def delegated(section: dict[str, Any], prefix: str | None) -> plan.Intent:
    cfg = parse({"uplinks": uplinks(), "lan": section})
    base = facts()
    given = {"wan": Delegation(ipaddress.IPv6Network(prefix))} if prefix else {}
    return plan.desired(cfg, Facts(base.observed, delegations=given))


def test_delegate_takes_its_subnet_of_the_delegation_and_leaves_by_that_uplink_only() -> None:
    i = delegated(lan(mode="delegate", uplink="wan", subnet=2), "2001:db8:e1::/56")
    assert StaticAddr(4, iface("2001:db8:e1:2::1/64"), dev="lan0") in i.kernel[ADDRESSES].values()
    rule = Rule(AF_INET6, 10012, 101, src=ipaddress.ip_network("2001:db8:e1:2::/64"))
    assert rule in i.kernel[RULES].values()
    unreachable = RouteKey(AF_INET6, 254, "2001:db8:e1::/56")
    assert i.kernel[ROUTES][unreachable].type == "unreachable"
    v6 = table(i).ipv6
    assert v6.closed == ("lan0",)
    assert v6.delegated == (NftDelegated("lan0", "wan", "2001:db8:e1:2::/64"),)
    assert NftPrefix("wan", "2001:db8:e1::/56") in v6.prefixes  # wan's own: dropped on lte1
    text = nft.render(table(i))
    accept = 'iifname "lan0" oifname "wan" ip6 saddr 2001:db8:e1:2::/64 accept'
    assert text.index(accept) < text.index('meta nfproto ipv6 iifname { "lan0" } oifname @uplinks drop')
    lte1 = text[text.index("chain guard6_6600") :].split("}")[0]
    assert "ip6 saddr 2001:db8:e1::/56 drop" in lte1
    assert i.reasons["lan lan0 ipv6"] == "delegate 2001:db8:e1:2::/64 of 2001:db8:e1::/56 from wan"
    assert nft6.read(text) == v6


def test_delegate_without_a_delegation_is_closed_and_says_it_waits() -> None:
    i = delegated(lan(mode="delegate", uplink="wan"), None)
    assert not [a for a in i.kernel[ADDRESSES].values() if a.dev == "lan0"]
    assert not [r for r in i.kernel[RULES].values() if r.src is not None and r.src.prefixlen == 64]
    assert table(i).ipv6.closed == ("lan0",) and table(i).ipv6.delegated == ()
    assert i.reasons["lan lan0 ipv6"] == "delegate: waiting for a prefix delegated by wan"


@pytest.mark.parametrize(
    ("prefix", "subnet", "why"),
    [
        ("2001:db8:e1::/62", 4, "delegate: subnet 4 does not fit 2001:db8:e1::/62 (4 /64s); "
         "set lan.<if>.ipv6.subnet below 4"),
        ("2001:db8:e1::/80", 0, "delegate: wan delegated 2001:db8:e1::/80, longer than a /64; "
         "ask the ISP for a /64 or shorter"),
    ],
)  # fmt: skip
def test_a_delegation_the_subnet_does_not_fit_is_not_used(prefix: str, subnet: int, why: str) -> None:
    i = delegated(lan(mode="delegate", uplink="wan", subnet=subnet), prefix)
    assert not [a for a in i.kernel[ADDRESSES].values() if a.dev == "lan0"]
    assert i.reasons["lan lan0 ipv6"] == why


# --- tunnel ------------------------------------------------------------------------------------------


def tunnel_section(route: Any = "full") -> dict[str, Any]:
    return {
        "home": {
            "interface": "wg0",
            "private_key_file": "/run/credentials/uplinkd/wg.key",
            "addresses": ["10.99.0.2/24", "2001:db8:77::2/64"],
            "table": 150,
            "peers": [
                {
                    "public_key": "GW7cTEnbLLp+3AJ8jqYLWmH1Ed1p3ZMhUiqFs6rEOGI=",
                    "endpoint": "198.51.100.100:51820",
                    "allowed_ips": ["0.0.0.0/0", "::/0"],
                }
            ],
            "route": route,
        }
    }


def with_tunnel(section: dict[str, Any], route: Any = "full") -> plan.Intent:
    cfg = parse({"uplinks": uplinks(), "lan": section, "tunnels": tunnel_section(route)})
    return plan.desired(cfg, facts())


def test_a_full_tunnel_makes_tunnel_the_default_and_closes_the_lan_to_every_uplink() -> None:
    i = with_tunnel({"lan0": {}})
    assert table(i).ipv6.closed == ("lan0",) and table(i).ipv6.translations == ()
    assert i.reasons["lan lan0 ipv6"] == "tunnel: IPv6 only through tunnel home, to no uplink"
    assert 'meta nfproto ipv6 iifname { "lan0" } oifname @uplinks drop' in nft.render(table(i))
    # written explicitly, the mode stays what it says
    explicit = with_tunnel(lan(mode="translate", prefix="2001:db8:ff::/64"))
    assert table(explicit).ipv6.closed == () and table(explicit).ipv6.translations


def test_tunnel_puts_the_router_on_its_prefix_and_needs_a_tunnel() -> None:
    i = with_tunnel(lan(mode="tunnel", prefix="2001:db8:78::/64"))
    assert StaticAddr(4, iface("2001:db8:78::1/64"), dev="lan0") in i.kernel[ADDRESSES].values()
    # a tunnel that routes only some prefixes is the LAN's tunnel only when named
    with pytest.raises(ConfigError) as e:
        parse({"uplinks": uplinks(), "lan": lan(mode="tunnel"), "tunnels": tunnel_section(["10.0.0.0/8"])})
    assert e.value.problems == (
        "lan.lan0.ipv6.tunnel: mode 'tunnel' needs a tunnel; name one (home) or "
        'configure one with route = "full"',
    )
    named = with_tunnel(lan(mode="tunnel", tunnel="home"), route=["10.0.0.0/8"])
    assert table(named).ipv6.closed == ("lan0",)


# --- the audit's judgement ---------------------------------------------------------------------------


def test_the_audit_follows_a_packet_through_the_tables_ipv6_part() -> None:
    s = state()  # lte1 and wan own their /64s; lan0 translates to lte1; lan9 is closed
    v6 = NftIpv6(
        s.ipv6.prefixes,
        s.ipv6.translations,
        ("lan9", "lanp"),
        (NftDelegated("lanp", "wan", "2001:db8:e1:1::/64"),),
    )
    addr = ipaddress.IPv6Address
    translated = leaks.fate(v6, lan="lan0", src=addr("2001:db8:ff::11"), dev="lte1")
    assert translated == leaks.Fate(True, addr("2001:db8:2::11"), "translated to 2001:db8:2::11")
    # the same source out of wan is not translated there: the guard drops the inner prefix
    assert not leaks.fate(v6, lan="lan0", src=addr("2001:db8:ff::11"), dev="wan").leaves
    assert not leaks.fate(v6, lan="lan0", src=addr("fd50::11"), dev="wan").leaves  # ULA
    stray = leaks.fate(v6, lan="lan0", src=addr("2001:db8:99::11"), dev="wan")
    assert stray == leaks.Fate(True, addr("2001:db8:99::11"), "untranslated")
    closed = leaks.fate(v6, lan="lan9", src=addr("2001:db8:1::11"), dev="wan")
    assert closed.how == "dropped by uplinkd's forward rule" and not closed.leaves
    assert leaks.fate(v6, lan="lanp", src=addr("2001:db8:e1:1::11"), dev="wan").leaves
    assert not leaks.fate(v6, lan="lanp", src=addr("2001:db8:e1:1::11"), dev="lte1").leaves

    cfg = parse(
        {
            "uplinks": uplinks(),
            "lan": {
                "lan0": {"ipv6": {"mode": "translate", "prefix": "2001:db8:ff::/64"}},
                "lanp": {"ipv6": {"mode": "delegate", "uplink": "wan", "subnet": 1}},
            },
        }
    )
    assert leaks.allowed(cfg, v6, lan="lan0", uplink="lte1", fated=translated)
    assert not leaks.allowed(cfg, v6, lan="lan0", uplink="wan", fated=stray)
    delegated = leaks.fate(v6, lan="lanp", src=addr("2001:db8:e1:1::11"), dev="wan")
    assert leaks.allowed(cfg, v6, lan="lanp", uplink="wan", fated=delegated)


def test_the_audit_translates_to_an_uplinks_one_dhcpv6_address_n_to_1() -> None:
    """An uplink with only a DHCPv6 /128: every LAN host leaves with that one address (nft's
    `snat ip6 prefix to <addr>/128` keeps no interface ID), and that is the uplink's own."""
    addr = ipaddress.IPv6Address
    v6 = NftIpv6(
        (NftPrefix("wan", "2001:db8:1::5/128"),),
        (NftTranslation("lan0", "fd00:1::/64", "wan", "2001:db8:1::5/128"),),
    )
    fated = leaks.fate(v6, lan="lan0", src=addr("fd00:1::1234:5678:9abc:def0"), dev="wan")
    assert fated == leaks.Fate(True, addr("2001:db8:1::5"), "translated to 2001:db8:1::5")


def test_the_audit_lets_an_extended_64_leave_by_its_own_uplink_only() -> None:
    """lte1's /64 (2001:db8:2::/64) extended to lanx: out of lte1 untranslated it is allowed;
    routed to wan it is a problem even though the guard drops it there (black-holed); a stray
    prefix on the LAN leaving by lte1 is one too."""
    s = state()
    v6 = NftIpv6(s.ipv6.prefixes, (), (), ())
    addr = ipaddress.IPv6Address
    cfg = parse({"uplinks": uplinks(), "lan": {"lanx": {"ipv6": {"mode": "extend", "uplink": "lte1"}}}})
    own = leaks.fate(v6, lan="lanx", src=addr("2001:db8:2::11"), dev="lte1")
    assert own == leaks.Fate(True, addr("2001:db8:2::11"), "untranslated")
    assert leaks.allowed(cfg, v6, lan="lanx", uplink="lte1", fated=own)
    elsewhere = leaks.fate(v6, lan="lanx", src=addr("2001:db8:2::11"), dev="wan")
    assert not elsewhere.leaves
    assert not leaks.allowed(cfg, v6, lan="lanx", uplink="wan", fated=elsewhere)
    stray = leaks.fate(v6, lan="lanx", src=addr("2001:db8:99::11"), dev="lte1")
    assert stray.leaves and not leaks.allowed(cfg, v6, lan="lanx", uplink="lte1", fated=stray)
    translated = leaks.Fate(True, addr("2001:db8:2::11"), "translated to 2001:db8:2::11")
    assert not leaks.allowed(cfg, v6, lan="lanx", uplink="lte1", fated=translated)


def test_an_unnumbered_wan_gets_its_ras_router_in_its_table_for_the_delegated_lan() -> None:
    ups = uplinks()
    for key in ("cidr6", "gateway6"):
        del ups["wan"]["address"][key]
    cfg = parse({"uplinks": ups, "lan": lan(mode="delegate", uplink="wan")})
    base = facts()
    # wan without its global address: only the RA's router (a default route in main)
    addrs = tuple(a for a in base.observed.addrs if str(a.address) != "2001:db8:1::2/64")
    gateways = (Gateway(2, AF_INET6, ipaddress.ip_address("fe80::1")),)
    observed = Observed(links=base.observed.links, addrs=addrs, gateways=gateways)
    given = {"wan": Delegation(ipaddress.IPv6Network("2001:db8:e1::/56"))}
    i = plan.desired(cfg, Facts(observed, delegations=given))
    route = i.kernel[ROUTES][RouteKey(AF_INET6, 101, "::/0")]
    assert (route.oif, str(route.gateway)) == (2, "fe80::1")
    # without a delegation it is not ours to route
    i = plan.desired(cfg, Facts(observed))
    assert RouteKey(AF_INET6, 101, "::/0") not in i.kernel[ROUTES]
