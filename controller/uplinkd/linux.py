"""The Linux numbers uplinkd reads and writes, and their names in `ip` syntax: defined here once.

From the kernel's UAPI headers (linux/netlink.h, rtnetlink.h, fib_rules.h, if.h,
netfilter/nfnetlink.h). Pure data and two rendering helpers, no imports: the config, the
model (which renders objects in `ip` syntax), the kernel reader/writer and the listeners
all take them from here. The nexthop message's own wire numbers (RTM_*NEXTHOP, NHA_*, the
group weight encoding) stay with its message class in `kernel/rtnl/messages.py`, which
stands alone so that it can be offered to pyroute2.
"""

from __future__ import annotations

from typing import Final

# --- netlink sockets (linux/netlink.h, netfilter/nfnetlink.h) ----------------------------------

NETLINK_ROUTE: Final = 0
NETLINK_NETFILTER: Final = 12
SOL_NETLINK: Final = 270
NETLINK_ADD_MEMBERSHIP: Final = 1
#: nfnetlink group for nf_tables changes (a `flush ruleset` by someone else, for one)
NFNLGRP_NFTABLES: Final = 7

# --- rtnetlink multicast groups (enum rtnetlink_groups): numbers, not bind() masks ---------------

RTNLGRP_LINK: Final = 1
RTNLGRP_IPV4_IFADDR: Final = 5
RTNLGRP_IPV4_ROUTE: Final = 7
RTNLGRP_IPV4_RULE: Final = 8
RTNLGRP_IPV6_IFADDR: Final = 9
RTNLGRP_IPV6_ROUTE: Final = 11
RTNLGRP_IPV6_RULE: Final = 19
RTNLGRP_NEXTHOP: Final = 32

# --- routes (rtnetlink.h) ----------------------------------------------------------------------

#: route types (rtmsg.rtm_type)
RTN_UNICAST: Final = 1
RTN_LOCAL: Final = 2
RTN_BROADCAST: Final = 3
RTN_BLACKHOLE: Final = 6
RTN_UNREACHABLE: Final = 7
RTN_PROHIBIT: Final = 8
RTN_NAMES: Final = {
    RTN_UNICAST: "unicast",
    RTN_LOCAL: "local",
    RTN_BROADCAST: "broadcast",
    RTN_BLACKHOLE: "blackhole",
    RTN_UNREACHABLE: "unreachable",
    RTN_PROHIBIT: "prohibit",
}
#: types whose route refuses the packet
RTN_REFUSING: Final = frozenset({RTN_BLACKHOLE, RTN_UNREACHABLE, RTN_PROHIBIT})

#: scopes (rtmsg.rtm_scope); NOWHERE in a delete request matches any scope
RT_SCOPE_UNIVERSE: Final = 0
RT_SCOPE_LINK: Final = 253
RT_SCOPE_NOWHERE: Final = 255

#: tables; ids above 255 travel in RTA_TABLE, with rtm_table = RT_TABLE_COMPAT
RT_TABLE_UNSPEC: Final = 0
RT_TABLE_COMPAT: Final = 252
RT_TABLE_DEFAULT: Final = 253
RT_TABLE_MAIN: Final = 254
RT_TABLE_LOCAL: Final = 255
#: the tables the kernel reserves, by the names `ip` gives them
RESERVED_TABLES: Final = {
    RT_TABLE_UNSPEC: "unspec",
    RT_TABLE_DEFAULT: "default",
    RT_TABLE_MAIN: "main",
    RT_TABLE_LOCAL: "local",
}

#: rtmsg.rtm_flags for RTM_GETROUTE: report the table the lookup used
RTM_F_LOOKUP_TABLE: Final = 0x1000

#: nexthop flags (rtnh_flags, nhmsg.nh_flags)
RTNH_F_DEAD: Final = 1
RTNH_F_PERVASIVE: Final = 2
RTNH_F_ONLINK: Final = 4
RTNH_F_OFFLOAD: Final = 8
RTNH_F_LINKDOWN: Final = 16
RTNH_F_UNRESOLVED: Final = 32
RTNH_F_TRAP: Final = 64

#: the clock_t unit the kernel reports nexthop group timers in (1/100 s)
USER_HZ: Final = 100

# --- policy rules (fib_rules.h) ------------------------------------------------------------------

FR_ACT_TO_TBL: Final = 1
#: FRA_SUPPRESS_PREFIXLEN of a rule without suppress_prefixlength (-1 as u32)
FRA_NO_SUPPRESS: Final = 0xFFFFFFFF
#: FRA_FWMASK of a rule given a mark without a mask
FRA_FWMASK_ALL: Final = 0xFFFFFFFF

# --- links (if.h) --------------------------------------------------------------------------------

IFF_UP: Final = 0x1
IFF_POINTOPOINT: Final = 0x10
IFF_NOARP: Final = 0x80
IFF_LOWER_UP: Final = 0x10000


# --- `ip` syntax ---------------------------------------------------------------------------------


def table_name(table: int) -> str:
    """A table as `ip` names it: main, local, default, or its number."""
    named = table in (RT_TABLE_DEFAULT, RT_TABLE_MAIN, RT_TABLE_LOCAL)
    return RESERVED_TABLES[table] if named else str(table)


def fwmark_text(mark: int, mask: int | None) -> str:
    """A rule's `fwmark` selector as `ip rule` prints it (no mask: all 32 bits)."""
    return f"{mark:#x}/{FRA_FWMASK_ALL if mask is None else mask:#x}"
