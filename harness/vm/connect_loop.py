"""Runs in the guest: a TCP connection to ADDR:PORT every INTERVAL s until one gets a reply.

    python3 -I connect_loop.py ADDR PORT INTERVAL LIMIT TAG

Each try sends TAG and is bounded by max(INTERVAL, 0.5) s.  Before any uplink is there,
connect() fails at once (the balance table is ``unreachable``).  Prints ``ready``, then
``ok SECONDS TRIES REPLY`` (exit 0) or, after LIMIT s, ``timeout TRIES`` (exit 1).
"""

from __future__ import annotations

import socket
import sys
import time


def main(addr: str, port: int, interval: float, limit: float, tag: str) -> int:
    print("ready", flush=True)
    start = time.monotonic()
    deadline = start + limit
    tries, due = 0, start
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        due += interval
        tries += 1
        try:
            with socket.create_connection((addr, port), timeout=max(interval, 0.5)) as s:
                s.settimeout(5)
                s.sendall(tag.encode() + b"\n")
                reply = s.recv(1024)
        except OSError:
            continue
        print(f"ok {time.monotonic() - start:.3f} {tries} {reply!r}", flush=True)
        return 0
    print(f"timeout {tries}", flush=True)
    return 1


if __name__ == "__main__":
    if len(sys.argv) != 6:
        raise SystemExit(f"usage: {sys.argv[0]} ADDR PORT INTERVAL LIMIT TAG")
    raise SystemExit(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]))
