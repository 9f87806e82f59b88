"""The real uplinkd, started in a network namespace: for the demo, the tests and the benchmarks.

::

    with LabDaemon(lab.router, config, workdir=tmp) as daemon:   # started; first pass done
        daemon.wait_state("wan", "up")
        daemon.ctl("drain", "wan")                               # uplinkctl in the namespace
    # stopped by pid (SIGTERM, SIGKILL after a grace); on an error, the log's tail is attached

The daemon runs as systemd would run it (``uplinkd --config FILE -v``, the installed command's
own module), with *this* ``uplinkd`` first on its ``PYTHONPATH``, so a checkout is tested as it
is.  Its control socket and state directory are put in ``workdir`` whatever the config says, and
its output goes to ``workdir/uplinkd.log``.  "Ready" means what systemd's READY=1 means: the
first reconcile pass is done.

The pure helpers below (:func:`with_control`, :func:`first_pass_done`, :func:`uplink_of`,
:func:`kernel_writes`) are shared with the VM tier's launcher, which runs the daemon inside a
QEMU guest instead of a namespace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from uplinkd import control
from uplinkd.lab.netns import LabError, in_netns, stop_process, uplinkd_path, wait_until

READY_TIMEOUT_S = 20.0
"""From start until the first pass is done (the daemon's imports dominate; ~1 s unloaded)."""

STOP_GRACE_S = 10.0
"""How long the daemon gets to exit after SIGTERM before it is killed."""

POLL_S = 0.05
"""How often the control socket is asked while waiting (a status costs the daemon little)."""

LOG_TAIL_LINES = 40

_WRITE_MARKERS = (" INFO ip ", " INFO nft ", " INFO conntrack ")

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)


class DaemonError(LabError):
    """The daemon exited, or did not reach what it was waited for; the log's tail is in the note."""


# --- shared with the VM tier ---------------------------------------------------------------------


def with_control(config: Mapping[str, Any], *, socket: str, state_dir: str) -> dict[str, Any]:
    """``config`` with ``control.socket`` and ``control.state_dir`` set (other control keys kept)."""
    return {**config, "control": {**config.get("control", {}), "socket": socket, "state_dir": state_dir}}


def first_pass_done(status: Mapping[str, Any] | None) -> bool:
    return status is not None and int(status.get("passes", 0)) > 0


