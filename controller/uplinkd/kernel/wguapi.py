"""WireGuard's cross-platform userspace API: the text protocol `wg` speaks to wireguard-go.

One request per connection to `/var/run/wireguard/<ifname>.sock`: `get=1` answers the
device as `key=value` lines (keys in hex) ending in `errno=0` and a blank line; `set=1`
followed by `key=value` lines and a blank line applies them in order and answers `errno=N`.

What wireguard-go does with a `set` (v0.0.20220316, measured in tests/netns/test_wireguard_io.py):
naming an existing peer's public key selects it; setting its endpoint, preshared key,
keepalive or allowed IPs does not touch its session. `replace_peers=true` would drop every
session, so it is never sent: the update names only the peers that change.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from pathlib import Path
from typing import Final

from uplinkd.tunnel.wireguard import (
    ZERO_KEY,
    Endpoint,
    PeerUpdate,
    PresharedKey,
    PrivateKey,
    PublicKey,
    WgDevice,
    WgPeer,
    WgPeerStats,
    WgReading,
    WgUpdate,
    sorted_networks,
)

SOCKET_DIR: Final = Path("/var/run/wireguard")
#: a reply larger than this is not from wireguard-go (1000 peers with 10 allowed IPs is ~600 kB)
MAX_REPLY: Final = 16 * 1024 * 1024


class WgUapiError(Exception):
    """wireguard-go refused a request, or its socket is not there. `errno` is its answer (0 when
    the socket itself failed)."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


def socket_path(ifname: str, *, socket_dir: Path = SOCKET_DIR) -> Path:
    return socket_dir / f"{ifname}.sock"


