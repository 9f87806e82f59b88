"""LAN IPv6: what each LAN interface's IPv6 may do through the uplinks (config `lan`).

Pure. Two parts:

- `nft_part`: the IPv6 part of the nft table (the `nft` contributor owns the table and asks
  for it): every present uplink's own IPv6 prefixes (what may leave it as a source), the
  prefix translations of `translate` LANs (one per LAN and uplink with a /64), the `off` LANs.
- `contribute`: the internal prefix's first address (`<prefix>::1/64`) on each present
  `translate` LAN interface, so the router routes the prefix to it and is its clients' router
  there; the LAN's clients get addresses in it from whatever advertises the LAN today (an RA
  sender of uplinkd's own comes with `extend`). And a reason per LAN for `status`.

A `delegate` LAN gets /64 number `subnet` of the prefix its uplink's DHCPv6-PD client holds
(`Facts.delegations`): `<that /64>::1/64` on the interface, `from <that /64> lookup T_u` at
P+12 (before steering rules and tunnels) so its IPv6 leaves by that uplink whatever the
balance, a policy or a full tunnel says (the ISP routes the prefix to that uplink only),
and `unreachable <delegated prefix>` in main so the unused rest of the delegation is not
sent back to the ISP (a loop). The delegated prefix is that uplink's own in the nft guard:
it passes there and is dropped on every other uplink. Expiry takes it all away again.

A `tunnel` LAN's IPv6 is closed towards every uplink like an `off` LAN's (the nft forward
rule); it can only go where the tunnel's route takes it. Its `prefix`, if any, gets
`<prefix>::1/64` on the interface.

A `translate` LAN's IPv6 leaves by the balance group like IPv4 does (T_balance's IPv6 group),
gets its uplink's ct mark, and is flushed with that mark when the uplink fails: the same
machinery, because the translation is ordinary conntrack NAT.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from uplinkd.config import Config, Lan
from uplinkd.config.lan import mode_of, tunnel_of
from uplinkd.model import (
    AF_INET6,
    Delegation,
    NftDelegated,
    NftIpv6,
    NftPrefix,
    NftTranslation,
    Route,
    RouteKey,
    Rule,
    StaticAddr,
    UplinkStatus,
)
from uplinkd.plan import extend
from uplinkd.plan.facts import Contribution, Facts, Survey
from uplinkd.plan.layout import BAND_DELEGATED, MAIN_TABLE

PREFIX_LEN = 64
CLOSED = ("off", "tunnel")  # modes whose IPv6 may not be forwarded to any uplink


def lan_mode(config: Config, lan: Lan) -> str:
    """The LAN's effective mode (`tunnel` when not written and a full tunnel exists)."""
    return mode_of(lan, config.tunnels)


def delegated_subnet(lan: Lan, delegation: Delegation | None) -> tuple[ipaddress.IPv6Network | None, str]:
    """The /64 a `delegate` LAN takes of its uplink's delegation, or None and why not."""
    v6 = lan.ipv6
    if delegation is None:
        return None, f"delegate: waiting for a prefix delegated by {v6.uplink}"
    prefix = delegation.prefix
    if prefix.prefixlen > PREFIX_LEN:
        return (
            None,
            f"delegate: {v6.uplink} delegated {prefix}, longer than a /64; ask the ISP for a /64 or shorter",
        )
    count = 1 << (PREFIX_LEN - prefix.prefixlen)
    if v6.subnet_index >= count:
        return None, (
            f"delegate: subnet {v6.subnet_index} does not fit {prefix} ({count} /64s); "
            f"set lan.<if>.ipv6.subnet below {count}"
        )
    base = int(prefix.network_address) + (v6.subnet_index << (128 - PREFIX_LEN))
    return ipaddress.IPv6Network((base, PREFIX_LEN)), f"delegate {{}} of {prefix} from {v6.uplink}"


