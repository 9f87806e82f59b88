"""A hostile control-socket client and a daemon under a file-descriptor limit, for the
hostile-socket tests and benchmark (issue 9, item 1)."""

from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
from pathlib import Path
from typing import Any

from uplinkd.lab.launcher import LabDaemon


class Daemon(LabDaemon):
    """uplinkd under `prlimit --nofile=SOFT:HARD` (prlimit execs it: the pid is the daemon's),
    with extra arguments (`--socket PATH`)."""

    def __init__(self, *args: Any, nofile: str | None = None, extra: tuple[str, ...] = (), **kw: Any) -> None:
        kw["workdir"].mkdir(parents=True, exist_ok=True)
        super().__init__(*args, **kw)
        self.nofile = nofile
        self.extra = extra

    def command(self) -> list[str]:
        argv = [*super().command(), *self.extra]
        return ["prlimit", f"--nofile={self.nofile}", "--", *argv] if self.nofile else argv


class Holder:
    """Holds `count` connections to the socket at `path` from this process, sending nothing;
    a thread re-opens those the daemon closes (at most `per_round` every 0.1 s) until stopped."""

    def __init__(self, path: Path, count: int, *, per_round: int = 100) -> None:
        self.path = path
        self.count = count
        self.per_round = per_round
        self.sel = selectors.DefaultSelector()
        self.turned_away = 0  # "too many connections" lines received
        self.closed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._keep, daemon=True)

    def __enter__(self) -> Holder:
        deadline = time.monotonic() + 20
        while len(self.sel.get_map()) < self.count and time.monotonic() < deadline:
            if not self._open():
                time.sleep(0.01)  # the listen backlog is full: let the daemon accept
        assert len(self.sel.get_map()) == self.count, f"opened {len(self.sel.get_map())} connections"
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.sel.close()

    def _open(self) -> bool:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(str(self.path))
        except BlockingIOError:
            s.close()
            return False
        except OSError as e:
            s.close()
            if e.errno in (errno.EAGAIN, errno.ECONNREFUSED):
                return False
            raise
        self.sel.register(s, selectors.EVENT_READ)
        return True

    def _keep(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.sel.select(timeout=0.1):
                s: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                self.turned_away += data.count(b"too many connections")
                self.sel.unregister(s)
                s.close()
                self.closed += 1
            for _ in range(min(self.per_round, self.count - len(self.sel.get_map()))):
                if not self._open():
                    break
            self.stop.wait(0.1)
