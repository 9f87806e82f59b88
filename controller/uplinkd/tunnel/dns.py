"""A peer endpoint given as a DNS name: the name itself, and the one DNS exchange the tunnel
worker makes to resolve it (an A or AAAA question, the addresses in the answer). Pure: the
worker sends the query itself, on a socket carrying the tunnel's mark, so that the question
leaves by the tunnel's underlay uplink like the tunnel's own packets.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import Final

from uplinkd.tunnel.wireguard import Endpoint, IPAddress

TYPE_A: Final = 1
TYPE_AAAA: Final = 28
CLASS_IN: Final = 1
MAX_NAME: Final = 253
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


@dataclass(frozen=True)
class NamedEndpoint:
    """`home.example.org:51820`: resolved by the tunnel worker, through the underlay."""

    name: str
    port: int

    @classmethod
    def parse(cls, text: str) -> NamedEndpoint:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"endpoint {text!r}: expected name:port, e.g. home.example.org:51820")
        name = host.rstrip(".")
        labels = name.split(".")
        if len(name) > MAX_NAME or len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
            raise ValueError(
                f"endpoint {text!r}: {host!r} is neither an IP address nor a DNS name; "
                "write e.g. 192.0.2.1:51820 or home.example.org:51820"
            )
        return cls(name.lower(), int(port))

    def __str__(self) -> str:
        return f"{self.name}:{self.port}"


def query(name: str, qtype: int, ident: int) -> bytes:
    """A recursive question for `name`'s A (1) or AAAA (28) records."""
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, CLASS_IN)


def _skip_name(data: bytes, at: int) -> int:
    while True:
        if at >= len(data):
            raise ValueError("DNS answer: a name runs past the end")
        n = data[at]
        if n == 0:
            return at + 1
        if n & 0xC0 == 0xC0:
            return at + 2
        at += 1 + n


def answer(data: bytes, *, ident: int, qtype: int) -> tuple[tuple[IPAddress, ...], int]:
    """The addresses of type `qtype` in a reply to our question `ident`, and the smallest TTL
    among them (seconds). ValueError for a reply that is not one, or an error (RCODE)."""
    if len(data) < 12:
        raise ValueError("DNS answer: too short")
    rid, flags, qd, an, _ns, _ar = struct.unpack_from("!HHHHHH", data)
    if rid != ident or not flags & 0x8000:
        raise ValueError("DNS answer: not a reply to our question")
    rcode = flags & 0x000F
    if rcode:
        words = {3: "no such name (NXDOMAIN)", 2: "server failure"}
        raise ValueError(words.get(rcode, f"error code {rcode}"))
    at = 12
    for _ in range(qd):
        at = _skip_name(data, at) + 4
    found: list[IPAddress] = []
    ttl = 2**31
    for _ in range(an):
        at = _skip_name(data, at)
        if at + 10 > len(data):
            raise ValueError("DNS answer: a record runs past the end")
        rtype, rclass, rttl, size = struct.unpack_from("!HHIH", data, at)
        at += 10
        rdata = data[at : at + size]
        at += size
        if rclass != CLASS_IN or rtype != qtype or len(rdata) != (4 if qtype == TYPE_A else 16):
            continue  # a CNAME on the way, or another type
        found.append(ipaddress.ip_address(rdata))
        ttl = min(ttl, rttl)
    return tuple(found), (ttl if found else 0)


def endpoint(addresses: tuple[IPAddress, ...], port: int) -> Endpoint | None:
    """The endpoint WireGuard is given: the first address of the answer."""
    return Endpoint(addresses[0], port) if addresses else None
