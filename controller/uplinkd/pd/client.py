"""A DHCPv6 requesting router (RFC 8415) for one uplink: it asks for a delegated prefix
(IA_PD) and keeps it.

    Solicit ─► Advertise ─► Request ─► Reply     bound: the prefix is a fact for the planner
    at T1: Renew (to that server) ─► Reply       extended
    at T2: Rebind (to any server) ─► Reply       extended
    at the valid lifetime: gone                  the planner takes the prefix off the LANs

A restart with a stored binding (`binding.py`) keeps using it and Rebinds at once. A Reply
that refuses the binding (NoBinding, valid lifetime 0) sends the client back to Solicit;
the old prefix stays in force until its valid lifetime ends, so a server that hands out the
same prefix again changes nothing in the kernel.

Why our own client: pyroute2 has none for DHCPv6, and a requesting router needs only this
exchange (no addresses, no relays). It speaks over one UDP socket bound to the uplink's
interface and port 546, multicast to All_DHCP_Relay_Agents_and_Servers from the link-local
address, so our policy rules never apply to it. Like the DHCPv4 client, it never touches the
kernel: a delegation is recorded in the runtime and wakes the loop.

Retransmission follows RFC 8415 §15 (IRT doubling with ±10 % randomisation up to MRT), with
one change: Solicit's ceiling is 120 s rather than SOL_MAX_RT's 3600 s (an ISP that was down
is asked again within two minutes); a server's SOL_MAX_RT option overrides it. Among
Advertises the first one with a prefix is taken (or a Preference of 255 at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import secrets
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from uplinkd.model import Delegation
from uplinkd.pd import binding as store
from uplinkd.pd.binding import Binding
from uplinkd.pd.messages import (
    ALL_SERVERS,
    CLIENT_PORT,
    SERVER_PORT,
    IaPd,
    Malformed,
    Message,
    MessageType,
    Option,
    decode,
)

log = logging.getLogger("uplinkd.pd")

SOL_MAX_RT_OPTION = 82
# (IRT, MRT, MRC) per message, RFC 8415 §7.6 (Solicit's MRT: see above)
SOLICIT = (1.0, 120.0, 0)
REQUEST = (1.0, 30.0, 10)
RENEW = (10.0, 600.0, 0)
REBIND = (10.0, 600.0, 0)
RECEIVE = 4096
MAX_PREFERENCE = 255
SOL_MAX_DELAY = 1.0  # the first Solicit waits up to this long (RFC 8415 §18.2.1)


def waits(
    irt: float, mrt: float, *, first_positive: bool = False, rng: random.Random | None = None
) -> Iterator[float]:
    """RFC 8415 §15: RT = IRT ± 10 %, then 2·RT ± 10 %, capped at MRT ± 10 %, for ever.
    Solicit's first RT is randomised upwards only (`first_positive`)."""
    uniform = (rng or random).uniform
    rt = irt + uniform(0.0 if first_positive else -0.1, 0.1) * irt
    while True:
        yield rt
        rt = 2 * rt + uniform(-0.1, 0.1) * rt
        if rt > mrt:
            rt = mrt + uniform(-0.1, 0.1) * mrt


def iaid_of(name: str) -> int:
    """A stable IAID per uplink name (any 32-bit value unique on this client will do)."""
    return int.from_bytes(name.encode()[:4].ljust(4, b"\0"), "big") ^ (sum(name.encode()) << 8)


