"""Runs in the guest next to the daemon: its status, every INTERVAL s, into a file the host reads.

    python3 -I status_poller.py SOCKET OUT INTERVAL

Python is slow in a TCG guest (``uplinkctl`` takes ~25 s of imports), so this small
standard-library client asks the control socket for ``status`` and writes ``{"n", "t",
"reply"}`` (or ``"error"``) atomically to OUT, on the 9p share: ``n`` counts the replies and
``t`` is the guest's monotonic time, so the host can tell a fresh reply from an old one.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any


def ask(path: str) -> Any:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(b'{"command": "status"}\n')
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)


def main(path: str, out: str, interval: float) -> None:
    n = 0
    while True:
        n += 1
        t = time.monotonic()
        data: dict[str, Any]
        try:
            data = {"n": n, "t": t, "reply": ask(path)}
        except (OSError, ValueError) as e:
            data = {"n": n, "t": t, "error": str(e)}
        with open(out + ".tmp", "w") as f:
            json.dump(data, f)
        os.replace(out + ".tmp", out)
        time.sleep(interval)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(f"usage: {sys.argv[0]} SOCKET OUT INTERVAL")
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
