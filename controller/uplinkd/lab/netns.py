"""Running programs inside network namespaces, and tracking what was started.

Everything goes through the real tools (``ip``, ``nft``, ``sysctl``, ``tc``); every command's
exit status is checked and a failure raises :class:`LabError` with the command and its stderr.
Every program started in the background is remembered so it can be stopped *by pid*.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import uplinkd

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 30.0
"""Default upper bound for one synchronous command."""

STOP_GRACE_S = 2.0
"""How long a stopped process gets between SIGTERM and SIGKILL."""

PREFIX_RE = re.compile(r"^ul[0-9a-f]{6}-$")
"""What :func:`new_prefix` makes; :func:`cleanup_stale` insists on prefixes of this shape."""

File = int | IO[Any] | None

T = TypeVar("T")


class LabError(RuntimeError):
    """A lab command failed, or the lab could not reach the state it was asked for."""


def check_run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = COMMAND_TIMEOUT_S,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion; raise :class:`LabError` on a non-zero exit or a timeout."""
    try:
        done = subprocess.run(
            list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{_quote(argv)}: no exit within {timeout:g} s") from exc
    if check and done.returncode != 0:
        raise LabError(f"{_quote(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside ``netns``.  ``ip netns exec`` execs the program, so a started
    process's pid is the program's own pid."""
    return ["ip", "netns", "exec", netns, *argv]


def uplinkd_path() -> str:
    """The directory holding this very ``uplinkd`` package (a checkout's, or site-packages):
    on a child's ``PYTHONPATH``, ``python -m uplinkd...`` runs the same code as this process."""
    return str(Path(uplinkd.__file__).resolve().parent.parent)


def list_namespaces() -> list[str]:
    """Names of all named network namespaces (``ip netns list``)."""
    out = check_run(["ip", "-json", "netns", "list"]).stdout.strip()
    if not out:
        return []
    return [str(entry["name"]) for entry in json.loads(out)]


def namespace_pids(netns: str) -> list[int]:
    """Pids of the processes living in ``netns``."""
    out = check_run(["ip", "netns", "pids", netns], check=False).stdout
    return [int(word) for word in out.split()]


class Runner:
    """Runs commands in namespaces and remembers every process it started."""

    def __init__(self) -> None:
        self._started: list[subprocess.Popen[str]] = []

    def run(
        self,
        netns: str,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: float = COMMAND_TIMEOUT_S,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return check_run(in_netns(netns, argv), input=input, timeout=timeout, check=check)

    def popen(
        self,
        netns: str,
        argv: Sequence[str],
        *,
        stdout: File = subprocess.DEVNULL,
        stderr: File = subprocess.DEVNULL,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[str]:
        """Start ``argv`` in ``netns`` in the background; :meth:`stop_all` ends it."""
        proc = subprocess.Popen(
            in_netns(netns, argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            text=True,
            env=None if env is None else {**os.environ, **env},
        )
        self._started.append(proc)
        log.debug("started pid %d: %s", proc.pid, _quote(argv))
        return proc

    def ip(self, netns: str, *args: str) -> str:
        """``ip -n netns ARGS``; returns stdout."""
        return check_run(["ip", "-n", netns, *args]).stdout

    def ip_batch(self, netns: str, commands: Iterable[str]) -> None:
        """Several ``ip`` commands in one process (``ip -batch``); stops at the first error."""
        script = "\n".join(commands) + "\n"
        check_run(["ip", "-n", netns, "-batch", "-"], input=script)

    def nft(self, netns: str, script: str) -> None:
        """Load an nft script atomically (``nft -f -``) in ``netns``."""
        self.run(netns, ["nft", "-f", "-"], input=script)

    def sysctl(self, netns: str, settings: Mapping[str, str | int]) -> None:
        self.run(netns, ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings.items())])

    def stop(self, proc: subprocess.Popen[str]) -> None:
        """Stop one process this runner started: SIGTERM by pid, SIGKILL after a grace."""
        stop_process(proc)
        if proc in self._started:
            self._started.remove(proc)

    def stop_all(self) -> None:
        """Stop every process this runner started, newest first; every one is tried even
        if stopping another failed."""
        failures: list[str] = []
        while self._started:
            proc = self._started.pop()
            try:
                stop_process(proc)
            except (OSError, subprocess.SubprocessError) as exc:
                failures.append(f"pid {proc.pid}: {exc}")
        if failures:
            raise LabError(f"could not stop: {'; '.join(failures)}")


def stop_process(
    proc: subprocess.Popen[Any], *, sig: int = signal.SIGTERM, grace: float = STOP_GRACE_S
) -> int:
    """Send ``sig`` (SIGTERM) to ``proc`` by pid, then SIGKILL if it has not exited after
    ``grace`` s; returns its exit status.

    ``Popen.send_signal`` does nothing once the child has been reaped, so a pid that was
    reused by an unrelated process is never signalled.
    """
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return proc.returncode


def kill_pids(pids: Iterable[int]) -> None:
    """SIGKILL processes by pid; ones that have already gone are ignored."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def delete_namespaces(names: Iterable[str]) -> None:
    """Delete namespaces; processes still inside them are killed first (they would keep
    a deleted namespace, and its interfaces, alive)."""
    for name in names:
        stray = namespace_pids(name)
        if stray:
            log.warning("killing processes left in %s: %s", name, stray)
            kill_pids(stray)
        check_run(["ip", "netns", "delete", name], check=False)


def cleanup_stale(prefix: str) -> list[str]:
    """Delete every namespace named ``prefix...`` (a lab that died without closing).

    The prefix must look like a lab's own (``ul`` + 6 hex digits + ``-``), so this cannot be
    pointed at namespaces the lab does not make.  Returns the deleted names.
    """
    if not PREFIX_RE.match(prefix):
        raise ValueError(f"not a lab prefix (ulXXXXXX-): {prefix!r}")
    names = [name for name in list_namespaces() if name.startswith(prefix)]
    delete_namespaces(names)
    return names


def lab_prefixes() -> list[str]:
    """Prefixes of the labs whose namespaces exist now (alive or stale)."""
    prefixes = {name[:9] for name in list_namespaces() if PREFIX_RE.match(name[:9])}
    return sorted(prefixes)


def wait_until(predicate: Callable[[], T], *, timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll ``predicate()`` until it returns something true, and return that;
    :class:`LabError` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
    return value


def _quote(argv: Sequence[str]) -> str:
    return shlex.join(argv)
