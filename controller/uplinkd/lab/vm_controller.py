"""The real uplinkd run inside a :class:`~uplinkd.lab.vm.Vm`, and the guest's kernel read back.

Python is slow in the TCG guest (``import pyroute2`` alone takes ~17 s), so nothing here runs
``uplinkctl`` per query: :meth:`GuestController.start` spawns, next to the daemon, a small
standard-library poller that asks the control socket for ``status`` every
``status_interval`` s and writes the reply atomically into the VM's shared directory, where
the host reads it without a guest round trip.  ``uplinkctl status --json`` is run once, at
start (in parallel with the daemon's own start), to show the real client answers.

Kernel read-back (:meth:`GuestController.kernel`) is one shell command in the guest
(``ip -json``, ``nft -j``, ``conntrack -L``), so one check costs one agent round trip.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from uplinkd.lab.vm import Vm, VmError

GUEST_RUN_DIR = "/run/uplinkd-vm"
"""Guest-only directory (tmpfs) for the control socket and the state directory: a unix
socket cannot live on the 9p share."""

START_TIMEOUT_S = 180.0
"""From spawning the daemon until its status answers (TCG: ~25-40 s; uplinkctl in parallel)."""

NEXTHOP_BASE = 100_000_000

# Guest side, standard library only: status every INTERVAL s into OUT (atomically), with the
# guest's monotonic time and a counter, so the host can tell a fresh reply from an old one.
STATUS_POLLER = r"""
import json, os, socket, sys, time
path, out, interval = sys.argv[1], sys.argv[2], float(sys.argv[3])
n = 0
while True:
    n += 1
    t = time.monotonic()
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(path)
        s.sendall(b'{"command": "status"}\n')
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            buf += chunk
        s.close()
        data = {"n": n, "t": t, "reply": json.loads(buf)}
    except (OSError, ValueError) as e:
        data = {"n": n, "t": t, "error": str(e)}
    with open(out + ".tmp", "w") as f:
        json.dump(data, f)
    os.replace(out + ".tmp", out)
    time.sleep(interval)
"""

# Guest side: try a TCP connection to ADDR:PORT every INTERVAL s (each try bounded by the
# interval, at least 0.5 s) until one carries TAG and gets the reply, or LIMIT s pass.
# Before any uplink is there, connect() fails at once (the balance table is unreachable).
CONNECT_LOOP = r"""
import socket, sys, time
addr, port, tag = sys.argv[1], int(sys.argv[2]), sys.argv[5]
interval, limit = float(sys.argv[3]), float(sys.argv[4])
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
    sys.exit(0)
print(f"timeout {tries}", flush=True)
sys.exit(1)
"""

_READ_BACK = [
    "ip -json -4 rule show",
    "ip -json -6 rule show",
    "ip -json -4 route show table all",
    "ip -json -6 route show table all",
    "ip -json nexthop show",
    "nft -j list table inet uplinkd",
    "conntrack -L -o extended",
]
_SEPARATOR = "@@uplinkd-vm@@"


def nhid(table: int, v6: bool = False) -> int:
    return NEXTHOP_BASE + 2 * table + int(v6)


def _json_or_empty(text: str) -> Any:
    text = text.strip()
    if not text:
        return []
    with contextlib.suppress(ValueError):
        return json.loads(text)
    return []


def _family(text: str, family: str) -> list[dict[str, Any]]:
    """``ip -json`` objects, each with a ``family`` key added (``ip`` leaves it out)."""
    return [{**obj, "family": family} for obj in _json_or_empty(text) if isinstance(obj, dict)]


@dataclass(frozen=True)
class GuestKernel:
    """What the guest's kernel holds, read in one go (``ip -json``, ``nft -j``, conntrack)."""

    rules: list[dict[str, Any]]
    """Both families, each with ``family`` ``inet`` or ``inet6``; so are ``routes``."""
    routes: list[dict[str, Any]]
    nexthops: list[dict[str, Any]]
    nft: list[dict[str, Any]]
    conntrack_marks: list[int]

    def table(self, table: int | str) -> list[dict[str, Any]]:
        """Routes of one table (``main`` routes carry no ``table`` key in ``ip -json``)."""
        name = str(table)
        return [r for r in self.routes if str(r.get("table", "main")) == name]

    def default_route(self, table: int | str) -> dict[str, Any] | None:
        return next((r for r in self.table(table) if r.get("dst") == "default"), None)

    def nft_set(self, name: str = "uplinks") -> list[str]:
        for obj in self.nft:
            if "set" in obj and obj["set"].get("name") == name:
                return [str(e) for e in obj["set"].get("elem", [])]
        return []

    def leftovers(self, *, ifname: str, table: int, mark: int, address: str | None) -> list[str]:
        """Whatever is still there of an uplink that is gone: rules with its table or
        address, routes in its table or out of its interface, its nexthops and group
        membership, nft set elements and rules naming it or its mark, conntrack entries
        with its mark."""
        left = [
            f"rule {r}"
            for r in self.rules
            if str(r.get("table")) == str(table) or (address is not None and r.get("src") == address)
        ]
        left += [f"route {r}" for r in self.table(table)]
        left += [f"route {r}" for r in self.routes if r.get("dev") == ifname]
        ours = {nhid(table), nhid(table, True)}
        for nh in self.nexthops:
            if nh.get("dev") == ifname or nh.get("id") in ours:
                left.append(f"nexthop {nh}")
            if any(m.get("id") in ours for m in nh.get("group", [])):
                left.append(f"group member {nh}")
        for obj in self.nft:
            if "set" in obj and ifname in json.dumps(obj["set"].get("elem", [])):
                left.append(f"nft set {obj['set']['name']}: element {ifname}")
            if "rule" in obj:
                text = json.dumps(obj["rule"]["expr"])
                if f'"{ifname}"' in text or f": {mark}" in text:
                    left.append(f"nft chain {obj['rule']['chain']}: {text}")
        left += [f"conntrack mark {m:#x}" for m in self.conntrack_marks if m & 0xFF00 == mark]
        return left


