"""Hostile and careless use of the control socket and of the daemon's paths (issue 9, items
1, 3, 4 and 6): routing must never depend on the control socket's clients.

- A client holding 1,100 connections (more than the daemon serves at once, and with
  `prlimit --nofile=64:64` more than it has descriptors): a blackholed uplink is still taken
  out, `status` answers, and the log stays bounded.
- A client that sends nothing, or half a line, is answered and closed; a 10 MB line gets
  "request too large".
- `--socket` at a regular file, a directory or a live socket, and an unusable socket or state
  directory: the daemon says which path, why and how to fix it, exits non-zero, and leaves the
  path as it was.
- `uplinkctl --socket /wrong/path flush` while the daemon runs refuses and changes nothing;
  with the daemon stopped it flushes.
"""

from __future__ import annotations

import json
import os
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from uplinkd.lab import Lab
from uplinkd.lab.launcher import python_env
from uplinkd.lab.netns import in_netns

from harness.hostile import Daemon, Holder
from harness.readback import NH_BASE, group_members, nexthops, nft_tables, routes, rules, wait_until

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0 or sys.platform != "linux", reason="needs root for network namespaces"
    ),
    pytest.mark.timeout(180),
]

NAMES = ("wan", "lte1", "lte2")
TABLES = {101 + i: name for i, name in enumerate(NAMES)}
SERVER = "198.51.100.100"
WAIT = 30.0
HOSTILE = 1100  # the figure: more than a soft limit of 1,024 descriptors


def config() -> dict[str, Any]:
    uplinks = {
        name: {
            "match": {"name": name},
            "address": {"mode": "static", "cidr": f"10.{101 + i}.0.2/24", "gateway": f"10.{101 + i}.0.1"},
            "table": 101 + i,
            "probe": {"targets": [SERVER, f"198.51.100.{i + 1}"]},
        }
        for i, name in enumerate(NAMES)
    }
    # rounds every 0.2 s even while up: no traffic here to make the prober look sooner
    return {"uplinks": uplinks, "probe": {"profile": "fast", "interval": 0.2}, "balance": {"table": 200}}


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        for name in NAMES:
            lab.add_isp(name, address="none")
        yield lab


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    try:
        yield started
    finally:
        for d in started:
            d.stop()


def start_all_up(d: Daemon, lab: Lab) -> None:
    d.start()
    for name in NAMES:
        d.wait_state(name, "up", timeout=WAIT)
    wait_until(
        lambda: set(group_members(lab.router, TABLES)) == set(NAMES), timeout=WAIT, what="all in the group"
    )


@pytest.fixture
def many_fds() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * HOSTILE)), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_files_limit(pid: int) -> tuple[int, int]:
    line = next(
        x for x in Path(f"/proc/{pid}/limits").read_text().splitlines() if x.startswith("Max open files")
    )
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


@pytest.mark.parametrize(
    "nofile",
    [
        pytest.param(
            "1024:16384", id="soft-1024-hard-16384"
        ),  # systemd's default soft limit, the unit's hard
        pytest.param("64:64", id="64-fds"),  # fewer descriptors than the client holds connections
    ],
)
def test_held_connections_do_not_stop_failover(
    lab: Lab, daemons: list[Daemon], tmp_path: Path, many_fds: None, nofile: str
) -> None:
    d = Daemon(lab.router, config(), workdir=tmp_path, nofile=nofile)
    daemons.append(d)
    start_all_up(d, lab)
    assert d.pid is not None
    hard = int(nofile.split(":")[1])
    assert open_files_limit(d.pid) == (hard, hard), "the daemon raises its soft limit to the hard one"
    lines_before = len(d.log().splitlines())
    with Holder(d.socket, HOSTILE) as holder:
        time.sleep(1.0)  # the daemon has turned away all it will; the holder keeps reconnecting
        started = time.monotonic()
        lab.isp("lte1").blackhole()
        st = d.wait_state("lte1", "down", timeout=WAIT)  # status answers meanwhile
        taken_out = time.monotonic() - started
        assert not st["in_group"]
        wait_until(lambda: set(group_members(lab.router, TABLES)) == {"wan", "lte2"}, timeout=WAIT,
                   what="lte1 out of the kernel's group")  # fmt: skip
        time.sleep(2.0)
        st = d.status()
        assert {u["name"]: u["state"] for u in st["uplinks"]} == {"wan": "up", "lte1": "down", "lte2": "up"}
        turned_away, reopened = holder.turned_away, holder.closed
    attack_s = time.monotonic() - started + 1.0
    assert d.running
    assert turned_away > 0, "the daemon never said 'too many connections'"
    added = d.log().splitlines()[lines_before:]
    socket_lines = [x for x in added if "control socket" in x]
    assert len(socket_lines) <= 30, socket_lines[:40]  # a few per minute, whatever the rate
    assert not [x for x in added if "Traceback" in x or "out of system resource" in x], added[:40]
    fds = len(os.listdir(f"/proc/{d.pid}/fd"))
    print(
        json.dumps(
            {
                "nofile": nofile,
                "held": HOSTILE,
                "blackhole_to_down_s": round(taken_out, 3),
                "turned_away": turned_away,
                "reconnects": reopened,
                "log_lines_during_attack": len(added),
                "control_socket_log_lines": len(socket_lines),
                "attack_s": round(attack_s, 1),
                "daemon_fds_after": fds,
            }
        )
    )


