"""IPv6 router advertisements as values, and their wire format (RFC 4861, RDNSS: RFC 8106).

An uplink's router tells us, by RA, its link-local address, how long it is our default router,
the prefixes it routes to us (the /64 a 3GPP network hands a device), the link's MTU and its
DNS servers: an `Advert`, recorded per uplink like a DHCP lease. uplinkd's own RA sender on an
`extend` LAN speaks the same format (`encode_advert`).

Pure: `decode` takes untrusted bytes and returns None for anything malformed (a truncated
option, a zero option length, a prefix longer than 128) rather than raising.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

ROUTER_SOLICIT = 133
ROUTER_ADVERT = 134
ND_HOP_LIMIT = 255  # RFC 4861: a router advertisement from off-link has a lower one

OPT_SOURCE_LLADDR = 1
OPT_PREFIX = 3
OPT_MTU = 5
OPT_RDNSS = 25
PREFIX_ONLINK = 0x80
PREFIX_AUTONOMOUS = 0x40
RA_MANAGED = 0x80  # the M flag: addresses are available by DHCPv6 (RFC 4861 4.2)
INFINITY = 0xFFFFFFFF

_HEAD = struct.Struct("!BBHBBHII")  # type, code, checksum, hop limit, flags, lifetime, reachable, retrans
_PIO = struct.Struct("!BBIII16s")  # prefix length, flags, valid, preferred, reserved, prefix


@dataclass(frozen=True, order=True)
class AdvertPrefix:
    """One prefix information option."""

    prefix: ipaddress.IPv6Network
    valid: int  # seconds; INFINITY: forever
    preferred: int
    onlink: bool = True
    autonomous: bool = True


@dataclass(frozen=True)
class Advert:
    """What an uplink's router last advertised (or what uplinkd advertises on a LAN)."""

    router: ipaddress.IPv6Address  # its link-local source address
    lifetime: int  # seconds as default router; 0: not a default router
    prefixes: tuple[AdvertPrefix, ...] = ()
    mtu: int | None = None
    rdnss: tuple[ipaddress.IPv6Address, ...] = ()
    rdnss_lifetime: int = 0
    hop_limit: int = 0
    managed: bool = False  # the M flag: the link's addresses come by DHCPv6 (IA_NA)

    def usable(self) -> tuple[AdvertPrefix, ...]:
        """The /64s a host may autoconfigure in now (not deprecated)."""
        return tuple(p for p in self.prefixes if p.prefix.prefixlen == 64 and p.preferred > 0 and p.valid > 0)


def _options(data: bytes) -> list[tuple[int, bytes]] | None:
    found: list[tuple[int, bytes]] = []
    at = 0
    while at < len(data):
        if len(data) - at < 2:
            return None
        kind, units = data[at], data[at + 1]
        size = units * 8
        if size == 0 or at + size > len(data):
            return None
        found.append((kind, data[at + 2 : at + size]))
        at += size
    return found


def decode(data: bytes, source: ipaddress.IPv6Address) -> Advert | None:
    """An RA's content from the ICMPv6 message `data` (what a raw socket returns), sent from
    `source`; None if it is not a well-formed RA from a link-local address."""
    if len(data) < _HEAD.size or data[0] != ROUTER_ADVERT or data[1] != 0 or not source.is_link_local:
        return None
    _, _, _, hop_limit, ra_flags, lifetime, _, _ = _HEAD.unpack_from(data)
    options = _options(data[_HEAD.size :])
    if options is None:
        return None
    prefixes: list[AdvertPrefix] = []
    mtu: int | None = None
    rdnss: list[ipaddress.IPv6Address] = []
    rdnss_lifetime = 0
    for kind, body in options:
        if kind == OPT_PREFIX and len(body) == _PIO.size:
            plen, flags, valid, preferred, _, raw = _PIO.unpack(body)
            if plen > 128 or preferred > valid:  # RFC 4862 5.5.3 c: ignore it
                continue
            net = ipaddress.IPv6Network((ipaddress.IPv6Address(raw), plen), strict=False)
            if net.is_link_local or net.is_multicast:
                continue
            prefixes.append(
                AdvertPrefix(
                    net, valid, preferred, bool(flags & PREFIX_ONLINK), bool(flags & PREFIX_AUTONOMOUS)
                )
            )
        elif kind == OPT_MTU and len(body) == 6:
            (value,) = struct.unpack_from("!I", body, 2)
            mtu = value if 1280 <= value <= 65535 else None
        elif kind == OPT_RDNSS and len(body) >= 22 and (len(body) - 6) % 16 == 0:
            (rdnss_lifetime,) = struct.unpack_from("!I", body, 2)
            rdnss += [ipaddress.IPv6Address(body[i : i + 16]) for i in range(6, len(body), 16)]
    return Advert(
        router=source,
        lifetime=lifetime,
        prefixes=tuple(sorted(set(prefixes))),
        mtu=mtu,
        rdnss=tuple(rdnss),
        rdnss_lifetime=rdnss_lifetime,
        hop_limit=hop_limit,
        managed=bool(ra_flags & RA_MANAGED),
    )


