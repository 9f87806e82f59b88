"""Values the planner reasons about: observed facts, uplink states, and the kernel objects
the controller owns (one module per kind in `kinds/`, collected in a `KernelState`).

Everything here is a frozen value. Kernel objects have an explicit identity (`key`) apart
from their attributes, so "what exists" and "what differs" are plain set operations in
`plan.diff`. `str(obj)` is the object in `ip` syntax; `str(Op)` is the write, as logged.
"""

from uplinkd.model.kinds import (
    ADDRESSES,
    CONNTRACK,
    FDB,
    GROUPS,
    KINDS,
    LINK_TUNING,
    LINKS_UP,
    NEXTHOPS,
    NFT,
    ROUTES,
    RULES,
    VXLAN,
)
from uplinkd.model.kinds.addresses import StaticAddr
from uplinkd.model.kinds.base import Kind, Op, Stage, Verb, kind_of
from uplinkd.model.kinds.conntrack import ConntrackFlush
from uplinkd.model.kinds.groups import Member, NexthopGroup
from uplinkd.model.kinds.io import Snapshot, Transport
from uplinkd.model.kinds.links import LinkUp
from uplinkd.model.kinds.nexthops import Nexthop
from uplinkd.model.kinds.nft import (
    NftDelegated,
    NftIpv6,
    NftPrefix,
    NftState,
    NftSteer,
    NftTranslation,
    NftUplink,
)
from uplinkd.model.kinds.routes import Route, RouteKey, RouteType
from uplinkd.model.kinds.rules import Rule
from uplinkd.model.kinds.tuning import LinkTuning
from uplinkd.model.net import (
    AF_INET,
    AF_INET6,
    FAMILIES,
    IPAddress,
    IPInterface,
    IPNetwork,
    any_net,
    fam,
)
from uplinkd.model.observed import Addr, Bearer, BearerIp, Delegation, Gateway, Lease, Lease6, Link, Observed
from uplinkd.model.state import KernelState
from uplinkd.model.uplinks import Health, HealthVerdict, State, UplinkStatus

__all__ = [
    "ADDRESSES",
    "AF_INET",
    "AF_INET6",
    "CONNTRACK",
    "FAMILIES",
    "FDB",
    "GROUPS",
    "KINDS",
    "LINKS_UP",
    "LINK_TUNING",
    "NEXTHOPS",
    "NFT",
    "ROUTES",
    "RULES",
    "VXLAN",
    "Addr",
    "Bearer",
    "BearerIp",
    "ConntrackFlush",
    "Delegation",
    "Gateway",
    "Health",
    "HealthVerdict",
    "IPAddress",
    "IPInterface",
    "IPNetwork",
    "KernelState",
    "Kind",
    "Lease",
    "Lease6",
    "Link",
    "LinkTuning",
    "LinkUp",
    "Member",
    "Nexthop",
    "NexthopGroup",
    "NftDelegated",
    "NftIpv6",
    "NftPrefix",
    "NftState",
    "NftSteer",
    "NftTranslation",
    "NftUplink",
    "Observed",
    "Op",
    "Route",
    "RouteKey",
    "RouteType",
    "Rule",
    "Snapshot",
    "Stage",
    "State",
    "StaticAddr",
    "Transport",
    "UplinkStatus",
    "Verb",
    "any_net",
    "fam",
    "kind_of",
]
