"""The daemon's side of the control socket: one request per connection, one JSON answer.

The protocol (requests, replies, the client) is `uplinkd.control`; this module listens,
turns each request into what the daemon does, and renders the answer. A request must never
take the daemon down: a bad one gets an error naming the field, an unexpected failure is
logged and reported, and the daemon carries on. Nor may its clients: at most `limit` are
served at once, each has a few seconds to send its line and to take the answer, a line over
`control.MAX_REQUEST` gets "request too large", and running out of descriptors pauses
accepting instead of spinning (see :class:`Server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import logging
import os
import socket
import stat
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from uplinkd import control
from uplinkd.instance import SetupError, usable_dir, why
from uplinkd.kernel.state import ApplyResult, Kernel
from uplinkd.model import NFT, NftIpv6, NftState
from uplinkd.plan import Intent, Plan, leaks, policies
from uplinkd.runtime import Runtime
from uplinkd.tunnels import explain_tunnel

log = logging.getLogger("uplinkd")


class Daemon(Protocol):
    """What a request needs of the daemon."""

    rt: Runtime
    kernel: Kernel
    lock: asyncio.Lock  # one netlink conversation at a time on the kernel's socket
    first_pass: asyncio.Event

    async def compute(self) -> tuple[Intent, Plan]: ...
    async def reconcile(self) -> ApplyResult: ...
    async def flush(self) -> dict[str, Any]: ...
    async def reload(self) -> str | None: ...
    def status(self) -> dict[str, Any]: ...


# --- the listening socket ---------------------------------------------------------------------

MAX_CLIENTS = 64
"""Connections served at once; more are answered "too many connections" and closed at once."""

REQUEST_TIMEOUT_S = 5.0
"""A client has this long to send its one line (idle or half a line: closed)."""

REPLY_TIMEOUT_S = 5.0
"""…and this long to take the answer off the socket."""

BACKLOG = 128
ACCEPT_PAUSE_S = 0.5  # out of descriptors: wait this long before accepting again
FD_RESERVE = 48  # descriptors kept for netlink, nftables, probes and DHCP, not given to clients


def client_limit(nofile: int) -> int:
    """How many clients to serve at once with `nofile` descriptors (the soft RLIMIT_NOFILE):
    MAX_CLIENTS, fewer when descriptors are scarce, so clients never starve the routing."""
    return max(1, min(MAX_CLIENTS, (nofile - FD_RESERVE) // 2))


def listen(path: Path) -> socket.socket:
    """The control socket, bound and listening at `path` (mode 0660).

    Only a *stale* socket at `path` is replaced (a socket file nobody accepts on); a live one
    (another daemon), a regular file, a directory or anything else is refused. Every failure
    is a :class:`SetupError` naming the path, the reason and the fix."""
    fix = "set control.socket (or --socket) to a path in a directory uplinkd's user may write"
    usable_dir(path.parent, what="control.socket", fix=f"create that directory, or {fix}")
    _clear_stale(path, fix=fix)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o660)
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        raise SetupError(f"control.socket: cannot listen at {path} ({why(e)}); {fix}") from None
    sock.setblocking(False)
    return sock


def _clear_stale(path: Path, *, fix: str) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise SetupError(f"control.socket: cannot inspect {path} ({why(e)}); {fix}") from None
    if not stat.S_ISSOCK(mode):
        kind = (
            "a directory"
            if stat.S_ISDIR(mode)
            else "a symlink"
            if stat.S_ISLNK(mode)
            else ("a regular file" if stat.S_ISREG(mode) else "not a socket")
        )
        raise SetupError(
            f"control.socket: {path} exists and is {kind}; uplinkd replaces only a stale socket "
            f"there and leaves this alone: move it away, or {fix}"
        )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:  # nobody accepts on it: left by a daemon that died
            log.info("control socket %s is stale (nobody listens); replacing it", path)
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                raise SetupError(f"control.socket: cannot remove stale {path} ({why(e)}); {fix}") from None
            return
        except OSError as e:
            raise SetupError(f"control.socket: cannot tell if {path} is in use ({why(e)}); {fix}") from None
    raise SetupError(
        f"control.socket: {path} is in use: a running process (another uplinkd?) accepts connections "
        f"on it; stop that one first (`uplinkctl --socket {path} status` shows whether it is uplinkd), "
        f"or {fix}"
    )


class Server:
    """Serves the control socket: one request per connection, a bounded number at a time.

    Its own accept loop, not asyncio's server: that one retries an accept that failed for want
    of descriptors a hundred times per event-loop tick, logging each; this one waits
    ACCEPT_PAUSE_S. At most `limit` connections are open at once; when a new one comes, the
    oldest connection that has not yet sent its request makes room (it gets one line, "too
    many connections", and is closed), so a client that connects and waits cannot lock out
    one that asks; if every connection is busy with a request, the new one gets that line
    and is closed at once. A hostile client thus holds at most `limit` descriptors, each for
    at most REQUEST_TIMEOUT_S.
    """

    def __init__(self, daemon: Daemon, sock: socket.socket, *, limit: int) -> None:
        self.daemon = daemon
        self.sock = sock
        self.limit = limit
        self.clients: dict[asyncio.Task[None], socket.socket] = {}
        self.waiting: dict[asyncio.Task[None], None] = {}  # no request read yet; oldest first
        self.refused = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    conn, _ = await loop.sock_accept(self.sock)
                except OSError as e:
                    if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        raise
                    log.warning("control socket: cannot accept (%s); pausing %g s", why(e), ACCEPT_PAUSE_S)
                    await asyncio.sleep(ACCEPT_PAUSE_S)
                    continue
                if len(self.clients) >= self.limit:
                    if not self.waiting:
                        self._refuse(conn)
                        await asyncio.sleep(0)  # a flood of connections must not starve the loop
                        continue
                    oldest = next(iter(self.waiting))
                    self._refuse(self.clients.pop(oldest), close=False)  # closed once it is done
                    del self.waiting[oldest]
                    oldest.cancel()
                task = asyncio.create_task(self._serve(conn))
                self.clients[task] = conn
                self.waiting[task] = None
                task.add_done_callback(functools.partial(self._done, conn))
                await asyncio.sleep(0)
        finally:
            for task in list(self.clients):
                task.cancel()

    def _done(self, conn: socket.socket, task: asyncio.Task[None]) -> None:
        self.clients.pop(task, None)
        self.waiting.pop(task, None)
        conn.close()  # if the task was cancelled before it began, nothing else closes it

    def _refuse(self, conn: socket.socket, *, close: bool = True) -> None:
        """Tell `conn` there are too many connections (without waiting); close it if `close`."""
        self.refused += 1
        log.warning("control socket: %d clients connected (the limit); turning the surplus away", self.limit)
        with contextlib.suppress(OSError), contextlib.ExitStack() as stack:
            if close:
                stack.enter_context(conn)
            conn.setblocking(False)
            conn.send(
                control.reply(False, error=f"too many connections ({self.limit} at once); try again later")
            )

    async def _serve(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(sock=conn, limit=control.MAX_REQUEST + 1)
        except OSError:
            conn.close()
            return
        try:
            answer = await self._answer(reader)
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                writer.write(answer)
                await writer.drain()
        except (ConnectionError, TimeoutError):
            pass  # the client went away or does not read: nothing to tell it
        except Exception:
            log.exception("control client failed")
        finally:
            writer.transport.abort()  # no waiting for a client that does not read

    def _busy(self) -> None:
        """This connection's request is in: it may no longer be turned away to make room."""
        task = asyncio.current_task()
        if task is not None:
            self.waiting.pop(task, None)

    async def _answer(self, reader: asyncio.StreamReader) -> bytes:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                line = await reader.readline()
        except TimeoutError:
            why_ = f"no complete request within {REQUEST_TIMEOUT_S:g} s; send one JSON object and a newline"
            return control.reply(False, error=why_)
        except ValueError:  # longer than the reader's limit, with no newline within it
            self._busy()
            await _discard(reader)
            return _too_large()
        self._busy()
        if len(line) > control.MAX_REQUEST:
            return _too_large()
        if not line:
            return b""  # closed without a word
        await self.daemon.first_pass.wait()  # before it, status would say "no uplinks"
        return await handle_safely(self.daemon, line)


def _too_large() -> bytes:
    return control.reply(False, error=f"request too large: at most {control.MAX_REQUEST} bytes per line")


async def _discard(reader: asyncio.StreamReader) -> None:
    """Read the rest of an oversized line (bounded by the request timeout), so that a client
    still sending it is not cut off before it can read the answer."""
    with contextlib.suppress(TimeoutError, ValueError, ConnectionError):
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            while True:
                chunk = await reader.read(1 << 16)
                if not chunk or b"\n" in chunk:
                    return


async def handle_safely(daemon: Daemon, line: bytes) -> bytes:
    """Anything unexpected is logged, reported to the client, and the daemon carries on."""
    try:
        return await handle(daemon, line)
    except Exception as e:
        log.exception("control request failed: %r", line[:200])
        return control.reply(False, error=f"internal error: {type(e).__name__}: {e}")


async def handle(daemon: Daemon, line: bytes) -> bytes:
    try:
        req = control.parse_request(line)
    except control.BadRequest as e:
        return control.reply(False, error=str(e))
    rt = daemon.rt
    if isinstance(req, control.Status):
        return control.reply(True, daemon.status())
    if isinstance(req, control.PlanReq):
        async with daemon.lock:
            _, plan = await daemon.compute()
        return control.reply(True, {"ops": [str(op) for op in plan.ops], "paused": rt.paused})
    if isinstance(req, control.Drain):
        if req.uplink not in rt.config.uplinks:
            known = ", ".join(rt.config.uplinks) or "none configured"
            return control.reply(False, error=f"uplink: {req.uplink!r} is not configured; known: {known}")
        if req.command == "drain":
            rt.drained.add(req.uplink)
        else:
            rt.drained.discard(req.uplink)
        log.info("%s %s by request", req.command, req.uplink)
        await daemon.reconcile()
        return control.reply(True, daemon.status())
    if isinstance(req, control.Flush):
        return control.reply(True, await daemon.flush())
    if isinstance(req, control.Resume):
        rt.paused = False
        await daemon.reconcile()
        return control.reply(True, daemon.status())
    if isinstance(req, control.Reload):
        error = await daemon.reload()
        return control.reply(error is None, daemon.status() if error is None else None, error)
    assert isinstance(req, control.Explain)
    by_dev = {s.dev: s.name for s in (rt.intent.uplinks if rt.intent else ()) if s.dev}
    steer = _steering(rt, req, by_dev)
    mark = req.mark
    if mark is None and steer["mark"]:
        mark = steer["mark"]  # what the nft table sets on this connection's first packet
    async with daemon.lock:
        explanation = await daemon.kernel.explain(
            dst=req.dst,
            src=req.src,
            iif=req.iif,
            mark=mark,
            ipproto=req.ipproto,
            sport=req.sport,
            dport=req.dport,
            uplinks_by_dev=by_dev,
        )
        explained = await explain_tunnel(
            daemon.kernel, rt.config.tunnels, replace(explanation, steer=steer).as_dict(), by_dev,
            health=rt.tunnels,
        )  # fmt: skip
    explained["lan6"] = _lan6(rt, req, explanation.dev, by_dev)
    groups = {rt.config.balance.table, *(p.table for p in rt.config.policies.values())}
    if req.iif is not None and mark is None and explanation.table in groups:
        explained["note"] = MULTIPATH_NOTE
    return control.reply(True, explained)


MULTIPATH_NOTE = (
    "a new forwarded connection: the group member a real packet gets follows the packet's own "
    "flow hash when it carries one (IPv6 from Linux hosts, a NIC's receive hash), which this "
    "lookup cannot see; the connection then stays on the uplink its first packet took (ask with "
    "--mark for that)"
)


def _lan6(
    rt: Runtime, req: control.Explain, dev: str | None, by_dev: Mapping[str, str]
) -> dict[str, Any] | None:
    """A configured LAN's IPv6 routed out of an uplink: what uplinkd's nft table does with it
    (the source it leaves with, or what drops it) and whether the LAN's mode allows it."""
    if (
        not isinstance(req.src, ipaddress.IPv6Address)
        or req.iif not in rt.config.lan
        or dev not in by_dev
        or rt.intent is None
    ):
        return None
    tables = [t for t in rt.intent.kernel[NFT].values() if isinstance(t, NftState)]
    nft = tables[0].ipv6 if tables else NftIpv6()
    out = dev or ""
    return leaks.explained(rt.config, nft, lan=req.iif or "", src=req.src, dev=out, uplink=by_dev[out])


def _steering(rt: Runtime, req: control.Explain, by_dev: Mapping[str, str]) -> dict[str, Any]:
    """Which steering rule and policy tier a new connection with this packet gets: the
    config's rules evaluated here, since the kernel does not report nft rule matches."""
    note = "evaluated from the config's rules.steer (the kernel does not say which nft rule matched)"
    if req.iif is not None and req.iif in by_dev:
        return {"rule": None, "policy": None, "tier": None, "mark": 0,
                "note": f"arriving from uplink {by_dev[req.iif]}: pinned to it, not steered"}  # fmt: skip
    packet = policies.Packet(
        dst=req.dst, src=req.src, iif=req.iif, protocol=req.ipproto, sport=req.sport, dport=req.dport
    )
    index, policy = policies.steer_for(rt.config, packet)
    family = socket.AF_INET if req.dst.version == 4 else socket.AF_INET6
    reason = rt.intent.reasons.get(policies.topic(policy, family)) if rt.intent else None
    if policy == "default":
        reason = rt.intent.balance_reason.get(family) if rt.intent else None
    return {
        "rule": index,
        "policy": policy,
        "tier": policies.tier_of(reason) if reason and policy != "default" else None,
        "why": reason,
        "mark": rt.config.policy_mark(policy),
        "note": note,
    }