# --- requests that never finish, or never end -----------------------------------------------------


def read_all(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(1 << 16):
        data += chunk
    return data


@pytest.mark.parametrize("sent", [b"", b'{"command": "sta'], ids=["idle", "half-a-line"])
def test_a_silent_client_is_answered_and_closed(
    lab: Lab, daemons: list[Daemon], tmp_path: Path, sent: bytes
) -> None:
    d = Daemon(lab.router, config(), workdir=tmp_path)
    daemons.append(d)
    d.start()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(20.0)  # the daemon closes it much sooner
        s.connect(str(d.socket))
        s.sendall(sent)
        started = time.monotonic()
        answer = json.loads(read_all(s))  # ... and then end of file: closed
        waited = time.monotonic() - started
    assert answer["ok"] is False and "no complete request within" in answer["error"], answer
    assert waited < 15.0, waited
    assert d.status()["passes"] > 0


def test_an_oversized_request_is_answered(lab: Lab, daemons: list[Daemon], tmp_path: Path) -> None:
    d = Daemon(lab.router, config(), workdir=tmp_path)
    daemons.append(d)
    d.start()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(20.0)
        s.connect(str(d.socket))
        s.sendall(b'{"command": "status", "x": "' + b"y" * (10 << 20) + b'"}\n')
        answer = json.loads(read_all(s))
    assert answer == {"ok": False, "error": "request too large: at most 65536 bytes per line"}, answer
    assert d.status()["passes"] > 0 and d.running


# --- the daemon's paths ---------------------------------------------------------------------------


def refused_start(lab: Lab, daemons: list[Daemon], workdir: Path, *, extra: tuple[str, ...] = (),
                  cfg: dict[str, Any] | None = None) -> str:  # fmt: skip
    """Start a daemon that must refuse to run: its exit status is non-zero, its log is returned."""
    workdir.mkdir(parents=True, exist_ok=True)
    d = Daemon(lab.router, config(), workdir=workdir, extra=extra, verbose=False)
    if cfg is not None:
        d.config = {**d.config, "control": {**d.config["control"], **cfg}}
        d.write_config(d.config)
    daemons.append(d)
    d.start(wait=False)
    assert d.proc is not None
    try:
        code = d.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the daemon started; log: {d.log_tail()}") from None
    assert code != 0
    log = d.log()
    assert "Traceback" not in log, log
    return log


def test_socket_at_a_regular_file_is_refused_and_the_file_kept(
    lab: Lab, daemons: list[Daemon], tmp_path: Path
) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("do not delete\n")
    log = refused_start(lab, daemons, tmp_path / "d", extra=("--socket", str(precious)))
    assert f"{precious} exists and is a regular file" in log and "move it away" in log, log
    assert precious.read_text() == "do not delete\n"


def test_socket_at_a_directory_is_refused(lab: Lab, daemons: list[Daemon], tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    log = refused_start(lab, daemons, tmp_path / "d", extra=("--socket", str(folder)))
    assert f"{folder} exists and is a directory" in log, log
    assert folder.is_dir()


def test_a_live_socket_is_refused_and_a_stale_one_replaced(
    lab: Lab, daemons: list[Daemon], tmp_path: Path
) -> None:
    first = Daemon(lab.router, config(), workdir=tmp_path / "first")
    daemons.append(first)
    first.start()
    # a second daemon (its own state directory) told to use the first one's socket
    log = refused_start(lab, daemons, tmp_path / "second", extra=("--socket", str(first.socket)))
    assert f"{first.socket} is in use" in log, log
    assert first.status()["passes"] > 0  # the first still answers on it
    # a stale socket (bound, then its owner gone) is replaced
    first.stop()
    assert not first.socket.exists(), "a daemon removes its own socket when it stops"
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))
    d = Daemon(lab.router, config(), workdir=tmp_path / "third", extra=("--socket", str(stale)))
    daemons.append(d)
    d.start(wait=False)
    wait_until(
        lambda: d.check_alive() or _answers(stale), timeout=WAIT, what="the daemon on the stale socket"
    )


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
        s.sendall(b'{"command": "status"}\n')
        return b'"ok": true' in s.makefile("rb").readline()


