"""VXLAN I/O through `uplinkd.kernel.vxlan`, against the real kernel.

Lab: namespaces a and b joined by a veth (10.201.0.1 ↔ 10.201.0.2, see harness/tunnel_lab.py). On each, a
bridge `br0` with the VXLAN interface `vx0` (VNI 42, learning off) as a port, and behind each
bridge a host namespace (10.77.0.1 behind a, 10.77.0.2 behind b). Asserted: what the kernel
holds (read back with `ip -json` and `bridge -json`) and that the hosts reach each other at L2.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import pytest
from pyroute2 import AsyncIPRoute

from uplinkd.kernel import vxlan
from uplinkd.tunnel.vxlan import FdbEntry, VxlanLink, flood_entries

from harness.tunnel_lab import UNDERLAY_A, UNDERLAY_B, Pair, bridged_hosts, namespace_pair, run

T = TypeVar("T")
ELSEWHERE = ipaddress.ip_address("10.201.0.9")  # a second remote nobody answers for


@pytest.fixture
def pair() -> Iterator[Pair]:
    with namespace_pair("vxio") as p, bridged_hosts(p, "10.77.0.1/24", "10.77.0.2/24"):
        yield p


def in_ns(ns: str, body: Callable[[AsyncIPRoute], Awaitable[T]]) -> T:
    async def main() -> T:
        ipr = AsyncIPRoute(netns=ns, flags=0)  # flags=0: attach, never create
        try:
            return await body(ipr)
        finally:
            ipr.close()

    return asyncio.run(main())


def link(local: str) -> VxlanLink:
    return VxlanLink("vx0", vni=42, local=ipaddress.ip_address(local), mtu=1370, mac=None, bridge="br0")


def details(pair: Pair, ns: str) -> dict[str, Any]:
    (data,) = json.loads(pair.ip(ns, "-d", "-json", "link", "show", "vx0").stdout)
    assert isinstance(data, dict)
    return data


def fdb(pair: Pair, ns: str) -> set[tuple[str, str]]:
    out = run("bridge", "-n", ns, "-json", "fdb", "show", "dev", "vx0").stdout
    return {(e["mac"], e["dst"]) for e in json.loads(out) if "dst" in e}


def test_two_sites_reach_each_other_at_l2(pair: Pair) -> None:
    mac_a = "02:00:00:00:42:01"
    desired_a = replace(link(UNDERLAY_A), mac=mac_a)
    remotes_a = flood_entries("vx0", {ipaddress.ip_address(UNDERLAY_B), ELSEWHERE})
    assert in_ns(pair.a, lambda ipr: vxlan.apply(ipr, desired_a, remotes_a)) > 0
    desired_b = link(UNDERLAY_B)
    remotes_b = flood_entries("vx0", {ipaddress.ip_address(UNDERLAY_A)})
    in_ns(pair.b, lambda ipr: vxlan.apply(ipr, desired_b, remotes_b))

    shown = details(pair, pair.a)
    info = shown["linkinfo"]["info_data"]
    assert (info["id"], info["local"], info["port"], info["learning"]) == (42, UNDERLAY_A, 4789, False)
    assert (shown["mtu"], shown["address"], shown["master"], shown["ifalias"]) == (
        1370,
        mac_a,
        "br0",
        "uplinkd",
    )
    assert fdb(pair, pair.a) == {("00:00:00:00:00:00", UNDERLAY_B), ("00:00:00:00:00:00", str(ELSEWHERE))}

    # ARP and ping across, host to host
    assert pair.pings(f"{pair.a}h", "10.77.0.2", within=5)
    neigh = json.loads(pair.ip(f"{pair.a}h", "-json", "neigh", "show", "10.77.0.2").stdout)
    assert (
        neigh
        and neigh[0]["lladdr"]
        == json.loads(pair.ip(f"{pair.b}h", "-json", "link", "show", "eth0").stdout)[0]["address"]
    )
    # a full-size frame from a host fits the VXLAN MTU (1370 on both) only if the host's is lower
    pair.ip(f"{pair.a}h", "link", "set", "eth0", "mtu", "1370")
    pair.ip(f"{pair.b}h", "link", "set", "eth0", "mtu", "1370")
    assert pair.pings(f"{pair.a}h", "10.77.0.2", size=1370 - 28)

    # read back through the module: what was asked for, and the same again writes nothing
    reading = in_ns(pair.a, lambda ipr: vxlan.read(ipr, "vx0"))
    assert reading is not None and reading.owned
    assert reading.link == desired_a and reading.fdb == remotes_a
    assert in_ns(pair.a, lambda ipr: vxlan.apply(ipr, desired_a, remotes_a)) == 0

    # a remote leaves: its entry goes, the other stays; flooding still reaches b
    fewer = flood_entries("vx0", {ipaddress.ip_address(UNDERLAY_B)})
    assert in_ns(pair.a, lambda ipr: vxlan.apply(ipr, desired_a, fewer)) == 1
    assert fdb(pair, pair.a) == {("00:00:00:00:00:00", UNDERLAY_B)}
    pair.ip(f"{pair.a}h", "neigh", "flush", "all")
    assert pair.pings(f"{pair.a}h", "10.77.0.2")

    # MTU changes in place; a new VNI means a new interface (b no longer matches: no path)
    assert in_ns(pair.a, lambda ipr: vxlan.apply(ipr, replace(desired_a, mtu=1300), fewer)) == 1
    assert details(pair, pair.a)["mtu"] == 1300
    in_ns(pair.a, lambda ipr: vxlan.apply(ipr, replace(desired_a, vni=43), fewer))
    assert details(pair, pair.a)["linkinfo"]["info_data"]["id"] == 43
    assert fdb(pair, pair.a) == {("00:00:00:00:00:00", UNDERLAY_B)}
    pair.ip(f"{pair.a}h", "neigh", "flush", "all")
    assert not pair.pings(f"{pair.a}h", "10.77.0.2", within=1)


def test_a_vxlan_interface_we_did_not_create_is_left_alone(pair: Pair) -> None:
    pair.ip(pair.a, "link", "add", "vx0", "type", "vxlan", "id", "7", "local", UNDERLAY_A, "dstport", "4789")
    before = details(pair, pair.a)
    with pytest.raises(vxlan.VxlanError, match="uplinkd did not create"):
        in_ns(pair.a, lambda ipr: vxlan.apply(ipr, link(UNDERLAY_A), frozenset()))
    assert not in_ns(pair.a, lambda ipr: vxlan.delete(ipr, "vx0"))
    assert in_ns(pair.a, vxlan.owned) == []
    assert details(pair, pair.a) == before
    # ours is found for a flush, and deleted; the foreign one stays
    ours = replace(link(UNDERLAY_A), ifname="vx1")
    in_ns(
        pair.a,
        lambda ipr: vxlan.apply(ipr, ours, frozenset({FdbEntry("vx1", ipaddress.ip_address(UNDERLAY_B))})),
    )
    assert in_ns(pair.a, vxlan.owned) == ["vx1"]
    assert in_ns(pair.a, lambda ipr: vxlan.delete(ipr, "vx1"))
    assert pair.ip(pair.a, "link", "show", "vx1", check=False).returncode != 0
    assert details(pair, pair.a) == before