def read_kernel(vm: Vm, timeout: float = 30.0) -> GuestKernel:
    """The guest's rules, routes (all tables, both families), nexthops, the ``inet uplinkd``
    nft table and the conntrack marks, with one guest command."""
    script = f"; echo {_SEPARATOR}; ".join(f"{cmd} 2>/dev/null" for cmd in _READ_BACK)
    out = vm.check(script, timeout)
    parts = out.split(_SEPARATOR + "\n")
    if len(parts) != len(_READ_BACK):
        raise VmError(f"kernel read-back: expected {len(_READ_BACK)} parts, got {len(parts)}")
    rules4, rules6, routes4, routes6, nexthops, nft, conntrack = parts
    nft_json = _json_or_empty(nft)
    marks = [
        int(word[5:])
        for line in conntrack.splitlines()
        for word in line.split()
        if word.startswith("mark=") and word[5:].isdigit()
    ]
    return GuestKernel(
        rules=_family(rules4, "inet") + _family(rules6, "inet6"),
        routes=_family(routes4, "inet") + _family(routes6, "inet6"),
        nexthops=list(_json_or_empty(nexthops)),
        nft=[o for o in nft_json.get("nftables", []) if "metainfo" not in o]
        if isinstance(nft_json, dict)
        else [],
        conntrack_marks=marks,
    )


class GuestController:
    """uplinkd started for real in the guest (``python3 -m uplinkd.daemon -v``), with its
    config, log and status in the VM's shared directory."""

    def __init__(self, vm: Vm, config: Mapping[str, Any], *, status_interval: float = 0.1) -> None:
        self.vm = vm
        self.dir = vm.shared / "uplinkd"
        self.dir.mkdir(exist_ok=True)
        self.socket = f"{GUEST_RUN_DIR}/control.sock"
        self.state_dir = f"{GUEST_RUN_DIR}/state"
        self.config: dict[str, Any] = {
            **config,
            "control": {**config.get("control", {}), "socket": self.socket, "state_dir": self.state_dir},
        }
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
        poller = self.dir / "poller.py"
        poller.write_text(STATUS_POLLER)
        self.vm.check(["mkdir", "-p", GUEST_RUN_DIR])
        env = {"PYTHONUNBUFFERED": "1"}
        self.pids.append(
            self.vm.spawn(
                ["python3", "-m", "uplinkd.daemon", "--config", str(self.config_path), "-v"],
                log=str(self.log_path),
                env=env,
            )
        )
        self.pids.append(
            self.vm.spawn(
                ["python3", "-I", str(poller), self.socket, str(self.status_path), str(self.status_interval)],
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
            self.pids.append(self.vm.spawn(loop))
        self.vm.wait_until(
            self._ready,
            timeout=timeout,
            what=f"uplinkd to answer in the guest (log: {self.log_path})",
            interval=0.5,
        )
        return time.monotonic() - started

    def _ready(self) -> bool:
        status = self.status()
        return status is not None and int(status.get("passes", 0)) > 0

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
        status = status if status is not None else self.fresh_status()
        return dict(next(u for u in status["uplinks"] if u["name"] == name))

    def wait_state(
        self, name: str, *states: str, timeout: float = 60.0, interval: float = 0.05
    ) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def reached() -> bool:
            status = self.status()
            if status is None:
                return False
            up = next((u for u in status["uplinks"] if u["name"] == name), None)
            if up is not None and up["state"] in states:
                found[:] = [dict(up)]
                return True
            return False

        try:
            self.vm.wait_until(
                reached, timeout=timeout, what=f"uplink {name} to be {'/'.join(states)}", interval=interval
            )
        except VmError as e:
            status = self.status()
            now = next((u for u in (status or {}).get("uplinks", []) if u["name"] == name), None)
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
        """The kernel writes the daemon logged (in ``ip``/``nft`` syntax)."""
        return [
            line for line in self.log().splitlines() if any(p in line for p in (" INFO ip ", " INFO nft "))
        ]

    def stop(self) -> None:
        """Stop the daemon, the poller and uplinkctl by pid (they die with the guest anyway)."""
        for pid in reversed(self.pids):
            with contextlib.suppress(VmError):
                self.vm.run(["kill", str(pid)], timeout=10)
        self.pids.clear()


def lease_file(controller: GuestController, uplink: str) -> str:
    """The guest path of an uplink's stored DHCP lease."""
    return f"{controller.state_dir}/{uplink}.lease.json"
