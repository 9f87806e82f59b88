"""Tunnels: where a WireGuard tunnel's own packets go, and what LAN traffic goes into it.

Per tunnel and family, with P = rules.priority:

    P+5   fwmark T/T lookup T_under    the tunnel's encrypted UDP packets (wireguard-go and
                                       kernel WireGuard put the device's fwmark T on them)
    P+14  fwmark M_p/PMASK lookup T_route   traffic steered to policy p meets the tunnel before
                                       its policy's table (P+15): a policy chooses among the
                                       uplinks only what no tunnel route claims
    P+25  lookup T_route               LAN traffic meets the tunnel before T_balance

- T_under holds the underlay choice: `default via gw dev u` of the first healthy uplink of
  the preference list, or the balance group (`default nhid G`), or `unreachable default`. It
  never holds the tunnel itself (no loop, even with the endpoint inside AllowedIPs: the
  mark rule is looked up before any route into the tunnel) and never falls through to main.
  The rule sits above the uplinks' fwmark (P+10) and source (P+20) bands: neither a ct mark
  of the old uplink nor a source address WireGuard remembers can keep the packets on a dead
  uplink. When the carrying uplink fails, its conntrack entries (ct mark M_u, which the nft
  table gave the tunnel's flow when it left by u) are flushed with the others, so the next
  packet is routed and masqueraded afresh through the new choice. When the tunnel leaves an
  uplink that stays healthy, only the tunnel's own flow is flushed: the output hook adds the
  tunnel's bits T to its ct mark, and the flush matches M_u | T.
- T_route holds, while the tunnel is up, `default dev wg` (route `full`, for each family the
  tunnel carries) or the route's prefixes `dev wg`; while it is down, or for a family a full
  tunnel does not carry, `unreachable` for the same destinations when the kill switch is on
  (so LAN IPv6 cannot go round an IPv4-only tunnel over an uplink with native IPv6).

The tunnel's addresses (IFA_PROTO 77) and its link raised are wanted too. The interface
itself is the tunnel worker's (uplinkd.tunnels): wireguard-go or kernel WireGuard.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from uplinkd.config import DEFAULT_POLICY, Config, Peer, Tunnel, UnderlayPolicy, parse_target
from uplinkd.model import (
    AF_INET,
    AF_INET6,
    FAMILIES,
    ConntrackFlush,
    LinkUp,
    Op,
    Route,
    RouteKey,
    Rule,
    State,
    StaticAddr,
    UplinkStatus,
    any_net,
)
from uplinkd.model.kinds.tuning import LinkTuning
from uplinkd.plan import policies
from uplinkd.plan.balance import balance_members
from uplinkd.plan.facts import Contribution, Facts, Survey
from uplinkd.plan.layout import (
    BAND_TUNNEL_ROUTE,
    BAND_TUNNEL_STEERED,
    BAND_TUNNEL_UNDERLAY,
    group_id,
    policy_group_id,
)
from uplinkd.tunnel.health import TunnelHealth
from uplinkd.tunnel.mtu import tunnel_mtu
from uplinkd.tunnel.wireguard import Endpoint

VERSION: dict[int, int] = {AF_INET: 4, AF_INET6: 6}
FAMILY_NAMES: dict[int, str] = {AF_INET: "ipv4", AF_INET6: "ipv6"}


def underlay_topic(name: str, family: int) -> str:
    """The reason topic naming a tunnel's current underlay in one family."""
    return f"tunnel {name} underlay {FAMILY_NAMES[family]}"


def state_topic(name: str) -> str:
    return f"tunnel {name}"


def underlay(
    config: Config,
    tunnel: Tunnel,
    survey: Survey,
    family: int,
    health: TunnelHealth | None = None,
    *,
    spent: frozenset[str] = frozenset(),
) -> tuple[object | None, str]:
    """T_under's default route for one family, and the uplink(s) it names ("" = none).

    A preference list takes its first healthy uplink, skipping those the tunnel's worker found
    to carry no tunnel traffic (`health.avoid`) while another is healthy, and keeping the one
    fail-back holds it on (`health.stay_on`) while that is healthy. `{policy = name}` takes
    that policy's group (the same choice, so the same group, as the policy's own table)."""
    key = RouteKey(family, tunnel.table, str(any_net(family)))
    if isinstance(tunnel.underlay, UnderlayPolicy) and tunnel.underlay.policy != DEFAULT_POLICY:
        name = tunnel.underlay.policy
        choice = policies.choose(config, survey, name, family, spent=spent)
        if not choice.members:
            return Route(key, type="unreachable"), ""
        via = f"policy {name} (" + ", ".join(choice.members) + ")"
        return Route(key, nhid=policy_group_id(config, name, family)), via
    if tunnel.underlay == "balance" or isinstance(tunnel.underlay, UnderlayPolicy):
        members, _ = balance_members(config, survey.statuses, survey.ways, family)
        if not members:
            return Route(key, type="unreachable"), ""
        return Route(key, nhid=group_id(config, family)), "balance (" + ", ".join(
            s.name for s in members
        ) + ")"
    statuses = {s.name: s for s in survey.statuses}
    usable = [
        statuses[n]
        for n in tunnel.underlay
        if n in statuses and family in survey.ways.get(n, {}) and not statuses[n].drained
    ]
    healthy = [s for s in usable if s.state in (State.UP, State.DEGRADED)]
    if health is not None:
        healthy = [s for s in healthy if s.name not in health.avoid] or healthy
        held = [s for s in healthy if s.name == health.stay_on]
        healthy = held or healthy
    chosen = (healthy or usable)[:1]
    if not chosen or chosen[0].ifindex is None:
        return Route(key, type="unreachable"), ""
    s = chosen[0]
    way = survey.ways[s.name][family]
    return Route(key, oif=s.ifindex, gateway=way.gateway, dev=s.dev or ""), s.name


