"""Neighbour proxying for an `extend`ed prefix on an Ethernet-style uplink.

A 3GPP network routes the device's /64 to it; an Ethernet-style stick (or a phone tethering
over USB) may instead treat the /64 as on-link and look up each address by neighbour
discovery on the uplink's link. Once the /64 has moved to the LAN, no host there hears those
solicitations, so the router answers them: for every target in the extended /64 it sends a
solicited neighbour advertisement naming its own uplink MAC, and then forwards what arrives to
the LAN by its route. The whole /64 is the router's to answer for (it is routed to the LAN), so
no per-host table has to be learnt first — the first packet towards a new host already finds
its way, which a proxy entry learnt from the LAN's neighbour table could not promise.

Duplicate address detection (a solicitation from ::) is never answered: the router must not
claim an address someone on the uplink's link is testing. Solicitations go to each target's
solicited-node group, which nobody on the router joined, so the IPv6 layer drops them before
any ICMPv6 socket sees them: the responder reads them at the link layer, from a packet socket
that also holds the interface in all-multicast mode (a membership dropped with the socket),
and answers through an ICMPv6 socket (hop limit 255).

One responder per extended uplink that is not point-to-point; a 3GPP raw-IP interface (no
link layer) needs none.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from uplinkd.kernel.ndsock import HOP_LIMIT, NdSocket
from uplinkd.model.adverts import encode_neighbour_advert, solicited_target
from uplinkd.plan import Intent
from uplinkd.plan.extend import current, extended
from uplinkd.workers import WorkerKind

log = logging.getLogger("uplinkd.ndproxy")

SOL_PACKET, PACKET_ADD_MEMBERSHIP, PACKET_MR_ALLMULTI = 263, 1, 2
ETH_P_IPV6 = 0x86DD
ICMPV6 = 58


@dataclass(frozen=True)
class ProxySpec:
    dev: str
    ifindex: int
    prefix: ipaddress.IPv6Network


def _mac(dev: str) -> bytes | None:
    with contextlib.suppress(OSError, ValueError):
        raw = bytes.fromhex(Path("/sys/class/net", dev, "address").read_text().strip().replace(":", ""))
        return raw if len(raw) == 6 else None
    return None


class NeighbourProxy:
    def __init__(self, *, name: str, spec: ProxySpec) -> None:
        self.name = name
        self.spec = spec
        self.answered = 0

    async def run(self) -> None:
        mac = _mac(self.spec.dev)
        if mac is None:
            log.warning("%s: %s has no Ethernet address; no neighbour proxying", self.name, self.spec.dev)
            return
        with (
            socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IPV6)) as member,
            NdSocket(self.spec.dev, ()) as sock,  # only to send: it receives nothing
        ):
            member.bind((self.spec.dev, ETH_P_IPV6))
            mreq = struct.pack("@iHH8s", self.spec.ifindex, PACKET_MR_ALLMULTI, 0, b"")
            member.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            member.setblocking(False)
            while True:
                packet = await _receive(member)
                found = _solicitation(packet)
                if found is None:
                    continue
                source, target = found
                if source.is_unspecified or target not in self.spec.prefix:
                    continue  # duplicate address detection, or not ours to answer
                if sock.send(encode_neighbour_advert(target, mac), source) is None:
                    self.answered += 1


async def _receive(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    while True:
        try:
            return sock.recv(2048)
        except BlockingIOError:
            ready = loop.create_future()
            loop.add_reader(sock.fileno(), ready.set_result, None)
            try:
                await ready
            finally:
                loop.remove_reader(sock.fileno())


def _solicitation(packet: bytes) -> tuple[ipaddress.IPv6Address, ipaddress.IPv6Address] | None:
    """(source, target) of an IPv6 packet that is a neighbour solicitation with hop limit 255
    (read at the link layer: it goes to a solicited-node group nobody here joined, which the
    IPv6 layer would drop before any ICMPv6 socket saw it)."""
    if len(packet) < 40 or packet[0] >> 4 != 6 or packet[6] != ICMPV6 or packet[7] != HOP_LIMIT:
        return None
    target = solicited_target(packet[40:])
    return (ipaddress.IPv6Address(packet[8:24]), target) if target is not None else None


class NeighbourProxies(WorkerKind[ProxySpec, NeighbourProxy]):
    """A responder per extended, non point-to-point uplink whose router offers a /64."""

    name = "ndp-proxy"
    after_writes = True

    def wanted(self, intent: Intent, running: Mapping[str, ProxySpec]) -> dict[str, ProxySpec]:
        wanted: dict[str, ProxySpec] = {}
        ours = extended(self.rt.config)
        for s in intent.uplinks:
            if s.name not in ours or s.dev is None or s.ifindex is None or s.pointopoint:
                continue
            if self.rt.config.uplinks[s.name].address.mode == "external":
                continue
            prefix = current(self.rt.adverts.get(s.name))
            if prefix is not None:
                wanted[s.name] = ProxySpec(s.dev, s.ifindex, prefix.prefix)
        return wanted

    def make(self, name: str, spec: ProxySpec) -> NeighbourProxy:
        log.info("%s: answering neighbour solicitations for %s on %s", name, spec.prefix, spec.dev)
        return NeighbourProxy(name=name, spec=spec)
