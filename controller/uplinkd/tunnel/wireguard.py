"""A WireGuard device and its peers as values, and the smallest update from one to another.

Both ways of configuring WireGuard (the kernel's generic netlink API and the userspace API
wireguard-go serves) read into these values and write from a `WgUpdate`, so the diff is one
piece of pure code. A peer's identity is its public key; everything else is an attribute.

Secret keys never appear in a log line, an error or `repr`: a private key renders as its
public key, a preshared key as a short fingerprint.

Restarting with the same configuration must not re-handshake, so `wg_update` writes only what
differs from what the device holds, never `replace_peers`: an unchanged peer is not touched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

KEY_LEN: Final = 32
ZERO_KEY: Final = bytes(KEY_LEN)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def decode_key(text: str, *, what: str) -> bytes:
    """A key in WireGuard's base64 form (what `wg genkey` writes) as 32 bytes."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what}: not base64; expected a key as `wg genkey` writes it") from None
    if len(raw) != KEY_LEN:
        raise ValueError(f"{what}: {len(raw)} bytes, a WireGuard key has {KEY_LEN}")
    return raw


@dataclass(frozen=True, order=True)
class PublicKey:
    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != KEY_LEN:
            raise ValueError(f"public key: {len(self.raw)} bytes, a WireGuard key has {KEY_LEN}")

    @classmethod
    def from_base64(cls, text: str) -> PublicKey:
        return cls(decode_key(text, what="public key"))

    @property
    def base64(self) -> str:
        return base64.b64encode(self.raw).decode()

    def __str__(self) -> str:
        return self.base64

    def __repr__(self) -> str:
        return f"PublicKey({self.base64})"


def _fingerprint(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:12]


@dataclass(frozen=True)
class PrivateKey:
    """A device's private key; shown only as its public key."""

    raw: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.raw) != KEY_LEN:
            raise ValueError(f"private key: {len(self.raw)} bytes, a WireGuard key has {KEY_LEN}")

    @property
    def public_key(self) -> PublicKey:
        # cryptography clamps the scalar as WireGuard does, so this equals `wg pubkey`
        public = X25519PrivateKey.from_private_bytes(self.raw).public_key()
        return PublicKey(public.public_bytes(Encoding.Raw, PublicFormat.Raw))

    def __str__(self) -> str:
        return f"(private key of {self.public_key})"

    def __repr__(self) -> str:
        return f"PrivateKey(public={self.public_key})"


@dataclass(frozen=True)
class PresharedKey:
    """A peer's preshared key; shown only as a fingerprint."""

    raw: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.raw) != KEY_LEN:
            raise ValueError(f"preshared key: {len(self.raw)} bytes, a WireGuard key has {KEY_LEN}")

    @property
    def fingerprint(self) -> str:
        return _fingerprint(self.raw)

    def __str__(self) -> str:
        return f"(preshared key {self.fingerprint})"

    def __repr__(self) -> str:
        return f"PresharedKey({self.fingerprint})"


@dataclass(frozen=True, order=True)
class Endpoint:
    address: IPAddress
    port: int

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"endpoint port {self.port}: must be 1-65535")

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """`192.0.2.1:51820` or `[2001:db8::1]:51820` (as `wg` and wireguard-go write them)."""
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"endpoint {text!r}: expected address:port, e.g. 192.0.2.1:51820")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"endpoint {text!r}: {host!r} is not an IP address") from None
        return cls(address, int(port))

    def __str__(self) -> str:
        if self.address.version == 6:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class WgPeer:
    """A peer as configured. Identity: `public_key`. `endpoint` None = not ours to set (a peer
    that dials in; WireGuard learns its address from the packets it sends)."""

    public_key: PublicKey
    preshared_key: PresharedKey | None = None
    endpoint: Endpoint | None = None
    allowed_ips: frozenset[IPNetwork] = frozenset()
    #: persistent keepalive interval in seconds; 0 = off
    keepalive: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.keepalive < 65536:
            raise ValueError(f"peer {self.public_key}: keepalive {self.keepalive} must be 0-65535 s")

    @property
    def key(self) -> PublicKey:
        return self.public_key


@dataclass(frozen=True)
class WgDevice:
    """A WireGuard device's configuration (what `wg showconf` shows). In a desired device,
    `listen_port` None means "any port" and `private_key` None "leave it as it is"."""

    ifname: str
    private_key: PrivateKey | None = None
    listen_port: int | None = None
    #: the mark on the device's own UDP packets; 0 = none
    fwmark: int = 0
    peers: tuple[WgPeer, ...] = ()

    def __post_init__(self) -> None:
        keys = [p.public_key for p in self.peers]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{self.ifname}: a peer's public key appears twice")
        if self.private_key is not None and self.private_key.public_key in set(keys):
            raise ValueError(f"{self.ifname}: a peer has the device's own public key")
        object.__setattr__(self, "peers", tuple(sorted(self.peers, key=lambda p: p.public_key)))

    @property
    def public_key(self) -> PublicKey | None:
        return None if self.private_key is None else self.private_key.public_key

    def peer(self, key: PublicKey) -> WgPeer | None:
        return next((p for p in self.peers if p.public_key == key), None)


