"""The ``guestfwd`` relay: QEMU runs it on the host for each guest connection it forwards.

    python3 -I relay.py HOST_PORT

QEMU hands it the guest's connection as stdin and stdout; it copies stdin to
``127.0.0.1:HOST_PORT`` and the replies back to stdout, and gives up after a minute idle.
Standard library only.
"""

from __future__ import annotations

import os
import select
import socket
import sys
from typing import Any

IDLE_TIMEOUT_S = 60.0


def main(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.settimeout(None)
        stdin_open = True
        while True:
            watched: list[Any] = [sock, 0] if stdin_open else [sock]
            ready, _, _ = select.select(watched, [], [], IDLE_TIMEOUT_S)
            if not ready:
                return 1
            if 0 in ready:
                data = os.read(0, 1 << 16)
                if data:
                    sock.sendall(data)
                else:
                    stdin_open = False
                    sock.shutdown(socket.SHUT_WR)
            if sock in ready:
                data = sock.recv(1 << 16)
                if not data:
                    return 0
                while data:
                    data = data[os.write(1, data) :]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} HOST_PORT")
    raise SystemExit(main(int(sys.argv[1])))
