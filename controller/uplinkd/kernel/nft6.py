"""The IPv6 part of the controller's nftables table: rendering it and reading it back.

Called from `uplinkd.kernel.nft.render` and `read`; kept apart so the table's IPv4 body can
change without touching this.

- `off` and `tunnel` LANs: IPv6 forwarded from the LAN interface to any uplink is dropped
  (forward hook). `delegate` LANs too, but for their delegated /64 out of the uplink that
  delegated it (one accept rule each, before the drop): a source left over from an expired
  delegation, or one going to another uplink, goes nowhere.
- `translate` LANs: out of uplink `u`, a source in the LAN's internal /64 gets `u`'s /64 as
  its network half, the interface ID kept (`snat ip6 prefix to`: the kernel's netmap NAT);
  conntrack undoes it on replies. Anything else IPv6 is never translated: the masquerade is
  IPv4 only.
- the guard, after source NAT: IPv6 leaving uplink `u` with a source in `u`'s own prefix (or
  link-local) passes; a unique-local source (fc00::/7), another uplink's prefix or a LAN's
  internal prefix (translation did not happen) is dropped, so no such packet reaches a carrier.
  Sources uplinkd knows nothing about (a prefix someone else routes to the LAN) are left alone.

Each rule that carries state has a comment `uplinkd6 <what> ...`: reading the table back
reduces to reading those comments, which nft prints verbatim.
"""

from __future__ import annotations

import re

from uplinkd.model import NftDelegated, NftIpv6, NftPrefix, NftState, NftTranslation

ULA = "fc00::/7"
TAG = "uplinkd6"


def forward_rules(state: NftState) -> str:
    """The forward chain's rules for the LANs whose IPv6 must not leave by an uplink: none
    without such a LAN, and then the table has no forward chain at all."""
    closed = state.ipv6.closed
    if not closed:
        return ""
    names = ", ".join(f'"{lan}"' for lan in closed)
    passes = "".join(
        f'\t\tiifname "{d.lan}" oifname "{d.ifname}" ip6 saddr {d.prefix} accept '
        f'comment "{TAG} pd {d.lan} {d.ifname} {d.prefix}"\n'
        for d in state.ipv6.delegated
    )
    return passes + (
        f"\t\tmeta nfproto ipv6 iifname {{ {names} }} oifname @uplinks drop "
        f'comment "{TAG} off {" ".join(closed)}"\n'
    )


def nat_rules(state: NftState) -> str:
    """Rules for the srcnat chain, before the (IPv4) masquerade: one per translation."""
    return "".join(
        f'\t\tiifname "{t.lan}" oifname "{t.ifname}" ip6 saddr {t.inner} snat ip6 prefix to {t.outer} '
        f'comment "{TAG} npt {t.lan} {t.inner} {t.ifname} {t.outer}"\n'
        for t in state.ipv6.translations
    )


def guard_rule(state: NftState) -> str:
    """The guard's entry, the last rule of the postrouting filter chain (after source NAT):
    an IPv4 packet fails its first test; an IPv6 one goes to its uplink's chain by one map
    lookup. None without uplinks."""
    if not state.uplinks:
        return ""
    verdicts = ", ".join(f'"{u.ifname}" : goto guard6_{u.mark:x}' for u in state.uplinks)
    return f"\t\tmeta nfproto ipv6 oifname vmap {{ {verdicts} }}\n"


def guard_chains(state: NftState) -> str:
    """Per uplink, the sources that may leave it: its own prefixes (and link-local, which
    no rule drops) pass; unique-local ones, other uplinks' and the LANs' internal ones drop."""
    own: dict[str, list[str]] = {}
    for p in state.ipv6.prefixes:
        own.setdefault(p.ifname, []).append(p.prefix)
    inner = sorted({t.inner for t in state.ipv6.translations})
    everyone = sorted({p.prefix for p in state.ipv6.prefixes})
    chains = []
    for u in state.uplinks:
        mine = own.get(u.ifname, [])
        lines = [f"\tchain guard6_{u.mark:x} {{\n"]
        lines += [f'\t\tip6 saddr {p} accept comment "{TAG} own {u.ifname} {p}"\n' for p in mine]
        lines.append(f"\t\tip6 saddr {ULA} drop\n")
        lines += [f"\t\tip6 saddr {p} drop\n" for p in dict.fromkeys([*everyone, *inner]) if p not in mine]
        lines.append("\t}\n")
        chains.append("".join(lines))
    return "".join(chains)


_STATE = re.compile(rf'comment "{TAG} (own|npt|off|pd) ([^"]*)"')


def read(text: str) -> NftIpv6:
    """The IPv6 part of a listing, from the rules' comments."""
    prefixes: list[NftPrefix] = []
    translations: list[NftTranslation] = []
    closed: list[str] = []
    delegated: list[NftDelegated] = []
    for m in _STATE.finditer(text):
        words = m.group(2).split()
        if m.group(1) == "own" and len(words) == 2:
            prefixes.append(NftPrefix(words[0], words[1]))
        elif m.group(1) == "npt" and len(words) == 4:
            translations.append(NftTranslation(*words))
        elif m.group(1) == "off":
            closed += words
        elif m.group(1) == "pd" and len(words) == 3:
            delegated.append(NftDelegated(*words))
    return NftIpv6(
        tuple(sorted(prefixes)), tuple(sorted(translations)), tuple(sorted(closed)), tuple(sorted(delegated))
    )
