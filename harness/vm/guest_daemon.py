"""The real uplinkd run inside a :class:`~harness.vm.machine.Vm`: the VM tier's daemon launcher.

The netns tier's launcher is :class:`uplinkd.lab.launcher.LabDaemon`; this one shares its
config, readiness and log rules (:func:`~uplinkd.lab.launcher.with_control`,
:func:`~uplinkd.lab.launcher.first_pass_done`, :func:`~uplinkd.lab.launcher.kernel_writes`) and
differs in how it gets there: programs are spawned in the guest through the agent, and
Python is slow in the TCG guest (``import pyroute2`` alone takes ~17 s), so nothing here runs
``uplinkctl`` per query: :meth:`GuestDaemon.start` spawns, next to the daemon, a small
standard-library poller (``status_poller.py``) that asks the control socket for ``status``
every ``status_interval`` s and writes the reply atomically into the VM's shared directory,
where the host reads it without a guest round trip.  ``uplinkctl status --json`` is run once,
at start (in parallel with the daemon's own start), to show the real client answers.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from uplinkd.lab.launcher import first_pass_done, kernel_writes, uplink_of, with_control
from uplinkd.lab.netns import uplinkd_path

from harness.vm.channel import VmError
from harness.vm.machine import Vm

GUEST_RUN_DIR = "/run/uplinkd-vm"
"""Guest-only directory (tmpfs) for the control socket and the state directory: a unix
socket cannot live on the 9p share."""

START_TIMEOUT_S = 180.0
"""From spawning the daemon until its status answers (TCG: ~25-40 s; uplinkctl in parallel)."""

STATUS_POLLER = Path(__file__).resolve().parent / "status_poller.py"


class GuestDaemon:
    """uplinkd started for real in the guest (``python3 -m uplinkd.entry -v``), with its
    config, log and status in the VM's shared directory."""

    def __init__(self, vm: Vm, config: Mapping[str, Any], *, status_interval: float = 0.1) -> None:
        self.vm = vm
        self.dir = vm.shared / "uplinkd"
        self.dir.mkdir(exist_ok=True)
        self.socket = f"{GUEST_RUN_DIR}/control.sock"
        self.state_dir = f"{GUEST_RUN_DIR}/state"
        self.config = with_control(config, socket=self.socket, state_dir=self.state_dir)
        self.config_path = self.dir / "uplinkd.json"
        self.log_path = self.dir / "uplinkd.log"
        self.status_path = self.dir / "status.json"
        self.uplinkctl_path = self.dir / "uplinkctl-status.json"
        self.status_interval = status_interval
        self.pids: list[int] = []

    def start(self, *, uplinkctl: bool = True, timeout: float = START_TIMEOUT_S) -> float:
        """Spawn the daemon and the status poller (and, with ``uplinkctl``, one real
        ``uplinkctl status --json``, retried until it answers); wait until a pass is done.
        Returns the seconds it took."""
        started = time.monotonic()
        self.config_path.write_text(json.dumps(self.config, indent=1))
        self.vm.check(["mkdir", "-p", GUEST_RUN_DIR])
        env = {"PYTHONUNBUFFERED": "1", "PYTHONPATH": uplinkd_path()}  # this very uplinkd
        self.pids.append(
            self.vm.spawn(
                ["python3", "-m", "uplinkd.entry", "--config", str(self.config_path), "-v"],
                log=str(self.log_path),
                env=env,
            )
        )
        self.pids.append(
            self.vm.spawn(
                [
                    "python3",
                    "-I",
                    str(STATUS_POLLER),
                    self.socket,
                    str(self.status_path),
                    str(self.status_interval),
                ],
                log=str(self.dir / "poller.log"),
            )
        )
        if uplinkctl:
            out = shlex.quote(str(self.uplinkctl_path))
            ctl = f"uplinkctl --socket {shlex.quote(self.socket)} status --json"
            loop = (
                f"for i in $(seq 90); do {ctl} > {out}.tmp 2>>{out}.err && mv {out}.tmp {out} && exit 0; "
                "sleep 1; done; exit 1"
            )
            self.pids.append(self.vm.spawn(loop, env=env))
        try:
            self.vm.wait_until(
                self._ready,
                timeout=timeout,
                what=f"uplinkd to answer in the guest (log: {self.log_path})",
                interval=0.5,
            )
        except VmError as e:  # the log goes with the VM's directory: say what it held
            raise VmError(f"{e}\n--- {self.log_path}, last lines ---\n{self.log_tail()}") from e
        return time.monotonic() - started

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as e:
            return f"(unreadable: {e})"

    def _ready(self) -> bool:
        return first_pass_done(self.status())

    def _poll(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def status(self) -> dict[str, Any] | None:
        """The latest status the poller got (at most ~``status_interval`` s old), or None."""
        data = self._poll()
        if data is None or "reply" not in data:
            return None
        reply = data["reply"]
        return dict(reply["result"]) if isinstance(reply, dict) and reply.get("ok") else None

    def fresh_status(self, timeout: float = 30.0) -> dict[str, Any]:
        """A status asked for after this call."""
        first = self._poll()
        seen = int(first["n"]) if first else 0
        fresh: list[dict[str, Any]] = []

        def newer() -> bool:
            data = self._poll()
            status = self.status() if data is not None and int(data["n"]) > seen + 1 else None
            if status is not None:
                fresh[:] = [status]
            return status is not None

        self.vm.wait_until(newer, timeout=timeout, what="a fresh status from the guest", interval=0.02)
        return fresh[0]

    def uplink(self, name: str, status: Mapping[str, Any] | None = None) -> dict[str, Any]:
        found = uplink_of(status if status is not None else self.fresh_status(), name)
        if found is None:
            raise VmError(f"no uplink {name} in the status")
        return found

    def wait_state(
        self, name: str, *states: str, timeout: float = 60.0, interval: float = 0.05
    ) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def reached() -> bool:
            status = self.status()
            if status is None:
                return False
            up = uplink_of(status, name)
            if up is not None and up["state"] in states:
                found[:] = [up]
                return True
            return False

        try:
            self.vm.wait_until(
                reached, timeout=timeout, what=f"uplink {name} to be {'/'.join(states)}", interval=interval
            )
        except VmError as e:
            status = self.status()
            now = uplink_of(status or {}, name)
            raise VmError(f"{e}; it is {now}\n--- uplinkd log (tail) ---\n{self.log(3000)}") from e
        return found[0]

    def uplinkctl_status(self, timeout: float = 120.0) -> dict[str, Any]:
        """What the real ``uplinkctl status --json`` printed (started by :meth:`start`)."""
        self.vm.wait_until(
            self.uplinkctl_path.exists, timeout=timeout, what="uplinkctl status --json", interval=0.5
        )
        return dict(json.loads(self.uplinkctl_path.read_text()))

    def log(self, tail: int | None = None) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-tail:] if tail else text

    def writes(self) -> list[str]:
        """The kernel writes the daemon logged, oldest first."""
        return kernel_writes(self.log())

    def stop(self) -> None:
        """Stop the daemon, the poller and uplinkctl by pid (they die with the guest anyway)."""
        for pid in reversed(self.pids):
            with contextlib.suppress(VmError):
                self.vm.run(["kill", str(pid)], timeout=10)
        self.pids.clear()

    def lease_file(self, uplink: str) -> str:
        """The guest path of an uplink's stored DHCP lease."""
        return f"{self.state_dir}/{uplink}.lease.json"
