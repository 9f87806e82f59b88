"""IPv6 by router advertisement on the uplinks, and `extend`: one uplink's /64 moved to a LAN.

Pure. The facts are the RAs each uplink's router last sent (`Facts.adverts`, recorded by the
listener in `uplinkd.adverts`).

Uplinks (`dhcp` ones, and any uplink a LAN extends):

- the interface accepts RAs although the router forwards (`accept_ra = 2`), but the kernel
  installs no default route from them (`accept_ra_defrtr = 0`): the RA's router becomes the
  uplink's IPv6 gateway in `T_u` only, never in main. The RA's MTU is honoured by the kernel
  (`accept_ra_mtu`, on by default: the uplink's IPv6 MTU).
- an extended uplink also ignores the RA's prefixes (`accept_ra_pinfo = 0`): no SLAAC address
  and no on-link route for the /64 there, because the /64 now lives on the LAN.

`extend` LANs: the uplink's current /64 (the usable one with the longest preferred lifetime)
gets `<prefix>::1/64` on the LAN interface (so it is routed to the LAN, and the router's own
IPv6 on that uplink has a source), a `from <prefix> lookup T_u` rule at P+27 (a LAN host's
source leaves by the uplink that owns it, never by the balance group; a full tunnel's route
band, P+25, still comes first, so its kill switch holds), and an RA for uplinkd's own
sender (`uplinkd.advertiser`): the prefix with the uplink's lifetimes, the MTU and DNS servers
the uplink's router named, router lifetime ROUTER_LIFETIME — while the uplink is in service.
When it is not (down, unplugged, no RA), the RA names no prefix and router lifetime 0; the
sender deprecates (preferred lifetime 0) the prefixes it advertised before.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from uplinkd.config import Config
from uplinkd.model import AF_INET6, Link, LinkTuning, Observed, Rule, State, StaticAddr, UplinkStatus
from uplinkd.model.adverts import Advert, AdvertPrefix
from uplinkd.plan.facts import Facts, Survey, Way
from uplinkd.plan.layout import BAND_EXTEND

ACCEPT_RA_FORWARDING = 2
ROUTER_LIFETIME = 1800  # seconds (RFC 4861's default: 3 times MaxRtrAdvInterval)
HOP_LIMIT = 64
LIVE = (State.UP, State.DEGRADED, State.PROBING)
NO_ROUTER = ipaddress.IPv6Address("::")  # the sender's link-local address is the real source


def extended(config: Config) -> dict[str, str]:
    """Uplink name → the LAN its /64 is extended to."""
    return {
        lan.ipv6.uplink: name
        for name, lan in config.lan.items()
        if lan.ipv6.mode == "extend" and lan.ipv6.uplink is not None
    }


def by_ra(config: Config, name: str) -> bool:
    """Whether the controller handles `name`'s IPv6 router advertisements itself."""
    uplink = config.uplinks[name]
    if "ipv6" not in uplink.families:
        return False
    return uplink.address.mode == "dhcp" or (uplink.address.mode != "external" and name in extended(config))


def current(advert: Advert | None) -> AdvertPrefix | None:
    """The /64 an advert offers now: the usable one with the longest preferred lifetime."""
    usable = advert.usable() if advert is not None else ()
    return max(usable, key=lambda p: (p.preferred, p.valid, p.prefix)) if usable else None


def lan_address(prefix: ipaddress.IPv6Network) -> ipaddress.IPv6Interface:
    """The router's address on an extended LAN: the prefix's ::1."""
    return ipaddress.IPv6Interface(f"{prefix.network_address + 1}/{prefix.prefixlen}")


def tuning(config: Config, status: UplinkStatus) -> tuple[int | None, tuple[tuple[str, int], ...]]:
    """accept_ra and the other IPv6 settings an uplink handled by RA needs (None, (): none)."""
    if not by_ra(config, status.name):
        return None, ()
    conf6 = [("accept_ra_defrtr", 0)]
    if status.name in extended(config):
        conf6.append(("accept_ra_pinfo", 0))
    return ACCEPT_RA_FORWARDING, tuple(sorted(conf6))


def merge_tuning(
    tunings: tuple[LinkTuning, ...],
    *,
    ifindex: int,
    dev: str,
    accept_ra: int | None,
    conf6: tuple[tuple[str, int], ...],
) -> tuple[LinkTuning, ...]:
    """`tunings` (at most one, the modem's) with the RA settings added."""
    if accept_ra is None:
        return tunings
    mtu = tunings[0].mtu if tunings else None
    return (LinkTuning(ifindex, mtu=mtu, accept_ra=accept_ra, conf6=conf6, dev=dev),)


