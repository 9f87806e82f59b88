"""Kernel WireGuard over its generic netlink API (family "wireguard", uapi/linux/wireguard.h).

pyroute2 0.9.7's `AsyncWireGuard` binds the family and has the message class, but its `set`
takes one peer per call and cannot clear a preshared key or say which attributes to leave
alone; the requests here are built on its message class instead, one request per update with
every peer change in it, and `WGDEVICE_F_REPLACE_PEERS` is never sent.

What the kernel does with a set (drivers/net/wireguard/netlink.c; the session part measured in
tests/vm/test_wireguard_kernel.py on Debian's 6.1): the same private key is skipped; a listen
port is rebound only when it differs; a peer named by public key is updated in place, its
endpoint, preshared key, keepalive and allowed IPs changed without touching its session (the
handshake time stays). Setting `fwmark`, even unchanged, clears every peer's cached source
address (read in the source, not measured): harmless for a session, and the way to make kernel
WireGuard pick a new source address after the underlay moved.

The interface itself is an rtnetlink link of kind "wireguard" (`create_interface`), which
uplinkd marks with its alias, as it does VXLAN interfaces; `create_interface` fails with
EOPNOTSUPP where the kernel has no WireGuard (how `backend = "auto"` tells). Not in every
kernel: this module is exercised in the VM tier (Debian's kernel), not in the netns tier.
"""

from __future__ import annotations

import base64
import errno
import ipaddress
import socket
from typing import Any, Final

from pyroute2 import AsyncIPRoute, AsyncWireGuard
from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic.wireguard import (
    WG_CMD_GET_DEVICE,
    WG_CMD_SET_DEVICE,
    WG_GENL_VERSION,
    WGPEER_F_REMOVE_ME,
    WGPEER_F_REPLACE_ALLOWEDIPS,
    wgmsg,
)

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

OWNER_ALIAS: Final = "uplinkd"


class WgGenlError(Exception):
    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(value: Any) -> bytes:
    return base64.b64decode(value)


def set_message(update: WgUpdate) -> wgmsg:
    """The WG_CMD_SET_DEVICE message for `update` (holds secret keys: never log it)."""
    msg = wgmsg()
    msg["cmd"] = WG_CMD_SET_DEVICE
    msg["version"] = WG_GENL_VERSION
    attrs: list[Any] = [["WGDEVICE_A_IFNAME", update.ifname]]
    if update.private_key is not None:
        attrs.append(["WGDEVICE_A_PRIVATE_KEY", _b64(update.private_key.raw)])
    if update.listen_port is not None:
        attrs.append(["WGDEVICE_A_LISTEN_PORT", update.listen_port])
    if update.fwmark is not None:
        attrs.append(["WGDEVICE_A_FWMARK", update.fwmark])
    if update.peers:
        attrs.append(["WGDEVICE_A_PEERS", [{"attrs": _peer_attrs(change)} for change in update.peers]])
    msg["attrs"] = attrs
    return msg


def _peer_attrs(change: PeerUpdate) -> list[Any]:
    peer = change.peer
    attrs: list[Any] = [["WGPEER_A_PUBLIC_KEY", _b64(peer.public_key.raw)]]
    if change.remove:
        return [*attrs, ["WGPEER_A_FLAGS", WGPEER_F_REMOVE_ME]]
    flags = WGPEER_F_REPLACE_ALLOWEDIPS if "allowed_ips" in change.fields else 0
    attrs.append(["WGPEER_A_FLAGS", flags])
    if "preshared_key" in change.fields:
        psk = peer.preshared_key.raw if peer.preshared_key is not None else ZERO_KEY
        attrs.append(["WGPEER_A_PRESHARED_KEY", _b64(psk)])
    if "endpoint" in change.fields and peer.endpoint is not None:
        attrs.append(["WGPEER_A_ENDPOINT", {"addr": str(peer.endpoint.address), "port": peer.endpoint.port}])
    if "keepalive" in change.fields:
        attrs.append(["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", peer.keepalive])
    if "allowed_ips" in change.fields:
        ips = [
            {
                "attrs": [
                    ["WGALLOWEDIP_A_FAMILY", socket.AF_INET if net.version == 4 else socket.AF_INET6],
                    ["WGALLOWEDIP_A_IPADDR", net.network_address.packed],
                    ["WGALLOWEDIP_A_CIDR_MASK", net.prefixlen],
                ]
            }
            for net in sorted_networks(peer.allowed_ips)
        ]
        attrs.append(["WGPEER_A_ALLOWEDIPS", ips])
    return attrs


class _Peer:
    def __init__(self, public_key: PublicKey) -> None:
        self.public_key = public_key
        self.preshared_key: PresharedKey | None = None
        self.endpoint: Endpoint | None = None
        self.allowed: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
        self.keepalive = 0
        self.handshake: float | None = None
        self.rx = 0
        self.tx = 0


def parse_device(ifname: str, msgs: list[Any]) -> WgReading:
    """WG_CMD_GET_DEVICE's reply: the kernel splits a large device over several messages, and
    a peer's allowed IPs may continue in the next one under the same public key."""
    private_key: PrivateKey | None = None
    listen_port: int | None = None
    fwmark = 0
    peers: dict[bytes, _Peer] = {}
    for msg in msgs:
        raw = msg.get_attr("WGDEVICE_A_PRIVATE_KEY")
        if raw is not None and _unb64(raw) != ZERO_KEY:
            private_key = PrivateKey(_unb64(raw))
        listen_port = msg.get_attr("WGDEVICE_A_LISTEN_PORT", listen_port)
        fwmark = msg.get_attr("WGDEVICE_A_FWMARK", fwmark)
        for nla in msg.get_attr("WGDEVICE_A_PEERS") or []:
            _read_peer(nla, peers)
    device = WgDevice(
        ifname,
        private_key=private_key,
        listen_port=listen_port,
        fwmark=fwmark,
        peers=tuple(
            WgPeer(p.public_key, p.preshared_key, p.endpoint, frozenset(p.allowed), p.keepalive)
            for p in peers.values()
        ),
    )
    stats = tuple(WgPeerStats(p.public_key, p.endpoint, p.handshake, p.rx, p.tx) for p in peers.values())
    return WgReading(device, stats)


