"""From config and facts to the kernel state we want, and from there to operations.

Pure: every function here computes and returns; nothing reads the clock or the
kernel, nothing writes. `desired()` says what the kernel should hold; `diff()` says
how to get there from what it holds, as an ordered, immutable `Plan`.

Layout (DESIGN.md, "Kernel layout"), for both address families, with P = rules.priority:

    P+0   lookup main suppress_prefixlength 0    connected/LAN routes win, main's defaults don't
    P+10  fwmark M_u/MASK lookup T_u            pinned connections and probes
    P+20  from <addr_u> lookup T_u              the router's own traffic from an uplink address
    P+30  lookup T_balance                      new connections: resilient weighted ECMP

T_u holds `default via gw_u dev u` (or `default dev u`); T_balance holds `default nhid G`,
G a resilient group of the in-service uplinks' nexthops, or `unreachable default` when
none is usable, so nothing falls through to main's default routes.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from uplinkd.config import Config, Uplink
from uplinkd.model import (
    AF_INET,
    AF_INET6,
    FAMILIES,
    ConntrackFlush,
    Health,
    HealthVerdict,
    IPAddress,
    IPInterface,
    KernelState,
    Lease,
    Link,
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
    any_net,
)

MAIN_TABLE = 254
BAND_SUPPRESS, BAND_FWMARK, BAND_FROM, BAND_BALANCE = 0, 10, 20, 30


# --- identities derived from config ----------------------------------------------------------


def nexthop_id(config: Config, table: int, family: int) -> int:
    """An uplink's nexthop id: stable as long as its table is (base + 2*table + family bit)."""
    return config.kernel.nexthop_base + 2 * table + (family == AF_INET6)


def group_id(config: Config, family: int) -> int:
    return config.kernel.nexthop_base + (family == AF_INET6)


def owns_nexthop(config: Config, nhid: int) -> bool:
    return config.kernel.nexthop_base <= nhid < config.kernel.nexthop_base + (1 << 25)


# --- which interface is which uplink ----------------------------------------------------------


def link_matches(uplink: Uplink, link: Link) -> bool:
    m = uplink.match
    if not m.matches_name(link.name):
        return False
    if m.driver and link.driver not in m.driver:
        return False
    if m.path is not None and (link.id_path is None or not fnmatch.fnmatchcase(link.id_path, m.path)):
        return False
    if m.usb is not None:
        wanted = (m.usb.vendor, m.usb.product, m.usb.serial)
        have = (link.usb_vendor, link.usb_product, link.usb_serial)
        if any(w is not None and w != h for w, h in zip(wanted, have, strict=True)):
            return False
    return True


def assign_links(
    config: Config, observed: Observed, previous: Mapping[str, int] | None = None
) -> dict[str, Link]:
    """Uplink name → its link. An uplink keeps the link it had (`previous`, uplink → ifindex)
    while that link is there and still matches, so pulling one of two sticks that match the
    same glob never moves the other; then each remaining uplink, in config order, takes the
    lowest-index matching link nobody has taken."""
    taken: set[int] = set()
    assigned: dict[str, Link] = {}
    for name, index in (previous or {}).items():
        link = observed.links.get(index)
        uplink = config.uplinks.get(name)
        if link is not None and uplink is not None and index not in taken and link_matches(uplink, link):
            assigned[name] = link
            taken.add(index)
    links = sorted(observed.links.values(), key=lambda link: link.index)
    for name, uplink in config.uplinks.items():
        if name in assigned:
            continue
        for link in links:
            if link.index not in taken and link_matches(uplink, link):
                assigned[name] = link
                taken.add(link.index)
                break
    return assigned


# --- uplink status ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Way:
    """How one uplink reaches the world in one family."""

    addresses: tuple[IPInterface, ...]
    gateway: IPAddress | None  # None: point-to-point, `default dev X`


