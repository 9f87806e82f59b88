"""A QEMU virtual machine for the vm test tier: a real kernel with a real USB NIC to plug.

:class:`Vm` boots a Debian kernel with virtme-ng (``vng``) under QEMU (TCG when there is no
usable ``/dev/kvm``) on this machine's own filesystem (9p root, copy-on-write overlays on
``/etc``, ``/usr``, ``/var``, ``/tmp``...; ``/run`` is a tmpfs), so python3 and the
editable ``uplinkd`` install are there inside.  It adds to the VM:

* a ``qemu-xhci`` controller (``xhci``) and QEMU user-mode networks (``-netdev user``, one per
  :class:`UserNet`) that USB NICs are attached to: :meth:`Vm.plug_usb_nic` hot-plugs a
  ``usb-net`` device (driver ``cdc_ether`` in the guest, USB id 0525:a4a2) through QMP and
  :meth:`Vm.unplug` removes it;
* a QMP socket (:meth:`Vm.qmp`, a small JSON client, no dependency);
* a guest agent on a virtio-serial port: :meth:`Vm.run` runs a command inside the guest and
  returns ``(rc, stdout, stderr)``, :meth:`Vm.spawn` starts a background program.

Why a virtio-serial agent: ``vng --exec`` runs one command and powers off when it exits, and
the tests must plug devices *while* the guest runs.  The agent is this very file, run by the
guest's python3 as a script (``python3 -I vm.py --agent``, standard library only), started
as vng's ``--exec`` command.  It reads JSON requests, one per line, from the port and writes
JSON replies.  A virtio-serial port needs no guest network (``--ssh`` would: it needs the
guest's network, which is the very thing under test, plus sshd and keys) and no
console scraping (``--console`` mixes kernel messages and prompts into the output).  When the
agent exits, the guest powers off: that is the clean shutdown.

User-mode networks are ``restrict=on`` by default: the guest reaches nothing outside QEMU
except what a ``guestfwd`` forwards (:class:`GuestFwd`), so traffic never leaves this machine.
QEMU's DHCP server then offers no router and no DNS option (libslirp adds them only to
unrestricted networks), although the gateway (.2) answers and routes.

Everything is bounded in time.  :meth:`Vm.close` (also on a failed start, and from
``__exit__``) shuts the guest down, kills QEMU by pid and vng's process group, and removes the
temporary directory; a watchdog process does the same if this process dies without closing.
KVM is used only where it works (``/dev/kvm`` *and* vmx/svm): a ``/dev/kvm`` without them
hangs the guest.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple

AGENT_PORT = "uplinkd.agent"
"""Name of the agent's virtio-serial port (``/sys/class/virtio-ports/*/name``)."""

BOOT_TIMEOUT_S = 120.0
"""Upper bound for a boot, from starting vng until the agent says hello (TCG is slow)."""

COMMAND_TIMEOUT_S = 30.0
"""Default upper bound for one command in the guest."""

REPLY_SLACK_S = 10.0
"""How much longer than a command's own timeout the host waits for the agent's reply."""

QMP_TIMEOUT_S = 10.0
"""Upper bound for one QMP command."""

SHUTDOWN_TIMEOUT_S = 20.0
"""How long a clean shutdown (agent exits, guest powers off) may take before QEMU is killed."""

PLUG_TIMEOUT_S = 30.0
"""Default upper bound from ``device_add`` until the guest shows the new interface."""

USB_NET_VENDOR = "0525"
"""QEMU's ``usb-net`` identifies as NetChip 0525:a4a2 (Linux-USB Ethernet/RNDIS gadget)."""

USB_NET_MODEL = "a4a2"

KERNEL_ENV = "UPLINKD_VM_KERNEL"
"""Environment variable naming the kernel image to boot (default: :func:`find_kernel`)."""

_KVM_DEVICE = "/dev/kvm"
_SUN_PATH_MAX = 107


class VmError(RuntimeError):
    """The VM could not boot, a guest command or QMP command failed, or a wait timed out."""


class GuestResult(NamedTuple):
    """What a command run in the guest did: unpack as ``rc, stdout, stderr = vm.run(...)``."""

    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