def _link_named(observed: Observed, name: str) -> Link | None:
    return next((link for link in observed.links.values() if link.name == name), None)


def way6(config: Config, name: str, link: Link, facts: Facts, found: Mapping[int, Way]) -> Way | None:
    """The IPv6 way of an uplink handled by RA: its router from the RA (else what the kernel
    shows), its SLAAC addresses — or, extended, the LAN's router address once the kernel
    holds it. Any other uplink keeps `found`'s."""
    if not by_ra(config, name):
        return found.get(AF_INET6)
    advert = facts.adverts.get(name)
    old = found.get(AF_INET6)
    if advert is not None and advert.lifetime > 0:
        gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None = (
            None if link.pointopoint else advert.router
        )
        routed = True
    else:
        gateway, routed = (old.gateway, True) if old is not None else (None, link.pointopoint)
    lan = extended(config).get(name)
    if lan is None:
        addresses = facts.observed.addrs_of(link.index, AF_INET6)
    else:
        prefix, lan_link = current(advert), _link_named(facts.observed, lan)
        held = (
            prefix is not None
            and lan_link is not None
            and facts.observed.has_addr(lan_link.index, lan_address(prefix.prefix))
        )
        addresses = (lan_address(prefix.prefix),) if held and prefix is not None else ()
    return Way(addresses, gateway) if addresses and routed else None


def contribute_lans(
    config: Config, facts: Facts, survey: Survey
) -> tuple[list[object], dict[str, str], dict[str, Advert]]:
    """Per `extend` LAN: its router address and source rule, why, and the RA to send there."""
    objects: list[object] = []
    reasons: dict[str, str] = {}
    adverts: dict[str, Advert] = {}
    statuses = {s.name: s for s in survey.statuses}
    for lan, cfg in config.lan.items():
        name = cfg.ipv6.uplink
        if cfg.ipv6.mode != "extend" or name is None:
            continue
        topic = f"lan {lan} ipv6"
        status = statuses.get(name)
        advert = facts.adverts.get(name) if status is not None and status.ifindex is not None else None
        prefix = current(advert)
        link = _link_named(facts.observed, lan)
        if prefix is not None and link is not None and status is not None:
            objects.append(StaticAddr(link.index, lan_address(prefix.prefix), dev=lan))
            priority = config.rules.priority + BAND_EXTEND
            objects.append(Rule(AF_INET6, priority, status.table, src=prefix.prefix))
        # not waiting for the kernel to hold the LAN's address: it is written in this pass,
        # before the sender (synced after the writes) speaks; a renumbering must not blink
        # router lifetime 0 for a pass
        live = (
            prefix is not None
            and advert is not None
            and advert.lifetime > 0
            and status is not None
            and status.state in LIVE
        )
        if live and advert is not None and prefix is not None:
            uplink_link = facts.observed.links.get(status.ifindex) if status and status.ifindex else None
            mtus = [m for m in (advert.mtu, uplink_link.mtu if uplink_link else None) if m is not None]
            adverts[lan] = Advert(
                router=NO_ROUTER,
                lifetime=ROUTER_LIFETIME,
                prefixes=(AdvertPrefix(prefix.prefix, prefix.valid, prefix.preferred),),
                mtu=min(mtus) if mtus else None,
                # a link-local DNS server on the uplink's link is out of the LAN's reach
                rdnss=tuple(a for a in advert.rdnss if not a.is_link_local),
                rdnss_lifetime=advert.rdnss_lifetime,
                hop_limit=HOP_LIMIT,
            )
            reasons[topic] = f"extend {name}'s {prefix.prefix} (advertised here)"
        else:
            adverts[lan] = Advert(router=NO_ROUTER, lifetime=0, hop_limit=HOP_LIMIT)
            reasons[topic] = f"extend {name}: " + _why_not(status, prefix, advert)
        if link is None:
            adverts.pop(lan)
            reasons[topic] = f"interface {lan} is not there; " + reasons[topic]
    return objects, reasons, adverts


def _why_not(status: UplinkStatus | None, prefix: AdvertPrefix | None, advert: Advert | None) -> str:
    if status is None or status.ifindex is None:
        return "the uplink is not there; router lifetime 0"
    if advert is None:
        return "no router advertisement heard on the uplink yet; router lifetime 0"
    if prefix is None:
        return "the uplink's router advertises no usable /64; router lifetime 0"
    if status.state not in LIVE:
        return f"{prefix.prefix} deprecated, router lifetime 0: the uplink is {status.state.value}"
    return f"{prefix.prefix} deprecated, router lifetime 0: the uplink's router gives no default route"