def _ways(uplink: Uplink, link: Link, observed: Observed, lease: Lease | None) -> dict[int, _Way]:
    """Per family, the addresses and gateway the uplink can use (only families that work)."""
    ways: dict[int, _Way] = {}
    addr = uplink.address
    if addr.mode == "static":
        ways[AF_INET] = _Way((addr.cidr,), addr.gateway)
        if addr.cidr6 is not None:
            ways[AF_INET6] = _Way((addr.cidr6,), addr.gateway6)
        return ways
    if addr.mode == "dhcp":
        # A lease without a router is a way out only on a point-to-point link; on Ethernet
        # `default dev X` would ARP for the whole internet.
        if lease is not None and (lease.gateway is not None or link.pointopoint):
            ways[AF_INET] = _Way((lease.address,), lease.gateway)
        families: tuple[int, ...] = (AF_INET6,)  # IPv6 on a DHCPv4 uplink comes from RA
    else:
        families = FAMILIES
    for family in families:
        addrs = observed.addrs_of(link.index, family)
        gw = observed.gateway_of(link.index, family)
        if addrs and gw is not None:
            ways[family] = _Way(addrs, gw.gateway)
        elif addrs and link.pointopoint:
            ways[family] = _Way(addrs, None)
    return ways


_STATE_OF_HEALTH = {
    Health.UNKNOWN: State.PROBING,
    Health.UP: State.UP,
    Health.DEGRADED: State.DEGRADED,
    Health.DOWN: State.DOWN,
}


def _effective_weight(uplink: Uplink, verdict: HealthVerdict) -> int:
    return max(1, min(256, round(uplink.weight * verdict.weight_factor)))


def uplink_statuses(
    config: Config,
    observed: Observed,
    *,
    health: Mapping[str, HealthVerdict],
    drained: frozenset[str],
    leases: Mapping[str, Lease],
    previous: Mapping[str, int] | None = None,
) -> tuple[tuple[UplinkStatus, ...], dict[str, dict[int, _Way]]]:
    """Each configured uplink's state and the reason for it, plus how each ready one routes."""
    links = assign_links(config, observed, previous)
    statuses: list[UplinkStatus] = []
    all_ways: dict[str, dict[int, _Way]] = {}
    for name, uplink in config.uplinks.items():
        status = UplinkStatus(
            name=name,
            state=State.ABSENT,
            reason="no interface matches",
            table=uplink.table,
            mark=config.mark_of(name),
            drained=name in drained,
        )
        link = links.get(name)
        if link is None:
            statuses.append(status)
            continue
        status = replace(
            status,
            state=State.PRESENT,
            ifindex=link.index,
            dev=link.name,
            pointopoint=link.pointopoint,
            reason="interface is administratively down" if not link.up else "no carrier",
        )
        if not link.up or not link.carrier:
            statuses.append(status)
            continue
        status = replace(status, link_ready=True)
        ways = _ways(uplink, link, observed, leases.get(name))
        seen = observed.addrs_of(link.index, AF_INET) + observed.addrs_of(link.index, AF_INET6)
        status = replace(
            status,
            addresses=tuple(a for way in ways.values() for a in way.addresses) or seen,
            gateway4=ways[AF_INET].gateway if AF_INET in ways else None,
            gateway6=ways[AF_INET6].gateway if AF_INET6 in ways else None,
        )
        if not ways:
            if uplink.address.mode == "dhcp" and name not in leases:
                status = replace(status, reason="waiting for a DHCP lease")
            elif uplink.address.mode == "dhcp":
                status = replace(status, state=State.ADDRESSED, reason="the DHCP lease names no router")
            elif not status.addresses:
                status = replace(status, reason="no address")
            else:
                status = replace(status, state=State.ADDRESSED, reason="no default gateway learned")
            statuses.append(status)
            continue
        all_ways[name] = ways
        verdict = health.get(name, HealthVerdict(Health.UP, "no health checks configured"))
        statuses.append(
            replace(
                status,
                state=_STATE_OF_HEALTH[verdict.health],
                reason=verdict.reason,
                weight=_effective_weight(uplink, verdict),
            )
        )
    return tuple(statuses), all_ways


