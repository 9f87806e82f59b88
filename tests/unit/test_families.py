"""An IPv6-only uplink next to an IPv4 one (issue 13, `uplinks.<n>.families`), planned without
a kernel: it is ready on IPv6 alone, a member of the IPv6 group only, its table refuses IPv4,
the IPv4 group and its last resort ignore it, and its probes are judged on its IPv6 targets."""

from __future__ import annotations

import ipaddress
from typing import Any

from uplinkd import plan
from uplinkd.config import parse
from uplinkd.model import (
    AF_INET,
    AF_INET6,
    GROUPS,
    ROUTES,
    Addr,
    Gateway,
    Health,
    HealthVerdict,
    Lease,
    Link,
    Observed,
    RouteKey,
    State,
)
from uplinkd.model.adverts import Advert, AdvertPrefix
from uplinkd.plan import Facts, Intent, group_id, nexthop_id
from uplinkd.probes import round_targets

ROUTER = ipaddress.IPv6Address("fe80::1")
PREFIX = ipaddress.IPv6Network("2001:db8:2::/64")
SLAAC = Addr(3, ipaddress.ip_interface("2001:db8:2::5eff:fe00:1/64"))
RA = Advert(router=ROUTER, lifetime=600, prefixes=(AdvertPrefix(PREFIX, 7200, 3600),))
WAN4 = Addr(2, ipaddress.ip_interface("10.101.0.2/24"))
V4_ANY, V6_ANY = "0.0.0.0/0", "::/0"


def config(lte: dict[str, Any] | None = None, **top: Any) -> Any:
    return parse(
        {
            "uplinks": {
                "wan": {
                    "match": {"name": "wan"},
                    "address": {"mode": "static", "cidr": "10.101.0.2/24", "gateway": "10.101.0.1"},
                    "table": 101,
                },
                "lte1": {"match": {"name": "lte1"}, "address": {"mode": "dhcp"}, "table": 102, **(lte or {})},
            },
            **top,
        }
    )


V6_ONLY = {"families": ["ipv6"]}


def facts(*, ra: bool = True, wan_carrier: bool = True, wan: Health = Health.UP) -> Facts:
    links = {
        2: Link(index=2, name="wan", up=True, carrier=wan_carrier),
        3: Link(index=3, name="lte1", up=True, carrier=True),
    }
    return Facts(
        # the SLAAC address comes with the RA
        Observed(links=links, addrs=(WAN4, *([SLAAC] if ra else []))),
        adverts={"lte1": RA} if ra else {},
        health={"wan": HealthVerdict(wan, "test"), "lte1": HealthVerdict(Health.UP, "test")},
    )


def members(intent: Intent, family: int) -> set[int]:
    cfg = config(V6_ONLY)
    group = intent.kernel[GROUPS].get(group_id(cfg, family))
    return set() if group is None else {m.id for m in group.members}


def status(intent: Intent, name: str) -> Any:
    return next(s for s in intent.uplinks if s.name == name)


def test_an_ipv6_only_uplink_is_up_in_the_ipv6_group_only_and_refuses_ipv4() -> None:
    cfg = config(V6_ONLY)
    i = plan.desired(cfg, facts())
    lte = status(i, "lte1")
    assert (lte.state, lte.families, lte.gateway4, lte.gateway6) == (State.UP, (AF_INET6,), None, ROUTER)
    assert members(i, AF_INET) == {nexthop_id(cfg, 101, AF_INET)}
    assert members(i, AF_INET6) == {nexthop_id(cfg, 102, AF_INET6)}
    assert i.kernel[ROUTES][RouteKey(AF_INET, 102, V4_ANY)].type == "unreachable"
    assert i.kernel[ROUTES][RouteKey(AF_INET6, 102, V6_ANY)].gateway == ROUTER
    assert i.kernel[ROUTES][RouteKey(AF_INET, 200, V4_ANY)].nhid == group_id(cfg, AF_INET)


def test_without_an_ra_it_says_what_it_waits_for() -> None:
    lte = status(plan.desired(config(V6_ONLY), facts(ra=False)), "lte1")
    assert (lte.state, lte.reason) == (
        State.PRESENT,
        "no address: waiting for an IPv6 router advertisement (families: ipv6)",
    )