def encode_advert(advert: Advert, *, lladdr: bytes | None = None) -> bytes:
    """The ICMPv6 message of `advert` (the kernel fills in the checksum). `advert.router` is
    not in it: the sender's link-local address is the packet's source."""
    flags = RA_MANAGED if advert.managed else 0
    out = bytearray(_HEAD.pack(ROUTER_ADVERT, 0, 0, advert.hop_limit, flags, advert.lifetime, 0, 0))
    if lladdr is not None and len(lladdr) == 6:
        out += bytes((OPT_SOURCE_LLADDR, 1)) + lladdr
    if advert.mtu is not None:
        out += struct.pack("!BBHI", OPT_MTU, 1, 0, advert.mtu)
    for p in advert.prefixes:
        flags = (PREFIX_ONLINK if p.onlink else 0) | (PREFIX_AUTONOMOUS if p.autonomous else 0)
        out += bytes((OPT_PREFIX, 4)) + _PIO.pack(
            p.prefix.prefixlen, flags, p.valid, p.preferred, 0, p.prefix.network_address.packed
        )
    if advert.rdnss:
        out += struct.pack("!BBHI", OPT_RDNSS, 1 + 2 * len(advert.rdnss), 0, advert.rdnss_lifetime)
        out += b"".join(a.packed for a in advert.rdnss)
    return bytes(out)


def encode_solicit() -> bytes:
    """A router solicitation without options (sent from the link-local address, or ::)."""
    return struct.pack("!BBHI", ROUTER_SOLICIT, 0, 0, 0)


def is_solicit(data: bytes) -> bool:
    """A well-formed router solicitation (RFC 4861 6.1.1: code 0, at least 8 bytes, options sane)."""
    return len(data) >= 8 and data[0] == ROUTER_SOLICIT and data[1] == 0 and _options(data[8:]) is not None


# --- neighbour discovery for an extended prefix (an Ethernet-style uplink) ------------------------

NEIGHBOUR_SOLICIT = 135
NEIGHBOUR_ADVERT = 136
OPT_TARGET_LLADDR = 2
NA_ROUTER, NA_SOLICITED, NA_OVERRIDE = 0x80000000, 0x40000000, 0x20000000


def solicited_target(data: bytes) -> ipaddress.IPv6Address | None:
    """The target of a well-formed neighbour solicitation (RFC 4861 7.1.1), else None."""
    if len(data) < 24 or data[0] != NEIGHBOUR_SOLICIT or data[1] != 0 or _options(data[24:]) is None:
        return None
    target = ipaddress.IPv6Address(data[8:24])
    return None if target.is_multicast else target


def encode_neighbour_advert(target: ipaddress.IPv6Address, lladdr: bytes) -> bytes:
    """A solicited neighbour advertisement from a router for `target`, naming `lladdr`."""
    flags = NA_ROUTER | NA_SOLICITED | NA_OVERRIDE
    return (
        struct.pack("!BBHI", NEIGHBOUR_ADVERT, 0, 0, flags)
        + target.packed
        + bytes((OPT_TARGET_LLADDR, 1))
        + lladdr
    )
