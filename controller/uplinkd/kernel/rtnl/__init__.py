"""Typed rtnetlink for Linux nexthop objects and ``nhid`` routes, in three parts:

* :mod:`.messages` -- pyroute2 message classes (``nhmsg``, ``rtmsg_ext``); no uplinkd
  imports, ready to be offered to pyroute2 as they are;
* :mod:`.decoders` -- a message into a frozen :class:`NexthopInfo` / :class:`RouteInfo`;
* :mod:`.requests` -- what sends: dumps, replaces, deletes, lookups, subscriptions, on a
  pyroute2 ``AsyncIPRoute``.

The rest of uplinkd imports from here (``from uplinkd.kernel import rtnl``); the numbers
(``RTNLGRP_*``, ``RTN_*``, tables, ``RTNH_F_*``) come from :mod:`uplinkd.linux`.

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

from uplinkd.kernel.rtnl.decoders import (
    GroupMember,
    GroupType,
    NexthopInfo,
    ResilientParams,
    RouteInfo,
    decode_nexthop,
    decode_route,
)
from uplinkd.kernel.rtnl.messages import nhmsg, rtmsg_ext
from uplinkd.kernel.rtnl.requests import (
    delete_nexthop,
    delete_route,
    dump_nexthops,
    dump_routes,
    get_nexthop,
    get_route,
    register,
    replace_group,
    replace_nexthop,
    replace_route,
    subscribe,
)

__all__ = [
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
    "get_route",
    "nhmsg",
    "register",
    "replace_group",
    "replace_nexthop",
    "replace_route",
    "rtmsg_ext",
    "subscribe",
]
