"""A TCP server on the host's loopback for a VM guest to reach (through QEMU's guestfwd).

The guest's own network is ``restrict=on`` (or leads only to QEMU), so the only way out is a
``guestfwd`` rule; :data:`FWD_ADDR`:`GUEST_PORT` is the address the tests and the VM benchmark
forward to this server.
"""

from __future__ import annotations

import socket
import threading
import time

GUEST_PORT = 7000
"""The guest reaches the host's test server at ``10.0.2.100:7000`` (a ``guestfwd``)."""

FWD_ADDR = "10.0.2.100"


class HostServer:
    """Answers each connection's first read with ``pong:<what it read>``, and remembers what
    it read and when (host ``time.monotonic()`` at accept).  Stop it with :meth:`close`."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.seen: list[tuple[float, bytes]] = []
        """(accepted at, what the connection carried), oldest first."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="vm-host-server", daemon=True)
        self._thread.start()

    @property
    def received(self) -> list[bytes]:
        return [data for _, data in self.seen]

    def first(self, tag: str) -> float | None:
        """When the first connection carrying ``tag`` (one line) was accepted, or None."""
        return next((t for t, data in self.seen if data.strip() == tag.encode()), None)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted = time.monotonic()
            with conn:
                conn.settimeout(5)
                try:
                    data = conn.recv(1024)
                    self.seen.append((accepted, data))
                    conn.sendall(b"pong:" + data)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
