"""Policies: per named policy, the tier its new connections use, as a resilient group in the
policy's own table, and the rule that sends the policy's mark there.

Per family, the first tier with a healthy member (up or degraded, not drained, routing in
that family) is the group, weighted by the tier's weights (an uplink's own weight where the
tier says null; degraded uplinks keep their reduced share). With no tier healthy, the
policy's last resort: `carrier` (every usable uplink of its tiers), `unreachable`, or another
policy's choice (`default` being the balance group's).

    P+15  fwmark M_p/PMASK lookup T_p      T_p: default nhid G_p | unreachable default

Why P+15, between the uplink fwmark band and the source band:
- after P+0, so LAN, tunnel and connected routes still win over any policy;
- after P+10, so a connection pinned to its uplink (uplink mark, or a probe's SO_MARK) keeps
  it whatever policy bits it carries;
- before P+20, because the router's own unbound sockets get their source address from a
  first lookup before the output hook marks them; the re-route after marking carries that
  source, and P+20 (`from addr_u`) would otherwise send it back to the uplink the first
  lookup picked, ignoring the policy. (The cost: a `local` steering rule also overrides a
  socket bound to an uplink's address; masquerade rewrites its source.)
- before P+30, naturally: marked connections never reach the balance table.

The steering rules themselves are nft rules (see `kernel/nft.py` and `plan/nft.py`).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass

from uplinkd.config import DEFAULT_POLICY, Config, Steer
from uplinkd.model import (
    FAMILIES,
    ConntrackFlush,
    IPAddress,
    Member,
    NexthopGroup,
    Op,
    Route,
    RouteKey,
    Rule,
    State,
    UplinkStatus,
    any_net,
)
from uplinkd.plan.balance import FAMILY_NAMES, balance_members
from uplinkd.plan.facts import Contribution, Facts, Survey
from uplinkd.plan.layout import BAND_POLICY, nexthop_id, policy_group_id


def topic(policy: str, family: int) -> str:
    """The reason topic of one policy's choice in one family."""
    return f"policy {policy} {FAMILY_NAMES[family]}"


@dataclass(frozen=True)
class Choice:
    """What a policy's new connections use in one family: uplink → weight, which tier
    (0-based; None: a last resort), and why."""

    members: Mapping[str, int]
    tier: int | None
    reason: str


def choose(
    config: Config, survey: Survey, policy: str, family: int, *, spent: frozenset[str] = frozenset()
) -> Choice:
    """The uplinks a policy's new connections use in one family. An uplink whose budget is
    spent counts only in the policy's last tier (and its last resort)."""
    if policy == DEFAULT_POLICY:
        members, why = balance_members(config, survey.statuses, survey.ways, family, spent=spent)
        return Choice({s.name: s.weight for s in members}, None, f"default policy: {why}")
    return _choose(config, survey, policy, family, seen=(), spent=spent)


def _choose(
    config: Config, survey: Survey, policy: str, family: int, *, seen: tuple[str, ...], spent: frozenset[str]
) -> Choice:
    spec = config.policies[policy]
    by_name = {s.name: s for s in survey.statuses}
    usable: dict[str, int] = {}
    last = len(spec.tiers) - 1
    for index, tier in enumerate(spec.tiers):
        healthy: dict[str, int] = {}
        for name, weight in tier.items():
            s = by_name.get(name)
            if s is None or s.drained or family not in survey.ways.get(name, {}):
                continue
            if name in spent and index < last:
                continue
            w = _weight(config, s, weight)
            usable.setdefault(name, w)
            if s.state in (State.UP, State.DEGRADED):
                healthy[name] = w
        if healthy:
            return Choice(healthy, index, f"tier {index}: {', '.join(healthy)}")
    resort = spec.last_resort
    if resort == "carrier" and usable:
        return Choice(usable, None, "last resort: no tier is healthy, using its uplinks with carrier")
    if resort in ("carrier", "unreachable"):
        return Choice({}, None, "no usable uplink in any tier")
    if resort == DEFAULT_POLICY or resort in seen:  # a cycle is refused by the config
        inner = choose(config, survey, DEFAULT_POLICY, family, spent=spent)
    else:
        inner = _choose(config, survey, resort, family, seen=(*seen, policy), spent=spent)
    return Choice(
        inner.members, None, f"last resort: no tier is healthy, as policy {resort} ({inner.reason})"
    )


def _weight(config: Config, s: UplinkStatus, weight: int | None) -> int:
    """The tier's weight, reduced as the uplink's own is when it is degraded."""
    own = config.uplinks[s.name].weight
    if weight is None:
        return max(1, s.weight or own)
    factor = (s.weight or own) / own
    return max(1, min(256, round(weight * factor)))