def delegations(config: Config, facts: Facts) -> dict[str, tuple[ipaddress.IPv6Network | None, str]]:
    """Each `delegate` LAN's /64 (or None) and why."""
    found: dict[str, tuple[ipaddress.IPv6Network | None, str]] = {}
    for lan, cfg in config.lan.items():
        if lan_mode(config, cfg) == "delegate" and cfg.ipv6.uplink is not None:
            net, why = delegated_subnet(cfg, facts.delegations.get(cfg.ipv6.uplink))
            found[lan] = (net, why.replace("{}", str(net)) if net is not None else why)
    return found


def topic(lan: str) -> str:
    """The reason topic of one LAN's IPv6."""
    return f"lan {lan} ipv6"


def uplink_prefixes(survey: Survey) -> dict[str, tuple[ipaddress.IPv6Network, ...]]:
    """Uplink name → the global IPv6 prefixes its usable addresses are in (sorted); an
    address the uplink holds alone (a DHCPv6 IA_NA /128) is its own /128."""
    found: dict[str, tuple[ipaddress.IPv6Network, ...]] = {}
    for name, ways in survey.ways.items():
        way = ways.get(AF_INET6)
        if way is None:
            continue
        nets = {
            ipaddress.IPv6Network(a.network)
            for a in way.addresses
            if isinstance(a, ipaddress.IPv6Interface) and not a.ip.is_link_local
        }
        if nets:
            found[name] = tuple(sorted(nets))
    return found


def outer_of(prefixes: tuple[ipaddress.IPv6Network, ...]) -> ipaddress.IPv6Network | None:
    """What a translated LAN's sources become out of an uplink: its /64 (the interface ID
    kept), else the one address it holds by DHCPv6 (a /128: every LAN host behind it, the
    ports told apart by conntrack)."""
    for length in (PREFIX_LEN, 128):
        found = next((p for p in prefixes if p.prefixlen == length), None)
        if found is not None:
            return found
    return None


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
        mode = lan_mode(config, cfg)
        if mode == "tunnel":
            reasons[topic(lan)] = (
                f"tunnel: IPv6 only through tunnel {tunnel_of(cfg, config.tunnels)}, to no uplink"
            )
            continue
        if mode != "translate" or v6.prefix is None:
            reasons[topic(lan)] = "off: no IPv6 from this LAN to any uplink"  # extend: see extend.py
            continue
        wanted = v6.uplinks if v6.uplinks is not None else tuple(config.uplinks)
        via: list[str] = []
        for name in wanted:
            status = by_name.get(name)
            if status is None or status.dev is None:
                continue
            outer = outer_of(prefixes.get(name, ()))
            if outer is None:
                continue
            found.append(NftTranslation(lan, str(v6.prefix), status.dev, str(outer)))
            via.append(f"{name} as {outer}")
        reasons[topic(lan)] = (
            f"translate {v6.prefix} via " + ", ".join(via)
            if via
            else f"translate {v6.prefix}: no uplink has an IPv6 /64 or address yet"
        )
    return tuple(sorted(found)), reasons


def nft_part(config: Config, survey: Survey, facts: Facts | None = None) -> NftIpv6:
    """The IPv6 part of the nft table."""
    prefixes = uplink_prefixes(survey)
    devs = {s.name: s.dev for s in survey.statuses if s.dev is not None}
    pairs = {(devs[name], str(p)) for name, nets in prefixes.items() if name in devs for p in nets}
    if facts is not None:  # a delegated prefix is its uplink's own: it may leave there only
        pairs |= {
            (devs[name], str(d.prefix))
            for name, d in facts.delegations.items()
            if name in devs and name in used_delegations(config)
        }
    own = tuple(sorted(NftPrefix(dev, p) for dev, p in pairs))
    found, _ = translations(config, survey.statuses, prefixes)
    closed = tuple(
        sorted(lan for lan, cfg in config.lan.items() if lan_mode(config, cfg) in (*CLOSED, "delegate"))
    )
    passes: list[NftDelegated] = []
    if facts is not None:
        for lan, (net, _) in delegations(config, facts).items():
            dev = devs.get(config.lan[lan].ipv6.uplink or "")
            if net is not None and dev is not None:
                passes.append(NftDelegated(lan, dev, str(net)))
    return NftIpv6(prefixes=own, translations=found, closed=closed, delegated=tuple(sorted(passes)))


