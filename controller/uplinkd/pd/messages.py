"""DHCPv6 messages (RFC 8415), as values: encoding and decoding.

Only what a requesting router needs: the client/server messages of the four-message exchange
(Solicit, Advertise, Request, Reply), of keeping a binding (Renew, Rebind) and of refusing an
address that duplicate-address detection failed for (Decline), with the options they carry:
Client and Server Identifier, IA_NA with its IA Addresses (the uplink's own address), IA_PD
with its IA Prefixes (a delegated prefix), Status Code, Preference, Elapsed Time and Option
Request. Anything else in a message is skipped by its
length; a message that does not parse raises `Malformed` and is ignored by the client.

Pure: no sockets, no clock.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from enum import IntEnum

CLIENT_PORT, SERVER_PORT = 546, 547
ALL_SERVERS = "ff02::1:2"  # All_DHCP_Relay_Agents_and_Servers


class MessageType(IntEnum):
    SOLICIT = 1
    ADVERTISE = 2
    REQUEST = 3
    RENEW = 5
    REBIND = 6
    REPLY = 7
    RELEASE = 8
    DECLINE = 9


class Option(IntEnum):
    CLIENTID = 1
    SERVERID = 2
    IA_NA = 3
    IAADDR = 5
    ORO = 6
    PREFERENCE = 7
    ELAPSED_TIME = 8
    STATUS_CODE = 13
    DNS_SERVERS = 23
    IA_PD = 25
    IAPREFIX = 26


class Status(IntEnum):
    SUCCESS = 0
    UNSPEC_FAIL = 1
    NO_ADDRS_AVAIL = 2
    NO_BINDING = 3
    NOT_ON_LINK = 4
    USE_MULTICAST = 5
    NO_PREFIX_AVAIL = 6


INFINITY = 0xFFFFFFFF


class Malformed(ValueError):
    """A message that does not parse: it is dropped, never half-used."""


@dataclass(frozen=True)
class IaPrefix:
    """One delegated prefix with its lifetimes in seconds (INFINITY: for ever)."""

    prefix: ipaddress.IPv6Network
    preferred: int
    valid: int

    def encode(self) -> bytes:
        body = struct.pack("!IIB", self.preferred, self.valid, self.prefix.prefixlen)
        return _option(Option.IAPREFIX, body + self.prefix.network_address.packed)


@dataclass(frozen=True)
class IaPd:
    """An Identity Association for Prefix Delegation: its IAID, T1/T2 (seconds; 0 = the
    client chooses) and its prefixes; `status` is the IA's own Status Code, if any."""

    iaid: int
    t1: int = 0
    t2: int = 0
    prefixes: tuple[IaPrefix, ...] = ()
    status: Status | None = None

    def encode(self) -> bytes:
        body = struct.pack("!III", self.iaid, self.t1, self.t2)
        return _option(Option.IA_PD, body + b"".join(p.encode() for p in self.prefixes))


@dataclass(frozen=True)
class IaAddress:
    """One address of an IA_NA with its lifetimes in seconds (INFINITY: for ever); `status`
    is the IA Address option's own Status Code, if any."""

    address: ipaddress.IPv6Address
    preferred: int
    valid: int
    status: Status | None = None

    def encode(self) -> bytes:
        return _option(Option.IAADDR, self.address.packed + struct.pack("!II", self.preferred, self.valid))


@dataclass(frozen=True)
class IaNa:
    """An Identity Association for Non-temporary Addresses: its IAID, T1/T2 (seconds; 0 =
    the client chooses) and its addresses; `status` is the IA's own Status Code, if any."""

    iaid: int
    t1: int = 0
    t2: int = 0
    addresses: tuple[IaAddress, ...] = ()
    status: Status | None = None

    def encode(self) -> bytes:
        body = struct.pack("!III", self.iaid, self.t1, self.t2)
        return _option(Option.IA_NA, body + b"".join(a.encode() for a in self.addresses))


Ia = IaNa | IaPd


@dataclass(frozen=True)
class Message:
    """One DHCPv6 client/server message."""

    type: MessageType
    xid: int  # transaction id, 24 bits
    client_id: bytes | None = None
    server_id: bytes | None = None
    ia_pd: tuple[IaPd, ...] = ()
    ia_na: tuple[IaNa, ...] = ()
    status: Status | None = None  # the message's top-level Status Code
    preference: int = 0
    elapsed: int | None = None  # hundredths of a second, for client messages
    requested: tuple[int, ...] = ()  # Option Request option
    other: dict[int, bytes] = field(default_factory=dict, compare=False)

    def encode(self) -> bytes:
        if not 0 <= self.xid < 1 << 24:
            raise ValueError(f"xid {self.xid} is not 24 bits")
        out = bytearray(struct.pack("!I", (int(self.type) << 24) | self.xid))
        if self.client_id is not None:
            out += _option(Option.CLIENTID, self.client_id)
        if self.server_id is not None:
            out += _option(Option.SERVERID, self.server_id)
        if self.elapsed is not None:
            out += _option(Option.ELAPSED_TIME, struct.pack("!H", min(self.elapsed, 0xFFFF)))
        if self.requested:
            out += _option(Option.ORO, b"".join(struct.pack("!H", code) for code in self.requested))
        out += b"".join(ia.encode() for ia in self.ia_na)
        out += b"".join(ia.encode() for ia in self.ia_pd)
        return bytes(out)


