"""Conntrack flushes: delete the connections pinned to one uplink (its ct mark), and only
those, so their next packet starts afresh through a live uplink.

Not state but an action: never read, never in a desired state, so `diff` never makes
one; `plan.failover` adds them, and they run last, after the group change.
"""

from __future__ import annotations

from dataclasses import dataclass

from uplinkd.config import Ownership
from uplinkd.model.kinds.base import Kind, Stage, Verb
from uplinkd.model.kinds.io import Transport


@dataclass(frozen=True)
class ConntrackFlush:
    """Delete the connections pinned to one uplink (its ct mark), and only those; with a
    tunnel's bits in `mark` and `mask`, only that tunnel's own flow on the uplink."""

    uplink: str
    mark: int
    mask: int
    why: str

    def __str__(self) -> str:
        return f"conntrack -D --mark {self.mark:#x}/{self.mask:#x}  # {self.uplink}: {self.why}"


class ConntrackFlushes(Kind[tuple[int, int], ConntrackFlush]):
    name = "conntrack-flush"
    type = ConntrackFlush
    create_stage = Stage.FLUSH
    delete_stage = Stage.FLUSH
    action = True

    def key(self, obj: ConntrackFlush) -> tuple[int, int]:
        return (obj.mark, obj.mask)

    def render(self, verb: Verb, obj: ConntrackFlush) -> str:
        return str(obj)

    async def write(self, io: Transport, verb: Verb, obj: ConntrackFlush, owner: Ownership) -> None:
        await io.conntrack_flush(mark=obj.mark, mask=obj.mask)


KIND = ConntrackFlushes()
