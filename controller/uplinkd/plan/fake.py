"""A fake kernel: what a `Plan` does to a `KernelState`, computed, for tests without root.

It keeps the kernel's rules that matter to ordering, generically, from what each kind
says about itself: an object is created only when everything it `refs` exists (a route's
group, a group's members), else the op is refused; a kind that cannot change in place
(`recreate`) refuses a replace; an exclusive add of a key that is held is refused when
the key space is shared with others (routes: EEXIST) and a no-op otherwise; deleting what
is not there is a no-op (the applier counts ENOENT as done); deleting an object also
drops whatever refers to it (the kernel drops the routes of a deleted group), which is
reported, so a test can tell a recreation's intended casualties from an ordering bug.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from uplinkd.model import KernelState, Op, kind_of
from uplinkd.model.kinds.base import Ref
from uplinkd.plan.diff import Plan


class Refused(Exception):
    """The kernel would refuse this op (errno named in the message)."""

    def __init__(self, op: Op, why: str) -> None:
        super().__init__(f"{op}: {why}")
        self.op = op


@dataclass(frozen=True)
class Step:
    """The state after one op, and what the kernel dropped along with it."""

    state: KernelState
    dropped: tuple[Any, ...] = ()


def provided(state: KernelState) -> frozenset[Ref]:
    return frozenset(r for obj in state for r in kind_of(obj).provides(obj))


def dangling(state: KernelState) -> list[tuple[Any, Ref]]:
    """Objects referring to something that is not there (never true of a real kernel)."""
    there = provided(state)
    return [(obj, r) for obj in state for r in kind_of(obj).refs(obj) if r not in there]


def apply_one(state: KernelState, op: Op) -> Step:
    kind = op.kind
    if kind.action:
        return Step(state)
    key = kind.key(op.obj)
    held = state[kind].get(key)
    if op.verb == "delete":
        if held is None:
            return Step(state)
        return _drop(state, [held])
    if held is not None and op.verb == "add":
        if kind.foreign_keys:
            raise Refused(op, "EEXIST: the key is held")
        return Step(state)
    if held is not None and held != op.obj and kind.recreate(held, op.obj):
        raise Refused(op, "EINVAL: cannot change in place")
    missing = [r for r in kind.refs(op.obj) if r not in provided(state)]
    if missing:
        raise Refused(op, f"ENOENT: refers to {missing} which do not exist")
    others = [obj for obj in state if not (kind_of(obj) is kind and kind.key(obj) == key)]
    return Step(KernelState([*others, op.obj]))


def _drop(state: KernelState, gone: Iterable[Any]) -> Step:
    """Delete `gone` and, as the kernel does, everything that refers to what went."""
    remaining = list(state)
    removed: list[Any] = []
    queue = list(gone)
    while queue:
        obj = queue.pop()
        if obj not in remaining:
            continue
        remaining.remove(obj)
        removed.append(obj)
        lost = set(kind_of(obj).provides(obj))
        queue += [o for o in remaining if lost & set(kind_of(o).refs(o))]
    return Step(KernelState(remaining), tuple(removed[1:]))


def apply(state: KernelState, plan: Plan) -> KernelState:
    """The state after every op of `plan`. Raises Refused where the kernel would refuse."""
    for op in plan.ops:
        state = apply_one(state, op).state
    return state