def unnumbered_default(
    config: Config, facts: Facts, survey: Survey, status: UplinkStatus | None
) -> list[Route]:
    """T_u's IPv6 default for an uplink that delegates a prefix but has no global IPv6 address
    of its own (an unnumbered WAN: only a link-local address and the RA's router, which is
    common with DHCPv6-PD). The uplinks contributor routes only uplinks with an address; here
    the delegated LANs' source rule needs the route all the same."""
    if status is None or status.ifindex is None or not status.link_ready:
        return []
    if AF_INET6 in survey.ways.get(status.name, {}):
        return []  # the uplinks contributor routes it
    # the RA's router as the controller's listener heard it (a dhcp uplink's kernel installs
    # no default route from RAs), else a default route someone else put on the link
    advert = facts.adverts.get(status.name)
    seen = facts.observed.gateway_of(status.ifindex, AF_INET6)
    if advert is not None and advert.lifetime > 0:
        gateway: ipaddress.IPv6Address | ipaddress.IPv4Address | None = advert.router
    elif seen is not None:
        gateway = seen.gateway
    else:
        return []
    key = RouteKey(AF_INET6, config.uplinks[status.name].table, "::/0")
    return [Route(key, oif=status.ifindex, gateway=gateway, dev=status.dev or "")]


def used_delegations(config: Config) -> set[str]:
    """The uplinks a `delegate` LAN takes its prefix from."""
    return {
        cfg.ipv6.uplink
        for cfg in config.lan.values()
        if lan_mode(config, cfg) == "delegate" and cfg.ipv6.uplink is not None
    }


def contribute(config: Config, facts: Facts, survey: Survey) -> Contribution:
    """The router address of each present LAN's /64 (translate: the internal prefix; tunnel:
    its prefix; delegate: its subnet of the delegation, with its source rule and the
    delegation's unreachable route); a reason per LAN."""
    links = {link.name: link for link in facts.observed.links.values()}
    objects: list[object] = []
    delegated = delegations(config, facts)
    for lan, cfg in config.lan.items():
        mode = lan_mode(config, cfg)
        prefix = delegated[lan][0] if lan in delegated else cfg.ipv6.prefix
        link = links.get(lan)
        if mode in ("translate", "tunnel", "delegate") and prefix is not None and link is not None:
            address = ipaddress.IPv6Interface(f"{prefix.network_address + 1}/{prefix.prefixlen}")
            objects.append(StaticAddr(link.index, address, dev=lan))
        if mode == "delegate" and prefix is not None and cfg.ipv6.uplink in config.uplinks:
            table = config.uplinks[cfg.ipv6.uplink].table
            objects.append(Rule(AF_INET6, config.rules.priority + BAND_DELEGATED, table, src=prefix))
    statuses = {s.name: s for s in survey.statuses}
    for name in sorted(used_delegations(config)):
        d = facts.delegations.get(name)
        if d is None:
            continue
        objects.append(Route(RouteKey(AF_INET6, MAIN_TABLE, str(d.prefix)), type="unreachable"))
        objects += unnumbered_default(config, facts, survey, statuses.get(name))
    _, reasons = translations(config, survey.statuses, uplink_prefixes(survey))
    for lan, (_, why) in delegated.items():
        reasons[topic(lan)] = why
    for lan in config.lan:
        if lan not in links:
            reasons[topic(lan)] = f"interface {lan} is not there; " + reasons[topic(lan)]
    more, extend_reasons, adverts = extend.contribute_lans(config, facts, survey)
    reasons.update(extend_reasons)
    return Contribution(objects=tuple(objects + more), reasons=reasons, adverts=adverts)
