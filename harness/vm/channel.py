"""JSON objects, one per line, over one of QEMU's unix sockets (QMP, the agent's serial port)."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


class VmError(RuntimeError):
    """The VM could not boot, a guest command or QMP command failed, or a wait timed out."""


class LineSocket:
    """JSON objects, one per line, over a stream socket; reads bounded by a deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    @classmethod
    def connect(cls, path: Path, deadline: float, still_alive: Callable[[], None]) -> LineSocket:
        """Connect to the unix socket ``path`` as soon as QEMU has opened it (by ``deadline``,
        a ``time.monotonic()``); ``still_alive`` raises if QEMU is known to be gone."""
        while True:
            still_alive()
            if path.exists():
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(str(path))
                    return cls(sock)
                except OSError:
                    sock.close()
            if time.monotonic() >= deadline:
                raise VmError(f"QEMU did not open {path.name} in time")
            time.sleep(0.05)

    def write_json(self, obj: Mapping[str, Any]) -> None:
        try:
            self.sock.sendall(json.dumps(obj).encode() + b"\n")
        except OSError as exc:
            raise VmError(f"cannot write to QEMU's socket: {exc}") from exc

    def read_json(self, deadline: float, still_alive: Callable[[], None]) -> dict[str, Any] | None:
        """The next JSON object, or None at the deadline.  ``still_alive`` is called while
        waiting and raises if the other end is known to be gone.  Lines that are not JSON
        objects are skipped."""
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                with contextlib.suppress(ValueError):
                    obj = json.loads(line)
                    if isinstance(obj, dict):
                        return obj
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self.sock], [], [], min(remaining, 0.5))
            if not ready:
                still_alive()
                continue
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError as exc:
                raise VmError(f"cannot read from QEMU's socket: {exc}") from exc
            if not chunk:
                still_alive()
                raise VmError("connection to QEMU closed")
            self.buf += chunk

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
