"""Typed rtnetlink layer for Linux nexthop objects and ``nhid`` routes.

pyroute2 0.9 has no message class for nexthop objects (``RTM_*NEXTHOP``,
``include/uapi/linux/nexthop.h``) and its ``rtmsg`` stops at ``RTA_EXPIRES``,
so it can neither write nor decode ``RTA_NH_ID``.  This module adds both on top
of pyroute2's own netlink framework (message classes with ``fields`` and
``nla_map``, requests through ``nlm_request``), keeping the class definitions
in pyroute2 style so that they could be upstreamed as they are:

* :class:`nhmsg` -- ``struct nhmsg`` and the ``NHA_*`` attributes;
* :class:`rtmsg_ext` -- pyroute2's ``rtmsg`` plus ``RTA_PAD`` .. ``RTA_FLOWLABEL``.

The rest of uplinkd only sees the frozen dataclasses (:class:`NexthopInfo`,
:class:`GroupMember`, :class:`ResilientParams`, :class:`RouteInfo`) and the
async helpers, which take a pyroute2 ``AsyncIPRoute``.

Kernel behaviour worth knowing (verified on Linux 6.18):

* ``struct nhmsg.nh_scope`` is output only; a request with a non-zero scope is
  rejected.  The kernel picks the scope itself (IPv4: ``link`` for a nexthop
  with a gateway, ``host`` for a device-only one).  The only flag a request may
  carry is ``RTNH_F_ONLINK``.  The device must be up with carrier (ENETDOWN).
* A resilient group needs NHA_RES_GROUP_BUCKETS when it is created (there is
  no default; iproute2 without ``buckets`` gets EINVAL); the timers default to
  120 s idle / 0 s unbalanced.
* A group can only be replaced by a group of the same type (mpath stays mpath,
  resilient stays resilient; otherwise ``EINVAL``, "Can not replace a nexthop
  group with one of a different type").  A resilient group's bucket count is
  fixed at creation: replacing it with another ``NHA_RES_GROUP_BUCKETS`` value
  fails with ``EINVAL``; the same value or no value is accepted, and the idle
  and unbalanced timers may change on replace.
* When a nexthop's device goes down or loses carrier the kernel removes the
  nexthop, drops it from its groups, removes a group whose last member it was
  and the routes using them -- all *without* any RTM_DELNEXTHOP/RTM_DELROUTE
  notification (``nexthop_flush_dev()`` passes no ``nl_info``).  Only the link
  event tells; listeners must re-dump nexthops on carrier loss.
* An explicit RTM_DELNEXTHOP of a group member is notified as RTM_DELNEXTHOP
  for the member followed by RTM_NEWNEXTHOP for each group that kept other
  members (or RTM_DELNEXTHOP for a group that lost its last member).  IPv4
  routes that used a deleted nexthop/group disappear without RTM_DELROUTE.
* 16-bit weights (``weight_high``, Linux >= 6.12) are accepted by this kernel;
  iproute2 6.1 misprints weights above 256 (it only reads the low byte).
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from socket import AF_INET, AF_INET6, AF_UNSPEC
from typing import Any, Final, Literal

from pyroute2 import AsyncIPRoute
from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    nla,
    nla_string,
    nlmsg,
)
from pyroute2.netlink.nlsocket import NetlinkRequest
from pyroute2.netlink.rtnl.rtmsg import rtmsg, rtmsg_base

__all__ = [
    "NEXTHOP_GRP_TYPE_MPATH",
    "NEXTHOP_GRP_TYPE_RES",
    "RTA_NH_ID",
    "RTM_DELNEXTHOP",
    "RTM_GETNEXTHOP",
    "RTM_NEWNEXTHOP",
    "RTNH_F_DEAD",
    "RTNH_F_LINKDOWN",
    "RTNH_F_OFFLOAD",
    "RTNH_F_ONLINK",
    "RTNH_F_TRAP",
    "RTNLGRP_IPV4_IFADDR",
    "RTNLGRP_IPV4_ROUTE",
    "RTNLGRP_IPV4_RULE",
    "RTNLGRP_IPV6_IFADDR",
    "RTNLGRP_IPV6_ROUTE",
    "RTNLGRP_IPV6_RULE",
    "RTNLGRP_LINK",
    "RTNLGRP_NEXTHOP",
    "RTN_BLACKHOLE",
    "RTN_UNICAST",
    "RT_SCOPE_LINK",
    "RT_SCOPE_UNIVERSE",
    "RT_TABLE_MAIN",
    "USER_HZ",
    "GroupMember",
    "GroupType",
    "NexthopInfo",
    "ResilientParams",
    "RouteInfo",
    "decode_nexthop",
    "decode_route",
    "delete_nexthop",
    "delete_route",
    "dump_nexthops",
    "dump_routes",
    "get_nexthop",
    "nhmsg",
    "register",
    "replace_group",
    "replace_nexthop",
    "replace_route",
    "rtmsg_ext",
    "subscribe",
]

# -- constants (include/uapi/linux/rtnetlink.h, nexthop.h) -----------------

RTM_NEWROUTE: Final = 24
RTM_DELROUTE: Final = 25
RTM_GETROUTE: Final = 26
RTM_NEWNEXTHOP: Final = 104
RTM_DELNEXTHOP: Final = 105
RTM_GETNEXTHOP: Final = 106

#: multicast groups (``enum rtnetlink_groups``); subscribe with :func:`subscribe`
RTNLGRP_LINK: Final = 1
RTNLGRP_IPV4_IFADDR: Final = 5
RTNLGRP_IPV4_ROUTE: Final = 7
RTNLGRP_IPV4_RULE: Final = 8
RTNLGRP_IPV6_IFADDR: Final = 9
RTNLGRP_IPV6_ROUTE: Final = 11
RTNLGRP_IPV6_RULE: Final = 19
RTNLGRP_NEXTHOP: Final = 32

#: ``struct nhmsg.nh_flags`` / ``rtmsg.rtm_flags`` bits (``RTNH_F_*``)
RTNH_F_DEAD: Final = 1
RTNH_F_PERVASIVE: Final = 2
RTNH_F_ONLINK: Final = 4
RTNH_F_OFFLOAD: Final = 8
RTNH_F_LINKDOWN: Final = 16
RTNH_F_UNRESOLVED: Final = 32
RTNH_F_TRAP: Final = 64

NEXTHOP_GRP_TYPE_MPATH: Final = 0
NEXTHOP_GRP_TYPE_RES: Final = 1

RTA_NH_ID: Final = 30

RT_SCOPE_UNIVERSE: Final = 0
RT_SCOPE_LINK: Final = 253
RTN_UNICAST: Final = 1
RTN_BLACKHOLE: Final = 6
RT_TABLE_COMPAT: Final = 252
RT_TABLE_MAIN: Final = 254

#: clock_t unit of NHA_RES_GROUP_* timers (the kernel reports in USER_HZ)
USER_HZ: Final = 100

#: nexthop_grp weights: ``weight`` holds (weight - 1) & 0xff, ``weight_high``
#: (Linux >= 6.12) holds (weight - 1) >> 8.  Older kernels reject weights > 256.
MAX_WEIGHT: Final = 65536
MAX_WEIGHT_U8: Final = 256

_LWTUNNEL_ENCAP_TYPE_NHA: Final = 7  # NHA_ENCAP_TYPE

_NEXTHOP_EVENTS: Final[dict[int, str]] = {
    RTM_NEWNEXTHOP: "RTM_NEWNEXTHOP",
    RTM_DELNEXTHOP: "RTM_DELNEXTHOP",
    RTM_GETNEXTHOP: "RTM_GETNEXTHOP",
}

# -- pyroute2 message classes -----------------------------------------------


class nhmsg(nlmsg):  # type: ignore[misc]
    """
    Nexthop object message

    C structure::

        struct nhmsg {
            unsigned char nh_family;
            unsigned char nh_scope;     /* return only */
            unsigned char nh_protocol;  /* Routing protocol that installed nh */
            unsigned char resvd;
            unsigned int  nh_flags;     /* RTNH_F flags */
        };

    ``NHA_GROUP`` is encoded from / decoded to a list of
    ``{'id': int, 'weight': int}`` with the real weight (1 .. 65536); the
    kernel's ``weight - 1`` / ``weight_high`` split is handled here.
    """

    __slots__ = ()

    prefix = "NHA_"

    fields = (
        ("family", "B"),
        ("scope", "B"),
        ("protocol", "B"),
        ("resvd", "B"),
        ("flags", "I"),
    )

    nla_map = (
        (0, "NHA_UNSPEC", "none"),
        (1, "NHA_ID", "uint32"),
        (2, "NHA_GROUP", "nh_grp"),
        (3, "NHA_GROUP_TYPE", "uint16"),
        (4, "NHA_BLACKHOLE", "flag"),
        (5, "NHA_OIF", "uint32"),
        (6, "NHA_GATEWAY", "target"),
        (7, "NHA_ENCAP_TYPE", "uint16"),
        (8, "NHA_ENCAP", "encap_info"),
        (9, "NHA_GROUPS", "flag"),
        (10, "NHA_MASTER", "uint32"),
        (11, "NHA_FDB", "flag"),
        (12, "NHA_RES_GROUP", "res_group|nested"),
        (13, "NHA_RES_BUCKET", "res_bucket|nested"),
        (14, "NHA_OP_FLAGS", "uint32"),
        (15, "NHA_GROUP_STATS", "group_stats|nested"),
        (16, "NHA_HW_STATS_ENABLE", "uint32"),
        (17, "NHA_HW_STATS_USED", "uint32"),
    )

    def decode(self) -> None:
        super().decode()
        event = _NEXTHOP_EVENTS.get(self["header"].get("type"))
        if event is not None:
            # pyroute2's MarshalRtnl.fix_message() only knows RTM_VALUES
            self["event"] = event

    class nh_grp(nla_string):  # type: ignore[misc]
        """Array of ``struct nexthop_grp {u32 id; u8 weight; u8 weight_high;
        u16 resvd2}``."""

        __slots__ = ()
        _fmt = "=IBBH"

        def encode(self) -> None:
            data = b""
            for entry in self.value:
                if isinstance(entry, dict):
                    nh_id, weight = entry["id"], entry.get("weight", 1)
                else:
                    nh_id, weight = entry
                if not 1 <= weight <= MAX_WEIGHT:
                    raise ValueError(f"nexthop weight {weight} out of 1..{MAX_WEIGHT}")
                raw = weight - 1
                data += struct.pack(self._fmt, nh_id, raw & 0xFF, raw >> 8, 0)
            self["value"] = data
            nla_string.encode(self)

        def decode(self) -> None:
            nla_string.decode(self)
            size = struct.calcsize(self._fmt)
            data = self["value"]
            entries = []
            for offset in range(0, len(data) - size + 1, size):
                nh_id, low, high, _ = struct.unpack_from(self._fmt, data, offset)
                entries.append({"id": nh_id, "weight": ((high << 8) | low) + 1})
            self.setvalue(entries)

    class res_group(nla):  # type: ignore[misc]
        __slots__ = ()
        prefix = "NHA_RES_GROUP_"
        nla_map = (
            (0, "NHA_RES_GROUP_PAD", "none"),
            (1, "NHA_RES_GROUP_BUCKETS", "uint16"),
            (2, "NHA_RES_GROUP_IDLE_TIMER", "uint32"),  # clock_t
            (3, "NHA_RES_GROUP_UNBALANCED_TIMER", "uint32"),  # clock_t
            (4, "NHA_RES_GROUP_UNBALANCED_TIME", "uint64"),  # clock_t, output only
        )

    class res_bucket(nla):  # type: ignore[misc]
        __slots__ = ()
        prefix = "NHA_RES_BUCKET_"
        nla_map = (
            (0, "NHA_RES_BUCKET_PAD", "none"),
            (1, "NHA_RES_BUCKET_INDEX", "uint16"),
            (2, "NHA_RES_BUCKET_IDLE_TIME", "uint64"),  # clock_t
            (3, "NHA_RES_BUCKET_NH_ID", "uint32"),
        )

    class group_stats(nla):  # type: ignore[misc]
        __slots__ = ()
        prefix = "NHA_GROUP_STATS_"
        nla_map = (
            (0, "NHA_GROUP_STATS_UNSPEC", "none"),
            (1, "NHA_GROUP_STATS_ENTRY", "entry|nested"),
        )

        class entry(nla):  # type: ignore[misc]
            __slots__ = ()
            prefix = "NHA_GROUP_STATS_ENTRY_"
            nla_map = (
                (0, "NHA_GROUP_STATS_ENTRY_UNSPEC", "none"),
                (1, "NHA_GROUP_STATS_ENTRY_ID", "uint32"),
                (2, "NHA_GROUP_STATS_ENTRY_PACKETS", "uint"),
                (3, "NHA_GROUP_STATS_ENTRY_PACKETS_HW", "uint"),
            )

            class uint(nla_string):  # type: ignore[misc]
                """NLA_UINT: u32 or u64, by payload length."""

                __slots__ = ()

                def decode(self) -> None:
                    nla_string.decode(self)
                    self.setvalue(int.from_bytes(self["value"], sys.byteorder))

    @staticmethod
    def encap_info(msg: Any, *argv: Any, **kwarg: Any) -> Any:
        """Pick the lwtunnel class for NHA_ENCAP by NHA_ENCAP_TYPE.

        The kernel emits NHA_ENCAP *before* NHA_ENCAP_TYPE, so on decode the
        rest of the chain is scanned (as pyroute2's rtmsg does for RTA_ENCAP).
        """
        encap_type = None
        for name, value in msg["attrs"]:
            if name == "NHA_ENCAP_TYPE":
                encap_type = value
                break
        else:
            data = kwarg.get("data")
            offset = kwarg.get("offset")
            if data is not None and offset is not None:
                while offset + 4 <= len(data):
                    length, nla_type = struct.unpack_from("HH", data, offset)
                    if length < 4:
                        break
                    if nla_type == _LWTUNNEL_ENCAP_TYPE_NHA and length >= 6:
                        (encap_type,) = struct.unpack_from("H", data, offset + 4)
                        break
                    offset += (length + 3) & ~3
        return rtmsg_base.encaps.get(encap_type, msg.hex)


class rtmsg_ext(rtmsg):  # type: ignore[misc]
    """
    pyroute2's ``rtmsg`` with the route attributes after RTA_EXPIRES::

        RTA_PAD           24
        RTA_UID           25  u32
        RTA_TTL_PROPAGATE 26  u8
        RTA_IP_PROTO      27  u8
        RTA_SPORT         28  be16
        RTA_DPORT         29  be16
        RTA_NH_ID         30  u32
        RTA_FLOWLABEL     31  be32

    (``RTA_EXPIRES`` is kept as pyroute2 declares it.)
    """

    __slots__ = ()

    # pyroute2 marks an nla_map compiled with a class attribute that a subclass
    # inherits: without this reset, a subclass created after the first rtmsg()
    # instance would silently use rtmsg's compiled tables (no RTA_NH_ID).
    _nlmsg_base__compiled_nla = False

    nla_map = tuple(
        (key, name, spec)
        for key, (name, spec) in sorted(
            {
                **{i: tuple(item[:2]) for i, item in enumerate(rtmsg.nla_map)},
                24: ("RTA_PAD", "none"),
                25: ("RTA_UID", "uint32"),
                26: ("RTA_TTL_PROPAGATE", "uint8"),
                27: ("RTA_IP_PROTO", "uint8"),
                28: ("RTA_SPORT", "be16"),
                29: ("RTA_DPORT", "be16"),
                30: ("RTA_NH_ID", "uint32"),
                31: ("RTA_FLOWLABEL", "be32"),
            }.items()
        )
    )


# -- what the rest of uplinkd sees -------------------------------------------

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


# -- decoding -------------------------------------------------------------------


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


# -- socket plumbing ----------------------------------------------------------------

_POLICY: Final[dict[int, type]] = {
    RTM_NEWNEXTHOP: nhmsg,
    RTM_DELNEXTHOP: nhmsg,
    RTM_GETNEXTHOP: nhmsg,
    RTM_NEWROUTE: rtmsg_ext,
    RTM_DELROUTE: rtmsg_ext,
    RTM_GETROUTE: rtmsg_ext,
}


def register(ipr: AsyncIPRoute) -> None:
    """Make the socket's marshal parse nexthop messages with :class:`nhmsg` and
    route messages with :class:`rtmsg_ext` (dump replies and events alike).

    Works on ``AsyncIPRoute`` and on the sync ``IPRoute``; idempotent.  The
    marshal's ``msg_map`` is per socket, pyroute2's globals are not touched.
    """
    ipr.register_policy(dict(_POLICY))


async def subscribe(ipr: AsyncIPRoute, groups: Iterable[int]) -> None:
    """Join rtnetlink multicast groups (``RTNLGRP_*`` numbers, not masks).

    The ``bind()`` bitmask only reaches groups 1..32 (group N is bit N-1, so
    RTNLGRP_NEXTHOP=32 is bit 31, but e.g. RTNLGRP_BRVLAN=33 is out of reach);
    all groups are therefore joined with
    ``setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP)``.  The socket
    is bound first (without groups) unless it already has a port id: a netlink
    socket with port id 0 is skipped by kernel broadcasts.  Also registers the
    nexthop/route message classes, so ``ipr.get()`` yields decoded events.

    Prefer a dedicated socket for events: the kernel stamps a notification with
    the sequence number of the request that caused it, and pyroute2 routes
    incoming messages by sequence number, so a notification can land in the
    queue of a pending request that happens to use the same number.  The write
    helpers here cope with their own notifications (see ``_request_ack``);
    dumps and pyroute2's own methods do not.
    """
    register(ipr)
    await ipr.setup_endpoint()
    port_id, _ = ipr.socket.getsockname()
    if port_id == 0:
        await ipr.bind(groups=0)
    for group in groups:
        ipr.add_membership(int(group))


async def _request_ack(ipr: AsyncIPRoute, msg: Any, msg_type: int, msg_flags: int) -> None:
    """Send a request with NLM_F_ACK and wait for the ACK (or raise NetlinkError).

    Unlike ``nlm_request()``, this keeps reading until the ACK: on a socket that
    is also subscribed to the affected multicast group, the kernel's
    notification for this very change carries the request's sequence number
    and arrives *before* the ACK; pyroute2 would take it for the reply and
    leave the ACK to pop up later among the events.  Such a notification is
    put back on the socket's event queue (tag 0), where ``ipr.get()`` finds it.
    """
    register(ipr)
    request = NetlinkRequest(ipr, msg, msg_type=msg_type, msg_flags=msg_flags)
    await request.send()
    try:
        acked = False
        while not acked:
            async for reply in ipr.get(msg_seq=request.msg_seq):
                if reply["header"]["type"] == NLMSG_ERROR:
                    acked = True
                else:
                    raw = bytes(reply.data[reply.offset : reply.offset + reply.length])
                    ipr.msg_queue.put_nowait(0, raw)
    finally:
        request.cleanup()


async def _request_dump(ipr: AsyncIPRoute, msg: Any, msg_type: int) -> list[Any]:
    register(ipr)
    return [
        reply
        async for reply in await ipr.nlm_request(msg, msg_type=msg_type, msg_flags=NLM_F_REQUEST | NLM_F_DUMP)
    ]


_REPLACE: Final = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE

# -- nexthops -------------------------------------------------------------------------


async def dump_nexthops(ipr: AsyncIPRoute, *, family: int = AF_UNSPEC) -> list[NexthopInfo]:
    """All nexthop objects (``family`` filters; groups have family AF_UNSPEC)."""
    msg = nhmsg()
    msg["family"] = family
    return [
        decode_nexthop(reply)
        for reply in await _request_dump(ipr, msg, RTM_GETNEXTHOP)
        if reply["header"]["type"] == RTM_NEWNEXTHOP
    ]


async def get_nexthop(ipr: AsyncIPRoute, *, id: int) -> NexthopInfo:
    """One nexthop object; NetlinkError(ENOENT) if there is none."""
    msg = nhmsg()
    msg["attrs"] = [["NHA_ID", id]]
    register(ipr)
    replies = [
        reply
        async for reply in await ipr.nlm_request(msg, msg_type=RTM_GETNEXTHOP, msg_flags=NLM_F_REQUEST)
        if reply["header"]["type"] == RTM_NEWNEXTHOP
    ]
    return decode_nexthop(replies[0])


async def replace_nexthop(
    ipr: AsyncIPRoute,
    *,
    id: int,
    family: int,
    oif: int,
    gateway: str | None,
    protocol: int,
    onlink: bool = False,
) -> None:
    """Create or replace a single nexthop (NLM_F_CREATE | NLM_F_REPLACE).

    ``gateway=None`` makes a device-only nexthop (the kernel reports scope
    host for it).  The device must be up with carrier, else ENETDOWN.
    Replacing keeps the id, so groups and routes using it stay.
    """
    if family not in (AF_INET, AF_INET6):
        raise ValueError(f"nexthop family must be AF_INET or AF_INET6, not {family}")
    msg = nhmsg()
    msg["family"] = family
    msg["protocol"] = protocol
    msg["flags"] = RTNH_F_ONLINK if onlink else 0
    attrs: list[list[object]] = [["NHA_ID", id], ["NHA_OIF", oif]]
    if gateway is not None:
        attrs.append(["NHA_GATEWAY", gateway])
    msg["attrs"] = attrs
    await _request_ack(ipr, msg, RTM_NEWNEXTHOP, _REPLACE)


async def replace_group(
    ipr: AsyncIPRoute,
    *,
    id: int,
    members: Sequence[GroupMember],
    resilient: ResilientParams | None,
    protocol: int,
) -> None:
    """Create or replace a nexthop group (mpath if ``resilient`` is None).

    A replace keeps the group id (routes using it stay) but cannot change the
    group type, nor a resilient group's bucket count (both EINVAL).  The
    bucket count is always sent, so pass the group's current value.
    """
    if not members:
        raise ValueError("a nexthop group needs at least one member")
    msg = nhmsg()
    msg["family"] = AF_UNSPEC
    msg["protocol"] = protocol
    attrs: list[list[object]] = [
        ["NHA_ID", id],
        ["NHA_GROUP", [{"id": m.id, "weight": m.weight} for m in members]],
        [
            "NHA_GROUP_TYPE",
            NEXTHOP_GRP_TYPE_MPATH if resilient is None else NEXTHOP_GRP_TYPE_RES,
        ],
    ]
    if resilient is not None:
        attrs.append(
            [
                "NHA_RES_GROUP",
                {
                    "attrs": [
                        ["NHA_RES_GROUP_BUCKETS", resilient.buckets],
                        ["NHA_RES_GROUP_IDLE_TIMER", round(resilient.idle_timer * USER_HZ)],
                        [
                            "NHA_RES_GROUP_UNBALANCED_TIMER",
                            round(resilient.unbalanced_timer * USER_HZ),
                        ],
                    ]
                },
            ]
        )
    msg["attrs"] = attrs
    await _request_ack(ipr, msg, RTM_NEWNEXTHOP, _REPLACE)


async def delete_nexthop(ipr: AsyncIPRoute, *, id: int) -> None:
    """Delete a nexthop object (routes using it go with it); ENOENT if absent."""
    msg = nhmsg()
    msg["attrs"] = [["NHA_ID", id]]
    await _request_ack(ipr, msg, RTM_DELNEXTHOP, NLM_F_REQUEST | NLM_F_ACK)


# -- routes ------------------------------------------------------------------------------


def _route_msg(
    *,
    family: int,
    table: int,
    dst: str | None,
    dst_len: int,
    protocol: int = 0,
    scope: int = RT_SCOPE_UNIVERSE,
    route_type: int = RTN_UNICAST,
) -> Any:
    if family not in (AF_INET, AF_INET6):
        raise ValueError(f"route family must be AF_INET or AF_INET6, not {family}")
    if dst is None and dst_len != 0:
        raise ValueError("dst=None (default route) needs dst_len=0")
    msg = rtmsg_ext()
    msg["family"] = family
    msg["dst_len"] = dst_len
    msg["table"] = table if table < 256 else RT_TABLE_COMPAT
    msg["proto"] = protocol
    msg["scope"] = scope
    msg["type"] = route_type
    attrs: list[list[object]] = [["RTA_TABLE", table]]
    if dst is not None:
        attrs.append(["RTA_DST", dst])
    msg["attrs"] = attrs
    return msg


async def replace_route(
    ipr: AsyncIPRoute,
    *,
    family: int,
    table: int,
    dst: str | None,
    dst_len: int,
    protocol: int,
    nhid: int | None = None,
    oif: int | None = None,
    gateway: str | None = None,
    priority: int | None = None,
    route_type: int = RTN_UNICAST,
    scope: int = RT_SCOPE_UNIVERSE,
    exclusive: bool = False,
) -> None:
    """Create or replace a route (NLM_F_CREATE | NLM_F_REPLACE); with ``exclusive``,
    only create it (NLM_F_EXCL): EEXIST instead of taking over a route already there.

    Either ``nhid`` (a nexthop object or group) or ``oif``/``gateway``; the
    kernel refuses to combine RTA_NH_ID with RTA_OIF/RTA_GATEWAY.
    """
    if nhid is not None and (oif is not None or gateway is not None):
        raise ValueError("nhid excludes oif and gateway")
    msg = _route_msg(
        family=family,
        table=table,
        dst=dst,
        dst_len=dst_len,
        protocol=protocol,
        scope=scope,
        route_type=route_type,
    )
    for name, value in (
        ("RTA_NH_ID", nhid),
        ("RTA_OIF", oif),
        ("RTA_GATEWAY", gateway),
        ("RTA_PRIORITY", priority),
    ):
        if value is not None:
            msg["attrs"].append([name, value])
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL if exclusive else _REPLACE
    await _request_ack(ipr, msg, RTM_NEWROUTE, flags)


async def delete_route(
    ipr: AsyncIPRoute,
    *,
    family: int,
    table: int,
    dst: str | None,
    dst_len: int,
    priority: int | None = None,
    protocol: int = 0,
) -> None:
    """Delete a route by table/dst/dst_len(/priority); with ``protocol``, only a route of
    that protocol (the kernel skips others); ESRCH if absent."""
    msg = _route_msg(family=family, table=table, dst=dst, dst_len=dst_len, protocol=protocol)
    msg["scope"] = 255  # RT_SCOPE_NOWHERE: match any scope
    msg["type"] = 0
    if priority is not None:
        msg["attrs"].append(["RTA_PRIORITY", priority])
    await _request_ack(ipr, msg, RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK)


async def dump_routes(ipr: AsyncIPRoute, *, family: int, table: int | None = None) -> list[RouteInfo]:
    """Routes of ``family`` (AF_UNSPEC: all), optionally of one table only."""
    msg = rtmsg_ext()
    msg["family"] = family
    routes = [
        decode_route(reply)
        for reply in await _request_dump(ipr, msg, RTM_GETROUTE)
        if reply["header"]["type"] == RTM_NEWROUTE
    ]
    return [route for route in routes if table is None or route.table == table]


async def get_route(
    ipr: AsyncIPRoute,
    *,
    family: int,
    dst: str,
    src: str | None = None,
    iif: int | None = None,
    mark: int | None = None,
    ip_proto: int | None = None,
    sport: int | None = None,
    dport: int | None = None,
    flags: int = 0,
) -> RouteInfo:
    """A real route lookup (``ip route get``), with the flow's fields so multipath and
    policy rules choose as they would for that flow. ``flags`` are rtm_flags, e.g.
    RTM_F_LOOKUP_TABLE (0x1000) to have the kernel report the table it used."""
    bits = 32 if family == AF_INET else 128
    msg = rtmsg_ext()
    msg["family"] = family
    msg["dst_len"] = bits
    msg["flags"] = flags
    attrs: list[list[object]] = [["RTA_DST", dst]]
    if src is not None:
        msg["src_len"] = bits
        attrs.append(["RTA_SRC", src])
    for name, value in (
        ("RTA_IIF", iif),
        ("RTA_MARK", mark),
        ("RTA_IP_PROTO", ip_proto),
        ("RTA_SPORT", sport),
        ("RTA_DPORT", dport),
    ):
        if value is not None:
            attrs.append([name, value])
    msg["attrs"] = attrs
    register(ipr)
    replies = [
        reply
        async for reply in await ipr.nlm_request(msg, msg_type=RTM_GETROUTE, msg_flags=NLM_F_REQUEST)
        if reply["header"]["type"] == RTM_NEWROUTE
    ]
    if not replies:
        raise ValueError(f"no answer to a route lookup for {dst}")
    return decode_route(replies[0])