def contribute(config: Config, facts: Facts, survey: Survey) -> Contribution:
    prio = config.rules.priority
    objects: list[object] = []
    reasons: dict[str, str] = {}
    for name, tunnel in config.tunnels.items():
        link = facts.observed.link_by_name(tunnel.interface)
        health = facts.tunnels.get(name)
        # the link is the tunnel's once its worker holds it (a health reading says so): a link
        # by that name that is someone else's gets no address, MTU or state from us
        held = link if health is not None else None
        up = held is not None and health is not None and health.up
        if link is None:
            reasons[state_topic(name)] = "down: no interface yet"
        elif health is None:
            reasons[state_topic(name)] = "down: not checked yet"
        else:
            reasons[state_topic(name)] = f"{health.state}: {health.reason}"
        for family in FAMILIES:
            objects.append(
                Rule(
                    family, prio + BAND_TUNNEL_UNDERLAY, tunnel.table, fwmark=tunnel.mark, fwmask=tunnel.mark
                )
            )
            route, via = underlay(config, tunnel, survey, family, health, spent=facts.spent)
            objects.append(route)
            reasons[underlay_topic(name, family)] = via
            if tunnel.route == "full" or tunnel.route or tunnel.probe.targets:
                objects.append(Rule(family, prio + BAND_TUNNEL_ROUTE, tunnel.t_route))
            if tunnel.route == "full" or tunnel.route:
                objects += [
                    Rule(
                        family,
                        prio + BAND_TUNNEL_STEERED,
                        tunnel.t_route,
                        fwmark=config.policy_mark(policy),
                        fwmask=config.kernel.policy_bits,
                    )
                    for policy in config.policies
                ]
            routes = _routes(tunnel, family, ifindex=held.index if up and held else None)
            objects += routes
            if held is not None:
                taken = {r.key for r in routes}
                objects += [r for r in _probe_routes(tunnel, family, held.index) if r.key not in taken]
        if held is not None:
            mtu = mtu_of(tunnel, facts, survey, name, config=config)
            if mtu is not None:
                objects.append(LinkTuning(held.index, mtu=mtu, dev=held.name))
            else:
                reasons[f"tunnel {name} mtu"] = "auto: no carrying uplink is present; MTU left as it is"
            objects.append(LinkUp(held.index, dev=held.name))
            objects += [StaticAddr(held.index, a, dev=held.name) for a in tunnel.addresses]
    return Contribution(objects=tuple(objects), reasons=reasons)


def _routes(tunnel: Tunnel, family: int, *, ifindex: int | None) -> list[Route]:
    """T_route's routes in one family: into the tunnel (`ifindex`), or, with the tunnel
    down (None) or not carrying this family, unreachable when the kill switch is on."""
    if tunnel.route == "full":
        dests = [any_net(family)]
        carried = VERSION[family] in tunnel.carries
    else:
        dests = [n for n in tunnel.route if n.version == VERSION[family]]
        carried = True
    out: list[Route] = []
    for dst in dests:
        key = RouteKey(family, tunnel.t_route, str(ipaddress.ip_network(dst)))
        if ifindex is not None and carried:
            out.append(Route(key, oif=ifindex, dev=tunnel.interface))
        elif tunnel.kills:
            out.append(Route(key, type="unreachable"))
    return out


def _probe_routes(tunnel: Tunnel, family: int, ifindex: int) -> list[Route]:
    """T_route's host routes into the tunnel for its probe targets, up or down: probes must
    go through the tunnel to tell it is back (into the tunnel is never a leak)."""
    out: list[Route] = []
    for text in tunnel.probe.targets:
        addr, _ = parse_target(tunnel.probe.method, text)
        if addr.version == VERSION[family]:
            dst = ipaddress.ip_network(addr)
            out.append(Route(RouteKey(family, tunnel.t_route, str(dst)), oif=ifindex, dev=tunnel.interface))
    return out


