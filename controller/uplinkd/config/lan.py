"""The `lan` section: what each LAN interface's IPv6 may do through the uplinks.

`lan.<interface>.ipv6.mode` is an explicit choice per LAN interface (the key is the kernel's
interface name, e.g. `lan0` or `br-lan`):

- `off` (the default): nothing from this LAN is forwarded to an uplink over IPv6.
- `translate`: the LAN keeps a stable internal /64 (`prefix`); on the way out of uplink `u`
  its network half is swapped for `u`'s /64 (nftables prefix NAT, the interface ID kept) and
  back by conntrack, so LAN IPv6 rides the same weighted group, ct-mark pinning and
  flush-by-mark as IPv4. `uplinks` limits which uplinks carry it (default: all).
- `extend`: the /64 that `uplink`'s router advertises (3GPP routes the whole /64 to the device)
  moves to this LAN: it is routed here instead of being on-link on the uplink, and uplinkd's
  own RA sender advertises it (see `uplinkd.advertiser`). One LAN per uplink.
- `delegate`, `tunnel`: designed (issue 13), not built yet; refused with a message saying so
  rather than accepted and ignored.

Whatever is configured, the controller never translates IPv6 that no `translate` LAN asked for
(its masquerade is IPv4 only), and a LAN's IPv6 never leaves an uplink with a source outside
that uplink's prefix (see `uplinkd.kernel.nft`).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from uplinkd.config import ifname
from uplinkd.config.fields import Section, Text, shown

MODES = ("off", "translate", "extend", "delegate", "tunnel")
BUILT = ("off", "translate", "extend")
PREFIX_LEN = 64


def _network_text(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError(f'{shown(value)} is not a prefix; write it in quotes, e.g. "2001:db8:ff::/64"')
    try:
        net = ipaddress.IPv6Network(value, strict=False)
    except ValueError:
        raise ValueError(f'{shown(value)} is not an IPv6 prefix; write e.g. "2001:db8:ff::/64"') from None
    if "/" not in value:
        raise ValueError(
            f"{shown(value)} has no prefix length; write e.g. {str(net.supernet(new_prefix=64))!r}"
        )
    if ipaddress.IPv6Interface(value).ip != net.network_address:
        raise ValueError(f"{shown(value)} has host bits set; write the prefix itself, {str(net)!r}")
    return net


V6Prefix = Annotated[ipaddress.IPv6Network, BeforeValidator(_network_text)]


class LanIpv6(Section):
    """How this LAN's IPv6 reaches the uplinks."""

    mode: Literal["off", "translate", "extend", "delegate", "tunnel"] = Field(
        default="off",
        description="off: no IPv6 from this LAN to any uplink; translate: a stable internal /64 "
        "prefix-translated to each uplink's /64 (interface ID kept); extend: one uplink's "
        "advertised /64 moved to this LAN and advertised here; delegate, tunnel: not built yet",
    )
    prefix: V6Prefix | None = Field(
        default=None,
        description="translate: the LAN's internal /64 (a non-ULA prefix keeps clients preferring "
        "IPv6 over IPv4, see the README)",
    )
    uplinks: tuple[Text, ...] | None = Field(
        default=None, description="translate: the uplinks that carry this LAN's IPv6 (default: all)"
    )
    uplink: Text | None = Field(
        default=None, description="extend: the uplink whose advertised /64 this LAN gets"
    )

    @model_validator(mode="after")
    def _by_mode(self) -> LanIpv6:
        if self.mode not in BUILT:
            raise ValueError(
                f"mode: {self.mode!r} is not built yet (issue 13); use 'off', 'translate' or 'extend'"
            )
        if self.mode == "translate":
            if self.prefix is None:
                raise ValueError(
                    'prefix: is required for translate; add the LAN\'s internal /64, e.g. "2001:db8:ff::/64"'
                )
            if self.prefix.prefixlen != PREFIX_LEN:
                raise ValueError(
                    f"prefix: {self.prefix} is a /{self.prefix.prefixlen}; translation keeps the "
                    f"interface ID, so use a /{PREFIX_LEN} like the uplinks' prefixes"
                )
            if self.prefix.is_link_local or self.prefix.is_multicast or self.prefix.is_loopback:
                raise ValueError(f"prefix: {self.prefix} cannot be routed; use a unicast /64")
        if self.mode == "extend" and self.uplink is None:
            raise ValueError(
                'uplink: is required for extend; name the uplink whose /64 moves here, e.g. "lte1"'
            )
        for name, used_by in (("prefix", "translate"), ("uplinks", "translate"), ("uplink", "extend")):
            if self.mode != used_by and getattr(self, name) is not None:
                raise ValueError(f"{name}: is only used with mode {used_by!r}; remove it")
        return self


class Lan(Section):
    """One LAN interface."""

    ipv6: LanIpv6 = Field(default_factory=LanIpv6)


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a LAN key: it must be an interface name nft can quote, not a glob."""
    if any(c in name for c in "*?["):
        return f"{shown(name)} is a glob; name the LAN interface exactly, e.g. 'lan0'"
    return ifname.problem(name)


def cross_check(lans: dict[str, Lan], uplinks: dict[str, object], exact_uplink_names: set[str]) -> list[str]:
    """Problems between the `lan` section and the uplinks, one line each."""
    problems: list[str] = []
    seen: dict[ipaddress.IPv6Network, str] = {}
    extended: dict[str, str] = {}  # uplink → the LAN its /64 goes to
    for name, lan in lans.items():
        where = f"lan.{name}"
        why = name_problem(name)
        if why is not None:
            problems.append(f"{where}: {why}")
            continue
        if name in exact_uplink_names:
            problems.append(f"{where}: {name!r} is also an uplink's interface; a LAN cannot be an uplink")
        v6 = lan.ipv6
        known = ", ".join(sorted(uplinks)) or "none configured"
        for up in v6.uplinks or ():
            if up not in uplinks:
                problems.append(f"{where}.ipv6.uplinks: {up!r} is not an uplink; use one of: {known}")
        if v6.uplink is not None:
            if v6.uplink not in uplinks:
                problems.append(f"{where}.ipv6.uplink: {v6.uplink!r} is not an uplink; use one of: {known}")
            elif v6.uplink in extended:
                problems.append(
                    f"{where}.ipv6.uplink: {v6.uplink!r} is already extended to lan.{extended[v6.uplink]}; "
                    "an uplink's /64 can go to one LAN only"
                )
            extended.setdefault(v6.uplink, name)
        if v6.prefix is not None:
            other = next((w for p, w in seen.items() if p.overlaps(v6.prefix)), None)
            if other is not None:
                problems.append(
                    f"{where}.ipv6.prefix: {v6.prefix} overlaps {other}; give each LAN its own /64"
                )
            seen[v6.prefix] = f"{where}.ipv6.prefix"
    return problems
