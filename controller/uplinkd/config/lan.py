"""The `lan` section: what each LAN interface's IPv6 may do through the uplinks.

`lan.<interface>.ipv6.mode` is an explicit choice per LAN interface (the key is the kernel's
interface name, e.g. `lan0` or `br-lan`):

- `off` (the default without a full tunnel): nothing from this LAN is forwarded to an
  uplink over IPv6.
- `translate`: the LAN keeps a stable internal /64 (`prefix`); on the way out of uplink `u`
  its network half is swapped for `u`'s /64 (nftables prefix NAT, the interface ID kept) and
  back by conntrack, so LAN IPv6 rides the same weighted group, ct-mark pinning and
  flush-by-mark as IPv4. `uplinks` limits which uplinks carry it (default: all).
- `delegate`: the LAN gets /64 number `subnet` of the prefix that `uplink` delegates by
  DHCPv6-PD (the controller runs the client), `<prefix>::1/64` on the interface, and its
  IPv6 leaves by that uplink only (`from <prefix> lookup T_u`): no translation.
- `tunnel`: the LAN's IPv6 goes only into a WireGuard tunnel (`tunnel`, default: the one
  with `route = "full"`) and never to an uplink; `prefix`, if given, is the /64 the far end
  routes to us through the tunnel (uplinkd puts `<prefix>::1` on the LAN). It is the default
  mode of a listed LAN when a full tunnel is configured.
- `extend`: the /64 that `uplink`'s router advertises (3GPP routes the whole /64 to the
  device) moves to this LAN: it is routed here instead of being on-link on the uplink, and
  uplinkd's own RA sender advertises it (see `uplinkd.advertiser`). One LAN per uplink.

Whatever is configured, the controller never translates IPv6 that no `translate` LAN asked for
(its masquerade is IPv4 only), and a LAN's IPv6 never leaves an uplink with a source outside
that uplink's prefix (see `uplinkd.kernel.nft`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from uplinkd.config import ifname
from uplinkd.config.fields import Section, Text, shown

MODES = ("off", "translate", "extend", "delegate", "tunnel")
BUILT = ("off", "translate", "delegate", "tunnel", "extend")
SUBNET_MAX = 0xFFFF  # a /48 delegation has 65536 /64s; a longer one is checked when it arrives
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

    mode: Literal["off", "translate", "extend", "delegate", "tunnel"] | None = Field(
        default=None,
        description="off: no IPv6 from this LAN to any uplink; translate: a stable internal /64 "
        "prefix-translated to each uplink's /64 (interface ID kept); delegate: a /64 of the prefix "
        "`uplink` delegates by DHCPv6-PD; tunnel: only through a WireGuard tunnel; extend: the /64 "
        "`uplink`'s router advertises, moved to this LAN and advertised here. Unset: tunnel when "
        "a tunnel has route full, off otherwise",
    )
    prefix: V6Prefix | None = Field(
        default=None,
        description="translate: the LAN's internal /64 (a non-ULA prefix keeps clients preferring "
        "IPv6 over IPv4, see the README); tunnel: the /64 the tunnel's far end routes to this LAN",
    )
    uplinks: tuple[Text, ...] | None = Field(
        default=None, description="translate: the uplinks that carry this LAN's IPv6 (default: all)"
    )
    uplink: Text | None = Field(
        default=None,
        description="delegate: the uplink whose DHCPv6-PD prefix this LAN takes a /64 of; "
        "extend: the uplink whose advertised /64 this LAN gets",
    )
    subnet: int | None = Field(
        default=None, description="delegate: which /64 of the delegated prefix (0 = the first; default 0)"
    )
    tunnel: Text | None = Field(
        default=None, description="tunnel: the tunnel this LAN's IPv6 goes through (default: the full one)"
    )

    @field_validator("subnet", mode="before")
    @classmethod
    def _subnet(cls, value: object) -> object:
        if value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SUBNET_MAX:
            raise ValueError(
                f"{shown(value)} is not a subnet number; use a whole number from 0 to {SUBNET_MAX} "
                "(the /64s of the delegated prefix, counted from 0)"
            )
        return value

    @property
    def subnet_index(self) -> int:
        return self.subnet or 0

    @model_validator(mode="after")
    def _by_mode(self) -> LanIpv6:
        if self.mode is not None and self.mode not in BUILT:
            built = ", ".join(repr(m) for m in BUILT)
            raise ValueError(f"mode: {self.mode!r} is not built yet (issue 13); use one of {built}")
        if self.mode == "translate" and self.prefix is None:
            raise ValueError(
                'prefix: is required for translate; add the LAN\'s internal /64, e.g. "2001:db8:ff::/64"'
            )
        if self.prefix is not None:
            if self.prefix.prefixlen != PREFIX_LEN:
                why = (
                    "translation keeps the interface ID, so use a /64 like the uplinks' prefixes"
                    if self.mode == "translate"
                    else f"SLAAC on the LAN needs a /{PREFIX_LEN}"
                )
                raise ValueError(f"prefix: {self.prefix} is a /{self.prefix.prefixlen}; {why}")
            if self.prefix.is_link_local or self.prefix.is_multicast or self.prefix.is_loopback:
                raise ValueError(f"prefix: {self.prefix} cannot be routed; use a unicast /64")
        if self.mode == "delegate" and self.uplink is None:
            raise ValueError("uplink: is required for delegate; name the uplink whose ISP delegates a prefix")
        if self.mode == "extend" and self.uplink is None:
            raise ValueError(
                'uplink: is required for extend; name the uplink whose /64 moves here, e.g. "lte1"'
            )
        used = {
            "prefix": ("translate", "tunnel"),
            "uplinks": ("translate",),
            "uplink": ("delegate", "extend"),
            "subnet": ("delegate",),
            "tunnel": ("tunnel",),
        }
        for name, modes in used.items():
            if getattr(self, name) is not None and self.mode not in modes:
                only = " or ".join(repr(m) for m in modes)
                raise ValueError(f"{name}: is only used with mode {only}; remove it")
        return self


class Lan(Section):
    """One LAN interface."""

    ipv6: LanIpv6 = Field(default_factory=LanIpv6)


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a LAN key: it must be an interface name nft can quote, not a glob."""
    if any(c in name for c in "*?["):
        return f"{shown(name)} is a glob; name the LAN interface exactly, e.g. 'lan0'"
    return ifname.problem(name)


