"""A QEMU virtual machine for the vm tier: a real kernel with a real USB NIC to plug.

:class:`Vm` boots a Debian kernel with virtme-ng (``vng``) under QEMU (TCG when there is no
usable ``/dev/kvm``) on this machine's own filesystem (9p root, copy-on-write overlays on
``/etc``, ``/usr``, ``/var``, ``/tmp``...; ``/run`` is a tmpfs), so python3 and the
``uplinkd`` install are there inside.  It adds to the VM:

* a ``qemu-xhci`` controller (``xhci``) and QEMU user-mode networks (``-netdev user``, one per
  :class:`~harness.vm.netdevs.UserNet`) that USB NICs are attached to: :meth:`Vm.plug_usb_nic`
  hot-plugs a ``usb-net`` device (driver ``cdc_ether`` in the guest, USB id 0525:a4a2)
  through QMP and :meth:`Vm.unplug` removes it;
* a QMP socket (:meth:`Vm.qmp`, :mod:`harness.vm.qmp`);
* a guest agent on a virtio-serial port: :meth:`Vm.run` runs a command inside the guest and
  returns ``(rc, stdout, stderr)``, :meth:`Vm.spawn` starts a background program
  (:mod:`harness.vm.guest`).

Why a virtio-serial agent: ``vng --exec`` runs one command and powers off when it exits, and
the tests must plug devices *while* the guest runs.  The agent (:mod:`harness.vm.agent`,
standard library only) is run by the guest's python3 as a script, as vng's ``--exec``
command.  A virtio-serial port needs no guest network (``--ssh`` would: it needs the
guest's network, which is the very thing under test, plus sshd and keys) and no console
scraping (``--console`` mixes kernel messages and prompts into the output).  When the agent
exits, the guest powers off: that is the clean shutdown.

User-mode networks are ``restrict=on`` by default: the guest reaches nothing outside QEMU
except what a ``guestfwd`` forwards (:class:`~harness.vm.netdevs.GuestFwd`), so traffic never
leaves this machine.  QEMU's DHCP server then offers no router and no DNS option (libslirp
adds them only to unrestricted networks), although the gateway (.2) answers and routes.

Everything is bounded in time.  :meth:`Vm.close` (also on a failed start, and from
``__exit__``) shuts the guest down, kills QEMU by pid and vng's process group, and removes the
temporary directory; a watchdog process (:mod:`harness.vm.watchdog`) does the same if this
process dies without closing.  KVM is used only where it works (``/dev/kvm`` *and* vmx/svm):
a ``/dev/kvm`` without them hangs the guest.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.vm.channel import LineSocket, VmError
from harness.vm.guest import GuestCommands
from harness.vm.host import KERNEL_ENV, find_kernel, kvm_usable
from harness.vm.netdevs import UserNet
from harness.vm.qmp import QMP_TIMEOUT_S, Qmp
from harness.vm.watchdog import TMPDIR_PREFIX, is_qemu

AGENT = Path(__file__).resolve().parent / "agent.py"
WATCHDOG = Path(__file__).resolve().parent / "watchdog.py"

AGENT_PORT = "uplinkd.agent"
"""Name of the agent's virtio-serial port (``/sys/class/virtio-ports/*/name``)."""

BOOT_TIMEOUT_S = 120.0
"""Upper bound for a boot, from starting vng until the agent says hello (TCG is slow)."""

SHUTDOWN_TIMEOUT_S = 20.0
"""How long a clean shutdown (agent exits, guest powers off) may take before QEMU is killed."""

PLUG_TIMEOUT_S = 30.0
"""Default upper bound from ``device_add`` until the guest shows the new interface."""

USB_NET_VENDOR = "0525"
"""QEMU's ``usb-net`` identifies as NetChip 0525:a4a2 (Linux-USB Ethernet/RNDIS gadget)."""

USB_NET_MODEL = "a4a2"

_SUN_PATH_MAX = 107


@dataclass
class Timings:
    """Measured durations, in seconds, of this VM's life (``None``: did not happen yet)."""

    boot: float | None = None
    """From starting vng until the guest agent said hello."""
    plugs: list[float] = field(default_factory=list)
    """For each :meth:`Vm.plug_usb_nic` that waited: from ``device_add`` to the interface."""
    shutdown: float | None = None


