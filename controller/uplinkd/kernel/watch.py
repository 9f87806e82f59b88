"""Netlink multicast listeners that only say "something changed".

Event sources record facts and wake the loop; they never change the kernel. The
reconcile pass reads the kernel afresh, so a listener needs no parsing: any message
on a subscribed group (or an overrun, which means we missed some) is a reason to look.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterable

from uplinkd.linux import (
    NETLINK_ADD_MEMBERSHIP,
    NETLINK_NETFILTER,
    NETLINK_ROUTE,
    NFNLGRP_NFTABLES,
    RTNLGRP_IPV4_IFADDR,
    RTNLGRP_IPV4_ROUTE,
    RTNLGRP_IPV4_RULE,
    RTNLGRP_IPV6_IFADDR,
    RTNLGRP_IPV6_ROUTE,
    RTNLGRP_IPV6_RULE,
    RTNLGRP_LINK,
    RTNLGRP_NEXTHOP,
    SOL_NETLINK,
)

# The daemon takes the protocol and group numbers it passes to NetlinkWatch from here.
__all__ = ["NETLINK_NETFILTER", "NETLINK_ROUTE", "NFNLGRP_NFTABLES", "ROUTING_GROUPS", "NetlinkWatch"]

log = logging.getLogger(__name__)

# the rtnetlink groups a pass depends on: links, addresses, routes, rules, nexthops
ROUTING_GROUPS = (
    RTNLGRP_LINK,
    RTNLGRP_IPV4_IFADDR,
    RTNLGRP_IPV4_ROUTE,
    RTNLGRP_IPV4_RULE,
    RTNLGRP_IPV6_IFADDR,
    RTNLGRP_IPV6_ROUTE,
    RTNLGRP_IPV6_RULE,
    RTNLGRP_NEXTHOP,
)


class NetlinkWatch:
    """Calls `on_change(name)` whenever messages arrive on the given groups."""

    def __init__(
        self, name: str, protocol: int, groups: Iterable[int], on_change: Callable[[str], None]
    ) -> None:
        self.name = name
        self._protocol = protocol
        self._groups = tuple(groups)
        self._on_change = on_change
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, self._protocol)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, 0))
        for group in self._groups:
            # setsockopt rather than the bind() bitmask: groups above 31 (nexthops) need it.
            sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
        self._sock = sock
        self._loop = loop
        loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        assert self._sock is not None
        seen = False
        while True:
            try:
                seen |= bool(self._sock.recv(1 << 16))
            except BlockingIOError:
                break
            except OSError as e:  # ENOBUFS: messages were lost; something changed all the same
                log.debug("%s watch: %s", self.name, e)
                seen = True
                break
        if seen:
            self._on_change(self.name)

    def stop(self) -> None:
        if self._sock is not None and self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def __enter__(self) -> NetlinkWatch:
        self.start(asyncio.get_running_loop())
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
