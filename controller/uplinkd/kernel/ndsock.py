"""Raw ICMPv6 sockets for router discovery on one interface (CAP_NET_RAW).

One socket per interface, bound to it, seeing only the ICMPv6 types asked for (the kernel's
ICMP6_FILTER) and reporting each packet's hop limit, so a router advertisement or solicitation
that crossed a router (hop limit below 255) can be ignored as RFC 4861 requires. The kernel
fills in the ICMPv6 checksum. The kernel's own neighbour discovery goes on unaffected: a raw
socket gets a copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct

ICMP6_FILTER = 1  # <netinet/icmp6.h>, level IPPROTO_ICMPV6
ALL_NODES = ipaddress.IPv6Address("ff02::1")
ALL_ROUTERS = ipaddress.IPv6Address("ff02::2")
HOP_LIMIT = 255
_RECV = 4096


def _filter(types: tuple[int, ...]) -> bytes:
    """ICMP6_FILTER's bitmap: a set bit blocks that type; all but `types` blocked."""
    words = [0xFFFFFFFF] * 8
    for t in types:
        words[t >> 5] &= ~(1 << (t & 31))
    return struct.pack("8I", *words)


class NdSocket:
    """A raw ICMPv6 socket on interface `dev` that receives only ICMPv6 `types`."""

    def __init__(self, dev: str, types: tuple[int, ...], *, all_routers: bool = False) -> None:
        self.dev = dev
        self.ifindex = socket.if_nametoindex(dev)
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
            sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, _filter(types))
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, HOP_LIMIT)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, HOP_LIMIT)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            if all_routers:  # router solicitations go to ff02::2 (a forwarding interface has it)
                mreq = ALL_ROUTERS.packed + struct.pack("@I", self.ifindex)
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> NdSocket:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    async def receive(self) -> tuple[bytes, ipaddress.IPv6Address, int]:
        """The next packet: the ICMPv6 message, its source address and its hop limit."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                data, ancdata, _, addr = self.sock.recvmsg(_RECV, socket.CMSG_SPACE(4))
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_reader(self.sock.fileno(), ready.set_result, None)
                try:
                    await ready
                finally:
                    loop.remove_reader(self.sock.fileno())
                continue
            hop_limit = 0
            for level, kind, value in ancdata:
                if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT and len(value) >= 4:
                    (hop_limit,) = struct.unpack("@i", value[:4])
            source = ipaddress.IPv6Address(addr[0].split("%", 1)[0])
            return data, source, hop_limit

    def send(self, data: bytes, to: ipaddress.IPv6Address = ALL_NODES) -> str | None:
        """Send one ICMPv6 message to `to` on the interface; why not, if it could not go (a
        full buffer, an interface going down: dropped, as the network would)."""
        try:
            self.sock.sendto(data, (str(to), 0, 0, self.ifindex))
        except OSError as e:
            return e.strerror or str(e)
        return None