class Vm(GuestCommands):
    """A booted guest; use as a context manager (``with Vm() as vm: vm.run("uname -r")``).

    ``netdevs`` are the user-mode networks USB NICs can attach to (default: one, ``lte0``).
    ``kvm=None`` uses KVM when ``/dev/kvm`` is usable, TCG otherwise.  ``console`` copies the
    guest's kernel console into :attr:`log_path` (for debugging a boot).
    """

    def __init__(
        self,
        *,
        kernel: Path | str | None = None,
        netdevs: Sequence[UserNet] = (UserNet("lte0"),),
        memory: str = "1G",
        cpus: int = 2,
        kvm: bool | None = None,
        boot_timeout: float = BOOT_TIMEOUT_S,
        name: str = "uplinkd-vm",
        extra_qemu_opts: Sequence[str] = (),
        console: bool = False,
    ) -> None:
        chosen = Path(kernel) if kernel is not None else find_kernel()
        if chosen is None:
            raise VmError("no kernel to boot: no /boot/vmlinuz-* and no $" + KERNEL_ENV)
        self.kernel = chosen
        self.netdevs = tuple(netdevs)
        self.memory = memory
        self.cpus = cpus
        self.kvm = kvm_usable() if kvm is None else kvm
        self.boot_timeout = boot_timeout
        self.name = name
        self.extra_qemu_opts = tuple(extra_qemu_opts)
        self.console = console
        self.timings = Timings()
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._qemu_pid: int | None = None
        self._agent: LineSocket | None = None
        self._qmp: Qmp | None = None
        self._ids = itertools.count(1)
        self._usb_net_loaded = False
        self._agent_ready = False
        self._watchdog: subprocess.Popen[bytes] | None = None

    # --- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> Vm:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def tmpdir(self) -> Path:
        if self._dir is None:
            raise VmError("the VM is not started")
        return self._dir

    @property
    def shared(self) -> Path:
        """A directory the guest sees at the same path, read-write for both sides (9p)."""
        return self.tmpdir / "share"

    @property
    def log_path(self) -> Path:
        """vng's and QEMU's own output (not the guest console)."""
        return self.tmpdir / "vng.log"

    def command_line(self) -> list[str]:
        """The ``vng`` command that boots this VM (valid once started: it names the tmpdir)."""
        d = self.tmpdir
        qemu = [
            "-pidfile", str(d / "qemu.pid"),
            "-qmp", f"unix:{d / 'qmp.sock'},server=on,wait=off",
            "-chardev", f"socket,id=uplinkdagent,path={d / 'agent.sock'},server=on,wait=off",
            "-device", "virtio-serial-pci,id=uplinkdser",
            "-device", f"virtserialport,bus=uplinkdser.0,chardev=uplinkdagent,name={AGENT_PORT}",
            "-device", "qemu-xhci,id=xhci",
        ]  # fmt: skip
        for net in self.netdevs:
            qemu += ["-netdev", net.option()]
        qemu += list(self.extra_qemu_opts)
        agent = shlex.join([_guest_python(), "-I", str(AGENT), AGENT_PORT])
        argv = [
            "vng", "--run", str(self.kernel), "--disable-microvm",
            "--force-9p", "--name", self.name, "--cpus", str(self.cpus), "--memory", self.memory,
            f"--rwdir={self.shared}", "--cwd", "/",
            "--exec", agent,
        ]  # fmt: skip
        if not self.kvm:
            argv.append("--disable-kvm")
        if self.console:
            argv.append("--verbose")
        # vng joins --qemu-opts into a command line for /bin/sh: quote every word for it.
        argv.append("--qemu-opts=" + " ".join(shlex.quote(word) for word in qemu))
        return argv

    def start(self) -> None:
        """Boot the guest and wait (at most ``boot_timeout`` s) until its agent answers."""
        if self._dir is not None:
            raise VmError("the VM is already started")
        self._dir = Path(tempfile.mkdtemp(prefix=TMPDIR_PREFIX))
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        d = self.tmpdir
        if len(str(d / "agent.sock")) > _SUN_PATH_MAX:
            raise VmError(f"temporary directory path too long for a unix socket: {d}")
        self.shared.mkdir()
        (d / "vngtmp").mkdir()
        env = dict(os.environ, TMPDIR=str(d / "vngtmp"))
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                self.command_line(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                cwd=str(d),
            )
        # If this process dies without close() (SIGKILL, SIGTERM's default action), the
        # watchdog (own session, so group signals spare it) kills QEMU and removes the tmpdir.
        self._watchdog = subprocess.Popen(
            [sys.executable, "-I", str(WATCHDOG), str(os.getpid()), str(self._proc.pid), str(d)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = started + self.boot_timeout
        self._agent = self._connect(d / "agent.sock", deadline)
        self._qmp = Qmp(self._connect(d / "qmp.sock", deadline), self._check_alive)
        self._qmp.handshake(deadline)
        self._qemu_pid = self._read_pidfile()
        while True:
            msg = self._agent.read_json(deadline, self._check_alive)
            if msg is None:
                raise VmError(f"guest agent did not start within {self.boot_timeout:g} s{self._log_tail()}")
            if msg.get("event") == "ready":
                break
        self._agent_ready = True
        self.timings.boot = time.monotonic() - started

    def close(self) -> None:
        """Shut the guest down (cleanly if it answers), make sure QEMU is gone, remove the
        temporary directory.  Safe to call more than once and after a failed start."""
        started = time.monotonic()
        try:
            if self._proc is not None and self._proc.poll() is None:
                self._shutdown()
        finally:
            self._kill()
            for sock in (self._agent, self._qmp):
                if sock is not None:
                    sock.close()
            self._agent = self._qmp = None
            self._agent_ready = False
            if self._watchdog is not None:
                self._watchdog.kill()
                self._watchdog.wait()
                self._watchdog = None
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None
            self.timings.shutdown = time.monotonic() - started

    def _shutdown(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT_S
        if self._agent is not None and self._agent_ready:
            with contextlib.suppress(OSError, VmError):
                self._agent.write_json({"id": next(self._ids), "op": "exit"})
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        if self._proc.poll() is None and self._qmp is not None:
            with contextlib.suppress(OSError, VmError):
                self.qmp("quit")
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=5)

    def _kill(self) -> None:
        """SIGKILL QEMU by its pid, then vng's whole process group (ours: started with a new
        session), and reap vng."""
        if self._qemu_pid is None and self._dir is not None:
            self._qemu_pid = self._read_pidfile()
        if self._qemu_pid is not None and is_qemu(self._qemu_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._qemu_pid, signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
            self._proc = None
        if self._qemu_pid is not None:
            deadline = time.monotonic() + 5
            while is_qemu(self._qemu_pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            self._qemu_pid = None

    @property
    def qemu_pid(self) -> int | None:
        return self._qemu_pid

    # --- the agent -------------------------------------------------------------------------

    def request(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self._agent is None:
            raise VmError("the VM is not running")
        request_id = next(self._ids)
        self._agent.write_json({"id": request_id, **request})
        deadline = time.monotonic() + timeout
        while True:
            msg = self._agent.read_json(deadline, self._check_alive)
            if msg is None:
                raise VmError(f"guest agent gave no reply within {timeout:g} s to {request}")
            if msg.get("id") == request_id:  # older ids: replies to requests that timed out
                return msg

    # --- QMP and devices --------------------------------------------------------------------

    @property
    def qmp_events(self) -> list[dict[str, Any]]:
        """Every QMP event received and not yet waited for, oldest first."""
        return self._qmp.events if self._qmp is not None else []

    def qmp(self, command: str, /, *, qmp_timeout: float = QMP_TIMEOUT_S, **arguments: Any) -> Any:
        """Run QMP ``command`` with ``arguments``; returns its ``return`` value, raises
        :class:`VmError` on its ``error`` or after ``qmp_timeout`` s."""
        if self._qmp is None:
            raise VmError("the VM is not running")
        return self._qmp.execute(command, arguments, timeout=qmp_timeout)

    def wait_qmp_event(
        self, name: str, predicate: Callable[[dict[str, Any]], bool] = lambda _: True,
        timeout: float = QMP_TIMEOUT_S,
    ) -> dict[str, Any]:  # fmt: skip
        """The first QMP event ``name`` (already received or arriving within ``timeout`` s)
        for which ``predicate(event["data"])`` holds."""
        if self._qmp is None:
            raise VmError("the VM is not running")
        return self._qmp.wait_event(name, predicate, timeout)

    def plug_usb_nic(
        self,
        id: str = "stick0",
        netdev: str = "lte0",
        *,
        mac: str | None = None,
        serial: str | None = None,
        port: str | None = None,
        preload_driver: bool = True,
        wait: bool = True,
        timeout: float = PLUG_TIMEOUT_S,
    ) -> str | None:
        """Hot-plug a USB CDC-Ethernet NIC (QEMU ``usb-net``, USB id 0525:a4a2) on the xHCI
        bus, attached to the user network ``netdev``.

        ``mac`` sets its MAC address (QEMU's default is 52:54:00:12:34:56 for every stick), and
        so its name in the guest: Debian's ``73-usb-net-by-mac.link`` names USB NICs
        ``enx<mac>``.  ``port`` picks the xHCI root port ("1".."4"; QEMU picks a free one
        otherwise).  ``serial`` sets the USB serial string; QEMU's default is derived from the
        port (``1-0000:00:0b.0-<port>``), so it changes with the port.

        ``preload_driver`` loads ``cdc_ether`` first (once): 0525:a4a2 is also in
        ``cdc_subset``'s id table, and when udev loads both modules on the plug event whichever
        registers first binds the device; with ``cdc_subset`` the NIC gets a random MAC.

        With ``wait``, returns the interface's name once udev has handled it (after any
        rename), :class:`VmError` if none appears within ``timeout`` s; the time from
        ``device_add`` is appended to :attr:`timings`.  Without, returns None at once.
        """
        if preload_driver and not self._usb_net_loaded:
            self.check(["modprobe", "cdc_ether"])
            self._usb_net_loaded = True
        before = self.link_names() if wait else set()
        args: dict[str, Any] = {"driver": "usb-net", "id": id, "bus": "xhci.0", "netdev": netdev}
        for key, value in (("mac", mac), ("serial", serial), ("port", port)):
            if value is not None:
                args[key] = value
        started = time.monotonic()
        self.qmp("device_add", **args)
        if not wait:
            return None
        new: list[str] = []

        def appeared() -> bool:
            new[:] = sorted(self.link_names() - before)
            return bool(new)

        self.wait_until(appeared, timeout=timeout, what=f"an interface for USB NIC {id}")
        left = max(1.0, timeout - (time.monotonic() - started))
        self.run(["udevadm", "settle", f"--timeout={left:.0f}"], left + 5)  # the final name
        self.wait_until(appeared, timeout=left, what=f"the interface of USB NIC {id} after udev")
        self.timings.plugs.append(time.monotonic() - started)
        return new[0]

    def unplug(self, id: str, timeout: float = QMP_TIMEOUT_S) -> None:
        """``device_del`` and wait for QEMU's DEVICE_DELETED for ``id`` (the guest's interface
        goes away shortly after: wait for that separately)."""
        self.qmp("device_del", id=id)
        self.wait_qmp_event("DEVICE_DELETED", lambda data: data.get("device") == id, timeout)

    # --- internals --------------------------------------------------------------------------

    def _check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise VmError(f"the VM exited (vng status {self._proc.returncode}){self._log_tail()}")

    def _connect(self, path: Path, deadline: float) -> LineSocket:
        try:
            return LineSocket.connect(path, deadline, self._check_alive)
        except VmError as e:
            raise VmError(f"{e}{self._log_tail()}") from None

    def _read_pidfile(self) -> int | None:
        if self._dir is None:
            return None
        try:
            return int((self._dir / "qemu.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, VmError):
            return ""
        tail = "\n".join(text.splitlines()[-lines:])
        return f"\n--- {self.log_path.name} (last {lines} lines) ---\n{tail}" if tail else ""


def _guest_python() -> str:
    """The interpreter the guest runs the agent with: this one, not a wrapper such as a
    pyenv shim (the guest's /root is read-only)."""
    return os.path.realpath(sys.executable)
