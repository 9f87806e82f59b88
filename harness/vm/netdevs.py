"""QEMU user-mode networks for the VM's USB NICs, and the guestfwd rules that lead out of them."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

RELAY = Path(__file__).resolve().parent / "relay.py"


@dataclass(frozen=True)
class GuestFwd:
    """A ``guestfwd`` rule: TCP connections from the guest to ``guest_addr:guest_port`` are
    handed to ``command`` on the host, one fresh process per connection, with the
    connection on its stdin and stdout (QEMU's ``guestfwd=tcp:A:P-cmd:COMMAND``).

    ``command`` is a list of words; QEMU runs it with ``/bin/sh -c``, so the words are joined
    with shell quoting.  They must not contain commas (QEMU's option syntax).  A relay to a
    server on the host's loopback is :meth:`to_host_port`.
    """

    guest_port: int
    command: Sequence[str]
    guest_addr: str = "10.0.2.100"

    @classmethod
    def to_host_port(cls, guest_port: int, host_port: int, guest_addr: str = "10.0.2.100") -> GuestFwd:
        """Relay each guest connection to ``127.0.0.1:host_port`` on the host (``relay.py``)."""
        return cls(guest_port, [sys.executable, "-I", str(RELAY), str(host_port)], guest_addr)

    def option(self) -> str:
        cmd = shlex.join(self.command)
        if "," in cmd:
            raise ValueError(f"guestfwd command must not contain a comma: {cmd}")
        return f"guestfwd=tcp:{self.guest_addr}:{self.guest_port}-cmd:{cmd}"


@dataclass(frozen=True)
class UserNet:
    """A QEMU user-mode network (slirp) for USB NICs to attach to: ``-netdev user,id=ID``.

    The guest's DHCP server is at ``net``'s .2 (also the gateway), DNS at .3, and the first
    lease is .15.  ``restrict`` keeps the guest off every network outside QEMU: only the
    ``guestfwds`` lead out, to programs on this host.
    """

    id: str
    net: str = "10.0.2.0/24"
    restrict: bool = True
    guestfwds: Sequence[GuestFwd] = ()
    ipv6: bool = True
    """False: ``ipv6=off``, no router advertisements (with ``restrict=off`` QEMU otherwise
    advertises fec0::/64 and a default route via fe80::2, which the kernel installs in main)."""

    def option(self) -> str:
        parts = [f"user,id={self.id}", f"net={self.net}", f"restrict={'on' if self.restrict else 'off'}"]
        if not self.ipv6:
            parts.append("ipv6=off")
        parts += [fwd.option() for fwd in self.guestfwds]
        return ",".join(parts)