def balance_members(
    config: Config, statuses: Sequence[UplinkStatus], ways: Mapping[str, Mapping[int, _Way]], family: int
) -> tuple[tuple[UplinkStatus, ...], str]:
    """The uplinks in the balance group for one family, and why this set."""
    usable = [s for s in statuses if s.name in ways and family in ways[s.name] and not s.drained]
    healthy = tuple(s for s in usable if s.state in (State.UP, State.DEGRADED))
    if healthy:
        return healthy, "healthy uplinks"
    if config.balance.last_resort == "carrier" and usable:
        return tuple(usable), "last resort: no uplink is healthy, using every uplink with carrier"
    return (), "no usable uplink"


# --- desired kernel state --------------------------------------------------------------------


@dataclass(frozen=True)
class Intent:
    """The outcome of planning: the kernel state we want and what we think of each uplink."""

    kernel: KernelState
    uplinks: tuple[UplinkStatus, ...]
    balance_reason: Mapping[int, str]


def desired(
    config: Config,
    observed: Observed,
    *,
    health: Mapping[str, HealthVerdict] | None = None,
    drained: frozenset[str] = frozenset(),
    leases: Mapping[str, Lease] | None = None,
    previous: Mapping[str, int] | None = None,
) -> Intent:
    """The kernel state the controller wants, given the config and the facts. Computes only.
    `previous` (uplink → ifindex from the last pass) keeps uplinks on their interfaces."""
    statuses, ways = uplink_statuses(
        config, observed, health=health or {}, drained=drained, leases=leases or {}, previous=previous
    )
    prio = config.rules.priority
    rules: set[Rule] = set()
    routes: dict[RouteKey, Route] = {}
    nexthops: dict[int, Nexthop] = {}
    groups: dict[int, NexthopGroup] = {}
    addresses: set[StaticAddr] = set()
    reasons: dict[int, str] = {}
    in_group: dict[str, int] = {}

    for family in FAMILIES:
        default = str(any_net(family))
        rules.add(Rule(family, prio + BAND_SUPPRESS, MAIN_TABLE, suppress_prefixlength=0))
        rules.add(Rule(family, prio + BAND_BALANCE, config.balance.table))
        for status in statuses:
            if status.ifindex is None:
                continue
            rules.add(
                Rule(
                    family,
                    prio + BAND_FWMARK,
                    status.table,
                    fwmark=status.mark,
                    fwmask=config.kernel.mark_mask,
                )
            )
            way = ways.get(status.name, {}).get(family)
            if way is None:
                continue
            key = RouteKey(family, status.table, default)
            routes[key] = Route(key, oif=status.ifindex, gateway=way.gateway, dev=status.dev or "")
            nhid = nexthop_id(config, status.table, family)
            nexthops[nhid] = Nexthop(nhid, family, status.ifindex, way.gateway, dev=status.dev or "")
            for addr in way.addresses:
                host = ipaddress.ip_network(addr.ip)
                rules.add(Rule(family, prio + BAND_FROM, status.table, src=host))

        members, reasons[family] = balance_members(config, statuses, ways, family)
        bkey = RouteKey(family, config.balance.table, default)
        if members:
            gid = group_id(config, family)
            groups[gid] = NexthopGroup(
                gid,
                tuple(sorted(Member(nexthop_id(config, s.table, family), s.weight) for s in members)),
                buckets=config.balance.buckets,
                idle_timer_cs=round(config.balance.idle_timer * 100),
                unbalanced_timer_cs=round(config.balance.unbalanced_timer * 100),
            )
            routes[bkey] = Route(bkey, nhid=gid)
            for s in members:
                in_group[s.name] = s.weight
        else:
            routes[bkey] = Route(bkey, type="unreachable")

    links_up: set[LinkUp] = set()
    for status in statuses:
        uplink = config.uplinks[status.name]
        if status.ifindex is None:
            continue
        if uplink.address.mode != "external":
            links_up.add(LinkUp(status.ifindex, dev=status.dev or ""))
        for addr in _owned_addresses(uplink, (leases or {}).get(status.name)):
            addresses.add(StaticAddr(status.ifindex, addr, dev=status.dev or ""))

    nft = NftState(
        table=config.kernel.nft_table,
        mask=config.kernel.mark_mask,
        uplinks=tuple(
            sorted(
                (NftUplink(s.dev, s.mark) for s in statuses if s.dev is not None),
                key=lambda u: u.ifname,
            )
        ),
    )
    final = tuple(_with_group(s, in_group.get(s.name)) for s in statuses)
    return Intent(
        KernelState(
            rules=frozenset(rules),
            routes=routes,
            nexthops=nexthops,
            groups=groups,
            addresses=frozenset(addresses),
            nft=nft,
            links_up=frozenset(links_up),
        ),
        final,
        reasons,
    )