def _option(code: int, body: bytes) -> bytes:
    if len(body) > 0xFFFF:
        raise ValueError(f"option {code} is {len(body)} bytes long")
    return struct.pack("!HH", code, len(body)) + body


def _options(data: bytes) -> list[tuple[int, bytes]]:
    found: list[tuple[int, bytes]] = []
    at = 0
    while at < len(data):
        if at + 4 > len(data):
            raise Malformed(f"an option header is cut short at byte {at}")
        code, length = struct.unpack_from("!HH", data, at)
        at += 4
        if at + length > len(data):
            raise Malformed(f"option {code} says {length} bytes but {len(data) - at} are left")
        found.append((code, data[at : at + length]))
        at += length
    return found


def _status(body: bytes) -> Status:
    if len(body) < 2:
        raise Malformed("a Status Code option shorter than 2 bytes")
    (code,) = struct.unpack_from("!H", body)
    try:
        return Status(code)
    except ValueError:
        return Status.UNSPEC_FAIL  # an unknown failure is a failure


def _ia_prefix(body: bytes) -> IaPrefix:
    if len(body) < 25:
        raise Malformed(f"an IA Prefix option of {len(body)} bytes (needs 25)")
    preferred, valid, length = struct.unpack_from("!IIB", body)
    if length > 128:
        raise Malformed(f"an IA Prefix of length {length}")
    try:
        prefix = ipaddress.IPv6Network((ipaddress.IPv6Address(body[9:25]), length), strict=False)
    except ValueError as e:
        raise Malformed(str(e)) from None
    return IaPrefix(prefix, preferred, valid)


def _ia_address(body: bytes) -> IaAddress:
    if len(body) < 24:
        raise Malformed(f"an IA Address option of {len(body)} bytes (needs 24)")
    preferred, valid = struct.unpack_from("!II", body, 16)
    status: Status | None = None
    for code, inner in _options(body[24:]):
        if code == Option.STATUS_CODE:
            status = _status(inner)
    return IaAddress(ipaddress.IPv6Address(body[:16]), preferred, valid, status)


def _ia_na(body: bytes) -> IaNa:
    if len(body) < 12:
        raise Malformed(f"an IA_NA option of {len(body)} bytes (needs 12)")
    iaid, t1, t2 = struct.unpack_from("!III", body)
    addresses: list[IaAddress] = []
    status: Status | None = None
    for code, inner in _options(body[12:]):
        if code == Option.IAADDR:
            addresses.append(_ia_address(inner))
        elif code == Option.STATUS_CODE:
            status = _status(inner)
    return IaNa(iaid, t1, t2, tuple(addresses), status)


def _ia_pd(body: bytes) -> IaPd:
    if len(body) < 12:
        raise Malformed(f"an IA_PD option of {len(body)} bytes (needs 12)")
    iaid, t1, t2 = struct.unpack_from("!III", body)
    prefixes: list[IaPrefix] = []
    status: Status | None = None
    for code, inner in _options(body[12:]):
        if code == Option.IAPREFIX:
            prefixes.append(_ia_prefix(inner))
        elif code == Option.STATUS_CODE:
            status = _status(inner)
    return IaPd(iaid, t1, t2, tuple(prefixes), status)


def decode(data: bytes) -> Message:
    """A message from the wire; Malformed if it does not parse."""
    if len(data) < 4:
        raise Malformed(f"a message of {len(data)} bytes")
    (head,) = struct.unpack_from("!I", data)
    try:
        kind = MessageType(head >> 24)
    except ValueError:
        raise Malformed(f"message type {head >> 24} is not one a client handles") from None
    fields: dict[str, object] = {}
    ia_pd: list[IaPd] = []
    ia_na: list[IaNa] = []
    other: dict[int, bytes] = {}
    for code, body in _options(data[4:]):
        if code == Option.CLIENTID:
            fields["client_id"] = body
        elif code == Option.SERVERID:
            fields["server_id"] = body
        elif code == Option.IA_PD:
            ia_pd.append(_ia_pd(body))
        elif code == Option.IA_NA:
            ia_na.append(_ia_na(body))
        elif code == Option.STATUS_CODE:
            fields["status"] = _status(body)
        elif code == Option.PREFERENCE and len(body) == 1:
            fields["preference"] = body[0]
        elif code == Option.ORO and len(body) % 2 == 0:
            fields["requested"] = struct.unpack(f"!{len(body) // 2}H", body)
        elif code == Option.ELAPSED_TIME and len(body) == 2:
            fields["elapsed"] = struct.unpack("!H", body)[0]
        else:
            other[code] = body
    return Message(kind, head & 0xFFFFFF, ia_pd=tuple(ia_pd), ia_na=tuple(ia_na), other=other, **fields)  # type: ignore[arg-type]


def duid_uuid(uuid_bytes: bytes) -> bytes:
    """A DUID-UUID (type 4, RFC 6355): stable for as long as the state directory is."""
    if len(uuid_bytes) != 16:
        raise ValueError("a UUID is 16 bytes")
    return struct.pack("!H", 4) + uuid_bytes
