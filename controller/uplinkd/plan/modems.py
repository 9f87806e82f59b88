"""What an uplink in `modem` mode routes by: its modem's connected bearer (a fact the modem
worker records, like a DHCP lease). The uplinks contributor asks here for the bearer's ways,
the addresses the controller puts on the data interface, and the interface's settings.

- IPv4 (and IPv6 with method static): the bearer's address goes on the interface (ours,
  IFA_PROTO 77) and counts once the kernel holds it; a raw-IP interface (no ARP) routes
  `default dev X`, an Ethernet-like one via the bearer's gateway.
- IPv6 with method dhcp: the address comes by router advertisement; the interface is told
  to accept RAs although the router forwards (accept_ra = 2), and the address and gateway
  the kernel learns are used as for an `external` uplink.
- The bearer's MTU is set on the interface.

No bearer (disconnected, modem gone or unregistered): no way out, so the uplink leaves the
group in the same pass, its address is removed, and its connections are flushed.
"""

from __future__ import annotations

from uplinkd.model import AF_INET, AF_INET6, Bearer, BearerIp, IPInterface, Link, LinkTuning, Observed
from uplinkd.plan.facts import Way

ACCEPT_RA_FORWARDING = 2  # accept RAs even with forwarding on


def _way(ip: BearerIp, link: Link, observed: Observed) -> Way | None:
    if not observed.has_addr(link.index, ip.address):
        return None  # the next pass, once the controller added it
    return Way((ip.address,), None if link.pointopoint else ip.gateway)


def modem_ways(bearer: Bearer | None, link: Link, observed: Observed) -> dict[int, Way]:
    found: dict[int, Way] = {}
    if bearer is None or bearer.interface != link.name:
        return found
    if bearer.ip4 is not None and (way := _way(bearer.ip4, link, observed)):
        found[AF_INET] = way
    if bearer.ip6 is not None and (way := _way(bearer.ip6, link, observed)):
        found[AF_INET6] = way
    elif bearer.ra6:
        addrs = observed.addrs_of(link.index, AF_INET6)
        gw = observed.gateway_of(link.index, AF_INET6)
        if addrs and (gw is not None or link.pointopoint):
            found[AF_INET6] = Way(addrs, gw.gateway if gw is not None else None)
    return found


def modem_addresses(bearer: Bearer | None) -> tuple[IPInterface, ...]:
    if bearer is None:
        return ()
    return tuple(ip.address for ip in (bearer.ip4, bearer.ip6) if ip is not None)


def modem_tuning(ifindex: int, dev: str, bearer: Bearer | None) -> tuple[LinkTuning, ...]:
    if bearer is None:
        return ()
    accept_ra = ACCEPT_RA_FORWARDING if bearer.ra6 or bearer.ip6 is not None else None
    if bearer.mtu is None and accept_ra is None:
        return ()
    return (LinkTuning(ifindex, mtu=bearer.mtu, accept_ra=accept_ra, dev=dev),)


def why_not_connected(bearer: Bearer | None) -> str:
    return "waiting for the modem's bearer" if bearer is None else "adding the bearer's address"