def _owned_addresses(uplink: Uplink, lease: Lease | None) -> tuple[IPInterface, ...]:
    addr = uplink.address
    if addr.mode == "static":
        return (addr.cidr,) + ((addr.cidr6,) if addr.cidr6 is not None else ())
    if addr.mode == "dhcp" and lease is not None:
        return (lease.address,)
    return ()


def _with_group(status: UplinkStatus, weight: int | None) -> UplinkStatus:
    return replace(status, in_group=weight is not None, weight=weight or 0)


# --- diff --------------------------------------------------------------------------------------

Verb = Literal["add", "replace", "delete"]
KernelObject = Rule | Route | Nexthop | NexthopGroup | StaticAddr | NftState | ConntrackFlush | LinkUp


@dataclass(frozen=True)
class Op:
    """One kernel write."""

    verb: Verb
    obj: KernelObject

    def __str__(self) -> str:
        if isinstance(self.obj, ConntrackFlush | LinkUp):
            return str(self.obj)
        if isinstance(self.obj, NftState):
            names = ", ".join(f"{u.ifname}={u.mark:#x}" for u in self.obj.uplinks) or "no uplinks"
            return f"nft -f - # {self.verb} table inet {self.obj.table} ({names})"
        text = str(self.obj)
        # Objects render as `ip [-4|-6] <object> <rest>`; the verb goes after the object word.
        head, _, rest = text.partition(" ")
        words = rest.split(" ")
        at = 2 if words[0] in ("-4", "-6") else 1
        verb = "del" if self.verb == "delete" else self.verb
        if isinstance(self.obj, StaticAddr):
            verb = "add" if self.verb != "delete" else "del"
        return " ".join([head, *words[:at], verb, *words[at:]])