async def _request(path: Path, text: str, *, timeout: float) -> list[tuple[str, str]]:
    """One exchange: connecting, then the request and its whole reply, each within
    `timeout` s. One deadline for the reply, not a wait_for per line: wait_for runs each
    line through a task of its own, ~45 event-loop turns for the reply the tunnel worker
    asks for every second."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(path))
    except (OSError, TimeoutError) as e:
        raise WgUapiError(f"{path}: {str(e) or f'no connection within {timeout:g} s'}") from None
    try:
        async with asyncio.timeout(timeout):
            writer.write(text.encode())
            await writer.drain()
            lines: list[tuple[str, str]] = []
            size = 0
            while True:
                raw = await reader.readline()
                size += len(raw)
                if not raw or size > MAX_REPLY:
                    raise WgUapiError(f"{path}: the reply ended early or is too large")
                line = raw.decode().rstrip("\n")
                if not line:
                    break
                key, sep, value = line.partition("=")
                if not sep:
                    raise WgUapiError(f"{path}: malformed reply line {line!r}")
                lines.append((key, value))
    except (OSError, TimeoutError, UnicodeDecodeError) as e:
        raise WgUapiError(f"{path}: {str(e) or f'no reply within {timeout:g} s'}") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if not lines or lines[-1][0] != "errno":
        raise WgUapiError(f"{path}: the reply has no errno line")
    code = int(lines[-1][1])
    if code != 0:
        raise WgUapiError(f"{path}: wireguard-go answered errno={code}", code)
    return lines[:-1]


async def get(ifname: str, *, socket_dir: Path = SOCKET_DIR, timeout: float = 2.0) -> WgReading:
    """The device as wireguard-go holds it."""
    return parse_get(
        ifname, await _request(socket_path(ifname, socket_dir=socket_dir), "get=1\n\n", timeout=timeout)
    )


async def set_(update: WgUpdate, *, socket_dir: Path = SOCKET_DIR, timeout: float = 2.0) -> None:
    """Apply `update` (nothing is sent for an empty one)."""
    if update.empty:
        return
    await _request(socket_path(update.ifname, socket_dir=socket_dir), render_set(update), timeout=timeout)


def render_set(update: WgUpdate) -> str:
    """The `set=1` request for `update` (contains secret keys: never log it)."""
    lines = ["set=1"]
    if update.private_key is not None:
        lines.append(f"private_key={update.private_key.raw.hex()}")
    if update.listen_port is not None:
        lines.append(f"listen_port={update.listen_port}")
    if update.fwmark is not None:
        lines.append(f"fwmark={update.fwmark}")
    for change in update.peers:
        lines.extend(_peer_lines(change))
    return "\n".join(lines) + "\n\n"


def _peer_lines(change: PeerUpdate) -> list[str]:
    peer = change.peer
    lines = [f"public_key={peer.public_key.raw.hex()}"]
    if change.remove:
        return [*lines, "remove=true"]
    if "preshared_key" in change.fields:
        psk = peer.preshared_key.raw if peer.preshared_key is not None else ZERO_KEY
        lines.append(f"preshared_key={psk.hex()}")
    if "endpoint" in change.fields and peer.endpoint is not None:
        lines.append(f"endpoint={peer.endpoint}")
    if "keepalive" in change.fields:
        lines.append(f"persistent_keepalive_interval={peer.keepalive}")
    if "allowed_ips" in change.fields:
        lines.append("replace_allowed_ips=true")
        lines.extend(f"allowed_ip={net}" for net in sorted_networks(peer.allowed_ips))
    return lines


def _key(value: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise WgUapiError(f"{what}: not hex") from None
    if len(raw) != len(ZERO_KEY):
        raise WgUapiError(f"{what}: {len(raw)} bytes")
    return raw


class _PeerReading:
    def __init__(self, public_key: PublicKey) -> None:
        self.public_key = public_key
        self.preshared_key: PresharedKey | None = None
        self.endpoint: Endpoint | None = None
        self.allowed_ips: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
        self.keepalive = 0
        self.handshake_sec = 0
        self.handshake_nsec = 0
        self.rx_bytes = 0
        self.tx_bytes = 0

    def peer(self) -> WgPeer:
        return WgPeer(
            self.public_key,
            preshared_key=self.preshared_key,
            endpoint=self.endpoint,
            allowed_ips=frozenset(self.allowed_ips),
            keepalive=self.keepalive,
        )

    def stats(self) -> WgPeerStats:
        handshake = self.handshake_sec + self.handshake_nsec / 1e9 if self.handshake_sec else None
        return WgPeerStats(self.public_key, self.endpoint, handshake, self.rx_bytes, self.tx_bytes)


def parse_get(ifname: str, lines: list[tuple[str, str]]) -> WgReading:
    """A `get=1` reply (without its errno line) as a reading. Unknown keys are skipped, as
    `wg` does, so a newer wireguard-go is still understood."""
    private_key: PrivateKey | None = None
    listen_port: int | None = None
    fwmark = 0
    peers: list[_PeerReading] = []
    try:
        for key, value in lines:
            if key == "public_key":
                peers.append(_PeerReading(PublicKey(_key(value, "public_key"))))
            elif not peers:
                if key == "private_key":
                    raw = _key(value, "private_key")
                    private_key = PrivateKey(raw) if raw != ZERO_KEY else None
                elif key == "listen_port":
                    listen_port = int(value)
                elif key == "fwmark":
                    fwmark = int(value)
            else:
                _peer_line(peers[-1], key, value)
    except ValueError as e:
        raise WgUapiError(f"{ifname}: unreadable reply: {e}") from None
    device = WgDevice(
        ifname,
        private_key=private_key,
        listen_port=listen_port,
        fwmark=fwmark,
        peers=tuple(p.peer() for p in peers),
    )
    return WgReading(device, tuple(p.stats() for p in peers))


def _peer_line(peer: _PeerReading, key: str, value: str) -> None:
    if key == "preshared_key":
        raw = _key(value, "preshared_key")
        peer.preshared_key = PresharedKey(raw) if raw != ZERO_KEY else None
    elif key == "endpoint":
        peer.endpoint = Endpoint.parse(value)
    elif key == "allowed_ip":
        peer.allowed_ips.add(ipaddress.ip_network(value, strict=False))
    elif key == "persistent_keepalive_interval":
        peer.keepalive = int(value)
    elif key == "last_handshake_time_sec":
        peer.handshake_sec = int(value)
    elif key == "last_handshake_time_nsec":
        peer.handshake_nsec = int(value)
    elif key == "rx_bytes":
        peer.rx_bytes = int(value)
    elif key == "tx_bytes":
        peer.tx_bytes = int(value)