@dataclass(frozen=True)
class GuestFwd:
    """A ``guestfwd`` rule: TCP connections from the guest to ``guest_addr:guest_port`` are
    handed to ``command`` on the host, one fresh process per connection, with the
    connection on its stdin and stdout (QEMU's ``guestfwd=tcp:A:P-cmd:COMMAND``).

    ``command`` is a list of words; QEMU runs it with ``/bin/sh -c``, so the words are joined
    with shell quoting.  They must not contain commas (QEMU's option syntax).  A relay to a
    server on the host's loopback is :meth:`to_host_port`.
    """

    guest_port: int
    command: Sequence[str]
    guest_addr: str = "10.0.2.100"

    @classmethod
    def to_host_port(cls, guest_port: int, host_port: int, guest_addr: str = "10.0.2.100") -> GuestFwd:
        """Relay each guest connection to ``127.0.0.1:host_port`` on the host."""
        return cls(guest_port, [sys.executable, "-I", str(Path(__file__).resolve()), "--relay",
                                str(host_port)], guest_addr)

    def option(self) -> str:
        cmd = shlex.join(self.command)
        if "," in cmd:
            raise ValueError(f"guestfwd command must not contain a comma: {cmd}")
        return f"guestfwd=tcp:{self.guest_addr}:{self.guest_port}-cmd:{cmd}"


@dataclass(frozen=True)
class UserNet:
    """A QEMU user-mode network (slirp) for USB NICs to attach to: ``-netdev user,id=ID``.

    The guest's DHCP server is at ``net``'s .2 (also the gateway), DNS at .3, and the first
    lease is .15.  ``restrict`` keeps the guest off every network outside QEMU: only the
    ``guestfwds`` lead out, to programs on this host.
    """

    id: str
    net: str = "10.0.2.0/24"
    restrict: bool = True
    guestfwds: Sequence[GuestFwd] = ()
    ipv6: bool = True
    """False: ``ipv6=off``, no router advertisements (with ``restrict=off`` QEMU otherwise
    advertises fec0::/64 and a default route via fe80::2, which the kernel installs in main)."""

    def option(self) -> str:
        parts = [f"user,id={self.id}", f"net={self.net}", f"restrict={'on' if self.restrict else 'off'}"]
        if not self.ipv6:
            parts.append("ipv6=off")
        parts += [fwd.option() for fwd in self.guestfwds]
        return ",".join(parts)


class GuestClock(NamedTuple):
    """How the guest's clocks relate to this host's (guest minus host, seconds), measured
    over one agent round trip of ``rtt`` s (the uncertainty is about ``rtt / 2``)."""

    wall_offset: float
    """``time.time()`` in the guest minus on the host."""
    mono_offset: float
    """``time.monotonic()`` in the guest minus on the host."""
    rtt: float

    def host_wall(self, guest_wall: float) -> float:
        return guest_wall - self.wall_offset

    def host_mono(self, guest_mono: float) -> float:
        return guest_mono - self.mono_offset


class GuestLease(NamedTuple):
    """A DHCPv4 lease :meth:`Vm.dhcp` obtained in the guest."""

    address: str
    prefixlen: int
    router: str
    dns: str
    lease_s: int
    server: str


_UDHCPC_SCRIPT = """#!/bin/sh
# uplinkd vm harness: one-shot lease for busybox udhcpc; prints it, adds only the address.
case "$1" in
    deconfig) ip link set dev "$interface" up; ip -4 addr flush dev "$interface" ;;
    bound|renew)
        ip addr replace "$ip/$mask" dev "$interface"
        dns=$(echo $dns | tr ' ' ,)
        echo "LEASE ip=$ip mask=$mask router=$router dns=$dns lease=$lease serverid=$serverid"
        ;;
esac
exit 0
"""


@dataclass
class Timings:
    """Measured durations, in seconds, of this VM's life (``None``: did not happen yet)."""

    boot: float | None = None
    """From starting vng until the guest agent said hello."""
    plugs: list[float] = field(default_factory=list)
    """For each :meth:`Vm.plug_usb_nic` that waited: from ``device_add`` to the interface."""
    shutdown: float | None = None


