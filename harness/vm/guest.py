"""Commands in the guest, through the agent (``agent.py``): run, spawn, read, DHCP, udev, clock.

:class:`GuestCommands` is what a booted :class:`~harness.vm.machine.Vm` can do inside the
guest; the machine supplies the one primitive, :meth:`GuestCommands.request` (one request to
the agent and its reply).
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from harness.vm.channel import VmError

COMMAND_TIMEOUT_S = 30.0
"""Default upper bound for one command in the guest."""

REPLY_SLACK_S = 10.0
"""How much longer than a command's own timeout the host waits for the agent's reply."""


class GuestResult(NamedTuple):
    """What a command run in the guest did: unpack as ``rc, stdout, stderr = vm.run(...)``."""

    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


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
    """A DHCPv4 lease :meth:`GuestCommands.dhcp` obtained in the guest."""

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


class GuestCommands:
    """Commands in the guest; every wait is bounded."""

    @property
    def shared(self) -> Path:
        """A directory the guest sees at the same path, read-write for both sides (9p)."""
        raise NotImplementedError

    def request(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request to the agent; its reply (:class:`VmError` after ``timeout`` s)."""
        raise NotImplementedError

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
        reply = self.request(
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
              env: Mapping[str, str] | None = None) -> int:  # fmt: skip
        """Start ``cmd`` in the guest in the background (own session, stdin ``/dev/null``,
        stdout and stderr appended to the guest path ``log``); returns its guest pid.  Stop it
        with ``vm.run(f"kill {pid}")``; it dies with the guest anyway."""
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        reply = self.request({"op": "spawn", "argv": argv, "log": log, "env": dict(env or {})},
                             COMMAND_TIMEOUT_S)  # fmt: skip
        if "error" in reply:
            raise VmError(f"in the guest: cannot start {shlex.join(argv)}: {reply['error']}")
        return int(reply["pid"])

    def clock(self, samples: int = 5) -> GuestClock:
        """The guest's clocks against this host's: the agent's ``time.time()`` and
        ``time.monotonic()``, from the quickest of ``samples`` round trips."""
        best: GuestClock | None = None
        for _ in range(max(1, samples)):
            wall0, mono0 = time.time(), time.monotonic()
            reply = self.request({"op": "clock"}, COMMAND_TIMEOUT_S)
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
                          "-s", str(script)], timeout + 10)  # fmt: skip
        for line in out.splitlines():
            words = line.split()
            if words and words[0] == "LEASE":
                env = dict(word.split("=", 1) for word in words[1:] if "=" in word)
                return GuestLease(
                    address=env.get("ip", ""), prefixlen=int(env.get("mask", "0") or 0),
                    router=env.get("router", ""), dns=env.get("dns", ""),
                    lease_s=int(env.get("lease", "0") or 0), server=env.get("serverid", ""),
                )  # fmt: skip
        raise VmError(f"udhcpc on {ifname} reported no lease: {out.strip()}")
