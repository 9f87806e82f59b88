"""The tunnel values: WireGuard keys and the smallest device update, the userspace protocol's
text, VXLAN link changes, and the MTU arithmetic. No kernel, no root."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import time
from dataclasses import replace
from pathlib import Path

import pytest
from pyroute2.netlink.generic.wireguard import wgmsg

from uplinkd.kernel import wggenl, wguapi
from uplinkd.kernel import wireguard as kwireguard
from uplinkd.tunnel import mtu
from uplinkd.tunnel.vxlan import FdbEntry, VxlanLink, link_changes, needs_recreate
from uplinkd.tunnel.wireguard import (
    Endpoint,
    PeerUpdate,
    PresharedKey,
    PrivateKey,
    PublicKey,
    WgDevice,
    WgPeer,
    WgUpdate,
    decode_key,
    wg_update,
)

# made with `wg genkey | tee key | wg pubkey` (a test vector, used nowhere else)
PRIVATE = "iL1I3maOhfzhwsmMx/O2DJu9u1dSHaeN9V/qGMzD5lU="
PUBLIC = "s9LcQ+jJ2Ix+8HF2a6VaO8w0HlhH1FH4NxYXH2bIy3g="


def key(n: int) -> PublicKey:
    return PublicKey(bytes([n]) * 32)


def nets(*texts: str) -> frozenset[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return frozenset(ipaddress.ip_network(t) for t in texts)


PEER = WgPeer(
    key(1), endpoint=Endpoint.parse("192.0.2.1:51820"), allowed_ips=nets("10.0.0.2/32"), keepalive=25
)
DEVICE = WgDevice(
    "wg0", private_key=PrivateKey(decode_key(PRIVATE, what="k")), listen_port=51820, peers=(PEER,)
)


def test_the_public_key_is_what_wg_pubkey_says() -> None:
    assert str(PrivateKey(decode_key(PRIVATE, what="k")).public_key) == PUBLIC


def test_secret_keys_are_never_rendered() -> None:
    secret = decode_key(PRIVATE, what="k")
    psk = PresharedKey(bytes(range(32)))
    device = replace(DEVICE, peers=(replace(PEER, preshared_key=psk),))
    for text in (repr(device), str(device), str(wg_update(None, device)), repr(wg_update(None, device))):
        assert PRIVATE not in text and secret.hex() not in text
        assert base64.b64encode(psk.raw).decode() not in text and psk.raw.hex() not in text
    assert PUBLIC in repr(device) and psk.fingerprint in str(wg_update(None, device))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not base64!", "not base64"),
        ("AAAA", "3 bytes, a WireGuard key has 32"),
        (base64.b64encode(bytes(33)).decode(), "33 bytes"),
    ],
)
def test_bad_keys_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_key(text, what="private key")


@pytest.mark.parametrize(
    ("text", "address", "port"),
    [("192.0.2.1:51820", "192.0.2.1", 51820), ("[2001:db8::1]:443", "2001:db8::1", 443)],
)
def test_endpoints_parse_and_render_round_trip(text: str, address: str, port: int) -> None:
    endpoint = Endpoint.parse(text)
    assert (endpoint.address, endpoint.port) == (ipaddress.ip_address(address), port)
    assert str(endpoint) == text


@pytest.mark.parametrize("text", ["192.0.2.1", "example.org:51820", "192.0.2.1:0", "[::1]:x"])
def test_bad_endpoints_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        Endpoint.parse(text)


def test_a_device_that_matches_needs_no_update() -> None:
    assert wg_update(DEVICE, DEVICE).empty
    # a desired device that leaves the port to the kernel does not fight the one it picked
    assert wg_update(DEVICE, replace(DEVICE, listen_port=None)).empty
    # a peer with no configured endpoint keeps the one WireGuard learnt (it roamed)
    learnt = replace(DEVICE, peers=(replace(PEER, endpoint=Endpoint.parse("198.51.100.7:40000")),))
    assert wg_update(learnt, replace(DEVICE, peers=(replace(PEER, endpoint=None),))).empty


def test_a_new_device_gets_everything() -> None:
    update = wg_update(None, DEVICE)
    assert update == WgUpdate(
        "wg0",
        private_key=DEVICE.private_key,
        listen_port=51820,
        peers=(PeerUpdate(PEER, fields=frozenset({"endpoint", "allowed_ips", "keepalive"})),),
    )
    assert str(update) == (
        f"wg set wg0 listen-port 51820 private-key (private key of {PUBLIC}) "
        f"peer {key(1)} endpoint 192.0.2.1:51820 persistent-keepalive 25 allowed-ips 10.0.0.2/32"
    )


def test_only_what_differs_is_written() -> None:
    other = WgPeer(key(2), allowed_ips=nets("10.0.0.3/32"))
    actual = replace(DEVICE, fwmark=0x100, peers=(PEER, other))
    moved = replace(
        PEER, endpoint=Endpoint.parse("192.0.2.9:51820"), allowed_ips=nets("10.0.0.2/32", "fd00::2/128")
    )
    third = WgPeer(key(3), allowed_ips=nets("10.0.0.4/32"))
    update = wg_update(actual, replace(DEVICE, peers=(moved, third)))
    assert update.private_key is None and update.listen_port is None
    assert update.fwmark == 0
    assert update.peers == (
        PeerUpdate(other, remove=True),
        PeerUpdate(moved, fields=frozenset({"endpoint", "allowed_ips"})),
        PeerUpdate(third, fields=frozenset({"allowed_ips"})),
    )
    assert str(update) == (
        f"wg set wg0 fwmark off peer {key(2)} remove "
        f"peer {key(1)} endpoint 192.0.2.9:51820 allowed-ips 10.0.0.2/32,fd00::2/128 "
        f"peer {key(3)} allowed-ips 10.0.0.4/32"
    )


def test_a_preshared_key_is_added_and_removed() -> None:
    psk = PresharedKey(bytes(range(32)))
    with_psk = replace(DEVICE, peers=(replace(PEER, preshared_key=psk),))
    assert wg_update(DEVICE, with_psk).peers[0].fields == {"preshared_key"}
    assert wg_update(with_psk, DEVICE).peers[0].fields == {"preshared_key"}
    assert "preshared_key=" + "00" * 32 in wguapi.render_set(wg_update(with_psk, DEVICE))


def test_a_device_refuses_duplicate_peers_and_itself_as_a_peer() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        WgDevice("wg0", peers=(PEER, replace(PEER, keepalive=0)))
    own = DEVICE.private_key.public_key  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="device's own public key"):
        replace(DEVICE, peers=(WgPeer(own),))


def test_the_userspace_set_request() -> None:
    psk = PresharedKey(bytes(range(32)))
    update = wg_update(None, replace(DEVICE, fwmark=0x4200, peers=(replace(PEER, preshared_key=psk),)))
    assert wguapi.render_set(update).splitlines() == [
        "set=1",
        f"private_key={decode_key(PRIVATE, what='k').hex()}",
        "listen_port=51820",
        f"fwmark={0x4200}",
        f"public_key={'01' * 32}",
        f"preshared_key={bytes(range(32)).hex()}",
        "endpoint=192.0.2.1:51820",
        "persistent_keepalive_interval=25",
        "replace_allowed_ips=true",
        "allowed_ip=10.0.0.2/32",
        "",
    ]
    removal = WgUpdate("wg0", peers=(PeerUpdate(PEER, remove=True),))
    assert wguapi.render_set(removal) == f"set=1\npublic_key={'01' * 32}\nremove=true\n\n"


def test_a_userspace_get_reply_is_read() -> None:
    lines = [
        ("private_key", decode_key(PRIVATE, what="k").hex()),
        ("listen_port", "51820"),
        ("public_key", "01" * 32),
        ("preshared_key", "00" * 32),
        ("protocol_version", "1"),
        ("endpoint", "[2001:db8::1]:51820"),
        ("last_handshake_time_sec", "1700000000"),
        ("last_handshake_time_nsec", "500000000"),
        ("tx_bytes", "92"),
        ("rx_bytes", "148"),
        ("persistent_keepalive_interval", "0"),
        ("allowed_ip", "10.0.0.2/32"),
        ("allowed_ip", "fd00::/64"),
        ("some_future_key", "x"),
        ("public_key", "02" * 32),
        ("last_handshake_time_sec", "0"),
    ]
    reading = wguapi.parse_get("wg0", lines)
    assert reading.device == WgDevice(
        "wg0",
        private_key=DEVICE.private_key,
        listen_port=51820,
        peers=(
            WgPeer(
                key(1),
                endpoint=Endpoint.parse("[2001:db8::1]:51820"),
                allowed_ips=nets("10.0.0.2/32", "fd00::/64"),
            ),
            WgPeer(key(2)),
        ),
    )
    first, second = reading.stats
    assert (first.last_handshake, first.rx_bytes, first.tx_bytes) == (1700000000.5, 148, 92)
    assert second.last_handshake is None


VX = VxlanLink("vx0", vni=42, local=ipaddress.ip_address("10.98.0.1"), mtu=1370, bridge="br0")


def test_vxlan_changes_in_place_and_by_recreation() -> None:
    assert not link_changes(VX, VX)
    assert link_changes(VX, replace(VX, mtu=1300, learning=True)) == {"mtu", "learning"}
    assert not link_changes(replace(VX, mac="02:00:00:00:00:01"), VX)  # None: the kernel's choice
    assert not needs_recreate(VX, replace(VX, local=ipaddress.ip_address("10.98.0.9")))
    assert needs_recreate(VX, replace(VX, vni=43))
    assert needs_recreate(VX, replace(VX, port=8472))
    assert needs_recreate(VX, replace(VX, local=ipaddress.ip_address("fd00::1")))
    assert (
        str(VX)
        == "ip link add vx0 type vxlan id 42 local 10.98.0.1 dstport 4789 nolearning mtu 1370 master br0"
    )
    assert str(FdbEntry("vx0", ipaddress.ip_address("10.98.0.2"))) == (
        "bridge fdb append 00:00:00:00:00:00 dev vx0 dst 10.98.0.2 self permanent"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vni": 0}, "VNI 0 must be 1-16777215"),
        ({"vni": 1 << 24}, "must be 1-16777215"),
        ({"mac": "01:00:5e:00:00:01"}, "multicast MAC"),
        ({"mac": "02:00:00"}, "not a MAC address"),
    ],
)
def test_bad_vxlan_links_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(VX, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("uplinks", "ipv6", "expected"),
    [
        ([1500], True, 1420),  # wg-quick's usual figure
        ([1500], False, 1440),
        ([1500, 1428], True, 1348),  # the smallest carrying uplink decides
        ([1428, 1500], False, 1368),
        ([1280], True, 1200),
    ],
)
def test_tunnel_mtu_auto(uplinks: list[int], ipv6: bool, expected: int) -> None:
    assert mtu.tunnel_mtu(uplinks, ipv6_underlay=ipv6) == expected


@pytest.mark.parametrize(
    ("tunnel", "ipv6", "expected"),
    [(1420, False, 1370), (1420, True, 1350), (1348, False, 1298)],
)
def test_vxlan_mtu_auto(tunnel: int, ipv6: bool, expected: int) -> None:
    assert mtu.vxlan_mtu(tunnel, ipv6_inner=ipv6) == expected


def test_mtu_auto_without_uplinks_or_room_says_so() -> None:
    with pytest.raises(ValueError, match="no uplink may carry the tunnel"):
        mtu.tunnel_mtu([], ipv6_underlay=True)
    with pytest.raises(ValueError, match="below 68"):
        mtu.vxlan_mtu(100, ipv6_inner=True)
    assert mtu.carries_ipv6(1280) and not mtu.carries_ipv6(1279)


def _decoded(msg: wgmsg) -> wgmsg:
    msg.encode()
    copy = wgmsg(msg.data)
    copy.decode()
    return copy


def test_the_kernel_set_message_carries_only_the_update() -> None:
    psk = PresharedKey(bytes(range(32)))
    moved = replace(PEER, preshared_key=psk, allowed_ips=nets("10.0.0.2/32", "fd00::/64"))
    changes = (
        PeerUpdate(moved, fields=frozenset({"allowed_ips", "preshared_key"})),
        PeerUpdate(WgPeer(key(2)), remove=True),
    )
    update = WgUpdate("wg0", fwmark=0x4200, peers=changes)
    msg = _decoded(wggenl.set_message(update))
    assert msg["cmd"] == 1 and msg.get_attr("WGDEVICE_A_IFNAME") == "wg0"
    assert msg.get_attr("WGDEVICE_A_FWMARK") == 0x4200
    assert msg.get_attr("WGDEVICE_A_PRIVATE_KEY") is None and msg.get_attr("WGDEVICE_A_LISTEN_PORT") is None
    assert msg.get_attr("WGDEVICE_A_FLAGS") is None  # never WGDEVICE_F_REPLACE_PEERS
    first, second = msg.get_attr("WGDEVICE_A_PEERS")
    assert base64.b64decode(first.get_attr("WGPEER_A_PUBLIC_KEY")) == key(1).raw
    assert first.get_attr("WGPEER_A_FLAGS") == 2  # WGPEER_F_REPLACE_ALLOWEDIPS
    assert base64.b64decode(first.get_attr("WGPEER_A_PRESHARED_KEY")) == psk.raw
    assert (
        first.get_attr("WGPEER_A_ENDPOINT") is None
        and first.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL") is None
    )
    assert {a["addr"] for a in first.get_attr("WGPEER_A_ALLOWEDIPS")} == {"10.0.0.2/32", "fd00::/64"}
    assert second.get_attr("WGPEER_A_FLAGS") == 1  # WGPEER_F_REMOVE_ME


def test_a_kernel_device_split_over_two_messages_is_read_whole() -> None:
    """Built as the kernel answers WG_CMD_GET_DEVICE: the second message continues the first
    peer's allowed IPs under the same public key, then a second peer."""

    def reply(peers: list[list[object]]) -> wgmsg:
        msg = wgmsg()
        msg["cmd"] = 0
        msg["attrs"] = [
            ["WGDEVICE_A_IFNAME", "wg0"],
            ["WGDEVICE_A_PRIVATE_KEY", PRIVATE],
            ["WGDEVICE_A_LISTEN_PORT", 51820],
            ["WGDEVICE_A_FWMARK", 0],
            ["WGDEVICE_A_PEERS", [{"attrs": p} for p in peers]],
        ]
        return _decoded(msg)

    def allowed(text: str) -> dict[str, object]:
        net = ipaddress.ip_network(text)
        family = 2 if net.version == 4 else 10
        attrs = [["WGALLOWEDIP_A_FAMILY", family], ["WGALLOWEDIP_A_IPADDR", net.network_address.packed],
                 ["WGALLOWEDIP_A_CIDR_MASK", net.prefixlen]]  # fmt: skip
        return {"attrs": attrs}

    k1, k2 = base64.b64encode(key(1).raw).decode(), base64.b64encode(key(2).raw).decode()
    zero = base64.b64encode(bytes(32)).decode()
    first = [
        ["WGPEER_A_PUBLIC_KEY", k1],
        ["WGPEER_A_PRESHARED_KEY", zero],
        ["WGPEER_A_ENDPOINT", {"addr": "2001:db8::1", "port": 51820}],
        ["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", 25],
        ["WGPEER_A_LAST_HANDSHAKE_TIME", {"tv_sec": 1700000000, "tv_nsec": 250000000}],
        ["WGPEER_A_RX_BYTES", 148],
        ["WGPEER_A_TX_BYTES", 92],
        ["WGPEER_A_ALLOWEDIPS", [allowed("10.0.0.2/32")]],
    ]
    rest = [["WGPEER_A_PUBLIC_KEY", k1], ["WGPEER_A_ALLOWEDIPS", [allowed("fd00::/64")]]]
    second = [["WGPEER_A_PUBLIC_KEY", k2], ["WGPEER_A_PRESHARED_KEY", zero],
              ["WGPEER_A_LAST_HANDSHAKE_TIME", {"tv_sec": 0, "tv_nsec": 0}]]  # fmt: skip
    reading = wggenl.parse_device("wg0", [reply([first]), reply([rest, second])])
    assert reading.device == WgDevice(
        "wg0",
        private_key=DEVICE.private_key,
        listen_port=51820,
        peers=(
            WgPeer(key(1), endpoint=Endpoint.parse("[2001:db8::1]:51820"),
                   allowed_ips=nets("10.0.0.2/32", "fd00::/64"), keepalive=25),
            WgPeer(key(2)),
        ),
    )  # fmt: skip
    one, two = reading.stats
    assert (one.last_handshake, one.rx_bytes, one.tx_bytes) == (1700000000.25, 148, 92)
    assert two.last_handshake is None


