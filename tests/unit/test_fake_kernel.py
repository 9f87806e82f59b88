"""diff against the fake kernel: for any state A the kernel may hold and any state W we may
want, applying diff(A, W) to A reaches W, and no step on the way references something that
is not there. Generated with hypothesis; no kernel, no root."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_plan import THREE, THREE_OBS, addr, gw, link, observed

from uplinkd import plan
from uplinkd.config import parse
from uplinkd.model import (
    AF_INET,
    AF_INET6,
    ConntrackFlush,
    Health,
    HealthVerdict,
    KernelState,
    LinkUp,
    Member,
    Nexthop,
    NexthopGroup,
    NftState,
    NftUplink,
    Op,
    Route,
    RouteKey,
    Rule,
    StaticAddr,
    kind_of,
)
from uplinkd.plan import Facts, diff, teardown
from uplinkd.plan.fake import Refused, apply, apply_one, dangling

BASE = 100_000_000
TABLES = (101, 102, 103)
IFINDEX = {101: 2, 102: 3, 103: 4}
DEV = {2: "eth1", 3: "eth2", 4: "eth3"}
ANY = {AF_INET: "0.0.0.0/0", AF_INET6: "::/0"}
GATEWAYS = {AF_INET: ("192.0.2.1", "198.51.100.1"), AF_INET6: ("fe80::1", "fe80::2")}
families = st.sampled_from((AF_INET, AF_INET6))


# --- generated kernel states (valid: whatever the kernel could hold) -----------------------------


@st.composite
def nexthops(draw: Any) -> dict[int, Nexthop]:
    out: dict[int, Nexthop] = {}
    for table in TABLES:
        for family in (AF_INET, AF_INET6):
            if draw(st.booleans()):
                gateway = draw(st.none() | st.sampled_from(GATEWAYS[family]))
                oif = draw(st.sampled_from(sorted(DEV)))
                nhid = BASE + 2 * table + (family == AF_INET6)
                out[nhid] = Nexthop(
                    nhid, family, oif, ipaddress.ip_address(gateway) if gateway else None, DEV[oif]
                )
    return out


@st.composite
def kernel_states(draw: Any) -> KernelState:
    objs: list[object] = []
    singles = draw(nexthops())
    objs += singles.values()
    for family in (AF_INET, AF_INET6):
        ids = sorted(n for n, nh in singles.items() if nh.family == family)
        members = draw(st.lists(st.sampled_from(ids), unique=True)) if ids else []
        gid = BASE + (family == AF_INET6)
        key = RouteKey(family, 200, ANY[family])
        if members:
            objs.append(
                NexthopGroup(
                    gid,
                    tuple(sorted(Member(m, draw(st.integers(1, 3))) for m in members)),
                    buckets=draw(st.sampled_from((128, 256))),
                    idle_timer_cs=draw(st.sampled_from((0, 1000))),
                    unbalanced_timer_cs=0,
                )
            )
            if draw(st.booleans()):
                objs.append(Route(key, nhid=gid))
        elif draw(st.booleans()):
            objs.append(Route(key, type="unreachable"))
        for table in TABLES:
            if draw(st.booleans()):
                oif = draw(st.sampled_from(sorted(DEV)))
                gateway = draw(st.none() | st.sampled_from(GATEWAYS[family]))
                objs.append(
                    Route(
                        RouteKey(family, table, ANY[family]),
                        oif=oif,
                        gateway=ipaddress.ip_address(gateway) if gateway else None,
                        dev=DEV[oif],
                    )
                )
    rules = [Rule(f, 10000, 254, suppress_prefixlength=0) for f in (AF_INET, AF_INET6)]
    rules += [Rule(f, 10030, 200) for f in (AF_INET, AF_INET6)]
    rules += [Rule(f, 10010, t, fwmark=t << 8, fwmask=0xFF00) for t in TABLES for f in (AF_INET, AF_INET6)]
    rules += [Rule(AF_INET, 10020, t, src=ipaddress.ip_network(f"10.0.{t - 100}.2/32")) for t in TABLES]
    objs += draw(st.lists(st.sampled_from(rules), unique=True))
    addresses = [StaticAddr(i, ipaddress.ip_interface(f"10.0.{i}.2/24"), dev=DEV[i]) for i in DEV]
    objs += draw(st.lists(st.sampled_from(addresses), unique=True))
    objs += [LinkUp(i, dev=DEV[i]) for i in draw(st.lists(st.sampled_from(sorted(DEV)), unique=True))]
    if draw(st.booleans()):
        names = draw(st.lists(st.sampled_from(sorted(DEV)), unique=True))
        marks = {i: draw(st.sampled_from((0x100, 0x6500, 0x6600))) for i in names}
        uplinks = sorted((NftUplink(DEV[i], marks[i]) for i in names), key=lambda u: u.ifname)
        objs.append(NftState("uplinkd", 0xFF00, tuple(uplinks)))
    state = KernelState(objs)
    assert not dangling(state)
    return state


# --- the walk, with the invariants checked at every step --------------------------------------------


def walk(actual: KernelState, wanted: KernelState) -> KernelState:
    """Apply diff(actual, wanted) op by op on the fake kernel, checking at each step that
    nothing refers to what is not there, that the kernel drops something along with a delete
    only when that delete is a recreation of something still wanted, and that every nexthop
    and route the plan writes leads out of an interface the nft table already holds (when
    the wanted table holds it)."""
    state = actual
    joining = {u.ifname for obj in wanted if isinstance(obj, NftState) for u in obj.uplinks}
    for op in diff(actual, wanted).ops:
        if op.verb != "delete" and isinstance(op.obj, Nexthop | Route) and op.obj.oif is not None:
            dev = DEV.get(op.obj.oif, op.obj.dev)
            if dev in joining:
                held = {u.ifname for obj in state if isinstance(obj, NftState) for u in obj.uplinks}
                assert dev in held, f"{op} before {dev} joined the nft table"
        step = apply_one(state, op)
        assert not dangling(step.state), op
        if step.dropped:
            kind = op.kind
            assert op.verb == "delete" and kind.key(op.obj) in wanted[kind], f"{op} dropped {step.dropped}"
        state = step.state
    return state


@settings(max_examples=150, deadline=None)
@given(kernel_states(), kernel_states())
def test_diff_converges_on_the_fake_kernel_and_never_dangles(
    actual: KernelState, wanted: KernelState
) -> None:
    reached = walk(actual, wanted)
    assert not diff(reached, wanted), str(diff(reached, wanted))
    # links are only raised: what was up stays up; everything else is exactly as wanted
    for kind in {kind_of(o) for o in [*actual, *wanted]}:
        if kind.prune:
            assert reached[kind] == wanted[kind], kind.name
    assert set(reached[kind_of(LinkUp(0))]) == set(actual[kind_of(LinkUp(0))]) | set(
        wanted[kind_of(LinkUp(0))]
    )


@settings(max_examples=100, deadline=None)
@given(kernel_states())
def test_teardown_leaves_only_raised_links_and_a_second_flush_is_empty(actual: KernelState) -> None:
    flushed = walk(actual, KernelState())
    assert all(isinstance(o, LinkUp) for o in flushed)
    assert not teardown(flushed)  # a flush while paused has nothing to do


# --- the planner's own states: plugs, unplugs, carrier, health, drain ---------------------------------


@st.composite
def facts(draw: Any) -> Facts:
    links = []
    for index, name in DEV.items():
        if draw(st.booleans()) or index == 2:
            links.append(link(index, name, carrier=draw(st.booleans()) or index == 2))
    obs = observed(
        *links,
        addrs=[addr(2, "192.0.2.2/24"), addr(3, "198.51.100.2/24"), addr(4, "203.0.113.2/24")],
        gws=[gw(2, "192.0.2.1"), gw(3, "198.51.100.1"), gw(4, "203.0.113.1")],
    )
    verdict = st.sampled_from(
        [HealthVerdict(Health.UP), HealthVerdict(Health.DOWN), HealthVerdict(Health.DEGRADED, "", 0.5)]
    )
    health = draw(st.dictionaries(st.sampled_from(["a", "b", "c"]), verdict))
    drained = frozenset(draw(st.lists(st.sampled_from(["a", "b", "c"]), unique=True)))
    spent = frozenset(draw(st.lists(st.sampled_from(["a", "b", "c"]), unique=True)))
    return Facts(obs, health=health, drained=drained, spent=spent)


THREE_UPLINKS = {n: {"match": {"name": f"eth{i}"}, "table": 100 + i} for i, n in enumerate("abc", 1)}
BUCKETS = {128: parse({"uplinks": THREE_UPLINKS, "balance": {"buckets": 128}}), 512: THREE}


@settings(max_examples=100, deadline=None)
@given(facts(), facts(), st.sampled_from(sorted(BUCKETS)), st.sampled_from(sorted(BUCKETS)))
def test_every_transition_between_planned_states_converges(
    before: Facts, after: Facts, b1: int, b2: int
) -> None:
    actual = plan.desired(BUCKETS[b1], before).kernel
    wanted = plan.desired(BUCKETS[b2], after).kernel
    assert not diff(walk(actual, wanted), wanted)


POLICIES = {
    "none": THREE,
    "tiered": parse(
        {
            "uplinks": {**THREE_UPLINKS, "c": {**THREE_UPLINKS["c"], "metered": True, "budget": 1000}},
            "policies": {
                "p": {"tiers": [["a"], {"b": 2, "c": 1}], "table": 150},
                "q": {"tiers": [["c"]], "table": 151, "last_resort": "p"},
                "r": {"tiers": [["b", "a"]], "table": 152, "last_resort": "unreachable"},
            },
            "rules": {"steer": [{"src": "192.168.2.0/24", "policy": "p"}, {"local": True, "policy": "q"}]},
        }
    ),
    "fewer": parse(
        {
            "uplinks": THREE_UPLINKS,
            "policies": {"p": {"tiers": [["c"], ["a"]], "table": 150, "flush_on_recovery": True}},
            "rules": {"steer": [{"protocol": "udp", "dport": 5060, "policy": "p"}]},
        }
    ),
}


@settings(max_examples=100, deadline=None)
@given(facts(), facts(), st.sampled_from(sorted(POLICIES)), st.sampled_from(sorted(POLICIES)))
def test_every_transition_with_policies_converges(before: Facts, after: Facts, c1: str, c2: str) -> None:
    """Policies' groups (ids from their tables), their rules and the nft steering state, added,
    changed and removed along with uplinks coming and going, healthy or not, spent or not."""
    actual = plan.desired(POLICIES[c1], before).kernel
    wanted = plan.desired(POLICIES[c2], after).kernel
    assert not diff(walk(actual, wanted), wanted)


# --- the fake kernel refuses what the kernel refuses ----------------------------------------------


def test_the_fake_kernel_refuses_dangling_references_and_in_place_bucket_changes() -> None:
    group = NexthopGroup(BASE, (Member(BASE + 202, 1),), buckets=128, idle_timer_cs=0, unbalanced_timer_cs=0)
    route = Route(RouteKey(AF_INET, 200, ANY[AF_INET]), nhid=BASE)
    for state, op in [
        (KernelState(), Op("replace", group)),
        (KernelState(), Op("add", route)),
        (KernelState([Nexthop(BASE + 202, AF_INET, 2, None), group]), Op("replace", _buckets(group, 256))),
        (KernelState([Route(route.key, type="unreachable")]), Op("add", route)),
    ]:
        try:
            apply_one(state, op)
        except Refused:
            continue
        raise AssertionError(f"the fake kernel took {op}")
    held = KernelState([Nexthop(BASE + 202, AF_INET, 2, None), group, route])
    dropped = apply_one(held, Op("delete", group))
    assert dropped.dropped == (route,) and not dangling(dropped.state)
    assert apply(held, plan.Plan((Op("delete", ConntrackFlush("a", 1, 1, "")),))) == held


def _buckets(group: NexthopGroup, buckets: int) -> NexthopGroup:
    return NexthopGroup(group.id, group.members, buckets, group.idle_timer_cs, group.unbalanced_timer_cs)


def test_a_planned_start_on_the_fake_kernel_is_a_fixed_point() -> None:
    wanted = plan.desired(THREE, Facts(THREE_OBS)).kernel
    reached = apply(KernelState(), diff(KernelState(), wanted))
    assert reached == wanted
    assert not diff(reached, wanted)
