"""From the kernel state we have to the one we want: an ordered, immutable `Plan`.

Generic over kinds: each kind says what its changes are and at which `Stage` they go
(`model/kinds/base.py`), and `diff` sorts them, so new things are created before what uses
them and old things removed after nothing does. What one kind cannot change in place
(a resilient group's bucket count) is recreated, and whatever refers to it is written again.
"""

from __future__ import annotations

from dataclasses import dataclass

from uplinkd.model import KINDS, KernelState, Kind, Op
from uplinkd.model.kinds.base import Change, Ref


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

    def __add__(self, other: Plan) -> Plan:
        return Plan(self.ops + other.ops)


def recreated(actual: KernelState, wanted: KernelState) -> frozenset[Ref]:
    """What recreations take down with them: the refs of every object that must be deleted
    and made again."""
    gone: set[Ref] = set()
    for kind in KINDS:
        if type(kind).recreate is Kind.recreate:
            continue  # this kind changes everything in place
        have, want = actual[kind], wanted[kind]
        for key, new in want.items():
            old = have.get(key)
            if old is not None and old != new and kind.recreate(old, new):
                gone.update(kind.provides(old))
    return frozenset(gone)


def diff(actual: KernelState, wanted: KernelState) -> Plan:
    """The writes that turn `actual` into `wanted`, in an order that never strands traffic:
    new things are created before the things that use them, and old things are removed only
    after nothing uses them (a route before its group, a group before its nexthops)."""
    down = recreated(actual, wanted)
    changes: list[Change] = []
    for kind in KINDS:
        changes += kind.changes(actual[kind], wanted[kind], recreated=down)
    changes.sort(key=lambda change: change[0])  # stable: each kind's own order within a stage
    return Plan(tuple(op for _, op in changes))


def teardown(actual: KernelState) -> Plan:
    """Everything we own, removed (what `uplinkctl flush` does)."""
    return diff(actual, KernelState())