class PdClient:
    """Keeps one delegated prefix for one uplink's interface, for as long as it runs."""

    def __init__(
        self,
        *,
        name: str,
        dev: str,
        state_file: Path,
        duid: bytes,
        on_delegation: Callable[[str, Delegation | None, str], None],
    ) -> None:
        self.name = name
        self.dev = dev
        self.state_file = state_file
        self.duid = duid
        self.iaid = iaid_of(name)
        self.on_delegation = on_delegation
        self.current: Binding | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._sol_max_rt = SOLICIT[1]

    # --- what the runtime sees -------------------------------------------------------------

    def _hold(self, binding: Binding | None, why: str) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.current = binding
        store.save(self.state_file, binding)
        self.on_delegation(self.name, binding.delegation() if binding else None, why)
        end = binding.expires_at if binding is not None else None
        if end is not None:
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(max(0.0, end - time.time()), self._expired)

    def _expired(self) -> None:
        self._expiry = None
        if self.current is not None and self.current.expired(time.time() + 0.001):
            self._hold(None, "its valid lifetime ran out")

    # --- the socket ------------------------------------------------------------------------

    def _open(self) -> tuple[socket.socket, int]:
        index = socket.if_nametoindex(self.dev)
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.dev.encode())
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
            sock.bind(("::", CLIENT_PORT))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock, index

    async def _exchange(
        self,
        sock: socket.socket,
        index: int,
        *,
        build: Callable[[int, int], Message],
        answers: MessageType,
        timing: tuple[float, float, int],
        until: float | None,
        first_positive: bool = False,
        rank: Callable[[Message], int | None] | None = None,
    ) -> Message | None:
        """Send a message (built from xid and elapsed centiseconds), retransmitting it, until
        a fitting answer comes (returned), MRC sends, or wall-clock `until` (None).

        With `rank` (Solicit: an Advertise's preference, None if it offers nothing), answers
        are collected until the first RT ends and the best is returned (one of preference
        255 at once), as RFC 8415 §18.2.1 says; after the first RT, the first usable one."""
        xid = secrets.randbits(24)
        irt, mrt, mrc = timing
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        rts = waits(irt, mrt, first_positive=first_positive)
        sent = 0
        best: tuple[int, Message] | None = None
        while mrc == 0 or sent < mrc:
            rt = next(rts)
            if answers == MessageType.ADVERTISE:
                rt = min(rt, self._sol_max_rt * 1.1)
            if until is not None:
                rt = min(rt, until - time.time())
                if rt <= 0:
                    return None
            elapsed = int((time.monotonic() - started) * 100)
            with contextlib.suppress(OSError):  # a tentative link-local or a link going down: lost
                await loop.sock_sendto(
                    sock, build(xid, elapsed).encode(), (ALL_SERVERS, SERVER_PORT, 0, index)
                )
            sent += 1
            deadline = time.monotonic() + rt
            while (left := deadline - time.monotonic()) > 0:
                try:
                    data, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, RECEIVE), left)
                except TimeoutError:
                    break
                try:
                    msg = decode(data)
                except Malformed as e:
                    log.debug("%s: dropped a DHCPv6 message on %s: %s", self.name, self.dev, e)
                    continue
                if (
                    msg.type != answers
                    or msg.xid != xid
                    or msg.client_id != self.duid
                    or msg.server_id is None
                ):
                    continue
                self._note_sol_max_rt(msg)
                if rank is None:
                    return msg
                score = rank(msg)
                if score is None:
                    continue
                if score >= MAX_PREFERENCE or sent > 1:
                    return msg
                if best is None or score > best[0]:
                    best = (score, msg)
            if best is not None:
                return best[1]
        return None

    def _note_sol_max_rt(self, msg: Message) -> None:
        raw = msg.other.get(SOL_MAX_RT_OPTION)
        if raw is not None and len(raw) == 4:
            value = struct.unpack("!I", raw)[0]
            if 60 <= value <= 86400:
                self._sol_max_rt = float(value)

    def _message(self, kind: MessageType, xid: int, elapsed: int, ia: IaPd, server: bytes | None) -> Message:
        return Message(
            kind,
            xid,
            client_id=self.duid,
            server_id=server,
            ia_pd=(ia,),
            elapsed=elapsed,
            requested=(int(Option.DNS_SERVERS), SOL_MAX_RT_OPTION),
        )

    # --- the exchanges ---------------------------------------------------------------------

    def _ia_of(self, msg: Message) -> IaPd | None:
        return next((ia for ia in msg.ia_pd if ia.iaid == self.iaid), None)

    def _rank(self, msg: Message) -> int | None:
        """An Advertise's preference, or None when it offers no prefix for our IA_PD."""
        ia = self._ia_of(msg)
        if ia is None or not ia.prefixes or ia.status not in (None, 0) or msg.status not in (None, 0):
            return None
        return msg.preference

    async def _acquire(self, sock: socket.socket, index: int) -> Binding:
        """Solicit and Request until a server delegates a prefix. The first Solicit waits
        a random moment (up to SOL_MAX_DELAY) so routers that came up together do not ask
        at once."""
        await asyncio.sleep(random.uniform(0.0, SOL_MAX_DELAY))
        while True:
            adv = await self._exchange(
                sock,
                index,
                build=lambda xid, el: self._message(MessageType.SOLICIT, xid, el, IaPd(self.iaid), None),
                answers=MessageType.ADVERTISE,
                timing=SOLICIT,
                until=None,
                first_positive=True,
                rank=self._rank,
            )
            ia = self._ia_of(adv) if adv is not None else None
            if adv is None or ia is None or not ia.prefixes or ia.status not in (None, 0):
                log.info("%s: an Advertise on %s without a prefix; asking again", self.name, self.dev)
                await asyncio.sleep(SOLICIT[0])
                continue
            server, chosen = adv.server_id, ia
            reply = await self._exchange(
                sock,
                index,
                build=lambda xid, el: self._message(MessageType.REQUEST, xid, el, chosen, server),  # noqa: B023
                answers=MessageType.REPLY,
                timing=REQUEST,
                until=None,
            )
            if reply is None or reply.status not in (None, 0):
                continue
            got = self._ia_of(reply)
            binding = Binding.from_ia(got, server_id=reply.server_id or b"", now=time.time()) if got else None
            if binding is not None:
                return binding

    async def _extend(
        self, sock: socket.socket, index: int, kind: MessageType, held: Binding, until: float | None
    ) -> tuple[str, Binding | None]:
        """Renew or Rebind `held`: ("bound", new), ("refused", None) or ("silent", None)."""
        server = held.server_id if kind == MessageType.RENEW else None
        reply = await self._exchange(
            sock,
            index,
            build=lambda xid, el: self._message(kind, xid, el, held.ia(), server),
            answers=MessageType.REPLY,
            timing=RENEW if kind == MessageType.RENEW else REBIND,
            until=until,
        )
        if reply is None:
            return "silent", None
        got = self._ia_of(reply)
        if reply.status not in (None, 0) or got is None:
            return "refused", None
        binding = Binding.from_ia(got, server_id=reply.server_id or b"", now=time.time())
        return ("bound", binding) if binding is not None else ("refused", None)

    async def _sleep_until(self, when: float | None) -> None:
        if when is None:
            await asyncio.Event().wait()
            return
        while (left := when - time.time()) > 0:
            await asyncio.sleep(min(left, 60.0))

    async def run(self) -> None:
        try:
            sock, index = self._open()
        except OSError as e:
            raise OSError(e.errno or errno.ENODEV, f"DHCPv6 socket on {self.dev}: {e.strerror}") from None
        try:
            await self._serve(sock, index)
        finally:
            sock.close()
            if self._expiry is not None:
                self._expiry.cancel()
                self._expiry = None

    async def _serve(self, sock: socket.socket, index: int) -> None:
        solicit = True
        stored = self.current or store.load(self.state_file, now=time.time())
        if stored is not None:
            self._hold(stored, "kept from the last run")
            outcome, new = await self._extend(sock, index, MessageType.REBIND, stored, stored.expires_at)
            solicit = outcome != "bound"
            if new is not None:
                self._hold(new, "rebound after a restart")
        else:
            self.on_delegation(self.name, None, "no stored delegation")
        while True:
            if solicit or self.current is None:
                self._hold(await self._acquire(sock, index), "delegated")
            held = self.current
            assert held is not None
            await self._sleep_until(held.renew_at)
            outcome, new = await self._extend(sock, index, MessageType.RENEW, held, held.rebind_at)
            if outcome == "silent":
                outcome, new = await self._extend(sock, index, MessageType.REBIND, held, held.expires_at)
            if new is not None:
                self._hold(new, "extended")
            solicit = outcome != "bound"
            if outcome == "refused":
                log.info("%s: the server refused to extend %s; asking anew", self.name, held.prefix)
