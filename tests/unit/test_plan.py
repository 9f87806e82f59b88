"""plan.desired / plan.diff on hand-built observations: no kernel, no root."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import pytest

from uplinkd import plan
from uplinkd.config import Config, parse
from uplinkd.model import (
    ADDRESSES,
    AF_INET,
    AF_INET6,
    GROUPS,
    LINK_TUNING,
    LINKS_UP,
    NEXTHOPS,
    NFT,
    ROUTES,
    RULES,
    Addr,
    ConntrackFlush,
    Gateway,
    Health,
    HealthVerdict,
    KernelState,
    Lease,
    Link,
    LinkTuning,
    LinkUp,
    Member,
    Nexthop,
    NexthopGroup,
    NftState,
    NftUplink,
    Observed,
    Route,
    RouteKey,
    Rule,
    State,
    StaticAddr,
    UplinkStatus,
)
from uplinkd.plan import Facts, Op, Plan, diff, teardown

from examples import ISSUE_EXAMPLE

BASE = 100_000_000
V4_ANY, V6_ANY = "0.0.0.0/0", "::/0"
net = ipaddress.ip_network
ip = ipaddress.ip_address
iface = ipaddress.ip_interface


# --- builders ---------------------------------------------------------------------------------------


def link(index: int, name: str, *, up: bool = True, carrier: bool = True, **kw: Any) -> Link:
    return Link(index=index, name=name, up=up, carrier=carrier, **kw)


def addr(index: int, cidr: str) -> Addr:
    return Addr(index, iface(cidr))


def gw(index: int, gateway: str | None, family: int = AF_INET) -> Gateway:
    return Gateway(index, family, None if gateway is None else ip(gateway))


def observed(*links: Link, addrs: Iterable[Addr] = (), gws: Iterable[Gateway] = ()) -> Observed:
    return Observed(links={li.index: li for li in links}, addrs=tuple(addrs), gateways=tuple(gws))


def desired(config: Config, obs: Observed, **facts: Any) -> plan.Intent:
    """The planner on hand-built facts (the other `Facts` fields as keywords)."""
    return plan.desired(config, Facts(obs, **facts))


def nft_of(k: KernelState) -> NftState | None:
    tables = list(k[NFT].values())
    assert len(tables) <= 1
    return tables[0] if tables else None


def uplink(name: str, table: int, **fields: Any) -> dict[str, Any]:
    return {"match": {"name": name}, "table": table, **fields}


def config(uplinks: dict[str, dict[str, Any]], **sections: Any) -> Config:
    return parse({"uplinks": uplinks, **sections})


def verdicts(**health: Health | HealthVerdict) -> dict[str, HealthVerdict]:
    return {n: h if isinstance(h, HealthVerdict) else HealthVerdict(h) for n, h in health.items()}


def status(intent: plan.Intent, name: str) -> UplinkStatus:
    (found,) = [s for s in intent.uplinks if s.name == name]
    return found


def group_members(intent: plan.Intent, family: int = AF_INET) -> tuple[tuple[int, int], ...]:
    group = intent.kernel[GROUPS].get(BASE + (family == AF_INET6))
    return () if group is None else tuple((m.id, m.weight) for m in group.members)


def nh(table: int, family: int = AF_INET) -> int:
    return BASE + 2 * table + (family == AF_INET6)


# --- the issue's three-uplink router ------------------------------------------------------------------

ISSUE = parse(ISSUE_EXAMPLE)
ISSUE_OBS = observed(
    link(1, "lo"),
    link(2, "eth1", driver="e1000"),
    link(3, "usb0", driver="cdc_ether", usb_vendor="12d1", usb_product="14db"),
    link(4, "wwan0", driver="qmi_wwan", pointopoint=True),
    link(5, "lan0", driver="e1000"),
    # usb0 holds its lease's address: an uplink is ready once the kernel shows it
    addrs=[
        addr(2, "192.0.2.10/24"),
        addr(3, "100.64.0.10/24"),
        addr(5, "192.168.1.1/24"),
        addr(1, "127.0.0.1/8"),
    ],
    gws=[gw(2, "192.0.2.1")],
)
ISSUE_LEASES = {"lte1": Lease(iface("100.64.0.10/24"), ip("100.64.0.1"))}


def issue_intent(**kw: Any) -> plan.Intent:
    kw.setdefault("leases", ISSUE_LEASES)
    return desired(ISSUE, ISSUE_OBS, **kw)


def test_issue_rules_exactly() -> None:
    mask = 0xFF00
    expected = set()
    for family in (AF_INET, AF_INET6):
        expected |= {
            Rule(family, 10000, 254, suppress_prefixlength=0),
            Rule(family, 10010, 101, fwmark=0x6500, fwmask=mask),
            Rule(family, 10010, 102, fwmark=0x6600, fwmask=mask),
            Rule(family, 10010, 103, fwmark=0x6700, fwmask=mask),
            Rule(family, 10030, 200),
        }
    expected |= {
        Rule(AF_INET, 10020, 101, src=net("192.0.2.10/32")),
        Rule(AF_INET, 10020, 102, src=net("100.64.0.10/32")),
        Rule(AF_INET, 10020, 103, src=net("10.64.0.2/32")),
    }
    assert set(issue_intent().kernel[RULES]) == expected


def test_issue_routes_nexthops_and_group_exactly() -> None:
    k = issue_intent().kernel
    assert dict(k[ROUTES]) == {
        RouteKey(AF_INET, 101, V4_ANY): Route(RouteKey(AF_INET, 101, V4_ANY), oif=2, gateway=ip("192.0.2.1")),
        RouteKey(AF_INET, 102, V4_ANY): Route(
            RouteKey(AF_INET, 102, V4_ANY), oif=3, gateway=ip("100.64.0.1")
        ),
        RouteKey(AF_INET, 103, V4_ANY): Route(RouteKey(AF_INET, 103, V4_ANY), oif=4, gateway=None),
        RouteKey(AF_INET, 200, V4_ANY): Route(RouteKey(AF_INET, 200, V4_ANY), nhid=BASE),
        RouteKey(AF_INET6, 200, V6_ANY): Route(RouteKey(AF_INET6, 200, V6_ANY), type="unreachable"),
    }
    assert dict(k[NEXTHOPS]) == {
        100_000_202: Nexthop(100_000_202, AF_INET, 2, ip("192.0.2.1")),
        100_000_204: Nexthop(100_000_204, AF_INET, 3, ip("100.64.0.1")),
        100_000_206: Nexthop(100_000_206, AF_INET, 4, None),
    }
    assert dict(k[GROUPS]) == {
        BASE: NexthopGroup(
            BASE,
            (Member(100_000_202, 3), Member(100_000_204, 1), Member(100_000_206, 1)),
            buckets=512,
            idle_timer_cs=1000,
            unbalanced_timer_cs=0,
        )
    }
    assert set(k[ADDRESSES]) == {StaticAddr(4, iface("10.64.0.2/30")), StaticAddr(3, iface("100.64.0.10/24"))}
    assert set(k[LINKS_UP]) == {LinkUp(3), LinkUp(4)}  # the controller configures lte1 and lte2, not wan
    assert nft_of(k) == NftState(
        "uplinkd",
        0xFF00,
        (NftUplink("eth1", 0x6500), NftUplink("usb0", 0x6600), NftUplink("wwan0", 0x6700)),
    )


def test_issue_statuses() -> None:
    got = [
        (s.name, s.state, s.dev, s.ifindex, s.gateway4, s.weight, s.in_group, s.mark, s.table)
        for s in issue_intent().uplinks
    ]
    assert got == [
        ("wan", State.UP, "eth1", 2, ip("192.0.2.1"), 3, True, 0x6500, 101),
        ("lte1", State.UP, "usb0", 3, ip("100.64.0.1"), 1, True, 0x6600, 102),
        ("lte2", State.UP, "wwan0", 4, None, 1, True, 0x6700, 103),
    ]
    assert issue_intent().balance_reason == {AF_INET: "healthy uplinks", AF_INET6: "no usable uplink"}


def test_ids_follow_config() -> None:
    c = config({"a": uplink("eth1", 101)}, rules={"priority": 20000}, kernel={"nexthop_base": 5000})
    k = desired(
        c, observed(link(7, "eth1"), addrs=[addr(7, "192.0.2.2/24")], gws=[gw(7, "192.0.2.1")])
    ).kernel
    assert set(k[NEXTHOPS]) == {5000 + 202}
    assert set(k[GROUPS]) == {5000}
    assert {r.priority for r in k[RULES]} == {20000, 20010, 20020, 20030}
    assert plan.nexthop_id(c, 101, AF_INET6) == 5203
    assert plan.group_id(c, AF_INET6) == 5001
    assert plan.owns_nexthop(c, 5000)
    assert plan.owns_nexthop(c, 5000 + (1 << 25) - 1)
    assert not plan.owns_nexthop(c, 4999)
    assert not plan.owns_nexthop(c, 5000 + (1 << 25))


def test_largest_ids_stay_inside_the_reserved_range_and_32_bits() -> None:
    base = (1 << 32) - (1 << 25) - 1
    c = config({"a": uplink("eth1", (1 << 24) - 1, mark=1)}, kernel={"nexthop_base": base})
    top = plan.nexthop_id(c, (1 << 24) - 1, AF_INET6)
    assert top == base + (1 << 25) - 1 < 1 << 32
    assert plan.owns_nexthop(c, top)
    assert top not in {plan.group_id(c, AF_INET), plan.group_id(c, AF_INET6)}


# --- states and reasons ---------------------------------------------------------------------------------

EXT = {"a": uplink("eth1", 101)}
DHCP = {"a": uplink("eth1", 101, address={"mode": "dhcp"})}
STATIC = {"a": uplink("eth1", 101, address={"mode": "static", "cidr": "10.0.0.2/24", "gateway": "10.0.0.1"})}
LEASE = Lease(iface("100.64.0.10/24"), ip("100.64.0.1"))

STATES: list[tuple[str, dict[str, Any], Observed, dict[str, Lease], State, str]] = [
    ("no-link", EXT, observed(), {}, State.ABSENT, "no interface matches"),
    ("other-link-only", EXT, observed(link(2, "eth2")), {}, State.ABSENT, "no interface matches"),
    (
        "admin-down",
        EXT,
        observed(link(2, "eth1", up=False)),
        {},
        State.PRESENT,
        "interface is administratively down",
    ),
    (
        "admin-down-and-no-carrier",
        EXT,
        observed(link(2, "eth1", up=False, carrier=False)),
        {},
        State.PRESENT,
        "interface is administratively down",
    ),
    ("no-carrier", EXT, observed(link(2, "eth1", carrier=False)), {}, State.PRESENT, "no carrier"),
    (
        "no-carrier-with-address",
        EXT,
        observed(link(2, "eth1", carrier=False), addrs=[addr(2, "192.0.2.2/24")], gws=[gw(2, "192.0.2.1")]),
        {},
        State.PRESENT,
        "no carrier",
    ),
    ("no-address", EXT, observed(link(2, "eth1")), {}, State.PRESENT, "no address"),
    (
        "link-local-only",
        EXT,
        observed(link(2, "eth1"), addrs=[addr(2, "169.254.3.4/16"), addr(2, "fe80::2/64")]),
        {},
        State.PRESENT,
        "no address",
    ),
    ("dhcp-no-lease", DHCP, observed(link(2, "eth1")), {}, State.PRESENT, "waiting for a DHCP lease"),
    (
        "dhcp-lease-no-carrier",
        DHCP,
        observed(link(2, "eth1", carrier=False)),
        {"a": LEASE},
        State.PRESENT,
        "no carrier",
    ),
    (
        "address-no-gateway",
        EXT,
        observed(link(2, "eth1"), addrs=[addr(2, "192.0.2.2/24")]),
        {},
        State.ADDRESSED,
        "no default gateway learned",
    ),
    (
        "gateway-on-other-link",
        EXT,
        observed(link(2, "eth1"), link(3, "eth9"), addrs=[addr(2, "192.0.2.2/24")], gws=[gw(3, "192.0.2.1")]),
        {},
        State.ADDRESSED,
        "no default gateway learned",
    ),
    (
        "up",
        EXT,
        observed(link(2, "eth1"), addrs=[addr(2, "192.0.2.2/24")], gws=[gw(2, "192.0.2.1")]),
        {},
        State.UP,
        "no health checks configured",
    ),
    (
        "pointopoint-without-gateway",
        EXT,
        observed(link(2, "eth1", pointopoint=True), addrs=[addr(2, "10.1.1.1/32")]),
        {},
        State.UP,
        "no health checks configured",
    ),
    (
        "gateway-dev-only",
        EXT,
        observed(link(2, "eth1"), addrs=[addr(2, "10.1.1.1/32")], gws=[gw(2, None)]),
        {},
        State.UP,
        "no health checks configured",
    ),
    (
        "dhcp-lease-address-not-added-yet",
        DHCP,
        observed(link(2, "eth1")),
        {"a": LEASE},
        State.PRESENT,
        "adding the leased address 100.64.0.10/24",
    ),
    (
        "dhcp-lease",
        DHCP,
        observed(link(2, "eth1"), addrs=[addr(2, "100.64.0.10/24")]),
        {"a": LEASE},
        State.UP,
        "no health checks configured",
    ),
    ("static-no-carrier", STATIC, observed(link(2, "eth1", carrier=False)), {}, State.PRESENT, "no carrier"),
    ("static", STATIC, observed(link(2, "eth1")), {}, State.UP, "no health checks configured"),
]


@pytest.mark.parametrize(
    ("uplinks", "obs", "leases", "state", "reason"), [c[1:] for c in STATES], ids=[c[0] for c in STATES]
)
def test_state_and_reason(
    uplinks: dict[str, Any], obs: Observed, leases: dict[str, Lease], state: State, reason: str
) -> None:
    s = status(desired(config(uplinks), obs, leases=leases), "a")
    assert (s.state, s.reason) == (state, reason)
    assert s.ready == (state == State.UP)
    assert s.in_group == (state == State.UP)


def test_not_ready_uplink_gets_fwmark_rule_but_no_route_or_nexthop() -> None:
    k = desired(config(EXT), observed(link(2, "eth1", carrier=False))).kernel
    assert Rule(AF_INET, 10010, 101, fwmark=0x6500, fwmask=0xFF00) in k[RULES]
    assert not any(r.priority == 10020 for r in k[RULES])
    assert RouteKey(AF_INET, 101, V4_ANY) not in k[ROUTES]
    assert k[NEXTHOPS] == {} and k[GROUPS] == {}
    assert k[ROUTES][RouteKey(AF_INET, 200, V4_ANY)].type == "unreachable"
    assert nft_of(k) is not None and nft_of(k).uplinks == (NftUplink("eth1", 0x6500),)


def test_absent_uplink_has_no_rules_of_its_own() -> None:
    k = desired(config(EXT), observed()).kernel
    assert {r.priority for r in k[RULES]} == {10000, 10030}
    assert nft_of(k) is not None and nft_of(k).uplinks == ()


# --- matching ----------------------------------------------------------------------------------------------

USB_LINK = {"usb_vendor": "12d1", "usb_product": "14db", "usb_serial": "ABC"}
PATH = "pci-0000:00:14.0-usb-0:2:1.0"

MATCHES: list[tuple[str, dict[str, Any], Link, bool]] = [
    ("name-exact", {"name": "eth1"}, link(2, "eth1"), True),
    ("name-exact-other", {"name": "eth1"}, link(2, "eth10"), False),
    ("name-glob", {"name": "wwan*"}, link(2, "wwan0"), True),
    ("name-glob-miss", {"name": "wwan*"}, link(2, "eth0"), False),
    ("name-glob-class", {"name": "eth[12]"}, link(2, "eth2"), True),
    ("driver-any-of", {"driver": ["qmi_wwan", "cdc_mbim"]}, link(2, "x", driver="cdc_mbim"), True),
    ("driver-miss", {"driver": ["qmi_wwan"]}, link(2, "x", driver="cdc_ether"), False),
    ("driver-unknown", {"driver": ["qmi_wwan"]}, link(2, "x"), False),
    ("name-and-driver", {"name": "wwan*", "driver": "qmi_wwan"}, link(2, "wwan0", driver="qmi_wwan"), True),
    ("name-but-not-driver", {"name": "wwan*", "driver": "qmi_wwan"}, link(2, "wwan0", driver="x"), False),
    ("usb-vendor", {"usb": {"vendor": "12d1"}}, link(2, "x", **USB_LINK), True),
    ("usb-vendor-product", {"usb": {"vendor": "12d1", "product": "14db"}}, link(2, "x", **USB_LINK), True),
    ("usb-product-miss", {"usb": {"vendor": "12d1", "product": "1506"}}, link(2, "x", **USB_LINK), False),
    ("usb-serial", {"usb": {"serial": "ABC"}}, link(2, "x", **USB_LINK), True),
    ("usb-serial-miss", {"usb": {"vendor": "12d1", "serial": "XYZ"}}, link(2, "x", **USB_LINK), False),
    ("usb-not-usb", {"usb": {"vendor": "12d1"}}, link(2, "x"), False),
    ("path-glob", {"path": "pci-0000:00:14.0-usb-0:2*"}, link(2, "x", id_path=PATH), True),
    ("path-exact", {"path": PATH}, link(2, "x", id_path=PATH), True),
    ("path-miss", {"path": "pci-0000:00:14.0-usb-0:3*"}, link(2, "x", id_path=PATH), False),
    ("path-unknown", {"path": "pci-*"}, link(2, "x"), False),
]


@pytest.mark.parametrize(("match", "lnk", "matched"), [c[1:] for c in MATCHES], ids=[c[0] for c in MATCHES])
def test_matching(match: dict[str, Any], lnk: Link, matched: bool) -> None:
    c = parse({"uplinks": {"a": {"match": match, "table": 101}}})
    assert plan.link_matches(c.uplinks["a"], lnk) is matched
    s = status(desired(c, observed(lnk)), "a")
    assert (s.ifindex, s.state) == ((2, State.PRESENT) if matched else (None, State.ABSENT))


def test_first_uplink_in_config_order_wins_a_contested_link() -> None:
    c = config({"b": {"match": {"driver": "cdc_ether"}, "table": 102}, "a": uplink("usb0", 101)})
    intent = desired(c, observed(link(3, "usb0", driver="cdc_ether")))
    assert status(intent, "b").ifindex == 3
    assert (status(intent, "a").state, status(intent, "a").ifindex) == (State.ABSENT, None)


def test_lowest_ifindex_wins_and_the_next_uplink_takes_the_next_link() -> None:
    c = config({"a": uplink("wwan*", 101), "b": uplink("wwan*", 102), "c": uplink("wwan*", 103)})
    intent = desired(c, observed(link(9, "wwan0"), link(4, "wwan2"), link(6, "wwan1")))
    assert [(s.name, s.ifindex, s.dev) for s in intent.uplinks] == [
        ("a", 4, "wwan2"),
        ("b", 6, "wwan1"),
        ("c", 9, "wwan0"),
    ]


def test_a_glob_matching_two_interfaces_says_which_it_left_out() -> None:
    c = config({"a": uplink("wwan*", 101)})
    intent = desired(c, observed(link(6, "wwan1"), link(4, "wwan2")))
    assert (status(intent, "a").dev, status(intent, "a").also_matches) == ("wwan2", ("wwan1",))


def test_links_taken_by_other_uplinks_make_no_match_ambiguous() -> None:
    c = config({"a": uplink("wwan*", 101), "b": uplink("wwan1", 102)})
    intent = desired(c, observed(link(6, "wwan1"), link(4, "wwan2")))
    got = [(s.name, s.dev, s.also_matches) for s in intent.uplinks]
    assert got == [("a", "wwan2", ()), ("b", "wwan1", ())]


def test_an_interface_name_nft_cannot_quote_is_never_assigned() -> None:
    c = config({"a": uplink("lte*", 101)})
    intent = desired(c, observed(link(4, 'lte"9')))
    s = status(intent, "a")
    assert (s.state, s.dev) == (State.ABSENT, None)
    assert s.reason.startswith("interface 'lte\"9' matches but cannot be used: ") and "rename it" in s.reason
    assert not any('lte"9' in str(obj) for obj in nft_of(intent.kernel).uplinks)  # type: ignore[union-attr]
    # a usable sibling is taken instead
    intent = desired(c, observed(link(4, 'lte"9'), link(5, "lte2")))
    assert status(intent, "a").dev == "lte2"


def test_link_matching_nothing_is_ignored() -> None:
    c = config(EXT)
    base = observed(link(2, "eth1"), addrs=[addr(2, "192.0.2.2/24")], gws=[gw(2, "192.0.2.1")])
    extra = observed(
        link(2, "eth1"),
        link(3, "lan0"),
        addrs=[addr(2, "192.0.2.2/24"), addr(3, "192.168.1.1/24")],
        gws=[gw(2, "192.0.2.1"), gw(3, "192.168.1.254")],
    )
    assert desired(c, extra) == desired(c, base)


# --- health ----------------------------------------------------------------------------------------------

THREE = config(
    {"a": uplink("eth1", 101, weight=3), "b": uplink("eth2", 102), "c": uplink("eth3", 103, weight=2)}
)
THREE_OBS = observed(
    link(2, "eth1"),
    link(3, "eth2"),
    link(4, "eth3"),
    addrs=[addr(2, "192.0.2.2/24"), addr(3, "198.51.100.2/24"), addr(4, "203.0.113.2/24")],
    gws=[gw(2, "192.0.2.1"), gw(3, "198.51.100.1"), gw(4, "203.0.113.1")],
)
A, B, C = nh(101), nh(102), nh(103)
UP, DOWN, UNKNOWN = Health.UP, Health.DOWN, Health.UNKNOWN


def degraded(factor: float) -> HealthVerdict:
    return HealthVerdict(Health.DEGRADED, "loss 30%", weight_factor=factor)


HEALTH: list[tuple[str, dict[str, HealthVerdict], frozenset[str], tuple[tuple[int, int], ...], str]] = [
    ("all-up", verdicts(a=UP, b=UP, c=UP), frozenset(), ((A, 3), (B, 1), (C, 2)), "healthy uplinks"),
    ("no-verdicts-means-up", {}, frozenset(), ((A, 3), (B, 1), (C, 2)), "healthy uplinks"),
    ("b-down", verdicts(a=UP, b=DOWN, c=UP), frozenset(), ((A, 3), (C, 2)), "healthy uplinks"),
    (
        "a-degraded-half",
        verdicts(a=degraded(0.5), b=UP, c=UP),
        frozenset(),
        ((A, 2), (B, 1), (C, 2)),
        "healthy uplinks",
    ),
    (
        "b-degraded-floor-1",
        verdicts(a=UP, b=degraded(0.1), c=UP),
        frozenset(),
        ((A, 3), (B, 1), (C, 2)),
        "healthy uplinks",
    ),
    ("c-unknown", verdicts(a=UP, b=UP, c=UNKNOWN), frozenset(), ((A, 3), (B, 1)), "healthy uplinks"),
    ("only-degraded", verdicts(a=DOWN, b=DOWN, c=degraded(0.5)), frozenset(), ((C, 1),), "healthy uplinks"),
    (
        "all-down-last-resort",
        verdicts(a=DOWN, b=DOWN, c=DOWN),
        frozenset(),
        ((A, 3), (B, 1), (C, 2)),
        "last resort: no uplink is healthy, using every uplink with carrier",
    ),
    (
        "all-unknown-last-resort",
        verdicts(a=UNKNOWN, b=UNKNOWN, c=UNKNOWN),
        frozenset(),
        ((A, 3), (B, 1), (C, 2)),
        "last resort: no uplink is healthy, using every uplink with carrier",
    ),
    (
        "all-down-last-resort-skips-drained",
        verdicts(a=DOWN, b=DOWN, c=DOWN),
        frozenset({"a"}),
        ((B, 1), (C, 2)),
        "last resort: no uplink is healthy, using every uplink with carrier",
    ),
    ("b-drained", verdicts(a=UP, b=UP, c=UP), frozenset({"b"}), ((A, 3), (C, 2)), "healthy uplinks"),
    ("all-drained", verdicts(a=UP, b=UP, c=UP), frozenset({"a", "b", "c"}), (), "no usable uplink"),
]


@pytest.mark.parametrize(
    ("health", "drained", "members", "reason"), [c[1:] for c in HEALTH], ids=[c[0] for c in HEALTH]
)
def test_balance_group(
    health: dict[str, HealthVerdict],
    drained: frozenset[str],
    members: tuple[tuple[int, int], ...],
    reason: str,
) -> None:
    intent = desired(THREE, THREE_OBS, health=health, drained=drained)
    assert group_members(intent) == members
    assert intent.balance_reason[AF_INET] == reason
    in_group = {s.name: s.weight for s in intent.uplinks if s.in_group}
    name_of = {A: "a", B: "b", C: "c"}
    assert in_group == {name_of[m]: w for m, w in members}
    # Every ready uplink keeps its table, nexthop and rules whatever its health.
    k = intent.kernel
    assert set(k[NEXTHOPS]) == {A, B, C}
    assert {t for t in (101, 102, 103) if RouteKey(AF_INET, t, V4_ANY) in k[ROUTES]} == {101, 102, 103}
    assert sum(1 for r in k[RULES] if r.priority == 10020) == 3


@pytest.mark.parametrize(
    ("health", "state", "reason"),
    [
        (HealthVerdict(Health.UP, "3/3 targets"), State.UP, "3/3 targets"),
        (HealthVerdict(Health.DOWN, "0/3 targets"), State.DOWN, "0/3 targets"),
        (HealthVerdict(Health.DEGRADED, "rtt 800 ms", 0.5), State.DEGRADED, "rtt 800 ms"),
        (HealthVerdict(Health.UNKNOWN, "probing"), State.PROBING, "probing"),
    ],
    ids=["up", "down", "degraded", "unknown"],
)
def test_health_sets_state_and_reason(health: HealthVerdict, state: State, reason: str) -> None:
    s = status(desired(THREE, THREE_OBS, health={"b": health}), "b")
    assert (s.state, s.reason) == (state, reason)
    assert s.ready


def test_health_of_a_not_ready_uplink_is_ignored() -> None:
    obs = replace(THREE_OBS, links={**THREE_OBS.links, 3: link(3, "eth2", carrier=False)})
    s = status(desired(THREE, obs, health=verdicts(b=UP)), "b")
    assert (s.state, s.reason, s.in_group) == (State.PRESENT, "no carrier", False)


def test_last_resort_unreachable() -> None:
    c = config(
        {"a": uplink("eth1", 101, weight=3), "b": uplink("eth2", 102), "c": uplink("eth3", 103, weight=2)},
        balance={"last_resort": "unreachable"},
    )
    intent = desired(c, THREE_OBS, health=verdicts(a=DOWN, b=DOWN, c=UNKNOWN))
    k = intent.kernel
    assert k[GROUPS] == {}
    assert k[ROUTES][RouteKey(AF_INET, 200, V4_ANY)] == Route(
        RouteKey(AF_INET, 200, V4_ANY), type="unreachable"
    )
    assert intent.balance_reason[AF_INET] == "no usable uplink"
    assert set(k[NEXTHOPS]) == {A, B, C}  # T_u stays usable for pinned flows and probes
    assert not any(s.in_group for s in intent.uplinks)
    # ... and a healthy uplink still balances normally.
    assert group_members(desired(c, THREE_OBS, health=verdicts(a=DOWN, b=UP, c=DOWN))) == ((B, 1),)


def test_no_ready_uplink_is_unreachable_even_with_last_resort_carrier() -> None:
    obs = observed(link(2, "eth1"), link(3, "eth2", carrier=False))
    k = desired(THREE, obs).kernel
    assert k[GROUPS] == {}
    assert k[ROUTES][RouteKey(AF_INET, 200, V4_ANY)].type == "unreachable"
    assert k[ROUTES][RouteKey(AF_INET6, 200, V6_ANY)].type == "unreachable"


def test_drained_uplink_keeps_table_rules_and_nexthop() -> None:
    full = desired(THREE, THREE_OBS).kernel
    drained = desired(THREE, THREE_OBS, drained=frozenset({"b"}))
    assert set(drained.kernel[RULES]) == set(full[RULES])
    assert drained.kernel[ROUTES] == full[ROUTES]
    assert drained.kernel[NEXTHOPS] == full[NEXTHOPS]
    assert nft_of(drained.kernel) == nft_of(full)
    b = status(drained, "b")
    assert (b.state, b.drained, b.in_group, b.weight) == (State.UP, True, False, 0)


def test_draining_one_of_three_is_exactly_one_group_replace() -> None:
    before = desired(THREE, THREE_OBS).kernel
    after = desired(THREE, THREE_OBS, drained=frozenset({"b"})).kernel
    p = diff(before, after)
    assert p.ops == (Op("replace", after[GROUPS][BASE]),)
    assert str(p) == (
        "ip nexthop replace id 100000000 group 100000202,3/100000206,2 "
        "type resilient buckets 512 idle_timer 10 unbalanced_timer 0"
    )
    assert diff(after, before).ops == (Op("replace", before[GROUPS][BASE]),)


# --- addresses ---------------------------------------------------------------------------------------------


def test_static_addresses_are_owned() -> None:
    c = config(
        {
            "a": uplink(
                "wwan0",
                103,
                address={
                    "mode": "static",
                    "cidr": "10.64.0.2/30",
                    "gateway": None,
                    "cidr6": "2001:db8:64::2/64",
                    "gateway6": "2001:db8:64::1",
                },
            )
        }
    )
    intent = desired(c, observed(link(4, "wwan0")))
    k = intent.kernel
    assert set(k[ADDRESSES]) == {
        StaticAddr(4, iface("10.64.0.2/30")),
        StaticAddr(4, iface("2001:db8:64::2/64")),
    }
    assert k[ROUTES][RouteKey(AF_INET, 103, V4_ANY)] == Route(RouteKey(AF_INET, 103, V4_ANY), oif=4)
    assert k[ROUTES][RouteKey(AF_INET6, 103, V6_ANY)] == Route(
        RouteKey(AF_INET6, 103, V6_ANY), oif=4, gateway=ip("2001:db8:64::1")
    )
    assert Rule(AF_INET6, 10020, 103, src=net("2001:db8:64::2/128")) in k[RULES]
    a = status(intent, "a")
    assert (a.gateway4, a.gateway6, a.addresses) == (
        None,
        ip("2001:db8:64::1"),
        (iface("10.64.0.2/30"), iface("2001:db8:64::2/64")),
    )


def test_dhcp_lease_gives_address_and_gateway() -> None:
    intent = desired(
        config(DHCP), observed(link(2, "eth1"), addrs=[addr(2, "100.64.0.10/24")]), leases={"a": LEASE}
    )
    k = intent.kernel
    assert set(k[ADDRESSES]) == {StaticAddr(2, iface("100.64.0.10/24"))}
    assert k[ROUTES][RouteKey(AF_INET, 101, V4_ANY)] == Route(
        RouteKey(AF_INET, 101, V4_ANY), oif=2, gateway=ip("100.64.0.1")
    )
    assert k[NEXTHOPS][nh(101)] == Nexthop(nh(101), AF_INET, 2, ip("100.64.0.1"))
    assert Rule(AF_INET, 10020, 101, src=net("100.64.0.10/32")) in k[RULES]
    assert status(intent, "a").gateway4 == ip("100.64.0.1")


def test_dhcp_ignores_gateways_learned_from_others_on_ipv4() -> None:
    obs = observed(link(2, "eth1"), addrs=[addr(2, "100.64.0.10/24")], gws=[gw(2, "100.64.0.1")])
    intent = desired(config(DHCP), obs)
    a = status(intent, "a")
    assert (a.state, a.reason) == (State.PRESENT, "waiting for a DHCP lease")
    assert RouteKey(AF_INET, 101, V4_ANY) not in intent.kernel[ROUTES]
    assert set(intent.kernel[ADDRESSES]) == frozenset()


def test_external_addresses_are_not_owned() -> None:
    assert set(desired(THREE, THREE_OBS).kernel[ADDRESSES]) == frozenset()


# --- IPv6 ------------------------------------------------------------------------------------------------

V6_OBS = observed(
    link(2, "eth1"),
    link(3, "eth2"),
    addrs=[
        addr(2, "192.0.2.2/24"),
        addr(2, "2001:db8:1::10/64"),
        addr(2, "fe80::10/64"),
        addr(3, "198.51.100.2/24"),
        addr(3, "fe80::20/64"),
    ],
    gws=[gw(2, "192.0.2.1"), gw(2, "fe80::1", AF_INET6), gw(3, "198.51.100.1"), gw(3, "fe80::1", AF_INET6)],
)


def test_ipv6_uplink_gets_v6_route_nexthop_rule_and_group() -> None:
    c = config({"a": uplink("eth1", 101, weight=2), "b": uplink("eth2", 102)})
    intent = desired(c, V6_OBS)
    k = intent.kernel
    assert k[ROUTES][RouteKey(AF_INET6, 101, V6_ANY)] == Route(
        RouteKey(AF_INET6, 101, V6_ANY), oif=2, gateway=ip("fe80::1")
    )
    assert k[NEXTHOPS][nh(101, AF_INET6)] == Nexthop(nh(101, AF_INET6), AF_INET6, 2, ip("fe80::1"))
    assert nh(101, AF_INET6) == 100_000_203
    # eth2 has only a link-local IPv6 address: no v6 way out.
    assert RouteKey(AF_INET6, 102, V6_ANY) not in k[ROUTES]
    assert nh(102, AF_INET6) not in k[NEXTHOPS]
    assert group_members(intent, AF_INET6) == ((nh(101, AF_INET6), 2),)
    assert group_members(intent, AF_INET) == ((nh(101), 2), (nh(102), 1))
    assert k[ROUTES][RouteKey(AF_INET6, 200, V6_ANY)] == Route(RouteKey(AF_INET6, 200, V6_ANY), nhid=BASE + 1)
    assert {r.src for r in k[RULES] if r.family == AF_INET6 and r.priority == 10020} == {
        net("2001:db8:1::10/128")
    }
    assert status(intent, "a").gateway6 == ip("fe80::1")
    assert status(intent, "a").addresses == (iface("192.0.2.2/24"), iface("2001:db8:1::10/64"))
    assert intent.balance_reason[AF_INET6] == "healthy uplinks"


def test_ipv6_only_uplink_is_ready_and_only_in_the_v6_group() -> None:
    obs = observed(link(2, "eth1"), addrs=[addr(2, "2001:db8:1::10/64")], gws=[gw(2, "fe80::1", AF_INET6)])
    intent = desired(config(EXT), obs)
    assert status(intent, "a").state == State.UP
    assert group_members(intent, AF_INET6) == ((nh(101, AF_INET6), 1),)
    assert group_members(intent, AF_INET) == ()
    assert intent.kernel[ROUTES][RouteKey(AF_INET, 200, V4_ANY)].type == "unreachable"


def test_dhcp_uplink_takes_ipv6_from_ra() -> None:
    obs = observed(
        link(2, "eth1"),
        addrs=[addr(2, "100.64.0.10/24"), addr(2, "2001:db8:1::10/64")],
        gws=[gw(2, "fe80::1", AF_INET6)],
    )
    intent = desired(config(DHCP), obs, leases={"a": LEASE})
    assert group_members(intent, AF_INET) == ((nh(101), 1),)
    assert group_members(intent, AF_INET6) == ((nh(101, AF_INET6), 1),)


# --- diff -------------------------------------------------------------------------------------------------

# LinkTuning: the dhcp uplinks' RA settings (accept_ra 2, no default route from RAs)
KIND_ORDER_CREATE = [LinkUp, LinkTuning, StaticAddr, NftState, Nexthop, NexthopGroup, Route, Rule]
KIND_ORDER_DELETE = [Rule, Route, NexthopGroup, Nexthop, StaticAddr, NftState]


def kinds(p: Plan) -> list[type]:
    out: list[type] = []
    for op in p.ops:
        if not out or out[-1] is not type(op.obj):
            out.append(type(op.obj))
    return out


@pytest.mark.parametrize(
    "state",
    [
        KernelState(),
        issue_intent().kernel,
        desired(THREE, THREE_OBS).kernel,
        desired(THREE, observed()).kernel,
    ],
    ids=["empty", "issue", "three", "all-absent"],
)
def test_diff_of_equal_states_is_empty(state: KernelState) -> None:
    p = diff(state, state)
    assert not p and len(p) == 0 and str(p) == ""


def test_diff_is_empty_for_equal_but_separately_built_states() -> None:
    assert not diff(issue_intent().kernel, issue_intent().kernel)


def test_create_from_empty_in_dependency_order() -> None:
    k = issue_intent().kernel
    p = diff(KernelState(), k)
    assert kinds(p) == KIND_ORDER_CREATE
    assert {op.verb for op in p.ops if isinstance(op.obj, Rule | StaticAddr | Route)} == {"add"}
    assert {op.verb for op in p.ops if not isinstance(op.obj, Rule | StaticAddr | Route)} == {"replace"}
    assert len(p) == (
        len(set(k[LINKS_UP]))
        + len(k[LINK_TUNING])
        + len(set(k[ADDRESSES]))
        + len(k[NEXTHOPS])
        + len(k[GROUPS])
        + len(k[ROUTES])
        + len(set(k[RULES]))
        + 1
    )


def test_teardown_deletes_everything_in_reverse_order() -> None:
    k = issue_intent().kernel
    p = teardown(k)
    assert set(k[LINKS_UP])  # links are only ever raised, never lowered: teardown leaves them up
    assert kinds(p) == KIND_ORDER_DELETE
    assert {op.verb for op in p.ops} == {"delete"}
    assert (
        len(p)
        == len(set(k[ADDRESSES]))
        + len(k[NEXTHOPS])
        + len(k[GROUPS])
        + len(k[ROUTES])
        + len(set(k[RULES]))
        + 1
    )
    assert diff(k, KernelState()) == p


def test_plan_strings_are_ip_syntax() -> None:
    lines = str(diff(KernelState(), issue_intent().kernel)).splitlines()
    for line in [
        "ip address add 10.64.0.2/30 dev wwan0",
        "ip address add 100.64.0.10/24 dev usb0",
        "ip -4 nexthop replace id 100000202 via 192.0.2.1 dev eth1",
        "ip -4 nexthop replace id 100000206 dev wwan0",
        "ip nexthop replace id 100000000 group 100000202,3/100000204/100000206 "
        "type resilient buckets 512 idle_timer 10 unbalanced_timer 0",
        "ip -4 route add default via 192.0.2.1 dev eth1 table 101",
        "ip -4 route add default dev wwan0 table 103",
        "ip -4 route add default nhid 100000000 table 200",
        "ip -6 route add unreachable default table 200",
        "ip -4 rule add priority 10000 lookup main suppress_prefixlength 0",
        "ip -4 rule add priority 10010 fwmark 0x6500/0xff00 lookup 101",
        "ip -6 rule add priority 10010 fwmark 0x6700/0xff00 lookup 103",
        "ip -4 rule add priority 10020 from 100.64.0.10/32 lookup 102",
        "ip -4 rule add priority 10030 lookup 200",
        "nft -f - # replace table inet uplinkd (eth1=0x6500, usb0=0x6600, wwan0=0x6700)",
    ]:
        assert line in lines
    assert lines[:5] == [
        "ip link set dev usb0 up",
        "ip link set dev wwan0 up",
        # usb0 is a dhcp uplink: its IPv6 comes by RA, its router into T_u only (narrowed first)
        "sysctl -w net.ipv6.conf.usb0.accept_ra_defrtr=0; sysctl -w net.ipv6.conf.usb0.accept_ra=2",
        "ip address add 10.64.0.2/30 dev wwan0",
        "ip address add 100.64.0.10/24 dev usb0",
    ]
    # a new uplink joins masquerade before any route leads out of it
    nft_at = lines.index("nft -f - # replace table inet uplinkd (eth1=0x6500, usb0=0x6600, wwan0=0x6700)")
    assert nft_at < min(i for i, line in enumerate(lines) if " route " in line or " nexthop " in line)
    down = str(teardown(issue_intent().kernel)).splitlines()
    assert "ip -4 rule del priority 10010 fwmark 0x6500/0xff00 lookup 101" in down
    assert "ip -4 route del default nhid 100000000 table 200" in down
    assert "ip -4 nexthop del id 100000206 dev wwan0" in down
    assert "ip address del 10.64.0.2/30 dev wwan0" in down
    assert down[-1] == "nft -f - # delete table inet uplinkd (eth1=0x6500, usb0=0x6600, wwan0=0x6700)"


def test_bucket_change_recreates_group_and_rewrites_its_route() -> None:
    uplinks = {
        "a": uplink("eth1", 101, weight=3),
        "b": uplink("eth2", 102),
        "c": uplink("eth3", 103, weight=2),
    }
    before = desired(THREE, THREE_OBS).kernel
    after = desired(config(uplinks, balance={"buckets": 256}), THREE_OBS).kernel
    p = diff(before, after)
    bkey = RouteKey(AF_INET, 200, V4_ANY)
    assert p.ops == (
        Op("delete", before[GROUPS][BASE]),
        Op("replace", after[GROUPS][BASE]),
        Op("replace", after[ROUTES][bkey]),
    )
    assert after[ROUTES][bkey] == before[ROUTES][bkey]  # unchanged, but the kernel dropped it


def test_timer_change_is_a_group_replace_in_place() -> None:
    uplinks = {
        "a": uplink("eth1", 101, weight=3),
        "b": uplink("eth2", 102),
        "c": uplink("eth3", 103, weight=2),
    }
    after = desired(config(uplinks, balance={"idle_timer": 2.5}), THREE_OBS).kernel
    p = diff(desired(THREE, THREE_OBS).kernel, after)
    assert p.ops == (Op("replace", after[GROUPS][BASE]),)
    assert str(p).endswith("idle_timer 2.5 unbalanced_timer 0")


def test_weight_change_is_a_single_group_replace() -> None:
    uplinks = {
        "a": uplink("eth1", 101, weight=5),
        "b": uplink("eth2", 102),
        "c": uplink("eth3", 103, weight=2),
    }
    after = desired(config(uplinks), THREE_OBS).kernel
    p = diff(desired(THREE, THREE_OBS).kernel, after)
    assert p.ops == (Op("replace", after[GROUPS][BASE]),)
    assert after[GROUPS][BASE].members[0] == Member(A, 5)


def test_health_change_is_a_single_group_replace() -> None:
    before = desired(THREE, THREE_OBS).kernel
    after = desired(THREE, THREE_OBS, health=verdicts(a=UP, b=DOWN, c=UP)).kernel
    assert diff(before, after).ops == (Op("replace", after[GROUPS][BASE]),)


def test_unplug_removes_group_member_before_its_nexthop() -> None:
    before = desired(THREE, THREE_OBS).kernel
    gone = replace(THREE_OBS, links={i: li for i, li in THREE_OBS.links.items() if li.name != "eth2"})
    after = desired(THREE, gone).kernel
    p = diff(before, after)
    strs = [str(op) for op in p.ops]
    assert strs == [
        "ip nexthop replace id 100000000 group 100000202,3/100000206,2 "
        "type resilient buckets 512 idle_timer 10 unbalanced_timer 0",
        "ip -4 rule del priority 10010 fwmark 0x6600/0xff00 lookup 102",
        "ip -4 rule del priority 10020 from 198.51.100.2/32 lookup 102",
        "ip -6 rule del priority 10010 fwmark 0x6600/0xff00 lookup 102",
        "ip -4 route del default via 198.51.100.1 dev eth2 table 102",
        "ip -4 nexthop del id 100000204 via 198.51.100.1 dev eth2",
        # the interface leaves masquerade only once nothing routes to it
        "nft -f - # replace table inet uplinkd (eth1=0x6500, eth3=0x6700)",
    ]


def test_last_uplink_gone_replaces_route_before_deleting_group() -> None:
    c = config(EXT)
    before = desired(c, observed(link(2, "eth1"), addrs=[addr(2, "192.0.2.2/24")], gws=[gw(2, "192.0.2.1")]))
    after = desired(c, observed(link(2, "eth1", carrier=False)))
    verbs = [(op.verb, type(op.obj).__name__) for op in diff(before.kernel, after.kernel).ops]
    assert verbs == [
        ("replace", "Route"),  # T_balance: unreachable default
        ("delete", "Rule"),  # from-address rule
        ("delete", "Route"),  # T_u default
        ("delete", "NexthopGroup"),
        ("delete", "Nexthop"),
    ]


def test_diff_heals_what_the_kernel_dropped() -> None:
    """After an unplug the kernel deletes routes, nexthops and the group on its own: re-create."""
    wanted = desired(THREE, THREE_OBS).kernel
    actual = wanted.replaced(GROUPS, []).replaced(
        NEXTHOPS, [v for k, v in wanted[NEXTHOPS].items() if k != B]
    )
    actual = actual.replaced(ROUTES, [v for k, v in wanted[ROUTES].items() if k.table != 200])
    p = diff(actual, wanted)
    assert p.ops == (
        Op("replace", wanted[NEXTHOPS][B]),
        Op("replace", wanted[GROUPS][BASE]),
        Op("add", wanted[ROUTES][RouteKey(AF_INET, 200, V4_ANY)]),  # exclusively: never a foreign route
        Op("add", wanted[ROUTES][RouteKey(AF_INET6, 200, V6_ANY)]),
    )


def test_diff_replaces_nft_only_when_its_digest_changes() -> None:
    k = desired(THREE, THREE_OBS).kernel
    table = nft_of(k)
    assert table is not None
    assert not diff(k.replaced(NFT, [replace(table)]), k)
    other = k.replaced(NFT, [replace(table, mask=0xFF0000)])
    assert diff(other, k).ops == (Op("replace", table),)
    assert diff(k.replaced(NFT, []), k).ops == (Op("replace", table),)


def test_plan_truthiness_and_length() -> None:
    p = Plan((Op("add", Rule(AF_INET, 1, 200)),))
    assert p and len(p) == 1
    assert str(p) == "ip -4 rule add priority 1 lookup 200"
    assert not Plan()


# --- failover --------------------------------------------------------------------------------------------


def test_failover_flushes_only_the_failed_uplinks_marks() -> None:
    before = desired(THREE, THREE_OBS).uplinks
    after = desired(THREE, THREE_OBS, health=verdicts(a=UP, b=DOWN, c=UP)).uplinks
    ops = plan.failover(before, after, mask=0xFF00)
    assert ops == (Op("delete", ConntrackFlush("b", 0x6600, 0xFF00, "up → down: ")),)
    assert str(ops[0]) == "conntrack -D --mark 0x6600/0xff00  # b: up → down: "


@pytest.mark.parametrize(
    ("after_kw", "flushed"),
    [
        ({"drained": frozenset({"b"})}, []),
        ({"health": verdicts(a=UP, b=degraded(0.5), c=UP)}, []),
        ({"health": verdicts(a=UP, b=UNKNOWN, c=UP)}, []),
        ({}, []),
    ],
    ids=["drain", "degraded", "unknown", "unchanged"],
)
def test_failover_leaves_working_uplinks_alone(after_kw: dict[str, Any], flushed: list[str]) -> None:
    before = desired(THREE, THREE_OBS).uplinks
    after = desired(THREE, THREE_OBS, **after_kw).uplinks
    assert [op.obj.uplink for op in plan.failover(before, after, mask=0xFF00)] == flushed  # type: ignore[union-attr]


def test_failover_on_unplug() -> None:
    before = desired(THREE, THREE_OBS).uplinks
    gone = replace(THREE_OBS, links={i: li for i, li in THREE_OBS.links.items() if li.name != "eth3"})
    ops = plan.failover(before, desired(THREE, gone).uplinks, mask=0xFF00)
    assert [str(op) for op in ops] == [
        "conntrack -D --mark 0x6700/0xff00  # c: up → absent: no interface matches"
    ]


# --- links the controller configures are raised ------------------------------------------------------------


@pytest.mark.parametrize(
    ("uplinks", "lnk", "leases", "up"),
    [
        (STATIC, link(2, "eth1", up=False, carrier=False), {}, {LinkUp(2)}),
        (DHCP, link(2, "eth1", up=False), {}, {LinkUp(2)}),
        (DHCP, link(2, "eth1"), {"a": LEASE}, {LinkUp(2)}),
        (EXT, link(2, "eth1", up=False), {}, set()),
        (STATIC, link(2, "eth9", up=False), {}, set()),
    ],
    ids=["static-down", "dhcp-down", "dhcp-up", "external-left-alone", "absent"],
)
def test_links_up(uplinks: dict[str, Any], lnk: Link, leases: dict[str, Lease], up: set[LinkUp]) -> None:
    k = desired(config(uplinks), observed(lnk), leases=leases).kernel
    assert set(k[LINKS_UP]) == up
    ops = [op for op in diff(KernelState(), k).ops if isinstance(op.obj, LinkUp)]
    assert [str(op) for op in ops] == [f"ip link set dev {lnk.name} up" for _ in up]
    assert not [op for op in teardown(k).ops if isinstance(op.obj, LinkUp)]


@pytest.mark.parametrize(
    ("have", "want", "early", "late"),
    [
        pytest.param(None, {"a": 1}, {"a": 1}, None, id="first-load"),
        pytest.param({"a": 1}, {"a": 1}, None, None, id="unchanged"),
        pytest.param({"a": 1}, {"a": 1, "b": 2}, {"a": 1, "b": 2}, None, id="join-early"),
        pytest.param({"a": 1, "b": 2}, {"a": 1}, None, {"a": 1}, id="leave-late"),
        pytest.param({"a": 1}, {"b": 2}, {"a": 1, "b": 2}, {"b": 2}, id="swap-both"),
        pytest.param({"a": 1}, {"a": 3}, {"a": 3}, None, id="new-mark"),
    ],
)
def test_nft_uplinks_join_before_routes_and_leave_after(
    have: dict[str, int] | None,
    want: dict[str, int],
    early: dict[str, int] | None,
    late: dict[str, int] | None,
) -> None:
    def state(d: dict[str, int] | None) -> NftState | None:
        if d is None:
            return None
        return NftState("uplinkd", 0xFF00, tuple(NftUplink(k, v << 8) for k, v in sorted(d.items())))

    ops = diff(KernelState(s for s in [state(have)] if s), KernelState(s for s in [state(want)] if s)).ops
    loads = [op.obj for op in ops if isinstance(op.obj, NftState)]
    assert loads == [s for s in (state(early), state(late)) if s is not None]


@pytest.mark.parametrize(
    ("pointopoint", "state", "route"),
    [
        pytest.param(False, State.ADDRESSED, None, id="ethernet-needs-a-router"),
        pytest.param(True, State.UP, "dev", id="point-to-point-goes-by-device"),
    ],
)
def test_dhcp_lease_without_router(pointopoint: bool, state: State, route: str | None) -> None:
    bare = Lease(iface("100.64.0.10/24"), None)
    obs = observed(link(2, "eth1", pointopoint=pointopoint), addrs=[addr(2, "100.64.0.10/24")])
    intent = desired(config(DHCP), obs, leases={"a": bare})
    a = status(intent, "a")
    assert a.state == state
    assert StaticAddr(2, iface("100.64.0.10/24")) in set(
        intent.kernel[ADDRESSES]
    )  # the address is used either way
    got = intent.kernel[ROUTES].get(RouteKey(AF_INET, 101, V4_ANY))
    assert (got is not None and got.gateway is None and got.oif == 2) if route else got is None
    if not route:
        assert a.reason == "the DHCP lease names no router"


def test_failover_keeps_connections_of_a_down_uplink_that_the_last_resort_keeps_in_service() -> None:
    """All down, last resort `carrier`: they stay in the group, so nothing is flushed; losing
    carrier later takes one out of the group, and then its connections go."""
    all_down = {n: HealthVerdict(Health.DOWN, "no answer") for n in ("a", "b", "c")}
    up = desired(THREE, THREE_OBS).uplinks
    down = desired(THREE, THREE_OBS, health=all_down).uplinks
    assert all(s.in_group for s in down)
    assert plan.failover(up, down, mask=0xFF00) == ()
    assert plan.failover(down, down, mask=0xFF00) == ()  # every later pass, too
    no_carrier = replace(
        THREE_OBS,
        links={
            i: replace(li, carrier=False) if li.name == "eth2" else li for i, li in THREE_OBS.links.items()
        },
    )
    gone = desired(THREE, no_carrier, health=all_down).uplinks
    assert [op.obj.uplink for op in plan.failover(down, gone, mask=0xFF00)] == ["b"]  # type: ignore[union-attr]
