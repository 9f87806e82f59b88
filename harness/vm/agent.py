"""The guest agent: runs inside the VM, serves the host's requests on a virtio-serial port.

    python3 -I agent.py PORT_NAME        # vng's --exec command (see harness.vm.machine)

Standard library only: the guest runs it with ``-I`` from the host's filesystem (9p root).
Requests and replies are JSON objects, one per line:

* ``{"id", "op": "run", "argv", "timeout", "input", "env"}`` → ``{"id", "rc", "stdout",
  "stderr", "timed_out"}`` (its process group is killed at the timeout);
* ``{"id", "op": "spawn", "argv", "log", "env"}`` → ``{"id", "pid"}`` (own session, output
  appended to the guest path ``log``);
* ``{"id", "op": "clock"}`` → ``{"id", "wall", "mono"}``;
* ``{"id", "op": "exit"}`` → ``{"id", "rc": 0}``, then it exits and the guest powers off.

It says ``{"event": "ready", "kernel"}`` first.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

COMMAND_TIMEOUT_S = 30.0
"""Default upper bound for one ``run`` request."""

PORT_TIMEOUT_S = 30.0
"""How long the agent waits for its virtio-serial port to appear."""


def main(port_name: str) -> int:
    """Serve requests on the virtio-serial port ``port_name`` until told to exit."""
    bindir = os.path.dirname(sys.executable)
    os.environ["PATH"] = f"{bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    device = find_port(port_name, timeout=PORT_TIMEOUT_S)
    fd = os.open(device, os.O_RDWR)
    children: set[int] = set()

    def send(obj: Mapping[str, Any]) -> None:
        data = json.dumps(obj).encode() + b"\n"
        while data:
            data = data[os.write(fd, data) :]

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
            reap(children)
            if request.get("op") == "exit":
                send({"id": request.get("id"), "rc": 0})
                os.sync()
                return 0
            send(handle(request, children))


def handle(request: dict[str, Any], children: set[int]) -> dict[str, Any]:
    reply: dict[str, Any] = {"id": request.get("id")}
    env = dict(os.environ, **request.get("env", {}))
    op = request.get("op")
    argv = [str(word) for word in request.get("argv", [])]
    if op == "run":
        return {
            **reply,
            **run(argv, env, request.get("input"), float(request.get("timeout", COMMAND_TIMEOUT_S))),
        }
    if op == "clock":
        return {**reply, "wall": time.time(), "mono": time.monotonic()}
    if op == "spawn":
        try:
            with open(str(request.get("log", "/dev/null")), "ab") as log:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        env=env, start_new_session=True)  # fmt: skip
        except OSError as exc:
            return {**reply, "error": str(exc)}
        children.add(proc.pid)
        return {**reply, "pid": proc.pid}
    return {**reply, "rc": 2, "stdout": "", "stderr": f"unknown op {op!r}"}


def run(argv: list[str], env: dict[str, str], stdin_text: str | None, timeout: float) -> dict[str, Any]:
    """Run ``argv`` to completion (its process group killed after ``timeout`` s)."""
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        return {"rc": 127, "stdout": "", "stderr": f"{argv[0]}: {exc}", "timed_out": False}
    try:
        out, err = proc.communicate(stdin_text.encode() if stdin_text is not None else None, timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        timed_out = True
    return {"rc": proc.returncode, "stdout": out.decode(errors="replace"),
            "stderr": err.decode(errors="replace"), "timed_out": timed_out}  # fmt: skip


def reap(children: set[int]) -> None:
    """Collect the spawned programs that have exited (they are the agent's children)."""
    for pid in list(children):
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if not done:
                continue
        children.discard(pid)


def find_port(name: str, timeout: float) -> str:
    """The ``/dev`` path of the virtio-serial port called ``name``."""
    deadline = time.monotonic() + timeout
    while True:
        for entry in Path("/sys/class/virtio-ports").glob("*"):
            with contextlib.suppress(OSError):
                if (entry / "name").read_text().strip() == name:
                    return f"/dev/{entry.name}"
        if time.monotonic() >= deadline:
            raise SystemExit(f"no virtio-serial port named {name}")
        time.sleep(0.1)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} PORT_NAME")
    raise SystemExit(main(sys.argv[1]))