def find_kernel() -> Path | None:
    """The kernel image to boot: ``$UPLINKD_VM_KERNEL``, else the newest plain Debian kernel
    ``/boot/vmlinuz-*`` (one without ``-rt-``, whose modules are installed), else any."""
    if env := os.environ.get(KERNEL_ENV):
        return Path(env)
    images = [p for p in Path("/boot").glob("vmlinuz-*") if p.is_file()]
    with_modules = [p for p in images if Path("/lib/modules", p.name.removeprefix("vmlinuz-")).is_dir()]
    candidates = with_modules or images
    if not candidates:
        return None

    def key(path: Path) -> tuple[bool, list[int | str]]:
        version = path.name.removeprefix("vmlinuz-")
        words: list[int | str] = [int(w) if w.isdigit() else w for w in re.split(r"[.+-]", version)]
        return ("-rt-" not in version, [w if isinstance(w, int) else -1 for w in words])

    return max(candidates, key=key)


def missing_requirements() -> list[str]:
    """What this machine lacks to boot a :class:`Vm` (empty: all there)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    if shutil.which("vng") is None:
        missing.append("vng (pip install virtme-ng)")
    if shutil.which("qemu-system-x86_64") is None:
        missing.append("qemu-system-x86_64 (apt-get install qemu-system-x86)")
    busyboxes = ("busybox-static", "busybox.static", "busybox")  # where vng looks
    if not any(_is_static_elf(shutil.which(name)) for name in busyboxes):
        missing.append("a static busybox (apt-get install busybox-static)")
    if shutil.which("file") is None:
        missing.append("file (apt-get install file; vng runs it on busybox)")
    if find_kernel() is None:
        missing.append("a kernel /boot/vmlinuz-* (apt-get install linux-image-amd64)")
    return missing


def _is_static_elf(path: str | None) -> bool:
    """Whether ``path`` is an ELF executable without a program interpreter (PT_INTERP), which
    is what virtme-ng needs of busybox for its initramfs."""
    if path is None:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only: amd64 hosts
                return False
            order: Literal["little", "big"] = "little" if head[5] == 1 else "big"
            phoff = int.from_bytes(head[32:40], order)
            phentsize = int.from_bytes(head[54:56], order)
            phnum = int.from_bytes(head[56:58], order)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    pt_interp = 3
    return all(
        int.from_bytes(table[i * phentsize : i * phentsize + 4], order) != pt_interp for i in range(phnum)
    )


def kvm_usable() -> bool:
    """Whether QEMU can use KVM here: ``/dev/kvm`` is usable *and* the CPU shows vmx/svm.
    (Some sandboxes expose a ``/dev/kvm`` without hardware virtualization behind it: a guest
    started with it hangs before its first console line.)"""
    if not os.access(_KVM_DEVICE, os.R_OK | os.W_OK):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.MULTILINE) is not None


class Vm:
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
        self.qmp_events: list[dict[str, Any]] = []
        """Every QMP event received so far, oldest first."""
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._qemu_pid: int | None = None
        self._agent: _LineSocket | None = None
        self._qmp: _LineSocket | None = None
        self._next_id = 0
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
        ]
        for net in self.netdevs:
            qemu += ["-netdev", net.option()]
        qemu += list(self.extra_qemu_opts)
        agent = shlex.join([_guest_python(), "-I", str(Path(__file__).resolve()), "--agent", AGENT_PORT])
        argv = [
            "vng", "--run", str(self.kernel), "--disable-microvm",
            "--force-9p", "--name", self.name, "--cpus", str(self.cpus), "--memory", self.memory,
            f"--rwdir={self.shared}", "--cwd", "/",
            "--exec", agent,
        ]
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
        self._dir = Path(tempfile.mkdtemp(prefix="uplinkd-vm-"))
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
                self.command_line(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, cwd=str(d),
            )
        # If this process dies without close() (SIGKILL, SIGTERM's default action), the
        # watchdog (own session, so group signals spare it) kills QEMU and removes the tmpdir.
        self._watchdog = subprocess.Popen(
            [sys.executable, "-I", str(Path(__file__).resolve()), "--watchdog", str(os.getpid()),
             str(self._proc.pid), str(d)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = started + self.boot_timeout
        self._agent = self._connect(d / "agent.sock", deadline)
        self._qmp = self._connect(d / "qmp.sock", deadline)
        self._qmp_handshake(deadline)
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
                self._agent.write_json({"id": self._new_id(), "op": "exit"})
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
        if self._qemu_pid is not None and _is_qemu(self._qemu_pid):
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
            while _is_qemu(self._qemu_pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            self._qemu_pid = None

    @property
    def qemu_pid(self) -> int | None:
        return self._qemu_pid

    # --- commands in the guest --------------------------------------------------------------

    def run(
        self,
        cmd: str | Sequence[str],
        timeout: float = COMMAND_TIMEOUT_S,
        *,
        input: str | None = None,
        check: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> GuestResult:
        """Run ``cmd`` in the guest (a string through ``/bin/sh -c``, a list as argv) and wait
        for it, at most ``timeout`` s (then its process group is killed and rc is -9).

        Programs that must outlive the command belong in :meth:`spawn`: a background ``&``
        child keeps the output pipe open, so ``run`` waits for it until ``timeout``.
        """
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        reply = self._request(
            {"op": "run", "argv": argv, "timeout": timeout, "input": input, "env": dict(env or {})},
            timeout + REPLY_SLACK_S,
        )
        result = GuestResult(int(reply["rc"]), str(reply["stdout"]), str(reply["stderr"]))
        if check and not result.ok:
            what = cmd if isinstance(cmd, str) else shlex.join(cmd)
            timed_out = " (timed out)" if reply.get("timed_out") else ""
            raise VmError(f"in the guest: {what}: exit {result.rc}{timed_out}: {result.stderr.strip()}")
        return result

    def check(self, cmd: str | Sequence[str], timeout: float = COMMAND_TIMEOUT_S) -> str:
        """:meth:`run` with ``check=True``; returns stdout."""
        return self.run(cmd, timeout, check=True).stdout

    def spawn(self, cmd: str | Sequence[str], *, log: str = "/dev/null",
              env: Mapping[str, str] | None = None) -> int:
        """Start ``cmd`` in the guest in the background (own session, stdin ``/dev/null``,
        stdout and stderr appended to the guest path ``log``); returns its guest pid.  Stop it
        with ``vm.run(f"kill {pid}")``; it dies with the guest anyway."""
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        reply = self._request({"op": "spawn", "argv": argv, "log": log, "env": dict(env or {})},
                              COMMAND_TIMEOUT_S)
        if "error" in reply:
            raise VmError(f"in the guest: cannot start {shlex.join(argv)}: {reply['error']}")
        return int(reply["pid"])

    def clock(self, samples: int = 5) -> GuestClock:
        """The guest's clocks against this host's: the agent's ``time.time()`` and
        ``time.monotonic()``, from the quickest of ``samples`` round trips."""
        best: GuestClock | None = None
        for _ in range(max(1, samples)):
            wall0, mono0 = time.time(), time.monotonic()
            reply = self._request({"op": "clock"}, COMMAND_TIMEOUT_S)
            mono1, wall1 = time.monotonic(), time.time()
            if "wall" not in reply:
                raise VmError(f"the guest agent does not tell the time: {reply}")
            found = GuestClock(float(reply["wall"]) - (wall0 + wall1) / 2,
                               float(reply["mono"]) - (mono0 + mono1) / 2, mono1 - mono0)  # fmt: skip
            if best is None or found.rtt < best.rtt:
                best = found
        assert best is not None
        return best

    def read_file(self, path: str, timeout: float = COMMAND_TIMEOUT_S) -> str:
        return self.check(["cat", path], timeout)

    def links(self) -> list[dict[str, Any]]:
        """``ip -json link`` in the guest."""
        out = self.check(["ip", "-json", "link"])
        return list(json.loads(out)) if out.strip() else []

    def link_names(self) -> set[str]:
        return {str(link["ifname"]) for link in self.links()}

    def wait_until(
        self, predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.2
    ) -> float:
        """Poll ``predicate()`` until true; returns the seconds it took, :class:`VmError` after
        ``timeout`` s."""
        started = time.monotonic()
        while not predicate():
            if time.monotonic() - started >= timeout:
                raise VmError(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(interval)
        return time.monotonic() - started

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _request(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self._agent is None:
            raise VmError("the VM is not running")
        request_id = self._new_id()
        self._agent.write_json({"id": request_id, **request})
        deadline = time.monotonic() + timeout
        while True:
            msg = self._agent.read_json(deadline, self._check_alive)
            if msg is None:
                raise VmError(f"guest agent gave no reply within {timeout:g} s to {request}")
            if msg.get("id") == request_id:  # older ids: replies to requests that timed out
                return msg

    # --- QMP and devices --------------------------------------------------------------------

    def qmp(self, command: str, /, *, qmp_timeout: float = QMP_TIMEOUT_S, **arguments: Any) -> Any:
        """Run QMP ``command`` with ``arguments``; returns its ``return`` value, raises
        :class:`VmError` on its ``error`` or after ``qmp_timeout`` s.  Events that arrive
        meanwhile are appended to :attr:`qmp_events`."""
        if self._qmp is None:
            raise VmError("the VM is not running")
        request_id = f"uplinkd-{self._new_id()}"
        request: dict[str, Any] = {"execute": command, "id": request_id}
        if arguments:
            request["arguments"] = arguments
        self._qmp.write_json(request)
        deadline = time.monotonic() + qmp_timeout
        while True:
            msg = self._qmp.read_json(deadline, self._check_alive)
            if msg is None:
                raise VmError(f"QMP {command}: no reply within {qmp_timeout:g} s")
            if "event" in msg:
                self.qmp_events.append(msg)
            elif msg.get("id") == request_id:
                if "error" in msg:
                    err = msg["error"]
                    raise VmError(f"QMP {command} {arguments}: {err.get('class')}: {err.get('desc')}")
                return msg.get("return")

    def wait_qmp_event(
        self, name: str, predicate: Callable[[dict[str, Any]], bool] = lambda _: True,
        timeout: float = QMP_TIMEOUT_S,
    ) -> dict[str, Any]:
        """The first QMP event ``name`` (already received or arriving within ``timeout`` s)
        for which ``predicate(event["data"])`` holds; it is removed from :attr:`qmp_events`."""
        if self._qmp is None:
            raise VmError("the VM is not running")
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.qmp_events):
                if event.get("event") == name and predicate(event.get("data", {})):
                    return self.qmp_events.pop(i)
            msg = self._qmp.read_json(deadline, self._check_alive)
            if msg is None:
                raise VmError(f"no QMP event {name} within {timeout:g} s")
            if "event" in msg:
                self.qmp_events.append(msg)

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

    def ensure_udev(self, timeout: float = 60.0) -> bool:
        """Make sure systemd-udevd runs in the guest and its queue is empty.  virtme-ng's init
        normally starts it (and coldplugs) before the agent runs; if it does not answer, start
        ``systemd-udevd --daemon`` and coldplug.  Returns whether it had to be started."""
        if self.run(["udevadm", "control", "--ping", "--timeout=5"], 15).ok:
            self.run(["udevadm", "settle", f"--timeout={timeout:.0f}"], timeout + 5)
            return False
        for udevd in ("/lib/systemd/systemd-udevd", "/usr/lib/systemd/systemd-udevd"):
            if self.run(["test", "-x", udevd]).ok:
                self.check([udevd, "--daemon"])
                break
        else:
            raise VmError("no systemd-udevd in the guest (apt-get install udev)")
        self.check(["udevadm", "trigger", "--type=subsystems", "--action=add"])
        self.check(["udevadm", "trigger", "--type=devices", "--action=add"])
        self.check(["udevadm", "settle", f"--timeout={timeout:.0f}"], timeout + 5)
        return True

    def udev_properties(self, syspath: str) -> dict[str, str]:
        """``udevadm info --query=property`` for a sysfs path in the guest (``/sys/class/net/X``)."""
        out = self.check(["udevadm", "info", "--query=property", syspath])
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def dhcp(self, ifname: str, timeout: float = 30.0) -> GuestLease:
        """Get one DHCPv4 lease on ``ifname`` with busybox ``udhcpc`` (one shot, then it exits)
        and put the address on the interface (no route beyond the connected one)."""
        script = self.shared / "udhcpc.sh"
        if not script.exists():
            script.write_text(_UDHCPC_SCRIPT)
            script.chmod(0o755)
        tries = max(1, int(timeout // 3))
        out = self.check(["busybox", "udhcpc", "-i", ifname, "-n", "-q", "-f", "-t", str(tries), "-T", "2",
                          "-s", str(script)], timeout + 10)
        for line in out.splitlines():
            words = line.split()
            if words and words[0] == "LEASE":
                env = dict(word.split("=", 1) for word in words[1:] if "=" in word)
                return GuestLease(
                    address=env.get("ip", ""), prefixlen=int(env.get("mask", "0") or 0),
                    router=env.get("router", ""), dns=env.get("dns", ""),
                    lease_s=int(env.get("lease", "0") or 0), server=env.get("serverid", ""),
                )
        raise VmError(f"udhcpc on {ifname} reported no lease: {out.strip()}")

    # --- internals --------------------------------------------------------------------------

    def _check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise VmError(f"the VM exited (vng status {self._proc.returncode}){self._log_tail()}")

    def _connect(self, path: Path, deadline: float) -> _LineSocket:
        while True:
            self._check_alive()
            if path.exists():
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(str(path))
                    return _LineSocket(sock)
                except OSError:
                    sock.close()
            if time.monotonic() >= deadline:
                raise VmError(f"QEMU did not open {path.name} in time{self._log_tail()}")
            time.sleep(0.05)

    def _qmp_handshake(self, deadline: float) -> None:
        assert self._qmp is not None
        greeting = self._qmp.read_json(deadline, self._check_alive)
        if greeting is None or "QMP" not in greeting:
            raise VmError(f"no QMP greeting: {greeting}")
        self.qmp("qmp_capabilities", qmp_timeout=max(1.0, deadline - time.monotonic()))

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


def _is_qemu(pid: int) -> bool:
    """Whether ``pid`` is (still) a QEMU process (guards against pid reuse before a kill)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return comm.startswith("qemu-system") and state != "Z"