def underlay_moved(
    before: Mapping[str, str],
    after: Mapping[str, str],
    uplinks: Sequence[UplinkStatus],
    *,
    mask: int,
    tunnel_marks: Mapping[str, int] | None = None,
) -> tuple[Op, ...]:
    """Conntrack flushes for uplinks a tunnel's underlay just left (`before`/`after`: the
    passes' reasons). The tunnel's UDP flow is ct-marked with the uplink it left by, and
    with the tunnel's own bits (`tunnel_marks`, by tunnel name; the nft output hook adds
    them); deleted, its next packet is routed and masqueraded afresh through the new
    underlay (a policy underlay: when its tier changes, the uplinks that left it). Only
    the tunnel's flow is deleted, so the uplink's other connections (a split tunnel's LAN
    flows, the router's own) stay where they are; without the tunnel's mark, all of the
    uplink's. This holds even when the old uplink stays in a balance group as the last
    resort of another family (where the uplinks' own failover keeps its connections)."""
    marks = {s.name: s.mark for s in uplinks}
    ops: dict[tuple[int, int], Op] = {}
    for topic, old in before.items():
        if not topic.startswith("tunnel ") or " underlay " not in topic or old.startswith("balance"):
            continue  # a balance group is resilient: the tunnel's flow keeps its bucket
        tunnel_mark = (tunnel_marks or {}).get(topic[len("tunnel ") : topic.index(" underlay ")], 0)
        new = after.get(topic) or ""
        left = set(uplinks_of(old)) - set(uplinks_of(new))
        for name in sorted(left & set(marks)):
            key = (marks[name] | tunnel_mark, mask | tunnel_mark)
            why = f"a tunnel's underlay left it ({topic}: {new or 'none'})"
            ops.setdefault(key, Op("delete", ConntrackFlush(name, *key, why)))
    return tuple(ops.values())


def nft_peers(config: Config, facts: Facts, survey: Survey) -> tuple[tuple[str, int, tuple[str, ...]], ...]:
    """For the nft table: each peer endpoint and the uplink interfaces its tunnel's underlay
    uses now (in the endpoint's family); see `NftState.tunnel_peers`."""
    found: dict[tuple[str, int], set[str]] = {}
    devs = {s.name: s.dev for s in survey.statuses if s.dev}
    for tunnel_name, tunnel in config.tunnels.items():
        for p in tunnel.peers:
            ep = endpoint_of(p, facts.tunnels.get(tunnel_name))
            if ep is None:
                continue
            family = AF_INET if ep.address.version == 4 else AF_INET6
            health = facts.tunnels.get(tunnel_name)
            _, via = underlay(config, tunnel, survey, family, health, spent=facts.spent)
            names = uplinks_of(via)
            found.setdefault((str(ep.address), ep.port), set()).update(devs[n] for n in names if n in devs)
    return tuple(sorted((a, port, tuple(sorted(i))) for (a, port), i in found.items()))


def carrying(config: Config, tunnel: Tunnel) -> frozenset[str]:
    """The uplinks that may carry the tunnel: its list, its policy's tiers, or all."""
    u = tunnel.underlay
    if isinstance(u, tuple):
        return frozenset(u)
    if isinstance(u, UnderlayPolicy) and u.policy in config.policies:
        return frozenset(n for tier in config.policies[u.policy].tiers for n in tier)
    return frozenset(config.uplinks)


def uplinks_of(via: str) -> list[str]:
    """The uplinks an underlay reason names: "wan", "balance (wan, lte1)", "policy p (wan)"."""
    if not via:
        return []
    inside = via[via.index("(") + 1 : -1] if via.endswith(")") and "(" in via else via
    return inside.split(", ")


def endpoint_of(peer: Peer, health: TunnelHealth | None) -> Endpoint | None:
    """A peer's endpoint: its address, or what its name last resolved to (None: not yet)."""
    if peer.endpoint is None:
        return None
    return peer.endpoint_value or (health.endpoint_of(peer.endpoint) if health is not None else None)


def mtu_of(
    tunnel: Tunnel, facts: Facts, survey: Survey, name: str = "", *, config: Config | None = None
) -> int | None:
    """The tunnel's MTU: the configured number, or `auto`: the smallest MTU among the present
    uplinks that may carry it minus WireGuard's overhead for its endpoints' family (80 when
    any endpoint is IPv6, else 60). None when no carrying uplink is present (or ValueError:
    too small), so the interface keeps the MTU it has."""
    if isinstance(tunnel.mtu, int):
        return tunnel.mtu
    may = carrying(config, tunnel) if config is not None else frozenset(s.name for s in survey.statuses)
    carriers = [s for s in survey.statuses if s.name in may]
    links = [facts.observed.links.get(s.ifindex) for s in carriers if s.ifindex is not None]
    mtus = [link.mtu for link in links if link is not None and link.mtu]
    health = facts.tunnels.get(name)
    endpoints = [endpoint_of(p, health) for p in tunnel.peers]
    v6 = any(e is not None and e.address.version == 6 for e in endpoints)
    try:
        return tunnel_mtu(mtus, ipv6_underlay=v6) if mtus else None
    except ValueError:
        return None
