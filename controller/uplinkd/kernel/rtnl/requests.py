"""What sends: rtnetlink requests for nexthop objects and routes, on a pyroute2 ``AsyncIPRoute``.

Each helper builds a message (:mod:`.messages`), sends it and, for reads, returns the
typed, frozen answer (:mod:`.decoders`).  :func:`register` makes a socket parse nexthop
and route messages with our classes; :func:`subscribe` joins multicast groups.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from socket import AF_INET, AF_INET6, AF_UNSPEC
from typing import Any, Final

from pyroute2 import AsyncIPRoute
from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_ERROR,
)
from pyroute2.netlink.nlsocket import NetlinkRequest
from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_GETROUTE, RTM_NEWROUTE

from uplinkd.kernel.rtnl.decoders import (
    GroupMember,
    NexthopInfo,
    ResilientParams,
    RouteInfo,
    decode_nexthop,
    decode_route,
)
from uplinkd.kernel.rtnl.messages import (
    NEXTHOP_GRP_TYPE_MPATH,
    NEXTHOP_GRP_TYPE_RES,
    RTM_DELNEXTHOP,
    RTM_GETNEXTHOP,
    RTM_NEWNEXTHOP,
    nhmsg,
    rtmsg_ext,
)
from uplinkd.linux import (
    RT_SCOPE_NOWHERE,
    RT_SCOPE_UNIVERSE,
    RT_TABLE_COMPAT,
    RTN_UNICAST,
    RTNH_F_ONLINK,
    USER_HZ,
)

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
    msg["scope"] = RT_SCOPE_NOWHERE  # match any scope
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