def contribute(config: Config, facts: Facts, survey: Survey) -> Contribution:
    """Per policy and family: its fwmark rule, and T_p's default (a group of the chosen
    tier, or unreachable)."""
    prio = config.rules.priority
    objects: list[object] = []
    reasons: dict[str, str] = {}
    tables = {s.name: s.table for s in survey.statuses}
    for name, spec in config.policies.items():
        for family in FAMILIES:
            objects.append(
                Rule(
                    family,
                    prio + BAND_POLICY,
                    spec.table,
                    fwmark=config.policy_mark(name),
                    fwmask=config.kernel.policy_bits,
                )
            )
            choice = choose(config, survey, name, family, spent=facts.spent)
            reasons[topic(name, family)] = choice.reason
            key = RouteKey(family, spec.table, str(any_net(family)))
            if not choice.members:
                objects.append(Route(key, type="unreachable"))
                continue
            gid = policy_group_id(config, name, family)
            objects.append(
                NexthopGroup(
                    gid,
                    tuple(
                        sorted(
                            Member(nexthop_id(config, tables[u], family), w)
                            for u, w in choice.members.items()
                        )
                    ),
                    buckets=config.balance.buckets,
                    idle_timer_cs=round(config.balance.idle_timer * 100),
                    unbalanced_timer_cs=round(config.balance.unbalanced_timer * 100),
                )
            )
            objects.append(Route(key, nhid=gid))
    return Contribution(objects=tuple(objects), reasons=reasons)


# --- which rule a packet matches (for `uplinkctl explain`) ------------------------------------


def tier_of(reason: str) -> int | None:
    """The tier a policy's reason names ("tier 1: wan"), or None (a last resort)."""
    found = re.match(r"tier (\d+):", reason)
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class Packet:
    """What explain knows of a new connection's first packet. `iif` None: the router's own."""

    dst: IPAddress
    src: IPAddress | None = None
    iif: str | None = None
    protocol: str | None = None
    sport: int | None = None
    dport: int | None = None


def steer_for(config: Config, packet: Packet) -> tuple[int | None, str]:
    """The first steering rule (index) that matches the packet and the policy it names;
    (None, "default") when none does. Evaluated from the config, as the nft rules are
    rendered from it: the kernel does not say which nft rule matched. Rules that need what
    a packet description lacks (DSCP, uid) do not match."""
    for index, rule in enumerate(config.rules.steer):
        if _matches(rule, packet):
            return index, rule.policy
    return None, DEFAULT_POLICY


def _matches(rule: Steer, p: Packet) -> bool:
    if rule.local != (p.iif is None) or p.dst.version not in rule.families:
        return False
    if rule.src and (p.src is None or not any(p.src in net for net in rule.src)):
        return False
    if rule.dst and not any(p.dst in net for net in rule.dst):
        return False
    if rule.protocol is not None and rule.protocol != p.protocol:
        return False
    if (rule.sport or rule.dport) and p.protocol not in ("tcp", "udp", "sctp"):
        return False
    for ranges, port in ((rule.sport, p.sport), (rule.dport, p.dport)):
        if ranges and (port is None or not any(lo <= port <= hi for lo, hi in ranges)):
            return False
    if rule.iif is not None and not fnmatch.fnmatchcase(p.iif or "", rule.iif):
        return False
    return rule.dscp is None and rule.uid is None


def recoveries(config: Config, before: Mapping[str, str], after: Mapping[str, str]) -> tuple[Op, ...]:
    """For policies with `flush_on_recovery`: when a higher tier than before is chosen (in
    either family), delete the policy's connections on uplinks outside that tier (ct mark =
    policy mark | uplink mark), so they reconnect through it. Without it they stay."""
    flushes: dict[tuple[int, int], Op] = {}
    mask = config.kernel.policy_bits | config.kernel.mark_mask
    for name, spec in config.policies.items():
        if not spec.flush_on_recovery:
            continue
        for family in FAMILIES:
            was, now = before.get(topic(name, family)), after.get(topic(name, family))
            old, new = tier_of(was or ""), tier_of(now or "")
            if was is None or new is None or (old is not None and new >= old):
                continue
            for uplink in config.uplinks:
                if uplink in spec.tiers[new]:
                    continue
                mark = config.policy_mark(name) | config.mark_of(uplink)
                why = f"policy {name}: tier {new} is back; moving its connections off {uplink}"
                flushes.setdefault((mark, mask), Op("delete", ConntrackFlush(uplink, mark, mask, why)))
    return tuple(flushes.values())