def test_a_second_daemon_on_the_same_state_dir_is_refused(
    lab: Lab, daemons: list[Daemon], tmp_path: Path
) -> None:
    first = Daemon(lab.router, config(), workdir=tmp_path / "first")
    daemons.append(first)
    first.start()
    log = refused_start(lab, daemons, tmp_path / "second", cfg={"state_dir": str(first.state_dir)})
    assert f"another uplinkd (pid {first.pid}) is running with {first.state_dir}" in log, log


@pytest.mark.parametrize("which", ["socket", "state_dir"])
def test_an_unusable_directory_is_named_with_the_fix(
    lab: Lab, daemons: list[Daemon], tmp_path: Path, which: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    path = blocker / "sub" / ("control.sock" if which == "socket" else "state")
    log = refused_start(lab, daemons, tmp_path / "d", cfg={which: str(path)})
    assert f"control.{which}: cannot create {blocker / 'sub' if which == 'socket' else path}" in log, log
    assert "Not a directory" in log and ("set control." in log), log


# --- uplinkctl flush ------------------------------------------------------------------------------


def snapshot(lab: Lab) -> tuple[Any, ...]:
    r = lab.router
    return rules(r), routes(r, 200), sorted(nexthops(r)), nft_tables(r)


def ctl(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        in_netns(lab.router, [sys.executable, "-m", "uplinkd.cli", *args]),
        capture_output=True, text=True, check=False, timeout=60, env=python_env(),
    )  # fmt: skip


def test_flush_at_a_wrong_socket_refuses_while_the_daemon_runs(
    lab: Lab, daemons: list[Daemon], tmp_path: Path
) -> None:
    d = Daemon(lab.router, config(), workdir=tmp_path)
    daemons.append(d)
    start_all_up(d, lab)
    before = snapshot(lab)
    assert NH_BASE + 2 * 101 in before[2]
    wrong = tmp_path / "wrong" / "path.sock"
    out = ctl(lab, "--socket", str(wrong), "flush", "--config", str(d.config_path))
    assert out.returncode == 1, out
    assert "refused, nothing changed" in out.stderr and f"pid {d.pid}" in out.stderr, out.stderr
    assert f"--socket {d.socket}" in out.stderr, out.stderr
    time.sleep(0.5)
    assert snapshot(lab) == before
    assert d.status()["paused"] is False
    # stopped: the same command flushes (the README: "works with the daemon stopped")
    d.stop()
    out = ctl(lab, "--socket", str(wrong), "flush", "--config", str(d.config_path))
    assert out.returncode == 0 and "done without the daemon" in out.stderr, out
    assert rules(lab.router) == [] and routes(lab.router, 200) == []
    assert ("inet", "uplinkd") not in nft_tables(lab.router)
    assert not re.search(r"refused", out.stderr)