@dataclass(frozen=True)
class WgPeerStats:
    """What a peer is doing, as read back: not configuration, never diffed."""

    public_key: PublicKey
    #: the address WireGuard sends to now (learnt from the peer's packets when it roams)
    endpoint: Endpoint | None
    #: unix time of the last completed handshake; None = never
    last_handshake: float | None
    rx_bytes: int
    tx_bytes: int


@dataclass(frozen=True)
class WgReading:
    """A device as read back: its configuration and its peers' counters."""

    device: WgDevice
    stats: tuple[WgPeerStats, ...] = ()

    def peer_stats(self, key: PublicKey) -> WgPeerStats | None:
        return next((s for s in self.stats if s.public_key == key), None)


# --- updates ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerUpdate:
    """One peer's change: `remove`, or set the attributes named in `fields` from `peer`
    (`fields` ⊆ {"preshared_key", "endpoint", "allowed_ips", "keepalive"}; allowed IPs are
    always written whole, replacing the peer's)."""

    peer: WgPeer
    fields: frozenset[str] = frozenset()
    remove: bool = False

    def __str__(self) -> str:
        words = [f"peer {self.peer.public_key}"]
        if self.remove:
            return words[0] + " remove"
        p = self.peer
        if "preshared_key" in self.fields:
            words.append(f"preshared-key {p.preshared_key if p.preshared_key else '(none)'}")
        if "endpoint" in self.fields and p.endpoint is not None:
            words.append(f"endpoint {p.endpoint}")
        if "keepalive" in self.fields:
            words.append(f"persistent-keepalive {p.keepalive or 'off'}")
        if "allowed_ips" in self.fields:
            words.append("allowed-ips " + (",".join(str(n) for n in sorted_networks(p.allowed_ips)) or '""'))
        return " ".join(words)


PEER_FIELDS: Final = frozenset({"preshared_key", "endpoint", "allowed_ips", "keepalive"})


@dataclass(frozen=True)
class WgUpdate:
    """The writes that turn a device into the desired one. `str()` is the change in `wg set`
    syntax (secret keys as fingerprints), which is how the applier logs it."""

    ifname: str
    private_key: PrivateKey | None = None
    listen_port: int | None = None
    fwmark: int | None = None
    peers: tuple[PeerUpdate, ...] = ()

    @property
    def empty(self) -> bool:
        return (
            self.private_key is None and self.listen_port is None and self.fwmark is None and not self.peers
        )

    def __str__(self) -> str:
        words = [f"wg set {self.ifname}"]
        if self.listen_port is not None:
            words.append(f"listen-port {self.listen_port}")
        if self.fwmark is not None:
            words.append(f"fwmark {self.fwmark:#x}" if self.fwmark else "fwmark off")
        if self.private_key is not None:
            words.append(f"private-key {self.private_key}")
        words.extend(str(p) for p in self.peers)
        return " ".join(words)


def sorted_networks(nets: Iterable[IPNetwork]) -> list[IPNetwork]:
    return sorted(nets, key=lambda n: (n.version, n.network_address.packed, n.prefixlen))


def wg_update(actual: WgDevice | None, desired: WgDevice) -> WgUpdate:
    """What to write so that `actual` (None: a device just created) becomes `desired`:
    only what differs. Computes, no side effects."""
    have = actual if actual is not None else WgDevice(desired.ifname)
    private_key = None
    if desired.private_key is not None and desired.private_key != have.private_key:
        private_key = desired.private_key
    listen_port = None
    if desired.listen_port is not None and desired.listen_port != have.listen_port:
        listen_port = desired.listen_port
    fwmark = desired.fwmark if desired.fwmark != have.fwmark else None
    changes: list[PeerUpdate] = [
        PeerUpdate(peer, remove=True) for peer in have.peers if desired.peer(peer.public_key) is None
    ]
    for peer in desired.peers:
        current = have.peer(peer.public_key)
        fields = _changed_fields(current, peer)
        if fields:
            changes.append(PeerUpdate(peer, fields=fields))
    return WgUpdate(
        desired.ifname, private_key=private_key, listen_port=listen_port, fwmark=fwmark, peers=tuple(changes)
    )


def _changed_fields(current: WgPeer | None, peer: WgPeer) -> frozenset[str]:
    if current is None:  # a new peer: everything it has
        fields = {"allowed_ips"}
        if peer.preshared_key is not None:
            fields.add("preshared_key")
        if peer.endpoint is not None:
            fields.add("endpoint")
        if peer.keepalive:
            fields.add("keepalive")
        return frozenset(fields)
    changed = set()
    if current.preshared_key != peer.preshared_key:
        changed.add("preshared_key")
    if peer.endpoint is not None and current.endpoint != peer.endpoint:
        changed.add("endpoint")
    if current.allowed_ips != peer.allowed_ips:
        changed.add("allowed_ips")
    if current.keepalive != peer.keepalive:
        changed.add("keepalive")
    return frozenset(changed)
