"""What the rest of uplinkd sees of rtnetlink: frozen, typed nexthops and routes.

:func:`decode_nexthop` and :func:`decode_route` turn a message (a dump reply or an event,
parsed by the classes in :mod:`.messages`) into :class:`NexthopInfo` / :class:`RouteInfo`.
Computes, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from uplinkd.kernel.rtnl.messages import (
    MAX_WEIGHT,
    NEXTHOP_GRP_TYPE_MPATH,
    NEXTHOP_GRP_TYPE_RES,
    nhmsg,
    rtmsg_ext,
)
from uplinkd.linux import RTNH_F_DEAD, RTNH_F_LINKDOWN, RTNH_F_ONLINK, USER_HZ

GroupType = Literal["mpath", "resilient"]


@dataclass(frozen=True, slots=True)
class GroupMember:
    """One entry of a nexthop group; ``weight`` is the real weight (>= 1)."""

    id: int
    weight: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.id <= 0xFFFFFFFF:
            raise ValueError(f"nexthop id {self.id} out of range")
        if not 1 <= self.weight <= MAX_WEIGHT:
            raise ValueError(f"nexthop weight {self.weight} out of 1..{MAX_WEIGHT}")


@dataclass(frozen=True, slots=True)
class ResilientParams:
    """Resilient group parameters; timers in seconds (kernel: clock_t, 1/100 s).

    ``unbalanced_timer=0`` lets a group stay unbalanced indefinitely (only idle
    buckets migrate).  The bucket count is fixed once the group exists.  The
    defaults are iproute2's documented ones (the kernel requires the bucket
    count on creation, timers default to 120 s / 0 s there).
    """

    buckets: int = 128
    idle_timer: float = 120.0
    unbalanced_timer: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.buckets <= 0xFFFF:
            raise ValueError(f"bucket count {self.buckets} out of 1..65535")
        if self.idle_timer < 0 or self.unbalanced_timer < 0:
            raise ValueError("resilient timers must be >= 0")


@dataclass(frozen=True, slots=True)
class NexthopInfo:
    """A nexthop object as the kernel reports it."""

    id: int
    family: int
    protocol: int
    oif: int | None
    gateway: str | None
    blackhole: bool
    flags: int
    group: tuple[GroupMember, ...]
    group_type: GroupType | None
    resilient: ResilientParams | None

    @property
    def is_group(self) -> bool:
        return self.group_type is not None

    @property
    def dead(self) -> bool:
        return bool(self.flags & RTNH_F_DEAD)

    @property
    def linkdown(self) -> bool:
        return bool(self.flags & RTNH_F_LINKDOWN)

    @property
    def onlink(self) -> bool:
        return bool(self.flags & RTNH_F_ONLINK)


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """A route as the kernel reports it (``dst=None`` is the default route)."""

    family: int
    table: int
    dst: str | None
    dst_len: int
    protocol: int
    scope: int
    type: int
    flags: int
    priority: int | None
    oif: int | None
    gateway: str | None
    nhid: int | None
    prefsrc: str | None = None


# -- decoding ----------------------------------------------------------------------


def _opt_int(value: object) -> int | None:
    return None if value is None else int(str(value))


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def decode_nexthop(msg: nhmsg) -> NexthopInfo:
    """Decode an RTM_NEWNEXTHOP/RTM_DELNEXTHOP message (dump reply or event)."""
    group = tuple(
        GroupMember(id=int(entry["id"]), weight=int(entry["weight"]))
        for entry in msg.get_attr("NHA_GROUP") or ()
    )
    group_type: GroupType | None = None
    resilient: ResilientParams | None = None
    if group:
        raw_type = int(msg.get_attr("NHA_GROUP_TYPE") or NEXTHOP_GRP_TYPE_MPATH)
        group_type = "resilient" if raw_type == NEXTHOP_GRP_TYPE_RES else "mpath"
        res = msg.get_attr("NHA_RES_GROUP")
        if res is not None:
            resilient = ResilientParams(
                buckets=int(res.get_attr("NHA_RES_GROUP_BUCKETS") or 0) or 1,
                idle_timer=int(res.get_attr("NHA_RES_GROUP_IDLE_TIMER") or 0) / USER_HZ,
                unbalanced_timer=int(res.get_attr("NHA_RES_GROUP_UNBALANCED_TIMER") or 0) / USER_HZ,
            )
    return NexthopInfo(
        id=int(msg.get_attr("NHA_ID")),
        family=int(msg["family"]),
        protocol=int(msg["protocol"]),
        oif=_opt_int(msg.get_attr("NHA_OIF")),
        gateway=_opt_str(msg.get_attr("NHA_GATEWAY")),
        blackhole=msg.get_attr("NHA_BLACKHOLE") is not None,
        flags=int(msg["flags"]),
        group=group,
        group_type=group_type,
        resilient=resilient,
    )


def decode_route(msg: rtmsg_ext) -> RouteInfo:
    """Decode an RTM_NEWROUTE/RTM_DELROUTE message (dump reply or event)."""
    table = msg.get_attr("RTA_TABLE")
    return RouteInfo(
        family=int(msg["family"]),
        table=int(table if table is not None else msg["table"]),
        dst=_opt_str(msg.get_attr("RTA_DST")),
        dst_len=int(msg["dst_len"]),
        protocol=int(msg["proto"]),
        scope=int(msg["scope"]),
        type=int(msg["type"]),
        flags=int(msg["flags"]),
        priority=_opt_int(msg.get_attr("RTA_PRIORITY")),
        oif=_opt_int(msg.get_attr("RTA_OIF")),
        gateway=_opt_str(msg.get_attr("RTA_GATEWAY")),
        nhid=_opt_int(msg.get_attr("RTA_NH_ID")),
        prefsrc=_opt_str(msg.get_attr("RTA_PREFSRC")),
    )
