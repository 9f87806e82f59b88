"""A small QMP client (QEMU's JSON machine protocol), no dependency: commands and events."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from harness.vm.channel import LineSocket, VmError

QMP_TIMEOUT_S = 10.0
"""Upper bound for one QMP command."""


class Qmp:
    """QMP over a connected socket.  ``still_alive`` raises :class:`VmError` once QEMU is
    known to be gone, so no wait outlives it."""

    def __init__(self, channel: LineSocket, still_alive: Callable[[], None]) -> None:
        self.channel = channel
        self.still_alive = still_alive
        self.events: list[dict[str, Any]] = []
        """Every QMP event received and not yet taken by :meth:`wait_event`, oldest first."""
        self._ids = itertools.count(1)

    def handshake(self, deadline: float) -> None:
        """Read QEMU's greeting and enter command mode (``qmp_capabilities``)."""
        greeting = self.channel.read_json(deadline, self.still_alive)
        if greeting is None or "QMP" not in greeting:
            raise VmError(f"no QMP greeting: {greeting}")
        self.execute("qmp_capabilities", timeout=max(1.0, deadline - time.monotonic()))

    def execute(self, command: str, arguments: dict[str, Any] | None = None, *,
                timeout: float = QMP_TIMEOUT_S) -> Any:  # fmt: skip
        """Run ``command``; returns its ``return`` value, raises :class:`VmError` on its
        ``error`` or after ``timeout`` s.  Events that arrive meanwhile are kept in :attr:`events`."""
        request_id = f"uplinkd-{next(self._ids)}"
        request: dict[str, Any] = {"execute": command, "id": request_id}
        if arguments:
            request["arguments"] = arguments
        self.channel.write_json(request)
        deadline = time.monotonic() + timeout
        while True:
            msg = self.channel.read_json(deadline, self.still_alive)
            if msg is None:
                raise VmError(f"QMP {command}: no reply within {timeout:g} s")
            if "event" in msg:
                self.events.append(msg)
            elif msg.get("id") == request_id:
                if "error" in msg:
                    err = msg["error"]
                    raise VmError(f"QMP {command} {arguments or {}}: {err.get('class')}: {err.get('desc')}")
                return msg.get("return")

    def wait_event(
        self, name: str, predicate: Callable[[dict[str, Any]], bool] = lambda _: True,
        timeout: float = QMP_TIMEOUT_S,
    ) -> dict[str, Any]:  # fmt: skip
        """The first event ``name`` (already received or arriving within ``timeout`` s) for
        which ``predicate(event["data"])`` holds; it is removed from :attr:`events`."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("event") == name and predicate(event.get("data", {})):
                    return self.events.pop(i)
            msg = self.channel.read_json(deadline, self.still_alive)
            if msg is None:
                raise VmError(f"no QMP event {name} within {timeout:g} s")
            if "event" in msg:
                self.events.append(msg)

    def close(self) -> None:
        self.channel.close()
