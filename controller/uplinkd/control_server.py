"""The daemon's side of the control socket: one request per connection, one JSON answer.

The protocol (requests, replies, the client) is `uplinkd.control`; this module listens,
turns each request into what the daemon does, and renders the answer. A request must never
take the daemon down: a bad one gets an error naming the field, an unexpected failure is
logged and reported, and the daemon carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from uplinkd import control
from uplinkd.kernel.state import ApplyResult, Kernel
from uplinkd.plan import Intent, Plan
from uplinkd.runtime import Runtime

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


async def serve(daemon: Daemon, path: Path) -> asyncio.AbstractServer:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await daemon.first_pass.wait()  # before it, status would say "no uplinks"
            line = await reader.readline()
            if len(line) > control.MAX_REQUEST:
                answer = control.reply(False, error="request too large")
            else:
                answer = await handle_safely(daemon, line)
            writer.write(answer)
            await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as e:
            log.debug("control client: %s", e)
        finally:
            writer.close()

    server = await asyncio.start_unix_server(client, path=str(path), limit=control.MAX_REQUEST)
    os.chmod(path, 0o660)
    return server


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
    async with daemon.lock:
        explanation = await daemon.kernel.explain(
            dst=req.dst,
            src=req.src,
            iif=req.iif,
            mark=req.mark,
            ipproto=req.ipproto,
            sport=req.sport,
            dport=req.dport,
            uplinks_by_dev=by_dev,
        )
    return control.reply(True, explanation.as_dict())