@dataclass(frozen=True)
class Plan:
    """An ordered, immutable list of kernel writes. Empty means the kernel is as wanted."""

    ops: tuple[Op, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    def __str__(self) -> str:
        return "\n".join(str(op) for op in self.ops)


def diff(actual: KernelState, wanted: KernelState) -> Plan:
    """The writes that turn `actual` into `wanted`, in an order that never strands traffic:
    new things are created before the things that use them, and old things are removed only
    after nothing uses them (a group before its nexthops, a route before its group)."""
    ops: list[Op] = []

    ops += [Op("replace", link) for link in sorted(wanted.links_up - actual.links_up, key=str)]
    ops += [Op("add", a) for a in sorted(wanted.addresses - actual.addresses, key=str)]
    # nftables in two steps. Uplinks join the table before any route leads out of them (a
    # connection routed in between would be confirmed without NAT and stay broken); they
    # leave it only after nothing routes to them any more.
    early, late = _nft_steps(actual.nft, wanted.nft)
    ops += [Op("replace", early)] if early is not None else []
    ops += [
        Op("replace", nh) for key, nh in sorted(wanted.nexthops.items()) if actual.nexthops.get(key) != nh
    ]
    # A resilient group's bucket count cannot change in place: recreate it, which makes the
    # kernel drop the routes that use it, so those must be written again too.
    recreated = {
        gid
        for gid, group in wanted.groups.items()
        if gid in actual.groups and actual.groups[gid].buckets != group.buckets
    }
    ops += [Op("delete", actual.groups[gid]) for gid in sorted(recreated)]
    ops += [
        Op("replace", g)
        for gid, g in sorted(wanted.groups.items())
        if gid in recreated or actual.groups.get(gid) != g
    ]
    # A route we do not have yet is added exclusively, so it can never take over someone
    # else's route at the same key; only our own routes are replaced.
    ops += [
        Op("replace" if key in actual.routes else "add", r)
        for key, r in sorted(wanted.routes.items())
        if actual.routes.get(key) != r or (r.nhid is not None and r.nhid in recreated)
    ]
    ops += [Op("add", r) for r in sorted(wanted.rules - actual.rules)]
    ops += [Op("delete", r) for r in sorted(actual.rules - wanted.rules)]
    ops += [Op("delete", r) for key, r in sorted(actual.routes.items()) if key not in wanted.routes]
    ops += [Op("delete", g) for gid, g in sorted(actual.groups.items()) if gid not in wanted.groups]
    ops += [Op("delete", n) for key, n in sorted(actual.nexthops.items()) if key not in wanted.nexthops]
    ops += [Op("delete", a) for a in sorted(actual.addresses - wanted.addresses, key=str)]
    ops += [Op("replace", late)] if late is not None else []
    if actual.nft is not None and wanted.nft is None:
        ops.append(Op("delete", actual.nft))
    return Plan(tuple(ops))


def _nft_steps(have: NftState | None, want: NftState | None) -> tuple[NftState | None, NftState | None]:
    """(early, late) table loads: early adds the wanted uplinks to what is there, late makes
    it exactly what is wanted. Either is None when it would change nothing."""
    if want is None:
        return None, None
    same_shape = have is not None and (have.table, have.mask) == (want.table, want.mask)
    kept = {u.ifname: u for u in have.uplinks} if have is not None and same_shape else {}
    kept.update({u.ifname: u for u in want.uplinks})
    union = NftState(want.table, want.mask, tuple(sorted(kept.values(), key=lambda u: u.ifname)))
    current = have.digest if have is not None else None
    early = union if union.digest != current else None
    late = want if want.digest != union.digest else None
    return early, late


def teardown(actual: KernelState) -> Plan:
    """Everything we own, removed (what `uplinkctl flush` does)."""
    return diff(actual, KernelState())


# States in which an uplink carries nothing: its pinned connections must move.
FAILED = frozenset({State.ABSENT, State.PRESENT, State.ADDRESSED, State.DOWN})


def failover(before: Sequence[UplinkStatus], after: Sequence[UplinkStatus], *, mask: int) -> tuple[Op, ...]:
    """Conntrack flushes for uplinks that just failed: their pinned connections (ct mark)
    are deleted so their next packet starts afresh through a live uplink. Uplinks that are
    only drained keep their connections. Runs after the group change, in the same plan."""
    was = {s.name: s for s in before}
    ops: list[Op] = []
    for s in after:
        old = was.get(s.name)
        if old is None or s.state not in FAILED or s.in_group:
            continue  # still carrying traffic (the last resort): its connections stay
        if old.state not in FAILED or old.in_group:
            ops.append(
                Op("delete", ConntrackFlush(s.name, s.mark, mask, f"{old.state} → {s.state}: {s.reason}"))
            )
    return tuple(ops)
