"""LAN IPv6: what each LAN interface's IPv6 may do through the uplinks (config `lan`).

Pure. Two parts:

- `nft_part`: the IPv6 part of the nft table (the `nft` contributor owns the table and asks
  for it): every present uplink's own IPv6 prefixes (what may leave it as a source), the
  prefix translations of `translate` LANs (one per LAN and uplink with a /64), the `off` LANs.
- `contribute`: the internal prefix's first address (`<prefix>::1/64`) on each present
  `translate` LAN interface, so the router routes the prefix to it and is its clients' router
  there; the LAN's clients get addresses in it from whatever advertises the LAN today (an RA
  sender of uplinkd's own comes with `extend`). And a reason per LAN for `status`.

A `translate` LAN's IPv6 leaves by the balance group like IPv4 does (T_balance's IPv6 group),
gets its uplink's ct mark, and is flushed with that mark when the uplink fails: the same
machinery, because the translation is ordinary conntrack NAT.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from uplinkd.config import Config
from uplinkd.model import (
    AF_INET6,
    NftIpv6,
    NftPrefix,
    NftTranslation,
    StaticAddr,
    UplinkStatus,
)
from uplinkd.plan import extend
from uplinkd.plan.facts import Contribution, Facts, Survey

PREFIX_LEN = 64


def topic(lan: str) -> str:
    """The reason topic of one LAN's IPv6."""
    return f"lan {lan} ipv6"


def uplink_prefixes(survey: Survey) -> dict[str, tuple[ipaddress.IPv6Network, ...]]:
    """Uplink name → the global IPv6 prefixes its usable addresses are in (sorted)."""
    found: dict[str, tuple[ipaddress.IPv6Network, ...]] = {}
    for name, ways in survey.ways.items():
        way = ways.get(AF_INET6)
        if way is None:
            continue
        nets = {
            ipaddress.IPv6Network(a.network)
            for a in way.addresses
            if isinstance(a, ipaddress.IPv6Interface) and not a.ip.is_link_local and a.network.prefixlen < 128
        }
        if nets:
            found[name] = tuple(sorted(nets))
    return found


def translations(
    config: Config,
    statuses: tuple[UplinkStatus, ...],
    prefixes: Mapping[str, tuple[ipaddress.IPv6Network, ...]],
) -> tuple[tuple[NftTranslation, ...], dict[str, str]]:
    """Every translate LAN's prefix translations (per uplink with a /64), and why per LAN."""
    found: list[NftTranslation] = []
    reasons: dict[str, str] = {}
    by_name = {s.name: s for s in statuses}
    for lan, cfg in config.lan.items():
        v6 = cfg.ipv6
        if v6.mode != "translate" or v6.prefix is None:
            reasons[topic(lan)] = "off: no IPv6 from this LAN to any uplink"  # extend: see extend.py
            continue
        wanted = v6.uplinks if v6.uplinks is not None else tuple(config.uplinks)
        via: list[str] = []
        for name in wanted:
            status = by_name.get(name)
            if status is None or status.dev is None:
                continue
            outer = next((p for p in prefixes.get(name, ()) if p.prefixlen == PREFIX_LEN), None)
            if outer is None:
                continue
            found.append(NftTranslation(lan, str(v6.prefix), status.dev, str(outer)))
            via.append(f"{name} as {outer}")
        reasons[topic(lan)] = (
            f"translate {v6.prefix} via " + ", ".join(via)
            if via
            else f"translate {v6.prefix}: no uplink has an IPv6 /64 yet"
        )
    return tuple(sorted(found)), reasons


def nft_part(config: Config, survey: Survey) -> NftIpv6:
    """The IPv6 part of the nft table."""
    prefixes = uplink_prefixes(survey)
    devs = {s.name: s.dev for s in survey.statuses if s.dev is not None}
    own = tuple(
        sorted(NftPrefix(devs[name], str(p)) for name, nets in prefixes.items() if name in devs for p in nets)
    )
    found, _ = translations(config, survey.statuses, prefixes)
    closed = tuple(sorted(lan for lan, cfg in config.lan.items() if cfg.ipv6.mode == "off"))
    return NftIpv6(prefixes=own, translations=found, closed=closed)


def contribute(config: Config, facts: Facts, survey: Survey) -> Contribution:
    """The internal prefix's router address on each present translate LAN; a reason per LAN."""
    links = {link.name: link for link in facts.observed.links.values()}
    objects: list[object] = []
    for lan, cfg in config.lan.items():
        prefix = cfg.ipv6.prefix
        link = links.get(lan)
        if cfg.ipv6.mode == "translate" and prefix is not None and link is not None:
            address = ipaddress.IPv6Interface(f"{prefix.network_address + 1}/{prefix.prefixlen}")
            objects.append(StaticAddr(link.index, address, dev=lan))
    _, reasons = translations(config, survey.statuses, uplink_prefixes(survey))
    for lan in config.lan:
        if lan not in links:
            reasons[topic(lan)] = f"interface {lan} is not there; " + reasons[topic(lan)]
    more, why, adverts = extend.contribute_lans(config, facts, survey)
    reasons.update(why)
    return Contribution(objects=tuple(objects + more), reasons=reasons, adverts=adverts)
