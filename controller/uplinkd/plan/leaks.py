"""Which LAN→uplink IPv6 paths a LAN's mode allows: the pure half of `uplinkctl audit`.

The audit asks the kernel how it would route a packet forwarded from a LAN to the internet;
`fate` then follows that packet through the live nft table's IPv6 part as the kernel would
(the forward rule of closed LANs and the delegated passes, the prefix translations at source
NAT, the guard after it), and `allowed` says whether the LAN's mode lets it leave that
uplink with that source:

- `off`, `tunnel`: never.
- `translate`: translated from its internal prefix, by an uplink it lists (default: all).
- `delegate`: untranslated, from its delegated /64, by the uplink that delegated it.
- `extend`: untranslated, from the extended /64 (its uplink's own prefix in the table), by
  the extended uplink only. Routed to any other uplink is wrong even where the guard drops it
  there: the LAN's IPv6 would be black-holed, so the audit names that path too.

A path that leaves and is not allowed is a leak: an admin's stray prefix on a LAN, a route
or rule that sends a delegated prefix elsewhere, a table edited by hand.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from uplinkd.config import Config
from uplinkd.config.lan import mode_of
from uplinkd.model import NftIpv6

ULA = ipaddress.IPv6Network("fc00::/7")
IID_BITS = 64


def _net(text: str) -> ipaddress.IPv6Network:
    return ipaddress.IPv6Network(text)


@dataclass(frozen=True)
class Fate:
    """What becomes of one forwarded IPv6 packet routed out of an uplink's interface."""

    leaves: bool
    source: ipaddress.IPv6Address  # as it would leave (translated or not)
    how: str  # "translated to ...", "untranslated", or what dropped it


def fate(nft: NftIpv6, *, lan: str, src: ipaddress.IPv6Address, dev: str) -> Fate:
    """Follow a packet from `lan` with source `src`, routed out of `dev`, through the table."""
    if lan in nft.closed and not any(
        d.lan == lan and d.ifname == dev and src in _net(d.prefix) for d in nft.delegated
    ):
        return Fate(False, src, "dropped by uplinkd's forward rule")
    out, how = src, "untranslated"
    for t in nft.translations:
        if t.lan == lan and t.ifname == dev and src in _net(t.inner):
            outer = _net(t.outer)  # a /64, or an uplink's one DHCPv6 address (/128: N:1)
            bits = min(IID_BITS, 128 - outer.prefixlen)
            out = ipaddress.IPv6Address(int(outer.network_address) | (int(src) & ((1 << bits) - 1)))
            how = f"translated to {out}"
            break
    if out.is_link_local or any(p.ifname == dev and out in _net(p.prefix) for p in nft.prefixes):
        return Fate(True, out, how)
    known = [_net(p.prefix) for p in nft.prefixes] + [_net(t.inner) for t in nft.translations]
    if out in ULA or any(out in net for net in known):
        return Fate(False, out, f"{how}, then dropped by uplinkd's guard")
    return Fate(True, out, how)


def allowed(config: Config, nft: NftIpv6, *, lan: str, uplink: str, fated: Fate) -> bool:
    """Whether the mode of `lan` lets this packet leave `uplink` as `fated`."""
    cfg = config.lan.get(lan)
    if cfg is not None and mode_of(cfg, config.tunnels) == "extend" and uplink != cfg.ipv6.uplink:
        return False  # to another uplink: leaked or, dropped by the guard, black-holed
    if cfg is None or not fated.leaves:
        return not fated.leaves
    v6 = cfg.ipv6
    mode = mode_of(cfg, config.tunnels)
    if mode == "extend":  # by its own uplink (checked above), untranslated, from that uplink's /64
        mine = [_net(p.prefix) for p in nft.prefixes]  # the guard drops another uplink's on this one
        return fated.how == "untranslated" and any(fated.source in n for n in mine)
    if mode == "translate":
        wanted = v6.uplinks if v6.uplinks is not None else tuple(config.uplinks)
        return fated.how.startswith("translated") and uplink in wanted
    if mode == "delegate":
        mine = [_net(d.prefix) for d in nft.delegated if d.lan == lan]
        return uplink == v6.uplink and fated.how == "untranslated" and any(fated.source in n for n in mine)
    return False


def explained(
    config: Config, nft: NftIpv6, *, lan: str, src: ipaddress.IPv6Address, dev: str, uplink: str
) -> dict[str, object]:
    """For `uplinkctl explain`: what uplinkd's table does with a LAN's IPv6 packet routed out
    of an uplink: the source it leaves with (translated or not), or what drops it, and whether
    the LAN's mode allows that path (as `uplinkctl audit` judges it)."""
    fated = fate(nft, lan=lan, src=src, dev=dev)
    cfg = config.lan.get(lan)
    return {
        "lan": lan,
        "mode": mode_of(cfg, config.tunnels) if cfg is not None else None,
        "leaves": fated.leaves,
        "source": str(fated.source) if fated.leaves else None,
        "how": fated.how,
        "allowed": allowed(config, nft, lan=lan, uplink=uplink, fated=fated),
    }
