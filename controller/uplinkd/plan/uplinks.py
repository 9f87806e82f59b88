"""Which interface is which uplink, what state each uplink is in, and what each one needs
in the kernel of its own: its table's default route, its nexthops, its rules, the
addresses the controller gives it and its interface raised.

Readiness follows the kernel: an uplink counts as addressed only once its address is on
the interface (a DHCP lease's address is added by the controller, and only reported once
the kernel shows it), so `status` never names an address the interface does not hold.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Mapping
from dataclasses import replace

from uplinkd.config import Config, Uplink
from uplinkd.config.ifname import problem as ifname_problem
from uplinkd.model import (
    AF_INET,
    AF_INET6,
    FAMILIES,
    Bearer,
    Health,
    HealthVerdict,
    IPInterface,
    Lease,
    Lease6,
    Link,
    LinkUp,
    Nexthop,
    Observed,
    Route,
    RouteKey,
    Rule,
    State,
    StaticAddr,
    UplinkStatus,
    any_net,
)
from uplinkd.plan import extend
from uplinkd.plan.facts import Contribution, Facts, Survey, Way
from uplinkd.plan.layout import BAND_FROM, BAND_FWMARK, nexthop_id
from uplinkd.plan.modems import modem_addresses, modem_tuning, modem_ways, why_not_connected

# --- matching -----------------------------------------------------------------------------------


def link_matches(uplink: Uplink, link: Link) -> bool:
    m = uplink.match
    if not m.matches_name(link.name):
        return False
    if m.driver and link.driver not in m.driver:
        return False
    if m.path is not None and (link.id_path is None or not fnmatch.fnmatchcase(link.id_path, m.path)):
        return False
    if m.usb is not None:
        wanted = (m.usb.vendor, m.usb.product, m.usb.serial)
        have = (link.usb_vendor, link.usb_product, link.usb_serial)
        if any(w is not None and w != h for w, h in zip(wanted, have, strict=True)):
            return False
    return True


def assign_links(
    config: Config, observed: Observed, previous: Mapping[str, int] | None = None
) -> dict[str, Link]:
    """Uplink name → its link. An uplink keeps the link it had (`previous`, uplink → ifindex)
    while that link is there and still matches, so pulling one of two sticks that match the
    same glob never moves the other; then each remaining uplink, in config order, takes the
    lowest-index matching link nobody has taken."""
    taken: set[int] = set()
    assigned: dict[str, Link] = {}
    for name, index in (previous or {}).items():
        link = observed.links.get(index)
        uplink = config.uplinks.get(name)
        if (
            link is not None
            and uplink is not None
            and index not in taken
            and link_matches(uplink, link)
            and ifname_problem(link.name) is None
        ):
            assigned[name] = link
            taken.add(index)
    # a name the kernel took but nft cannot quote (a `"`, say) would break the whole table
    links = sorted(
        (link for link in observed.links.values() if ifname_problem(link.name) is None),
        key=lambda link: link.index,
    )
    for name, uplink in config.uplinks.items():
        if name in assigned:
            continue
        for link in links:
            if link.index not in taken and link_matches(uplink, link):
                assigned[name] = link
                taken.add(link.index)
                break
    return assigned


def unclaimed_matches(
    config: Config, observed: Observed, assigned: Mapping[str, Link]
) -> dict[str, tuple[str, ...]]:
    """Uplink name → the names of interfaces that match it but that no uplink took. A match
    with such leftovers is ambiguous: the uplink got the lowest-index one, which may not be
    the one the admin meant, so status and the log say so."""
    taken = {link.index for link in assigned.values()}
    spare = sorted(
        (link for link in observed.links.values() if link.index not in taken), key=lambda link: link.index
    )
    found: dict[str, tuple[str, ...]] = {}
    for name, uplink in config.uplinks.items():
        if name in assigned:
            names = tuple(link.name for link in spare if link_matches(uplink, link))
            if names:
                found[name] = names
    return found


# --- status ---------------------------------------------------------------------------------------


def ways(
    uplink: Uplink, link: Link, observed: Observed, lease: Lease | None, bearer: Bearer | None = None
) -> dict[int, Way]:
    """Per family, the addresses and gateway the uplink can use (only families that work and
    that it carries: `families`)."""
    carried = carried_families(uplink)
    if AF_INET not in carried:
        lease = None  # a lease kept from before `families` left out IPv4 is not waited for
    return {f: way for f, way in _ways(uplink, link, observed, lease, bearer).items() if f in carried}


def carried_families(uplink: Uplink) -> tuple[int, ...]:
    """The address families (AF_INET, AF_INET6) the uplink is configured to carry."""
    return tuple(f for f in FAMILIES if _FAMILY_NAME[f] in uplink.families)


_FAMILY_NAME = {AF_INET: "ipv4", AF_INET6: "ipv6"}


def _ways(
    uplink: Uplink, link: Link, observed: Observed, lease: Lease | None, bearer: Bearer | None
) -> dict[int, Way]:
    found: dict[int, Way] = {}
    addr = uplink.address
    if addr.mode == "modem":
        return modem_ways(bearer, link, observed)
    if addr.mode == "static":
        if addr.cidr is not None:
            found[AF_INET] = Way((addr.cidr,), addr.gateway)
        if addr.cidr6 is not None:
            found[AF_INET6] = Way((addr.cidr6,), addr.gateway6)
        return found
    if addr.mode == "dhcp":
        # A lease without a router is a way out only on a point-to-point link; on Ethernet
        # `default dev X` would ARP for the whole internet. Its address counts once the
        # kernel holds it (the controller adds it; the next pass sees it).
        if (
            lease is not None
            and (lease.gateway is not None or link.pointopoint)
            and observed.has_addr(link.index, lease.address)
        ):
            found[AF_INET] = Way((lease.address,), lease.gateway)
        elif lease is not None and not observed.has_addr(link.index, lease.address):
            return found  # the leased address comes next pass: not ready on IPv6 alone meanwhile
        families: tuple[int, ...] = (AF_INET6,)  # IPv6 on a DHCPv4 uplink comes from RA
    else:
        families = FAMILIES
    for family in families:
        addrs = observed.addrs_of(link.index, family)
        gw = observed.gateway_of(link.index, family)
        if addrs and gw is not None:
            found[family] = Way(addrs, gw.gateway)
        elif addrs and link.pointopoint:
            found[family] = Way(addrs, None)
    return found


_STATE_OF_HEALTH = {
    Health.UNKNOWN: State.PROBING,
    Health.UP: State.UP,
    Health.DEGRADED: State.DEGRADED,
    Health.DOWN: State.DOWN,
}


def _effective_weight(uplink: Uplink, verdict: HealthVerdict) -> int:
    return max(1, min(256, round(uplink.weight * verdict.weight_factor)))


def survey(config: Config, facts: Facts) -> Survey:
    """Each configured uplink's state and the reason for it, plus how each ready one routes.
    Group membership is not decided here (see `balance`): every status says not in group."""
    links = assign_links(config, facts.observed, facts.previous)
    ambiguous = unclaimed_matches(config, facts.observed, links)
    statuses: list[UplinkStatus] = []
    all_ways: dict[str, dict[int, Way]] = {}
    for name, uplink in config.uplinks.items():
        status = UplinkStatus(
            name=name,
            state=State.ABSENT,
            reason="no interface matches",
            table=uplink.table,
            mark=config.mark_of(name),
            drained=name in facts.drained,
        )
        link = links.get(name)
        if link is None:
            statuses.append(replace(status, reason=_why_absent(uplink, facts.observed)))
            continue
        status = replace(
            status,
            state=State.PRESENT,
            ifindex=link.index,
            dev=link.name,
            pointopoint=link.pointopoint,
            reason="interface is administratively down" if not link.up else "no carrier",
            also_matches=ambiguous.get(name, ()),
        )
        if not link.up or not link.carrier:
            statuses.append(status)
            continue
        status = replace(status, link_ready=True)
        lease = facts.leases.get(name)
        found = ways(uplink, link, facts.observed, lease, facts.bearers.get(name))
        way6 = extend.way6(config, name, link, facts, found)  # the RA's router, an extended /64
        found.pop(AF_INET6, None)
        if way6 is not None and AF_INET6 in carried_families(uplink):
            found[AF_INET6] = way6
        seen = facts.observed.addrs_of(link.index, AF_INET) + facts.observed.addrs_of(link.index, AF_INET6)
        status = replace(
            status,
            addresses=tuple(a for way in found.values() for a in way.addresses) or seen,
            gateway4=found[AF_INET].gateway if AF_INET in found else None,
            gateway6=found[AF_INET6].gateway if AF_INET6 in found else None,
            families=tuple(f for f in FAMILIES if f in found),
        )
        if not found:
            state, reason = _why_not_ready(uplink, lease, status, facts.observed)
            if uplink.address.mode == "modem":  # the bearer is what gives it an address
                state, reason = State.PRESENT, why_not_connected(facts.bearers.get(name))
            statuses.append(replace(status, state=state, reason=reason))
            continue
        all_ways[name] = found
        verdict = facts.health.get(name, HealthVerdict(Health.UP, "no health checks configured"))
        statuses.append(
            replace(
                status,
                state=_STATE_OF_HEALTH[verdict.health],
                reason=verdict.reason,
                weight=_effective_weight(uplink, verdict),
            )
        )
    return Survey(tuple(statuses), all_ways)


def _why_absent(uplink: Uplink, observed: Observed) -> str:
    """An absent uplink's reason: nothing matches, or what matches has a name we cannot use."""
    for link in sorted(observed.links.values(), key=lambda link: link.index):
        trouble = ifname_problem(link.name)
        if trouble is not None and link_matches(uplink, link):
            return f"interface {link.name!r} matches but cannot be used: {trouble}; rename it (a .link file)"
    return "no interface matches"