def full_tunnels(tunnels: Mapping[str, object]) -> list[str]:
    """The tunnels that take all LAN traffic (`route = "full"`)."""
    return [name for name, t in tunnels.items() if getattr(t, "route", None) == "full"]


def mode_of(lan: Lan, tunnels: Mapping[str, object]) -> str:
    """A LAN's IPv6 mode: as written, or, when not written, `tunnel` if a full tunnel is
    configured (its LAN IPv6 goes nowhere else) and `off` otherwise."""
    if lan.ipv6.mode is None:
        return "tunnel" if full_tunnels(tunnels) else "off"
    return lan.ipv6.mode


def tunnel_of(lan: Lan, tunnels: Mapping[str, object]) -> str | None:
    """The tunnel a `tunnel` LAN's IPv6 goes through: named, or the only full one."""
    if lan.ipv6.tunnel is not None:
        return lan.ipv6.tunnel
    full = full_tunnels(tunnels)
    return full[0] if len(full) == 1 else None


def cross_check(
    lans: dict[str, Lan],
    uplinks: dict[str, object],
    exact_uplink_names: set[str],
    tunnels: Mapping[str, object] | None = None,
) -> list[str]:
    """Problems between the `lan` section and the uplinks and tunnels, one line each."""
    problems: list[str] = []
    tunnels = tunnels or {}
    seen: dict[ipaddress.IPv6Network, str] = {}
    subnets: dict[tuple[str, int], str] = {}
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
        for up in v6.uplinks or ():
            if up not in uplinks:
                known = ", ".join(sorted(uplinks)) or "none configured"
                problems.append(f"{where}.ipv6.uplinks: {up!r} is not an uplink; use one of: {known}")
        if v6.mode == "delegate" and v6.uplink is not None:
            if v6.uplink not in uplinks:
                known = ", ".join(sorted(uplinks)) or "none configured"
                problems.append(f"{where}.ipv6.uplink: {v6.uplink!r} is not an uplink; use one of: {known}")
            key = (v6.uplink, v6.subnet_index)
            if key in subnets:
                problems.append(
                    f"{where}.ipv6.subnet: {v6.subnet_index} of {v6.uplink}'s delegation is also "
                    f"{subnets[key]}'s; give each LAN its own subnet number"
                )
            subnets.setdefault(key, where)
        if v6.mode == "extend" and v6.uplink is not None:
            if v6.uplink not in uplinks:
                known = ", ".join(sorted(uplinks)) or "none configured"
                problems.append(f"{where}.ipv6.uplink: {v6.uplink!r} is not an uplink; use one of: {known}")
            elif v6.uplink in extended:
                problems.append(
                    f"{where}.ipv6.uplink: {v6.uplink!r} is already extended to lan.{extended[v6.uplink]}; "
                    "an uplink's /64 can go to one LAN only"
                )
            extended.setdefault(v6.uplink, name)
        if mode_of(lan, tunnels) == "tunnel":
            known = ", ".join(sorted(tunnels)) or "none configured"
            if v6.tunnel is not None and v6.tunnel not in tunnels:
                fix = f"use one of: {known}" if tunnels else "none is configured; add it under tunnels"
                problems.append(f"{where}.ipv6.tunnel: {v6.tunnel!r} is not a tunnel; {fix}")
            elif tunnel_of(lan, tunnels) is None:
                problems.append(
                    f"{where}.ipv6.tunnel: mode 'tunnel' needs a tunnel; name one ({known}) or "
                    'configure one with route = "full"'
                )
        if v6.prefix is not None:
            other = next((w for p, w in seen.items() if p.overlaps(v6.prefix)), None)
            if other is not None:
                problems.append(
                    f"{where}.ipv6.prefix: {v6.prefix} overlaps {other}; give each LAN its own /64"
                )
            seen[v6.prefix] = f"{where}.ipv6.prefix"
    return problems
