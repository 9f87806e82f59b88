"""Decisions between passes: what an uplink that just failed leaves behind (conntrack
flushes), what a restart adopts, and the health verdicts a pass plans with.

Pure: the daemon keeps the state (the last intent, who was adopted, the probers'
verdicts) and asks these functions what follows from it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from uplinkd.config import Config
from uplinkd.model import GROUPS, ConntrackFlush, Health, HealthVerdict, KernelState, Op, State, UplinkStatus
from uplinkd.plan import policies
from uplinkd.plan.desired import Intent
from uplinkd.plan.diff import Plan, diff
from uplinkd.plan.tunnels import underlay_moved

# States in which an uplink carries nothing: its pinned connections must move.
FAILED = frozenset({State.ABSENT, State.PRESENT, State.ADDRESSED, State.DOWN})
ADOPTED = "in service when uplinkd started; probing"


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


def step(
    actual: KernelState, intent: Intent, *, before: Intent | None, mask: int, config: Config | None = None
) -> Plan:
    """One pass's plan: the diff to the intent, then the flushes of the uplinks that failed
    since the last pass (none on the first: nothing was seen failing), of the uplinks a
    tunnel's underlay just left, and, given the config, of the connections of policies whose
    higher tier came back (`flush_on_recovery`)."""
    plan = diff(actual, intent.kernel)
    if before is None:
        return plan
    flushes = failover(before.uplinks, intent.uplinks, mask=mask)
    tunnel_marks = {name: t.mark for name, t in config.tunnels.items()} if config is not None else None
    moved = underlay_moved(
        before.reasons, intent.reasons, intent.uplinks, mask=mask, tunnel_marks=tunnel_marks
    )
    recovered = policies.recoveries(config, before.reasons, intent.reasons) if config is not None else ()
    for op in moved + recovered:  # the first reason found for a set of entries is kept
        if isinstance(op.obj, ConntrackFlush) and not any(
            isinstance(o.obj, ConntrackFlush) and covers(o.obj, op.obj) for o in flushes
        ):
            flushes += (op,)
    return plan + Plan(flushes)


def covers(a: ConntrackFlush, b: ConntrackFlush) -> bool:
    """Whether flush `a` deletes every entry `b` would: `a` tests a subset of `b`'s bits, and
    `b`'s mark agrees with `a`'s on them. So the same (mark, mask) twice is flushed once, and a
    failed uplink's whole flush makes a tunnel's narrower flush on it (`M_u|T` under
    `MASK|T`) needless."""
    return a.mask & b.mask == a.mask and b.mark & a.mask == a.mark


def adopt(config: Config, actual: KernelState) -> frozenset[str]:
    """At start: the uplinks already in the kernel's balance group. They stay in service
    until their probes say otherwise, so a restart neither moves nor drops anything."""
    base = config.kernel.nexthop_base
    by_table = {up.table: name for name, up in config.uplinks.items()}
    return frozenset(
        by_table[(m.id - base) // 2]
        for group in actual[GROUPS].values()
        for m in group.members
        if (m.id - base) // 2 in by_table
    )


def verdicts(
    config: Config, probed: Mapping[str, HealthVerdict], adopted: Collection[str]
) -> dict[str, HealthVerdict]:
    """The verdicts a pass plans with: an uplink with probe targets but no verdict yet is
    unknown, unless it was in service when we started (then it is up until probed otherwise);
    an uplink without targets has none (it counts as up)."""
    health = {
        name: HealthVerdict(Health.UP, ADOPTED)
        if name in adopted
        else HealthVerdict(Health.UNKNOWN, "not probed yet")
        for name, up in config.uplinks.items()
        if up.probe.targets
    }
    health.update({k: v for k, v in probed.items() if k in health})
    return health
