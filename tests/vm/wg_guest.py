"""Kernel WireGuard through `uplinkd.kernel.wireguard.KernelWg`, run inside the VM's guest
(Debian's kernel has WireGuard; the netns tier's kernel does not). Prints one JSON object of
findings; tests/vm/test_wireguard_kernel.py asserts on it.

    guest root netns: va 10.201.0.1/24, wgk0 10.98.0.1/24
    ns wgv-b:         vb 10.201.0.2/24 (+.3), wgk1 10.98.0.2/24
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netns import popns, pushns

from uplinkd.kernel import wggenl
from uplinkd.kernel.wireguard import KernelWg, apply
from uplinkd.tunnel.wireguard import Endpoint, PeerUpdate, PrivateKey, WgDevice, WgPeer, WgUpdate

NS = "wgv-b"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=30)


def pings(address: str, within: int = 3) -> bool:
    return sh("ping", "-n", "-c", "1", "-i", "0.2", "-w", str(within), address, check=False).returncode == 0


def key() -> PrivateKey:
    raw = bytearray(os.urandom(32))
    raw[0] &= 248
    raw[31] = (raw[31] & 127) | 64
    return PrivateKey(bytes(raw))


async def main() -> dict[str, Any]:
    found: dict[str, Any] = {}
    sh("modprobe", "wireguard")
    sh("ip", "netns", "add", NS)
    try:
        sh("ip", "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", NS)
        sh("ip", "addr", "add", "10.201.0.1/24", "dev", "va")
        sh("ip", "link", "set", "va", "up")
        for address in ("10.201.0.2/24", "10.201.0.3/24"):
            sh("ip", "-n", NS, "addr", "add", address, "dev", "vb")
        sh("ip", "-n", NS, "link", "set", "vb", "up")
        root_ipr, ns_ipr = AsyncIPRoute(), AsyncIPRoute(netns=NS, flags=0)
        await wggenl.create_interface(root_ipr, "wgk0")
        await wggenl.create_interface(ns_ipr, "wgk1")
        found["owned"] = await wggenl.owned_interfaces(root_ipr)
        a = KernelWg()
        await a.read("wgk0")  # opens its socket here, in the root namespace
        pushns(NS)
        try:
            b = KernelWg()
            await b.read("wgk1")  # opens its socket in NS
        finally:
            popns()
        ka, kb = key(), key()
        peer_b = WgPeer(kb.public_key, endpoint=Endpoint.parse("10.201.0.2:51821"),
                        allowed_ips=frozenset({ipaddress.ip_network("10.98.0.2/32")}))  # fmt: skip
        dev_a = WgDevice("wgk0", private_key=ka, listen_port=51820, peers=(peer_b,))
        peer_a = WgPeer(ka.public_key, allowed_ips=frozenset({ipaddress.ip_network("10.98.0.1/32")}))
        dev_b = WgDevice("wgk1", private_key=kb, listen_port=51821, peers=(peer_a,))
        found["first_update"] = str(await apply(a, dev_a))
        await apply(b, dev_b)
        sh("ip", "addr", "add", "10.98.0.1/24", "dev", "wgk0")
        sh("ip", "link", "set", "wgk0", "up")
        sh("ip", "-n", NS, "addr", "add", "10.98.0.2/24", "dev", "wgk1")
        sh("ip", "-n", NS, "link", "set", "wgk1", "up")
        found["ping"] = pings("10.98.0.2")
        reading = await a.read("wgk0")
        assert reading is not None
        found["read_back_matches"] = reading.device == dev_a
        stats = reading.peer_stats(kb.public_key)
        assert stats is not None
        found["handshake_age"] = None if stats.last_handshake is None else time.time() - stats.last_handshake
        found["rx_tx"] = [stats.rx_bytes, stats.tx_bytes]
        found["wg_show_peer"] = sh("wg", "show", "wgk0", "peers").stdout.strip() == str(kb.public_key)
        before = stats.last_handshake
        time.sleep(1.1)
        found["same_again_update"] = str(await apply(a, dev_a))
        found["same_again_empty"] = (await apply(a, dev_a)).empty and (await apply(b, dev_b)).empty
        found["ping_after_same"] = pings("10.98.0.2")
        after = (await a.read("wgk0")).peer_stats(kb.public_key)  # type: ignore[union-attr]
        found["handshake_kept_by_apply"] = after is not None and after.last_handshake == before
        # written anyway: every attribute of the unchanged peer, the same key, port and fwmark
        everything = PeerUpdate(
            peer_b, fields=frozenset({"endpoint", "allowed_ips", "keepalive", "preshared_key"})
        )
        await a.write(WgUpdate("wgk0", private_key=ka, listen_port=51820, fwmark=0, peers=(everything,)))
        found["ping_after_forced"] = pings("10.98.0.2")
        forced = (await a.read("wgk0")).peer_stats(kb.public_key)  # type: ignore[union-attr]
        found["handshake_kept_by_forced_reset"] = forced is not None and forced.last_handshake == before
        # the endpoint moves; then the peer goes
        moved = replace(peer_b, endpoint=Endpoint.parse("10.201.0.3:51821"))
        found["move_update"] = str(await apply(a, replace(dev_a, peers=(moved,))))
        found["ping_after_move"] = pings("10.98.0.2")
        found["endpoint_after_move"] = str((await a.read("wgk0")).device.peers[0].endpoint)  # type: ignore[union-attr]
        found["fwmark_update"] = str(await apply(a, replace(dev_a, peers=(moved,), fwmark=0x4200)))
        found["fwmark_read"] = (await a.read("wgk0")).device.fwmark  # type: ignore[union-attr]
        await apply(a, replace(dev_a, peers=()))
        found["peers_after_remove"] = len((await a.read("wgk0")).device.peers)  # type: ignore[union-attr]
        found["ping_after_remove"] = pings("10.98.0.2", within=1)
        a.close()
        b.close()
        root_ipr.close()
        ns_ipr.close()
    finally:
        sh("ip", "link", "del", "wgk0", check=False)
        sh("ip", "link", "del", "va", check=False)
        sh("ip", "netns", "del", NS, check=False)
    return found


if __name__ == "__main__":
    json.dump(asyncio.run(main()), sys.stdout)
