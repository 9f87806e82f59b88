"""Which address families an uplink carries: `uplinks.<n>.families`.

An ISP may give an uplink IPv6 only (many LTE networks, some fibre ones): no DHCPv4 answer,
no IPv4 address at all. By default an uplink carries whatever it gets (`["ipv4", "ipv6"]`): a
`dhcp` uplink whose DHCPv4 never answers is in service on IPv6 alone once an RA gives it a
router and an address. Saying `families = ["ipv6"]` makes that the plan rather than an
accident: no DHCPv4 client runs on it (no DISCOVERs paid for on a metered link, no "waiting
for a DHCP lease" for ever), a `static` one needs only `cidr6`, its probes must have an IPv6
target, and its table refuses IPv4 (`unreachable default`), so nothing IPv4 ever leaves by it.
`["ipv4"]` is the mirror: IPv6 is never routed over that uplink.

The checks here name the field inside the uplink (`address.cidr: ...`); the caller adds the
uplink's path. The LAN checks name the LAN's field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, Protocol

from uplinkd.config.probe import Probe, parse_target

Family = Literal["ipv4", "ipv6"]
FAMILIES: tuple[Family, ...] = ("ipv4", "ipv6")
VERSION: dict[Family, int] = {"ipv4": 4, "ipv6": 6}


class _Address(Protocol):
    @property
    def mode(self) -> str: ...


class _Carrier(Protocol):
    @property
    def families(self) -> tuple[Family, ...]: ...


def check_list(value: Sequence[str]) -> None:
    """The list itself: not empty, each family once."""
    if not value:
        raise ValueError('[] carries nothing; list "ipv4", "ipv6" or both')
    twice = sorted({f for f in value if list(value).count(f) > 1})
    if twice:
        raise ValueError(f"{twice[0]!r} is listed twice; list each family once")


def uplink_problems(address: _Address, families: Sequence[Family], probe: Probe) -> list[str]:
    """What does not fit the families in one uplink's address and probe targets."""
    problems: list[str] = []
    v4, v6 = "ipv4" in families, "ipv6" in families
    if address.mode == "static":
        cidr = getattr(address, "cidr", None)
        cidr6 = getattr(address, "cidr6", None)
        if v4 and cidr is None:
            problems.append(
                'address.cidr: missing; a static uplink that carries IPv4 needs its IPv4 address, e.g. '
                '"10.64.0.2/30" (or set families = ["ipv6"] for an IPv6-only uplink)'
            )
        if not v4 and (cidr is not None or getattr(address, "gateway", None) is not None):
            problems.append(
                'address.cidr: an IPv4 address on an uplink whose families leave out "ipv4"; '
                'remove cidr and gateway, or add "ipv4" to families'
            )
        if not v6 and (cidr6 is not None or getattr(address, "gateway6", None) is not None):
            problems.append(
                'address.cidr6: an IPv6 address on an uplink whose families leave out "ipv6"; '
                'remove cidr6 and gateway6, or add "ipv6" to families'
            )
        if not v4 and cidr6 is None:
            problems.append(
                "address.cidr6: missing; a static IPv6-only uplink needs its IPv6 address, "
                'e.g. "2001:db8::2/64"'
            )
    ip_type = getattr(address, "ip_type", None) if address.mode == "modem" else None
    if ip_type in FAMILIES and ip_type not in families:
        problems.append(
            f"address.ip_type: {ip_type!r} asks the modem for the one family this uplink does not carry "
            f"(families: {', '.join(families)}); ask for {' or '.join(repr(f) for f in families)} or 'ipv4v6'"
        )
    if probe.targets and len(families) < len(FAMILIES):
        wanted = VERSION[families[0]]
        usable = [t for t in probe.targets if _version(probe.method, t) == wanted]
        if not usable:
            problems.append(
                f"probe.targets: none is an IPv{wanted} address, and this uplink carries only "
                f"{families[0]} (families); add an IPv{wanted} target (the top-level probe's "
                "targets are an uplink's unless it names its own)"
            )
    return problems


def _version(method: str, target: str) -> int | None:
    try:
        return parse_target(method, target)[0].version
    except ValueError:
        return None  # reported by the probe's own check


def lan_problems(lans: Mapping[str, object], uplinks: Mapping[str, _Carrier]) -> list[str]:
    """A LAN's IPv6 cannot use an uplink that does not carry IPv6."""
    problems: list[str] = []
    for name, lan in lans.items():
        v6 = getattr(lan, "ipv6", None)
        mode = getattr(v6, "mode", None)
        one = getattr(v6, "uplink", None)
        carrier = uplinks.get(one) if isinstance(one, str) else None
        if mode in ("extend", "delegate") and carrier is not None and "ipv6" not in carrier.families:
            problems.append(
                f"lan.{name}.ipv6.uplink: {one!r} carries no IPv6 (its families leave out \"ipv6\"); "
                f'name an uplink that carries IPv6, or add "ipv6" to uplinks.{one}.families'
            )
        for up in getattr(v6, "uplinks", None) or ():
            if up in uplinks and "ipv6" not in uplinks[up].families:
                problems.append(
                    f"lan.{name}.ipv6.uplinks: {up!r} carries no IPv6 (its families leave out \"ipv6\"); "
                    f'remove it, or add "ipv6" to uplinks.{up}.families'
                )
    return problems


def versions(families: Sequence[Family]) -> frozenset[int]:
    """The IP versions (4, 6) of a families list."""
    return frozenset(VERSION[f] for f in families)