def uplink_of(status: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """One uplink's entry in a status reply (None if the config has no such uplink)."""
    return next((dict(u) for u in status.get("uplinks", []) if u["name"] == name), None)


def kernel_writes(log: str) -> list[str]:
    """The kernel writes a daemon's log shows (it logs each one once, in ``ip``/``nft`` syntax)."""
    return [line for line in log.splitlines() if any(marker in line for marker in _WRITE_MARKERS)]


def python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with this very ``uplinkd`` first on ``PYTHONPATH``."""
    here = uplinkd_path()
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": f"{here}:{path}" if path else here,
        "PYTHONUNBUFFERED": "1",
        **(extra or {}),
    }


# --- the launcher ---------------------------------------------------------------------------------


class LabDaemon:
    """uplinkd run for real in network namespace ``netns``, with ``config``; stopped by pid.

    ``env`` is added to the daemon's environment (``NOTIFY_SOCKET``, say); ``verbose`` logs
    at debug level (``-v``).  Not started until :meth:`start` (or ``with``); :meth:`stop` may
    be called any number of times.
    """

    def __init__(
        self,
        netns: str,
        config: Mapping[str, Any],
        *,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        verbose: bool = True,
    ) -> None:
        self.netns = netns
        self.workdir = workdir
        self.socket = workdir / "control.sock"
        self.state_dir = workdir / "state"
        self.config_path = workdir / "uplinkd.json"
        self.log_path = workdir / "uplinkd.log"
        self.config = with_control(config, socket=str(self.socket), state_dir=str(self.state_dir))
        self.env = dict(env or {})
        self.verbose = verbose
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_config(self.config)

    def __repr__(self) -> str:
        return f"LabDaemon({self.netns}, pid={self.pid}, log={self.log_path})"

    # --- life cycle ------------------------------------------------------------------------

    def __enter__(self) -> LabDaemon:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self.note_log(exc)
        self.stop()

    def write_config(self, config: Mapping[str, Any] | str) -> None:
        """Write the config file (a mapping as JSON, or text as given, valid or not); the
        running daemon reads it at SIGHUP or ``uplinkctl reload``."""
        self.config_path.write_text(config if isinstance(config, str) else json.dumps(config, indent=1))

    def start(self, *, wait: bool = True, timeout: float = READY_TIMEOUT_S) -> LabDaemon:
        """Start the daemon; with ``wait``, return once its first pass is done."""
        if self.running:
            raise DaemonError(f"already running: {self}")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                in_netns(self.netns, self.command()),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=python_env(self.env),
            )  # fmt: skip
        if wait:
            self.wait_ready(timeout)
        return self

    def command(self) -> list[str]:
        """What is run in the namespace: ``uplinkd --config FILE [-v]`` with this Python.  A
        subclass may wrap it (to drop privileges, say); the wrapper must exec it, so that the
        pid stopped is the daemon's."""
        argv = [sys.executable, "-m", "uplinkd.entry", "--config", str(self.config_path)]
        return [*argv, "-v"] if self.verbose else argv

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Wait until the first pass is done; returns the seconds waited."""
        started = time.monotonic()
        self.wait_for(lambda: first_pass_done(self.status_or_none()), timeout=timeout,
                      what="uplinkd to answer on its control socket")  # fmt: skip
        return time.monotonic() - started

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Send ``sig`` by pid, wait, SIGKILL after :data:`STOP_GRACE_S`; the exit status
        (None if it was never started)."""
        if self.proc is None:
            return None
        return stop_process(self.proc, sig=sig, grace=STOP_GRACE_S)

    def signal(self, sig: int) -> None:
        if self.proc is None:
            raise DaemonError("not started")
        self.proc.send_signal(sig)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """:class:`DaemonError`, with the log's tail, if the daemon has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise self.note_log(DaemonError(f"uplinkd exited with status {self.proc.returncode}"))

    # --- talking to it ---------------------------------------------------------------------

    def call(self, request: Mapping[str, Any], *, timeout: float = 10.0) -> Any:
        """One control-socket request from this process (no ``uplinkctl`` start-up to pay)."""
        return control.call(self.socket, dict(request), timeout=timeout)

    def status(self) -> dict[str, Any]:
        """``status``; :class:`~uplinkd.control.ControlError` if it does not answer."""
        return dict(self.call({"command": "status"}))

    def status_or_none(self) -> dict[str, Any] | None:
        """``status``, or None while it does not answer; :class:`DaemonError` once it exited."""
        self.check_alive()
        try:
            return dict(self.call({"command": "status"}, timeout=2.0))
        except control.ControlError:
            return None

    def uplink(self, name: str) -> dict[str, Any]:
        found = uplink_of(self.status(), name)
        if found is None:
            raise DaemonError(f"no uplink {name} in the status")
        return found

    def wait_state(self, name: str, *states: str, timeout: float = 15.0) -> dict[str, Any]:
        """Wait until uplink ``name`` is in one of ``states``; returns its status entry."""

        def reached() -> dict[str, Any] | None:
            status = self.status_or_none()
            up = uplink_of(status, name) if status is not None else None
            return up if up is not None and up["state"] in states else None

        return self.wait_for(reached, timeout=timeout, what=f"uplink {name} to be {'/'.join(states)}")

    def wait_for(self, predicate: Callable[[], T | None], *, timeout: float, what: str) -> T:
        """Poll ``predicate()`` until it returns something true, and return that
        (:func:`~uplinkd.lab.netns.wait_until`); :class:`DaemonError` with the log's tail after
        ``timeout`` s, or as soon as the daemon exits if the predicate checks it."""
        try:
            value = wait_until(predicate, timeout=timeout, what=what, interval=POLL_S)
        except DaemonError:
            raise
        except LabError as e:
            raise self.note_log(DaemonError(str(e))) from None
        assert value is not None  # wait_until returns only a true value
        return value

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The real ``uplinkctl ARGS`` in the namespace (``flush`` and ``plan`` read its kernel)."""
        return subprocess.run(
            in_netns(self.netns, [sys.executable, "-m", "uplinkd.cli", "--socket", str(self.socket), *args]),
            capture_output=True, text=True, check=check, timeout=30, env=python_env(),
        )  # fmt: skip

    # --- what it said ----------------------------------------------------------------------

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def writes(self) -> list[str]:
        """The kernel writes it logged, oldest first."""
        return kernel_writes(self.log())

    def note_log(self, exc: E) -> E:
        """Attach the log's tail to ``exc`` (shown under its traceback); returns ``exc``."""
        exc.add_note(f"--- {self.log_path}, last {LOG_TAIL_LINES} lines ---\n{self.log_tail()}")
        return exc
