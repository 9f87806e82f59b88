"""Structured journal events from the real daemon into a real systemd-journald.

The journald runs in a private mount namespace of its own (tmpfs over /run/systemd and the
journal directories), so the machine's own journal, if any, is neither read nor written.
The daemon runs in that mount namespace with JOURNAL_STREAM set, as under systemd.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from uplinkd.lab import Lab
from uplinkd.lab.launcher import LabDaemon

from harness.readback import wait_until

JOURNALD = Path("/lib/systemd/systemd-journald")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces"),
    pytest.mark.skipif(
        not JOURNALD.exists() or not shutil.which("journalctl"), reason="needs systemd-journald"
    ),
    pytest.mark.timeout(180),
]

NAMES = ("wan", "lte1")
SETUP = """
set -e
mount -t tmpfs tmpfs /run/systemd
mkdir -p /run/systemd/journal /run/log/journal
mount -t tmpfs tmpfs /run/log/journal
if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi
exec {journald}
"""


@pytest.fixture
def journald() -> Iterator[int]:
    """A private systemd-journald; yields its pid (its mount namespace is where to log)."""
    Path("/run/systemd").mkdir(exist_ok=True)
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", SETUP.format(journald=JOURNALD)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_until(
            lambda: (
                proc.poll() is None
                and in_ns(proc.pid, ["test", "-S", "/run/systemd/journal/socket"]).returncode == 0
            ),
            timeout=15,
            what="journald's socket",
        )
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def in_ns(pid: int, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", "-t", str(pid), "-m", *argv], capture_output=True, text=True, check=False, timeout=20
    )


def journal(pid: int, *matches: str) -> list[dict[str, Any]]:
    out = in_ns(pid, ["journalctl", "-D", "/run/log/journal", "-o", "json", "--no-pager", *matches]).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        for name in NAMES:
            lab.add_isp(name, address="none")
        yield lab


def config() -> dict[str, Any]:
    return {
        "uplinks": {
            name: {
                "match": {"name": name},
                "address": {"mode": "static", "cidr": f"10.{101 + i}.0.2/24", "gateway": f"10.{101 + i}.0.1"},
                "table": 101 + i,
                "probe": {"targets": ["198.51.100.100", f"198.51.100.{i + 1}"]},
            }
            for i, name in enumerate(NAMES)
        },
        "probe": {"profile": "fast"},
        "balance": {"table": 200},
    }


class JournaledDaemon(LabDaemon):
    """The daemon in the private journald's mount namespace (entered after `ip netns exec`,
    so /sys there is the machine's: the probers' traffic counters read nothing, which only
    makes suspicion slower; the probes themselves decide up and down)."""

    journald = 0

    def command(self) -> list[str]:
        return ["nsenter", "-t", str(self.journald), "-m", "--", *super().command()]


def test_state_changes_are_journal_entries_with_uplinkd_fields(
    lab: Lab, journald: int, tmp_path: Path
) -> None:
    c = JournaledDaemon(lab.router, config(), workdir=tmp_path, env={"JOURNAL_STREAM": "0:0"})
    c.journald = journald
    try:
        c.start()
        for name in NAMES:
            c.wait_state(name, "up", timeout=30)
        lab.isp("lte1").blackhole()
        c.wait_state("lte1", "down", timeout=30)
        lab.isp("lte1").blackhole(False)
        c.wait_state("lte1", "up", timeout=30)

        entries = wait_until(
            lambda: (
                (e := journal(journald, "UPLINKD_UPLINK=lte1"))
                and e[-1].get("UPLINKD_STATE") == "up"
                and len(e) >= 4
                and e
            ),
            timeout=10,
            what="lte1's state changes in the journal",
        )
    finally:
        c.stop()
    states = [(e["UPLINKD_OLD_STATE"], e["UPLINKD_STATE"]) for e in entries]
    assert states[-2:] == [("up", "down"), ("down", "up")], states
    down = entries[-2]
    assert down["UPLINKD_DEV"] == "lte1"
    assert "rounds in a row" in down["UPLINKD_REASON"]
    assert down["SYSLOG_IDENTIFIER"] == "uplinkd"
    assert down["MESSAGE"] == f"uplink lte1: up → down ({down['UPLINKD_REASON']})"
    assert down["PRIORITY"] == "6"
    assert all(e["UPLINKD_UPLINK"] == "lte1" for e in entries)  # the match selects one uplink
    # the state change went to the journal once, as a structured entry, not also as a line
    plain = journal(journald, "SYSLOG_IDENTIFIER=uplinkd")
    assert sum(str(e.get("MESSAGE")).startswith("uplink lte1: up → down") for e in plain) == 1
    # the rest of the daemon's log is in the journal too (JournalHandler), not on stderr
    assert any(str(e.get("MESSAGE")).startswith("ip ") for e in plain), [e.get("MESSAGE") for e in plain][:20]
    assert "uplink lte1:" not in c.log()
