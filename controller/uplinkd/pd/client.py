"""A DHCPv6 client (RFC 8415) for one uplink: a requesting router that asks for a delegated
prefix (IA_PD), for the uplink's own address (IA_NA), or for both in the same exchange.

    Solicit ─► Advertise ─► Request ─► Reply     bound: prefix and address are facts for the planner
    at T1: Renew (to that server) ─► Reply       extended
    at T2: Rebind (to any server) ─► Reply       extended
    at the valid lifetime: gone                  the planner takes the prefix off the LANs,
                                                 the address off the uplink

One Solicit carries every IA the uplink wants (RFC 8415 §6.6): an ISP that serves only one
of them is taken at its word, and the other is asked for again in each Renew and Rebind
(§18.2.4). Each binding expires on its own. A restart with stored bindings (`binding.py`)
keeps using them and Rebinds at once. A Reply that refuses a held binding (NoBinding, valid
lifetime 0, or leaves it out) sends the client back to Solicit; the old prefix and address
stay in force until their valid lifetimes end, so a server that hands out the same ones
again changes nothing in the kernel. An address that duplicate-address detection failed for
is declined (`decline`): the server is told, the address dropped, and a new one asked for.

Why our own client: pyroute2 has none for DHCPv6, and a router needs only this exchange
(no relays, no temporary addresses). It speaks over one UDP socket bound to the uplink's
interface and port 546, multicast to All_DHCP_Relay_Agents_and_Servers from the link-local
address, so our policy rules never apply to it. Like the DHCPv4 client, it never touches the
kernel: a binding is recorded in the runtime and wakes the loop.

Retransmission follows RFC 8415 §15 (IRT doubling with ±10 % randomisation up to MRT), with
one change: Solicit's ceiling is 120 s rather than SOL_MAX_RT's 3600 s (an ISP that was down
is asked again within two minutes); a server's SOL_MAX_RT option overrides it. Among
Advertises, one offering every IA wanted beats one offering some; then the Preference (255:
taken at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import random
import secrets
import socket
import struct
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from uplinkd.pd import binding as store
from uplinkd.pd.binding import Binding, Kind
from uplinkd.pd.messages import (
    ALL_SERVERS,
    CLIENT_PORT,
    SERVER_PORT,
    Ia,
    IaNa,
    IaPd,
    Malformed,
    Message,
    MessageType,
    Option,
    decode,
)
from uplinkd.pd.replies import bindings_of, empty_ia, ended_of, ia_of, offers, outcome_of, pure_rank

log = logging.getLogger("uplinkd.pd")

SOL_MAX_RT_OPTION = 82
# (IRT, MRT, MRC) per message, RFC 8415 §7.6 (Solicit's MRT: see above)
SOLICIT = (1.0, 120.0, 0)
REQUEST = (1.0, 30.0, 10)
RENEW = (10.0, 600.0, 0)
REBIND = (10.0, 600.0, 0)
DECLINE = (1.0, 16.0, 4)  # DEC_TIMEOUT, no ceiling to speak of, DEC_MAX_RC
RECEIVE = 4096
MAX_PREFERENCE = 255
SOL_MAX_DELAY = 1.0  # the first Solicit waits up to this long (RFC 8415 §18.2.1)
IF_INET6 = Path("/proc/net/if_inet6")
IFA_F_DADFAILED, IFA_F_TENTATIVE = 0x08, 0x40
DAD_WATCH_S, DAD_POLL_S = 15.0, 0.2  # how long a new address is watched for a failed DAD


def dad_state(text: str, *, dev: str, address: ipaddress.IPv6Address) -> str | None:
    """What /proc/net/if_inet6 (`text`) says of `address` on `dev`: "failed" (duplicate-address
    detection failed), "tentative", "ok", or None (not there)."""
    for line in text.splitlines():
        words = line.split()
        if len(words) != 6 or words[5] != dev:
            continue
        try:
            held, flags = ipaddress.IPv6Address(int(words[0], 16)), int(words[4], 16)
        except ValueError:
            continue
        if held == address:
            if flags & IFA_F_DADFAILED:
                return "failed"
            return "tentative" if flags & IFA_F_TENTATIVE else "ok"
    return None


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


OnBinding = Callable[[str, Kind, Binding | None, str], None]


class PdClient:
    """Keeps one uplink's DHCPv6 bindings (a delegated prefix, an address, or both) for as
    long as it runs."""

    def __init__(
        self,
        *,
        name: str,
        dev: str,
        state_files: Mapping[Kind, Path],
        duid: bytes,
        on_binding: OnBinding,
    ) -> None:
        if not state_files:
            raise ValueError("a DHCPv6 client with nothing to ask for")
        self.name = name
        self.dev = dev
        self.kinds: frozenset[Kind] = frozenset(state_files)
        self.state_files = dict(state_files)
        self.duid = duid
        self.iaid = iaid_of(name)
        self.on_binding = on_binding
        self.current: dict[Kind, Binding] = {}
        self._expiry: dict[Kind, asyncio.TimerHandle] = {}
        self._sol_max_rt = SOLICIT[1]
        self._declined: asyncio.Queue[ipaddress.IPv6Address] = asyncio.Queue()
        self._dad: asyncio.Task[None] | None = None

    # --- what the runtime sees -------------------------------------------------------------

    def _hold(self, kind: Kind, binding: Binding | None, why: str) -> None:
        timer = self._expiry.pop(kind, None)
        if timer is not None:
            timer.cancel()
        if binding is None:
            self.current.pop(kind, None)
        else:
            self.current[kind] = binding
        store.save(self.state_files[kind], binding)
        self.on_binding(self.name, kind, binding, why)
        if kind == "na" and binding is not None:
            self._watch(binding.prefix.network_address)
        end = binding.expires_at if binding is not None else None
        if end is not None:
            loop = asyncio.get_running_loop()
            self._expiry[kind] = loop.call_later(max(0.0, end - time.time()), self._expired, kind)

    def _expired(self, kind: Kind) -> None:
        self._expiry.pop(kind, None)
        held = self.current.get(kind)
        if held is not None and held.expired(time.time() + 0.001):
            self._hold(kind, None, "its valid lifetime ran out")

    def _watch(self, address: ipaddress.IPv6Address) -> None:
        """Watch a newly held address until the kernel has done duplicate-address detection
        on it (the planner adds it; the kernel does DAD)."""
        if self._dad is not None and not self._dad.done():
            self._dad.cancel()
        self._dad = asyncio.get_running_loop().create_task(self._dad_watch(address))

    async def _dad_watch(self, address: ipaddress.IPv6Address) -> None:
        deadline = time.monotonic() + DAD_WATCH_S
        while time.monotonic() < deadline:
            try:
                state = dad_state(IF_INET6.read_text(), dev=self.dev, address=address)
            except OSError:
                return
            if state == "failed":
                self.decline(address)
                return
            if state == "ok":
                return
            await asyncio.sleep(DAD_POLL_S)

    def decline(self, address: ipaddress.IPv6Address) -> None:
        """Duplicate-address detection failed for `address` on the uplink: if it is the one
        held, it is declined to the server (RFC 8415 §18.2.8), dropped, and a new one asked
        for."""
        held = self.current.get("na")
        if held is not None and held.prefix.network_address == address:
            self._declined.put_nowait(address)

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

        With `rank` (Solicit: an Advertise's score, None if it offers nothing), answers
        are collected until the first RT ends and the best is returned (a complete one of
        preference 255 at once), as RFC 8415 §18.2.1 says; after the first RT, the first
        usable one."""
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

    def _message(
        self, kind: MessageType, xid: int, elapsed: int, ias: Sequence[Ia], server: bytes | None
    ) -> Message:
        return Message(
            kind,
            xid,
            client_id=self.duid,
            server_id=server,
            ia_na=tuple(ia for ia in ias if isinstance(ia, IaNa)),
            ia_pd=tuple(ia for ia in ias if isinstance(ia, IaPd)),
            elapsed=elapsed,
            requested=(int(Option.DNS_SERVERS), SOL_MAX_RT_OPTION),
        )

    # --- the exchanges ---------------------------------------------------------------------

    def _rank(self, msg: Message) -> int | None:
        return pure_rank(msg, iaid=self.iaid, kinds=self.kinds)

    async def _acquire(self, sock: socket.socket, index: int) -> dict[Kind, Binding]:
        """Solicit and Request until a server gives a binding for at least one wanted IA.
        The first Solicit waits a random moment (up to SOL_MAX_DELAY) so routers that came up
        together do not ask at once."""
        await asyncio.sleep(random.uniform(0.0, SOL_MAX_DELAY))
        asked = [empty_ia(kind, self.iaid) for kind in sorted(self.kinds)]
        while True:
            adv = await self._exchange(
                sock,
                index,
                build=lambda xid, el: self._message(MessageType.SOLICIT, xid, el, asked, None),
                answers=MessageType.ADVERTISE,
                timing=SOLICIT,
                until=None,
                first_positive=True,
                rank=self._rank,
            )
            offered = [
                ia
                for kind in sorted(self.kinds)
                if adv is not None
                and offers(adv, iaid=self.iaid, kind=kind)
                and (ia := ia_of(adv, iaid=self.iaid, kind=kind)) is not None
            ]
            if adv is None or not offered:
                log.info("%s: an Advertise on %s offering nothing; asking again", self.name, self.dev)
                await asyncio.sleep(SOLICIT[0])
                continue
            server = adv.server_id
            log.debug(
                "%s: taking the Advertise of server %s (preference %d) on %s",
                self.name, (server or b"").hex(), adv.preference, self.dev,
            )  # fmt: skip
            reply = await self._exchange(
                sock,
                index,
                build=lambda xid, el: self._message(MessageType.REQUEST, xid, el, offered, server),  # noqa: B023
                answers=MessageType.REPLY,
                timing=REQUEST,
                until=None,
            )
            if reply is None or reply.status not in (None, 0):
                continue
            got = bindings_of(reply, iaid=self.iaid, kinds=self.kinds, now=time.time())
            if got:
                return got

    async def _extend(
        self,
        sock: socket.socket,
        index: int,
        kind: MessageType,
        held: Mapping[Kind, Binding],
        until: float | None,
    ) -> tuple[str, dict[Kind, Binding]]:
        """Renew or Rebind every held binding, asking again for wanted IAs not held: the
        outcome ("bound", "refused", "silent") and the bindings the Reply gave."""
        some = next(iter(held.values()))
        server = some.server_id if kind == MessageType.RENEW else None
        ias = [held[k].ia() if k in held else empty_ia(k, self.iaid) for k in sorted(self.kinds)]
        reply = await self._exchange(
            sock,
            index,
            build=lambda xid, el: self._message(kind, xid, el, ias, server),
            answers=MessageType.REPLY,
            timing=RENEW if kind == MessageType.RENEW else REBIND,
            until=until,
        )
        got = bindings_of(reply, iaid=self.iaid, kinds=self.kinds, now=time.time()) if reply else {}
        for ended in ended_of(reply, held, iaid=self.iaid) - set(got):
            self._hold(ended, None, "ended by the server (valid lifetime 0, or not on this link)")
        return outcome_of(reply, held, got), got

    async def _decline(self, sock: socket.socket, index: int, held: Binding) -> None:
        """Tell the server the address is in use by someone else (at most DEC_MAX_RC sends;
        the Reply's content does not matter)."""
        await self._exchange(
            sock,
            index,
            build=lambda xid, el: self._message(MessageType.DECLINE, xid, el, [held.ia()], held.server_id),
            answers=MessageType.REPLY,
            timing=DECLINE,
            until=None,
        )

    async def _sleep_until(self, when: float | None) -> ipaddress.IPv6Address | None:
        """Wait until `when` (None: for ever); the address to decline if one came first."""
        waiter = asyncio.ensure_future(self._declined.get())
        try:
            while when is None or (left := when - time.time()) > 0:
                step = 60.0 if when is None else min(left, 60.0)
                done, _ = await asyncio.wait({waiter}, timeout=step)
                if done:
                    return waiter.result()
            return None
        finally:
            waiter.cancel()

    async def run(self) -> None:
        try:
            sock, index = self._open()
        except OSError as e:
            raise OSError(e.errno or errno.ENODEV, f"DHCPv6 socket on {self.dev}: {e.strerror}") from None
        try:
            await self._serve(sock, index)
        finally:
            sock.close()
            for timer in self._expiry.values():
                timer.cancel()
            self._expiry.clear()
            if self._dad is not None:
                self._dad.cancel()

    def _take(self, got: Mapping[Kind, Binding], why: str) -> None:
        for kind, binding in got.items():
            self._hold(kind, binding, why)

    async def _serve(self, sock: socket.socket, index: int) -> None:
        solicit = True
        now = time.time()
        stored = dict(self.current) or {
            kind: b for kind in self.kinds if (b := store.load(self.state_files[kind], now=now, kind=kind))
        }
        for kind in sorted(self.kinds):
            if kind in stored:
                self._hold(kind, stored[kind], "kept from the last run")
            else:
                self.on_binding(self.name, kind, None, "nothing stored")
        if stored:
            until = max((b.expires_at or float("inf")) for b in stored.values())
            outcome, got = await self._extend(
                sock, index, MessageType.REBIND, stored, None if until == float("inf") else until
            )
            self._take(got, "rebound after a restart")
            solicit = outcome != "bound"
        while True:
            if solicit or not self.current:
                self._take(await self._acquire(sock, index), "bound")
                solicit = False
            held = dict(self.current)
            # wake to renew, or when a binding runs out first (its expiry timer drops it; an
            # infinite T1 with a finite lifetime must not leave the client asleep for ever)
            wakes = [t for b in held.values() for t in (b.renew_at, b.expires_at) if t is not None]
            failed = await self._sleep_until(min(wakes, default=None))
            if failed is not None:
                declined = self.current.get("na")
                if declined is None or declined.prefix.network_address != failed:
                    continue  # an address no longer held: nothing to decline
                log.warning(
                    "%s: duplicate-address detection failed for %s on %s; declining it",
                    self.name, failed, self.dev,
                )  # fmt: skip
                self._hold("na", None, "declined: another host on the link has it")
                await self._decline(sock, index, declined)
                solicit = True
                continue
            for kind, binding in held.items():
                if binding.expired(time.time()) and kind in self.current:
                    self._hold(kind, None, "its valid lifetime ran out")
            if any(kind not in self.current for kind in held):
                solicit = True  # one ran out before it could be renewed: ask anew
                continue
            rebind_at = min((b.rebind_at for b in held.values() if b.rebind_at is not None), default=None)
            outcome, got = await self._extend(sock, index, MessageType.RENEW, held, rebind_at)
            if outcome == "silent":
                ends = [b.expires_at for b in held.values()]
                last = None if None in ends else max(e for e in ends if e is not None)
                outcome, got = await self._extend(sock, index, MessageType.REBIND, held, last)
            self._take(got, "extended")
            solicit = outcome != "bound"
            if outcome == "refused":
                log.info(
                    "%s: the server refused to extend %s; asking anew",
                    self.name,
                    ", ".join(str(b.prefix) for b in held.values()),
                )
