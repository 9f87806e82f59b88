"""Helpers for the vm tier's tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import socket
import threading

GUEST_PORT = 7000
"""The guest reaches the host's test server at ``10.0.2.100:7000`` (a ``guestfwd``)."""

FWD_ADDR = "10.0.2.100"


class HostServer:
    """A TCP server on the host's loopback: answers ``pong:<what it read>`` and remembers what
    it read.  The guest reaches it only through QEMU's guestfwd (the guest's own network is
    ``restrict=on``)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.5)
        self.port: int = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="vm-host-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    data = conn.recv(1024)
                    self.received.append(data)
                    conn.sendall(b"pong:" + data)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