def _why_not_ready(
    uplink: Uplink, lease: Lease | None, status: UplinkStatus, observed: Observed
) -> tuple[State, str]:
    """State and reason of an uplink with carrier but no way out."""
    if uplink.address.mode == "dhcp" and "ipv4" not in uplink.families:
        if not status.addresses:
            return status.state, "no address: waiting for an IPv6 router advertisement (families: ipv6)"
        return State.ADDRESSED, "no default gateway learned: no router advertisement names a router"
    if uplink.address.mode == "dhcp" and lease is None:
        return status.state, "waiting for a DHCP lease"  # or an RA: either makes it ready
    if (
        lease is not None
        and status.ifindex is not None
        and not observed.has_addr(status.ifindex, lease.address)
    ):
        return status.state, f"adding the leased address {lease.address}"
    if uplink.address.mode == "dhcp":
        return State.ADDRESSED, "the DHCP lease names no router"
    if not status.addresses:
        return status.state, "no address"
    return State.ADDRESSED, "no default gateway learned"


# --- the contributor --------------------------------------------------------------------------------


def owned_addresses(
    uplink: Uplink, lease: Lease | None, bearer: Bearer | None = None, lease6: Lease6 | None = None
) -> tuple[IPInterface, ...]:
    """The addresses the controller puts on an uplink: static ones, a modem bearer's, a DHCP
    lease's and the DHCPv6 (IA_NA) address (a /128; the kernel does duplicate-address
    detection on it, and the DHCPv6 client declines it if that fails)."""
    addr = uplink.address
    if addr.mode == "modem":
        return modem_addresses(bearer)
    if addr.mode == "static":
        return tuple(a for a in (addr.cidr, addr.cidr6) if a is not None)
    if addr.mode == "dhcp":
        kept = (lease if "ipv4" in uplink.families else None, lease6 if "ipv6" in uplink.families else None)
        return tuple(a.address for a in kept if a is not None)
    return ()


