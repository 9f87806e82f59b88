"""The VM's watchdog: kills the VM if the process that booted it dies without closing it.

    python3 -I watchdog.py PARENT_PID VNG_PGID TMPDIR

Started by :meth:`harness.vm.machine.Vm.start` in its own session (so signals to the test's
process group spare it).  It waits until process ``PARENT_PID`` is gone (this process is
re-parented), then SIGKILLs QEMU by the pid in ``TMPDIR/qemu.pid`` (if that pid is still a
QEMU) and vng's process group, and removes ``TMPDIR``.  After a normal close, the parent kills
the watchdog itself.  Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path

TMPDIR_PREFIX = "uplinkd-vm-"
"""The only directories it removes (what :class:`~harness.vm.machine.Vm` makes)."""


def is_qemu(pid: int) -> bool:
    """Whether ``pid`` is (still) a QEMU process (guards against pid reuse before a kill)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return comm.startswith("qemu-system") and state != "Z"


def main(parent: int, pgid: int, tmpdir: str) -> int:
    path = Path(tmpdir)
    if not path.name.startswith(TMPDIR_PREFIX):
        return 2
    while os.getppid() == parent:
        time.sleep(0.5)
    with contextlib.suppress(OSError, ValueError):
        pid = int((path / "qemu.pid").read_text().strip())
        if is_qemu(pid):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.killpg(pgid, signal.SIGKILL)
    time.sleep(1)  # QEMU lets go of its sockets and files
    shutil.rmtree(path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(f"usage: {sys.argv[0]} PARENT_PID VNG_PGID TMPDIR")
    raise SystemExit(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