class _LineSocket:
    """JSON objects, one per line, over a stream socket; reads bounded by a deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def write_json(self, obj: Mapping[str, Any]) -> None:
        try:
            self.sock.sendall(json.dumps(obj).encode() + b"\n")
        except OSError as exc:
            raise VmError(f"cannot write to QEMU's socket: {exc}") from exc

    def read_json(self, deadline: float, still_alive: Callable[[], None]) -> dict[str, Any] | None:
        """The next JSON object, or None at the deadline.  ``still_alive`` is called while
        waiting and raises if the other end is known to be gone.  Lines that are not JSON
        objects are skipped."""
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                with contextlib.suppress(ValueError):
                    obj = json.loads(line)
                    if isinstance(obj, dict):
                        return obj
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self.sock], [], [], min(remaining, 0.5))
            if not ready:
                still_alive()
                continue
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError as exc:
                raise VmError(f"cannot read from QEMU's socket: {exc}") from exc
            if not chunk:
                still_alive()
                raise VmError("connection to QEMU closed")
            self.buf += chunk

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


# --- the guest side: run as a script inside the VM (standard library only) -------------------


def _agent_main(port_name: str) -> int:
    """Serve requests on the virtio-serial port ``port_name`` until told to exit."""
    bindir = os.path.dirname(sys.executable)
    os.environ["PATH"] = f"{bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    device = _find_port(port_name, timeout=30.0)
    fd = os.open(device, os.O_RDWR)
    children: set[int] = set()

    def send(obj: Mapping[str, Any]) -> None:
        data = json.dumps(obj).encode() + b"\n"
        while data:
            data = data[os.write(fd, data):]

    send({"event": "ready", "kernel": os.uname().release})
    buf = b""
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:  # the host side is not connected (yet, or any more)
            time.sleep(0.1)
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                request = json.loads(line)
            except ValueError:
                continue
            _reap(children)
            if request.get("op") == "exit":
                send({"id": request.get("id"), "rc": 0})
                os.sync()
                return 0
            send(_agent_handle(request, children))


def _agent_handle(request: dict[str, Any], children: set[int]) -> dict[str, Any]:
    reply: dict[str, Any] = {"id": request.get("id")}
    env = dict(os.environ, **request.get("env", {}))
    op = request.get("op")
    argv = [str(word) for word in request.get("argv", [])]
    if op == "run":
        stdin_text = request.get("input")
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True,
            )
        except OSError as exc:
            return {**reply, "rc": 127, "stdout": "", "stderr": f"{argv[0]}: {exc}"}
        try:
            out, err = proc.communicate(stdin_text.encode() if stdin_text is not None else None,
                                        timeout=float(request.get("timeout", COMMAND_TIMEOUT_S)))
            reply["timed_out"] = False
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            reply["timed_out"] = True
        return {**reply, "rc": proc.returncode, "stdout": out.decode(errors="replace"),
                "stderr": err.decode(errors="replace")}
    if op == "clock":
        return {**reply, "wall": time.time(), "mono": time.monotonic()}
    if op == "spawn":
        try:
            with open(str(request.get("log", "/dev/null")), "ab") as log:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        env=env, start_new_session=True)
        except OSError as exc:
            return {**reply, "error": str(exc)}
        children.add(proc.pid)
        return {**reply, "pid": proc.pid}
    return {**reply, "rc": 2, "stdout": "", "stderr": f"unknown op {op!r}"}


def _reap(children: set[int]) -> None:
    for pid in list(children):
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if not done:
                continue
        children.discard(pid)


def _find_port(name: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        for entry in Path("/sys/class/virtio-ports").glob("*"):
            with contextlib.suppress(OSError):
                if (entry / "name").read_text().strip() == name:
                    return f"/dev/{entry.name}"
        if time.monotonic() >= deadline:
            raise SystemExit(f"no virtio-serial port named {name}")
        time.sleep(0.1)


def _relay_main(port: int) -> int:
    """guestfwd helper on the host: copy stdin to 127.0.0.1:``port`` and the replies back to
    stdout (QEMU hands it the guest's connection as both).  Gives up after a minute idle."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.settimeout(None)
        stdin_open = True
        while True:
            watched: list[Any] = [sock, 0] if stdin_open else [sock]
            ready, _, _ = select.select(watched, [], [], 60)
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
                    data = data[os.write(1, data):]


def _watchdog_main(parent: int, pgid: int, tmpdir: str) -> int:
    """Wait until process ``parent`` is gone (this process is re-parented), then SIGKILL the
    VM: QEMU by the pid in ``tmpdir``'s pidfile, vng's process group ``pgid``; then remove
    ``tmpdir``.  The parent kills this watchdog itself after a normal :meth:`Vm.close`."""
    path = Path(tmpdir)
    if not path.name.startswith("uplinkd-vm-"):
        return 2
    while os.getppid() == parent:
        time.sleep(0.5)
    with contextlib.suppress(OSError, ValueError):
        pid = int((path / "qemu.pid").read_text().strip())
        if _is_qemu(pid):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.killpg(pgid, signal.SIGKILL)
    time.sleep(1)  # QEMU lets go of its sockets and files
    shutil.rmtree(path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--watchdog":
        raise SystemExit(_watchdog_main(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
    if len(sys.argv) == 3 and sys.argv[1] == "--agent":
        raise SystemExit(_agent_main(sys.argv[2]))
    if len(sys.argv) == 3 and sys.argv[1] == "--relay":
        raise SystemExit(_relay_main(int(sys.argv[2])))
    raise SystemExit(f"usage: {sys.argv[0]} --agent PORT_NAME | --relay HOST_PORT")
