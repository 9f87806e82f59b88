"""The kinds of kernel object the controller owns, one module each (see `base`).

This is the registry: adding a kind is its module plus its line below. The order is the
tie-break between kinds that share a stage, and the order `KernelState.read` reads them in.
"""

from __future__ import annotations

from uplinkd.model.kinds import (
    addresses,
    conntrack,
    fdb,
    groups,
    links,
    nexthops,
    nft,
    routes,
    rules,
    tuning,
    vxlan,
)
from uplinkd.model.kinds.base import register

LINKS_UP = links.KIND
LINK_TUNING = tuning.KIND
ADDRESSES = addresses.KIND
NFT = nft.KIND
NEXTHOPS = nexthops.KIND
GROUPS = groups.KIND
ROUTES = routes.KIND
RULES = rules.KIND
CONNTRACK = conntrack.KIND
VXLAN = vxlan.KIND
FDB = fdb.KIND

KINDS = register(
    VXLAN, LINKS_UP, LINK_TUNING, ADDRESSES, FDB, NFT, NEXTHOPS, GROUPS, ROUTES, RULES, CONNTRACK
)
