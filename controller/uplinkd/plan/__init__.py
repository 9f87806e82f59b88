"""From config and facts to the kernel state we want, and from there to operations.

Pure: every function here computes and returns; nothing reads the clock or the kernel,
nothing writes. `desired()` says what the kernel should hold (a merge of contributors:
`uplinks`, `balance`, `nft`); `diff()` says how to get there from what it holds, as an
ordered, immutable `Plan`; `failover` adds the conntrack flushes a failure calls for.
The kernel layout is described in `layout`.
"""

from uplinkd.model import Op
from uplinkd.plan.balance import balance_members
from uplinkd.plan.desired import CONTRIBUTORS, ConflictError, Intent, desired, merge
from uplinkd.plan.diff import Plan, diff, teardown
from uplinkd.plan.facts import Contribution, Contributor, Facts, Survey, Way
from uplinkd.plan.failover import ADOPTED, FAILED, adopt, failover, step, verdicts
from uplinkd.plan.layout import (
    BAND_BALANCE,
    BAND_FROM,
    BAND_FWMARK,
    BAND_POLICY,
    BAND_SUPPRESS,
    MAIN_TABLE,
    group_id,
    nexthop_id,
    owns_nexthop,
    policy_group_id,
)
from uplinkd.plan.uplinks import assign_links, link_matches, survey

__all__ = [
    "ADOPTED",
    "BAND_BALANCE",
    "BAND_FROM",
    "BAND_FWMARK",
    "BAND_POLICY",
    "BAND_SUPPRESS",
    "CONTRIBUTORS",
    "FAILED",
    "MAIN_TABLE",
    "ConflictError",
    "Contribution",
    "Contributor",
    "Facts",
    "Intent",
    "Op",
    "Plan",
    "Survey",
    "Way",
    "adopt",
    "assign_links",
    "balance_members",
    "desired",
    "diff",
    "failover",
    "group_id",
    "link_matches",
    "merge",
    "nexthop_id",
    "owns_nexthop",
    "policy_group_id",
    "step",
    "survey",
    "teardown",
    "verdicts",
]
