"""Run the real uplinkd daemon inside a lab's router namespace, and read the kernel back.

Tests assert on what the kernel holds (read independently with `ip -json` and `nft -j`)
and on what packets do, never on which functions ran.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uplinkd import control
from uplinkd.lab import Lab
from uplinkd.lab import wait_until as lab_wait_until

PROTO = 77
NH_BASE = 100_000_000


def nhid(table: int, v6: bool = False) -> int:
    return NH_BASE + 2 * table + int(v6)


def wait_until(predicate: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy and return it; fail the test with `what` after `timeout`."""
    return lab_wait_until(predicate, timeout=timeout, what=what, interval=0.05)


def ip_json(netns: str, *args: str) -> Any:
    out = subprocess.run(
        ["ip", "-n", netns, "-json", *args], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    return json.loads(out) if out.strip() else []


def rules(netns: str, family: str = "-4") -> list[dict[str, Any]]:
    return [r for r in ip_json(netns, family, "rule", "show") if r.get("protocol") in (str(PROTO), PROTO)]


def all_rules(netns: str, family: str = "-4") -> list[dict[str, Any]]:
    return list(ip_json(netns, family, "rule", "show"))


def routes(netns: str, table: int | str, family: str = "-4") -> list[dict[str, Any]]:
    return list(ip_json(netns, family, "route", "show", "table", str(table)))


def nexthops(netns: str) -> dict[int, dict[str, Any]]:
    return {n["id"]: n for n in ip_json(netns, "nexthop", "show")}


def group_members(netns: str, table_of: dict[int, str], v6: bool = False) -> dict[str, int]:
    """Uplink name → weight in the balance group (empty if there is no group)."""
    group = nexthops(netns).get(NH_BASE + int(v6))
    if group is None:
        return {}
    by_id = {nhid(t, v6): name for t, name in table_of.items()}
    return {by_id[m["id"]]: m.get("weight", 1) for m in group["group"]}


def nft_tables(netns: str) -> list[tuple[str, str]]:
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-j", "list", "tables"],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip
    return [(t["table"]["family"], t["table"]["name"]) for t in json.loads(out)["nftables"] if "table" in t]


def conntrack_marks(netns: str) -> list[int]:
    """The ct mark of every conntrack entry in the namespace (via the conntrack tool)."""
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "conntrack", "-L", "-o", "extended"],
        capture_output=True, text=True, check=False, timeout=10,
    ).stdout  # fmt: skip
    marks = []
    for line in out.splitlines():
        for word in line.split():
            if word.startswith("mark="):
                marks.append(int(word[5:]))
    return marks


class Controller:
    """uplinkd started for real in the lab's router namespace, stopped by pid."""

    def __init__(self, lab: Lab, config: dict[str, Any], workdir: Path) -> None:
        self.lab = lab
        self.workdir = workdir
        self.config_path = workdir / "uplinkd.json"
        self.socket = workdir / "control.sock"
        self.log_path = workdir / "uplinkd.log"
        config = dict(config)
        config["control"] = {
            **config.get("control", {}),
            "socket": str(self.socket),
            "state_dir": str(workdir / "state"),
        }
        self.config = config
        self.write_config(config)
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, config: dict[str, Any] | str) -> None:
        text = config if isinstance(config, str) else json.dumps(config, indent=1)
        self.config_path.write_text(text)

    def start(self, *, wait: bool = True) -> Controller:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.lab.router, sys.executable, "-m", "uplinkd.daemon",
                 "--config", str(self.config_path), "-v"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        if wait:
            wait_until(self._ready, timeout=20, what="uplinkd to answer on its control socket")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"uplinkd exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return int(self.status()["passes"]) > 0
        except (control.ControlError, KeyError):
            return False

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """uplinkctl, run inside the router namespace (flush/plan may act on the kernel)."""
        return subprocess.run(
            ["ip", "netns", "exec", self.lab.router, sys.executable, "-m", "uplinkd.cli",
             "--socket", str(self.socket), *args],
            capture_output=True, text=True, check=check, timeout=30,
        )  # fmt: skip

    def status(self) -> dict[str, Any]:
        """Straight from the control socket (spawning uplinkctl at every poll loads the box)."""
        return dict(control.call(self.socket, {"command": "status"}))

    def uplink(self, name: str) -> dict[str, Any]:
        return next(u for u in self.status()["uplinks"] if u["name"] == name)

    def wait_state(self, name: str, *states: str, timeout: float = 15.0) -> dict[str, Any]:
        return dict(
            wait_until(
                lambda: (u := self.uplink(name))["state"] in states and u,
                timeout=timeout,
                what=f"uplink {name} to be {'/'.join(states)} (log: {self.log_path})",
            )
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def writes(self) -> list[str]:
        """The kernel writes the daemon logged (in `ip` syntax)."""
        prefixes = (" INFO ip ", " INFO nft ", " INFO conntrack ")
        return [line for line in self.log().splitlines() if any(p in line for p in prefixes)]