def test_a_dual_stack_dhcp_uplink_whose_dhcpv4_never_answers_serves_ipv6_alone() -> None:
    """Without `families`, the same ISP works too; the table only lacks the IPv4 route (a
    lease may come) instead of refusing IPv4."""
    cfg = config()
    i = plan.desired(cfg, facts())
    assert status(i, "lte1").families == (AF_INET6,)
    assert members(i, AF_INET6) == {nexthop_id(cfg, 102, AF_INET6)}
    assert RouteKey(AF_INET, 102, V4_ANY) not in i.kernel[ROUTES]


def test_ipv4_failover_and_last_resort_never_use_the_ipv6_only_uplink() -> None:
    cfg = config(V6_ONLY)
    # wan down by probes, carrier up: the last resort is wan (with carrier), not lte1
    down = plan.desired(cfg, facts(wan=Health.DOWN))
    assert members(down, AF_INET) == {nexthop_id(cfg, 101, AF_INET)}
    assert members(down, AF_INET6) == {nexthop_id(cfg, 102, AF_INET6)}
    # wan without carrier: IPv4 is refused, IPv6 goes on over lte1
    gone = plan.desired(cfg, facts(wan_carrier=False))
    assert members(gone, AF_INET) == set()
    assert gone.kernel[ROUTES][RouteKey(AF_INET, 200, V4_ANY)].type == "unreachable"
    assert members(gone, AF_INET6) == {nexthop_id(cfg, 102, AF_INET6)}
    # and with last_resort unreachable the blackholed wan is not used either
    strict = config(V6_ONLY, balance={"last_resort": "unreachable"})
    refused = plan.desired(strict, facts(wan=Health.DOWN))
    assert refused.kernel[ROUTES][RouteKey(AF_INET, 200, V4_ANY)].type == "unreachable"


def test_an_ipv4_only_uplink_refuses_ipv6_and_takes_no_ra() -> None:
    cfg = parse(
        {
            "uplinks": {
                "wan": {
                    "match": {"name": "wan"},
                    "address": {"mode": "static", "cidr": "10.101.0.2/24", "gateway": "10.101.0.1"},
                    "table": 101,
                    "families": ["ipv4"],
                }
            }
        }
    )
    links = {2: Link(index=2, name="wan", up=True, carrier=True)}
    obs = Observed(
        links=links,
        addrs=(Addr(2, ipaddress.ip_interface("2001:db8:1::2/64")),),
        gateways=(Gateway(2, AF_INET6, ipaddress.ip_address("2001:db8:1::1")),),
    )
    i = plan.desired(cfg, Facts(obs))
    assert status(i, "wan").families == (AF_INET,)
    assert i.kernel[ROUTES][RouteKey(AF_INET6, 101, V6_ANY)].type == "unreachable"
    assert members(i, AF_INET6) == set()


def test_probes_ask_the_targets_of_the_families_the_uplink_routes() -> None:
    probe = config().uplinks["wan"].probe.model_copy(update={"targets": ("192.0.2.1", "2001:db8::1")})
    v6 = ipaddress.ip_address("2001:db8::1")
    assert [a for a, _ in round_targets(probe, (AF_INET6,))] == [v6]
    assert len(round_targets(probe, (AF_INET, AF_INET6))) == 2
    assert len(round_targets(probe, None)) == 2
    only4 = probe.model_copy(update={"targets": ("192.0.2.1",)})
    # no target of its family: all are asked (and fail), the uplink cannot prove it works
    assert len(round_targets(only4, (AF_INET6,))) == 1


def test_a_lease_kept_from_before_families_left_out_ipv4_is_neither_used_nor_waited_for() -> None:
    old = Lease(ipaddress.IPv4Interface("10.102.0.50/24"), ipaddress.IPv4Address("10.102.0.1"))
    f = facts()
    kept = Facts(f.observed, health=f.health, adverts=f.adverts, leases={"lte1": old})
    i = plan.desired(config(V6_ONLY), kept)
    lte = status(i, "lte1")
    assert (lte.state, lte.families) == (State.UP, (AF_INET6,))
    assert old.address not in lte.addresses
