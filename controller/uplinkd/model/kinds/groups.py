"""Resilient nexthop groups (`ip nexthop … group … type resilient`): the balance group.

A resilient group's bucket count is fixed when it is created, so a new count is a
recreation: the group is deleted (which makes the kernel drop the routes using it) and
made again, and `plan.diff` writes those routes again because they `ref` the group.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from uplinkd.config import Ownership
from uplinkd.model.kinds.base import Kind, Ref, Stage, Verb, ip_command
from uplinkd.model.kinds.io import Snapshot, Transport, owns_nexthop


@dataclass(frozen=True, order=True)
class Member:
    id: int
    weight: int  # 1..256


@dataclass(frozen=True)
class NexthopGroup:
    """A resilient nexthop group. Timers in centiseconds (the kernel's clock_t unit)."""

    id: int
    members: tuple[Member, ...]  # sorted by id
    buckets: int
    idle_timer_cs: int
    unbalanced_timer_cs: int

    @property
    def key(self) -> int:
        return self.id

    def __str__(self) -> str:
        group = "/".join(f"{m.id},{m.weight}" if m.weight != 1 else str(m.id) for m in self.members)
        return (
            f"ip nexthop id {self.id} group {group} type resilient buckets {self.buckets}"
            f" idle_timer {self.idle_timer_cs / 100:g} unbalanced_timer {self.unbalanced_timer_cs / 100:g}"
        )


class Groups(Kind[int, NexthopGroup]):
    name = "group"
    type = NexthopGroup
    create_stage = Stage.GROUPS
    delete_stage = Stage.GROUPS_GONE

    def key(self, obj: NexthopGroup) -> int:
        return obj.id

    def render(self, verb: Verb, obj: NexthopGroup) -> str:
        return ip_command(str(obj), verb)

    def refs(self, obj: NexthopGroup) -> Iterable[Ref]:
        return [("nhid", m.id) for m in obj.members]

    def provides(self, obj: NexthopGroup) -> Iterable[Ref]:
        return (("nhid", obj.id),)

    def recreate(self, old: NexthopGroup, new: NexthopGroup) -> bool:
        return old.buckets != new.buckets

    def read(self, snapshot: Snapshot, owner: Ownership) -> Iterator[NexthopGroup]:
        for nh in snapshot.nexthops:
            if nh.protocol != owner.protocol or not owns_nexthop(owner, nh.id) or not nh.group:
                continue
            res = nh.resilient
            yield NexthopGroup(
                nh.id,
                tuple(sorted(Member(m.id, m.weight) for m in nh.group)),
                buckets=res.buckets if res else 0,
                idle_timer_cs=round(res.idle_timer * 100) if res else -1,
                unbalanced_timer_cs=round(res.unbalanced_timer * 100) if res else -1,
            )

    async def write(self, io: Transport, verb: Verb, obj: NexthopGroup, owner: Ownership) -> None:
        if verb == "delete":
            await io.delete_nexthop(id=obj.id)
            return
        await io.replace_group(
            id=obj.id,
            members=[(m.id, m.weight) for m in obj.members],
            buckets=obj.buckets,
            idle_timer=obj.idle_timer_cs / 100,
            unbalanced_timer=obj.unbalanced_timer_cs / 100,
            protocol=owner.protocol,
        )


KIND = Groups()