def contribute(config: Config, facts: Facts, survey: Survey) -> Contribution:
    """Per present uplink: its fwmark rules; per family it can route in: its table's default
    route, its nexthop and a `from` rule per address; the addresses the controller gives it,
    and its interface raised unless someone else configures it."""
    prio = config.rules.priority
    objects: list[object] = []
    for status in survey.statuses:
        if status.ifindex is None:
            continue
        uplink = config.uplinks[status.name]
        dev = status.dev or ""
        for family in FAMILIES:
            objects.append(
                Rule(
                    family,
                    prio + BAND_FWMARK,
                    status.table,
                    fwmark=status.mark,
                    fwmask=config.kernel.mark_mask,
                )
            )
            way = survey.ways.get(status.name, {}).get(family)
            key = RouteKey(family, status.table, str(any_net(family)))
            if family not in carried_families(uplink):
                # a family the uplink does not carry is refused there, not rebalanced: a packet
                # marked for it (a reply to something that came in by it) never leaves elsewhere
                objects.append(Route(key, type="unreachable"))
                continue
            if way is None:
                continue
            objects.append(Route(key, oif=status.ifindex, gateway=way.gateway, dev=dev))
            nhid = nexthop_id(config, status.table, family)
            objects.append(Nexthop(nhid, family, status.ifindex, way.gateway, dev=dev))
            objects += [
                Rule(family, prio + BAND_FROM, status.table, src=ipaddress.ip_network(a.ip))
                for a in way.addresses
            ]
        if uplink.address.mode != "external":
            objects.append(LinkUp(status.ifindex, dev=dev))
        bearer = facts.bearers.get(status.name)
        objects += [
            StaticAddr(status.ifindex, a, dev=dev)
            for a in owned_addresses(
                uplink, facts.leases.get(status.name), bearer, facts.leases6.get(status.name)
            )
        ]
        tunings = modem_tuning(status.ifindex, dev, bearer) if uplink.address.mode == "modem" else ()
        accept_ra, conf6 = extend.tuning(config, status)
        objects += extend.merge_tuning(
            tunings, ifindex=status.ifindex, dev=dev, accept_ra=accept_ra, conf6=conf6
        )
    return Contribution(objects=tuple(dict.fromkeys(objects)))