def _read_peer(nla: Any, peers: dict[bytes, _Peer]) -> None:
    key = _unb64(nla.get_attr("WGPEER_A_PUBLIC_KEY"))
    peer = peers.setdefault(key, _Peer(PublicKey(key)))
    psk = nla.get_attr("WGPEER_A_PRESHARED_KEY")
    if psk is not None:
        raw = _unb64(psk)
        peer.preshared_key = PresharedKey(raw) if raw != ZERO_KEY else None
    endpoint = nla.get_attr("WGPEER_A_ENDPOINT")
    if endpoint is not None and endpoint.get("port"):
        peer.endpoint = Endpoint(ipaddress.ip_address(endpoint["addr"]), int(endpoint["port"]))
    peer.keepalive = nla.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", peer.keepalive)
    handshake = nla.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME")
    if handshake is not None and handshake["tv_sec"]:
        peer.handshake = handshake["tv_sec"] + handshake["tv_nsec"] / 1e9
    peer.rx = nla.get_attr("WGPEER_A_RX_BYTES", peer.rx)
    peer.tx = nla.get_attr("WGPEER_A_TX_BYTES", peer.tx)
    for allowed in nla.get_attr("WGPEER_A_ALLOWEDIPS") or []:
        family = allowed.get_attr("WGALLOWEDIP_A_FAMILY")
        packed = bytes.fromhex(allowed.get_attr("WGALLOWEDIP_A_IPADDR").replace(":", ""))
        address = ipaddress.ip_address(packed) if family in (socket.AF_INET, socket.AF_INET6) else None
        if address is not None:
            net = ipaddress.ip_network(
                f"{address}/{allowed.get_attr('WGALLOWEDIP_A_CIDR_MASK')}", strict=False
            )
            peer.allowed.add(net)


class GenlClient:
    """Kernel WireGuard devices in the caller's network namespace. Not safe for concurrent use."""

    def __init__(self) -> None:
        self._sock: AsyncWireGuard | None = None

    async def _socket(self) -> AsyncWireGuard:
        if self._sock is None:
            sock = AsyncWireGuard()
            try:
                await sock.setup_endpoint()
            except NetlinkError as e:
                sock.close()
                raise WgGenlError(
                    f"kernel WireGuard is not available (generic netlink: {e})", e.code
                ) from None
            self._sock = sock
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def read(self, ifname: str) -> WgReading | None:
        sock = await self._socket()
        msg = wgmsg()
        msg["cmd"] = WG_CMD_GET_DEVICE
        msg["version"] = WG_GENL_VERSION
        msg["attrs"] = [["WGDEVICE_A_IFNAME", ifname]]
        try:
            replies = [m async for m in await sock._do_dump(msg, NLM_F_REQUEST | NLM_F_DUMP)]
        except NetlinkError as e:
            if e.code in (errno.ENODEV, errno.EOPNOTSUPP, errno.ENOENT):
                return None
            raise WgGenlError(f"{ifname}: {e}", e.code) from None
        return parse_device(ifname, replies)

    async def write(self, update: WgUpdate) -> None:
        if update.empty:
            return
        sock = await self._socket()
        try:
            await sock._do_request(set_message(update), NLM_F_REQUEST | NLM_F_ACK)
        except NetlinkError as e:
            raise WgGenlError(f"{update}: {e}", e.code) from None


async def create_interface(ipr: AsyncIPRoute, ifname: str, *, mtu: int | None = None) -> None:
    """`ip link add IFNAME type wireguard`, marked as uplinkd's by its alias."""
    extra = {"mtu": mtu} if mtu is not None else {}
    try:
        await ipr.link("add", ifname=ifname, kind="wireguard", **extra)
        (index,) = await ipr.link_lookup(ifname=ifname)
        await ipr.link("set", index=index, ifalias=OWNER_ALIAS)
    except NetlinkError as e:
        raise WgGenlError(f"ip link add {ifname} type wireguard: {e}", e.code) from None


async def link_kind(ipr: AsyncIPRoute, ifname: str) -> tuple[str, bool] | None:
    """The link's kind ("wireguard", "tun", "" for none) and whether uplinkd owns it (its
    alias); None when there is no such link."""
    try:
        found = await ipr.link("get", ifname=ifname)
    except NetlinkError as e:
        if e.code == errno.ENODEV:
            return None
        raise WgGenlError(f"ip link show {ifname}: {e}", e.code) from None
    msg = found[0] if isinstance(found, (list, tuple)) else found
    kind = msg.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")) or ""
    return str(kind), msg.get("IFLA_IFALIAS") == OWNER_ALIAS


async def owned_interfaces(ipr: AsyncIPRoute) -> list[str]:
    """Every WireGuard interface uplinkd created (for a flush)."""
    names = []
    dump = await ipr.link("dump")
    for msg in dump if isinstance(dump, list) else [m async for m in dump]:
        if (
            msg.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")) == "wireguard"
            and msg.get("IFLA_IFALIAS") == OWNER_ALIAS
        ):
            names.append(str(msg.get("IFLA_IFNAME")))
    return names