def test_a_reply_that_trickles_in_is_given_up_after_the_timeout(tmp_path: Path) -> None:
    """A userspace WireGuard that answers one line every 50 ms and never ends its reply:
    the request gives up after its timeout in all, not a timeout per line (which would
    wait as long as lines keep coming), and says why."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        with contextlib.suppress(ConnectionError):
            for i in range(200):  # 10 s: far longer than the timeout
                writer.write(f"tx_bytes={i}\n".encode())
                await writer.drain()
                await asyncio.sleep(0.05)
        writer.close()

    async def ask() -> tuple[float, str]:
        server = await asyncio.start_unix_server(trickle, path=str(tmp_path / "wg9.sock"))
        async with server:
            started = time.monotonic()
            with pytest.raises(wguapi.WgUapiError) as e:
                await wguapi.get("wg9", socket_dir=tmp_path, timeout=0.3)
            took = time.monotonic() - started
            await asyncio.sleep(0.2)  # the server's side sees the connection closed and ends
            return took, str(e.value)

    took, message = asyncio.run(ask())
    assert took < 2.0, took
    assert "no reply within 0.3 s" in message, message


def test_a_wireguard_go_that_exits_or_stays_silent_is_an_error_naming_its_log(tmp_path: Path) -> None:
    """`start_wireguard_go` with a program that exits at once, and with one that never opens
    its socket (stopped after the timeout, not left behind): both a WgError naming the log."""
    log_file = tmp_path / "wgx0.log"
    with pytest.raises(kwireguard.WgError, match=r"false wgx0 exited 1; see "):
        asyncio.run(
            kwireguard.start_wireguard_go("wgx0", log_file=log_file, program="false", socket_dir=tmp_path)
        )
    silent = ("sh", "-c", "exec sleep 29.71", "sh")  # what it would run comes after: ignored
    with pytest.raises(kwireguard.WgError, match=r"no answer on .* after 0.3 s; see ") as e:
        asyncio.run(
            kwireguard.start_wireguard_go(
                "wgx0", log_file=log_file, wrapper=silent, socket_dir=tmp_path, timeout=0.3
            )
        )
    assert str(log_file) in str(e.value)
    sleeping = [
        p for p in Path("/proc").iterdir()
        if p.name.isdigit() and (p / "cmdline").exists()
        and (p / "cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"29.71"]
    ]  # fmt: skip
    assert not sleeping, "the silent program was left running"
