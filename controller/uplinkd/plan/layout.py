"""The kernel layout's numbers, derived from config: rule bands, nexthop and group ids.

For both address families, with P = rules.priority:

    P+0   lookup main suppress_prefixlength 0    connected/LAN routes win, main's defaults don't
    P+3   from <addr_s> lookup T_s               the router's own address on a VXLAN segment:
                                                 replies leave the way they came (source in,
                                                 source out), never by an uplink or the tunnel
    P+5   fwmark T/T lookup T_under              a tunnel's own UDP packets: its underlay choice
    P+10  fwmark M_u/MASK lookup T_u            pinned connections and probes
    P+12  from <delegated /64> lookup T_u       a delegate LAN's prefix: only its own uplink
    P+14  fwmark M_p/PMASK lookup T_route       a policy's new connections meet a tunnel first
    P+15  fwmark M_p/PMASK lookup T_p           new connections a steering rule gave policy p
    P+20  from <addr_u> lookup T_u              the router's own traffic from an uplink address
    P+25  lookup T_route                        LAN traffic into a tunnel (or unreachable)
    P+27  from <extended /64> lookup T_u        an `extend` LAN's IPv6 leaves by its uplink
    P+30  lookup T_balance                      new connections: resilient weighted ECMP

T_u holds `default via gw_u dev u` (or `default dev u`); T_balance holds `default nhid G`,
G a resilient group of the in-service uplinks' nexthops, or `unreachable default` when
none is usable, so nothing falls through to main's default routes. T_p (a policy's table)
is the same with the policy's chosen tier.

Nexthop ids: an uplink's nexthop is base + 2·T_u (+1 for IPv6); a policy's group is
base + 2·T_p (+1 for IPv6), and the balance group base (+1). Every table id is unique across
uplinks, policies and T_balance (the config refuses a repeat) and no table is 0, so the three
never collide, and all stay inside the owned range base .. base + 2^25.
"""

from __future__ import annotations

from uplinkd.config import Config
from uplinkd.model import AF_INET6
from uplinkd.model.kinds.io import owns_nexthop as _owns

MAIN_TABLE = 254
BAND_SUPPRESS, BAND_FWMARK, BAND_POLICY, BAND_FROM, BAND_BALANCE = 0, 10, 15, 20, 30
# Tunnels (plan/tunnels.py): a tunnel's own encrypted packets (fwmark T) go to its underlay
# table above the uplinks' fwmark and source rules (so a remembered source address cannot
# keep them on a dead uplink); LAN traffic meets the tunnel's route table before T_balance.
BAND_TUNNEL_UNDERLAY, BAND_TUNNEL_ROUTE = 5, 25
# An `extend` LAN's /64 (plan/extend.py): after the tunnels' route band, so a full tunnel
# (and its kill switch) takes it like all LAN traffic; before T_balance, whose group may
# lead out of an uplink that must not carry the prefix.
BAND_EXTEND = 27
# ... and LAN traffic a steering rule gave a policy meets the tunnel's route table just above
# the policy band: a policy picks among the uplinks for traffic the tunnels do not claim, it
# never takes traffic a full tunnel claims (or its kill switch refuses) around the tunnel.
BAND_TUNNEL_STEERED = 14
# A `delegate` LAN's /64 (plan/lan6.py) can leave only by the uplink that delegated it (the ISP
# routes it there and nowhere else): its source rule comes before the steering rules and the
# tunnels' route tables, so neither a policy nor a full tunnel sends it where it cannot go.
BAND_DELEGATED = 12
# VXLAN segments (plan/vxlan.py): the router's own address on a segment looks up the
# segment's table (its prefix, and default via the segment's router) before anything else.
BAND_SEGMENT_SOURCE = 3


def nexthop_id(config: Config, table: int, family: int) -> int:
    """An uplink's nexthop id: stable as long as its table is (base + 2*table + family bit)."""
    return config.kernel.nexthop_base + 2 * table + (family == AF_INET6)


def group_id(config: Config, family: int) -> int:
    return config.kernel.nexthop_base + (family == AF_INET6)


def policy_group_id(config: Config, policy: str, family: int) -> int:
    """A policy's group: the id its table would give an uplink (tables are unique)."""
    return nexthop_id(config, config.policies[policy].table, family)


def owns_nexthop(config: Config, nhid: int) -> bool:
    return _owns(config.kernel, nhid)
