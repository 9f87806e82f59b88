"""The balance group: which uplinks carry new connections, with what weight.

Per family: a resilient nexthop group of the healthy uplinks' nexthops and T_balance's
`default nhid G`; with none healthy, every uplink with carrier (`last_resort: carrier`) or
`unreachable default`, so nothing falls through to main's default routes. Metered uplinks
are the default policy's last tier: in the group only while no unmetered uplink is healthy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from uplinkd.config import Config
from uplinkd.model import (
    AF_INET,
    AF_INET6,
    FAMILIES,
    Member,
    NexthopGroup,
    Route,
    RouteKey,
    Rule,
    State,
    UplinkStatus,
    any_net,
)
from uplinkd.plan.facts import Contribution, Facts, Survey, Way
from uplinkd.plan.layout import BAND_BALANCE, BAND_SUPPRESS, MAIN_TABLE, group_id, nexthop_id

FAMILY_NAMES: dict[int, str] = {AF_INET: "ipv4", AF_INET6: "ipv6"}


def topic(family: int) -> str:
    """The reason topic of one family's balance decision."""
    return f"balance {FAMILY_NAMES[family]}"


def balance_members(
    config: Config,
    statuses: Sequence[UplinkStatus],
    ways: Mapping[str, Mapping[int, Way]],
    family: int,
    *,
    spent: frozenset[str] = frozenset(),
) -> tuple[tuple[UplinkStatus, ...], str]:
    """The uplinks in the balance group for one family, and why this set. Metered uplinks,
    and those whose budget is spent, are the last tier."""
    usable = [s for s in statuses if s.name in ways and family in ways[s.name] and not s.drained]
    healthy = tuple(s for s in usable if s.state in (State.UP, State.DEGRADED))
    unmetered = tuple(s for s in healthy if not config.uplinks[s.name].metered and s.name not in spent)
    if unmetered:
        return unmetered, "healthy uplinks"
    if healthy:
        return healthy, "last tier: no unmetered uplink (with budget left) is healthy, using the others"
    if config.balance.last_resort == "carrier" and usable:
        return tuple(usable), "last resort: no uplink is healthy, using every uplink with carrier"
    return (), "no usable uplink"


def contribute(config: Config, facts: Facts, survey: Survey) -> Contribution:
    """Per family: main's connected routes first (its default routes suppressed), then
    T_balance with the group's route; and who is in service."""
    prio = config.rules.priority
    objects: list[object] = []
    in_service: dict[str, int] = {}
    reasons: dict[str, str] = {}
    for family in FAMILIES:
        objects.append(Rule(family, prio + BAND_SUPPRESS, MAIN_TABLE, suppress_prefixlength=0))
        objects.append(Rule(family, prio + BAND_BALANCE, config.balance.table))
        members, reasons[topic(family)] = balance_members(
            config, survey.statuses, survey.ways, family, spent=facts.spent
        )
        key = RouteKey(family, config.balance.table, str(any_net(family)))
        if not members:
            objects.append(Route(key, type="unreachable"))
            continue
        gid = group_id(config, family)
        objects.append(
            NexthopGroup(
                gid,
                tuple(sorted(Member(nexthop_id(config, s.table, family), s.weight) for s in members)),
                buckets=config.balance.buckets,
                idle_timer_cs=round(config.balance.idle_timer * 100),
                unbalanced_timer_cs=round(config.balance.unbalanced_timer * 100),
            )
        )
        objects.append(Route(key, nhid=gid))
        in_service.update({s.name: s.weight for s in members})
    return Contribution(objects=tuple(objects), in_service=in_service, reasons=reasons)
