"""Resolve a tunnel endpoint's DNS name through the tunnel's underlay: the question goes out
on a UDP socket carrying the tunnel's fwmark, so the rule that routes the tunnel's own
packets (P+5, `fwmark T lookup T_under`) sends it by the uplink the tunnel rides, never by
main's default route or into the tunnel itself. Bounded: one question per server and
address family, `timeout` seconds each.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Sequence
from pathlib import Path

from uplinkd.tunnel.dns import TYPE_A, TYPE_AAAA, answer, query
from uplinkd.tunnel.wireguard import IPAddress

log = logging.getLogger("uplinkd.tunnels")

SO_MARK = 36
RESOLV_CONF = Path("/etc/resolv.conf")


def system_resolvers(path: Path = RESOLV_CONF) -> tuple[IPAddress, ...]:
    """The nameservers of resolv.conf that are not loopback (a local stub would answer
    through main, not through the underlay)."""
    found: list[IPAddress] = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return ()
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                addr = ipaddress.ip_address(parts[1].split("%", 1)[0])
            except ValueError:
                continue
            if not addr.is_loopback:
                found.append(addr)
    return tuple(found)


async def ask(
    server: IPAddress, name: str, qtype: int, *, mark: int, timeout: float
) -> tuple[tuple[IPAddress, ...], int]:
    """One question to one server; raises OSError/ValueError/TimeoutError on failure."""
    family = socket.AF_INET if server.version == 4 else socket.AF_INET6
    ident = int.from_bytes(os.urandom(2), "big")
    loop = asyncio.get_running_loop()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        # as unsigned bytes: a mark with the top bit set (0x80000000) is no C int
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, struct.pack("=I", mark))
        sock.setblocking(False)
        await loop.sock_sendto(sock, query(name, qtype, ident), (str(server), 53))
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            data, peer = await asyncio.wait_for(loop.sock_recvfrom(sock, 4096), left)
            if ipaddress.ip_address(peer[0].split("%", 1)[0]) != server:
                continue
            try:
                return answer(data, ident=ident, qtype=qtype)
            except ValueError as e:
                if "not a reply" in str(e):
                    continue
                raise
    raise TimeoutError(f"no answer from {server} in {timeout:g} s")


async def resolve(
    name: str, servers: Sequence[IPAddress], *, mark: int, timeout: float = 2.0
) -> tuple[tuple[IPAddress, ...], str]:
    """`name`'s addresses (IPv4 first; IPv6 only when it has no IPv4), and what happened."""
    if not servers:
        return (), "no resolver: set the tunnel's resolvers (resolv.conf has none but loopback)"
    problems: list[str] = []
    for qtype in (TYPE_A, TYPE_AAAA):
        for server in servers:
            try:
                found, _ttl = await ask(server, name, qtype, mark=mark, timeout=timeout)
            except (OSError, ValueError, TimeoutError) as e:
                problems.append(f"{server}: {e or type(e).__name__}")
                continue
            if found:
                return found, f"{name} is {', '.join(map(str, found))} (asked {server})"
    return (), f"{name} did not resolve ({'; '.join(problems) or 'no address records'})"
