"""The `on_change` hook: a program run on every uplink and tunnel state change, with what
changed in its environment (UPLINKD_KIND, UPLINKD_UPLINK, UPLINKD_STATE, UPLINKD_OLD_STATE,
UPLINKD_REASON, UPLINKD_DEV; a tunnel's: UPLINKD_TUNNEL and UPLINKD_UNDERLAY). It runs beside
the loop, never in its way: one that cannot start, fails or overruns its timeout is logged (and
killed), and the daemon carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from uplinkd.config import Hooks
from uplinkd.runtime import Event

log = logging.getLogger("uplinkd")

Spawn = Callable[[Coroutine[Any, Any, None]], object]


def environment(event: Event) -> dict[str, str]:
    """The hook's environment. A tunnel's change (UPLINKD_KIND=tunnel) names the tunnel in
    UPLINKD_TUNNEL and the uplink carrying it in UPLINKD_UNDERLAY; its UPLINKD_UPLINK is
    empty, so a hook written for uplinks never takes a tunnel's "down" for an uplink's."""
    env = {
        **os.environ,
        "UPLINKD_KIND": event.kind,
        "UPLINKD_UPLINK": event.uplink if event.kind == "uplink" else "",
        "UPLINKD_STATE": str(event.new),
        "UPLINKD_OLD_STATE": str(event.old or ""),
        "UPLINKD_REASON": event.reason,
        "UPLINKD_DEV": event.dev or "",
    }
    if event.kind == "tunnel":
        env.update(UPLINKD_TUNNEL=event.uplink, UPLINKD_UNDERLAY=event.underlay or "")
    return env


def fire(hooks: Hooks, event: Event, *, spawn: Spawn) -> None:
    """Start the hook for one event, if one is configured; `spawn` runs it as a task."""
    if hooks.on_change is not None:
        spawn(run(hooks.on_change, environment(event), timeout=hooks.timeout))


async def run(hook: Path, env: dict[str, str], *, timeout: float) -> None:
    try:
        proc = await asyncio.create_subprocess_exec(str(hook), env=env, stdin=asyncio.subprocess.DEVNULL)
    except OSError as e:
        log.warning("hook %s could not start: %s", hook, e)
        return
    try:
        code = await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        log.warning("hook %s killed after %gs", hook, timeout)
        return
    if code != 0:
        log.warning(
            "hook %s exited %d for %s", hook, code, env["UPLINKD_UPLINK"] or env.get("UPLINKD_TUNNEL", "")
        )
