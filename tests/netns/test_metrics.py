"""Metrics end to end: the real daemon, the real exporter, an uplink failing and coming back.

The exporter is scraped over HTTP inside the router namespace and its exposition parsed
with prometheus_client's own parser; what it says is compared with the daemon's status and
with the kernel's interface counters read independently (`ip -s -json link`).
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from uplinkd.lab import Lab
from uplinkd.lab.launcher import LabDaemon

from exporting import (
    NAMES,
    Exporter,
    config,
    http_get,
    kernel_link,
    scrape,
    three_uplink_lab,  # noqa: F401  (the `lab` fixture)
    value,
)
from harness.readback import wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.timeout(240),
]

METRICS = "127.0.0.1:9477"
URL = f"http://{METRICS}/metrics"


@pytest.fixture
def running(lab: Lab, tmp_path: Path) -> Iterator[tuple[LabDaemon, Exporter]]:
    c = LabDaemon(lab.router, config(), workdir=tmp_path)
    exporter: Exporter | None = None
    try:
        c.start()
        for name in NAMES:
            c.wait_state(name, "up", timeout=30)
        exporter = Exporter(lab, c, "--listen", METRICS)
        yield c, exporter
    finally:
        if exporter is not None:
            exporter.stop()
        c.stop()


def state_of(samples: dict[Any, float], uplink: str) -> set[str]:
    return {
        dict(labels)["state"]
        for (name, labels), v in samples.items()
        if name == "uplinkd_uplink_state" and dict(labels)["uplink"] == uplink and v == 1
    }


def transitions(samples: dict[Any, float], uplink: str, old: str, new: str) -> float:
    return sum(
        v
        for (name, labels), v in samples.items()
        if name == "uplinkd_transitions_total"
        and dict(labels)["uplink"] == uplink
        and (dict(labels)["from"], dict(labels)["to"]) == (old, new)
    )


def test_metrics_follow_a_failure_and_recovery(lab: Lab, running: tuple[LabDaemon, Exporter]) -> None:
    c, _exporter = running
    before, text = scrape(lab, URL)
    assert value(before, "uplinkd_up") == 1
    assert "# TYPE uplinkd_uplink_state gauge" in text
    for name in NAMES:
        assert state_of(before, name) == {"up"}
        assert value(before, "uplinkd_uplink_in_group", uplink=name) == 1
        assert value(before, "uplinkd_uplink_weight", uplink=name) == 1
        assert (value(before, "uplinkd_probe_sent_bytes_total", uplink=name) or 0) > 0
        assert (value(before, "uplinkd_probe_round_trip_seconds_count", uplink=name) or 0) > 0
    assert transitions(before, "lte1", "up", "down") == 0
    assert (value(before, "uplinkd_passes_total") or 0) >= 1
    assert value(before, "uplinkd_pass_duration_seconds_count") == value(before, "uplinkd_passes_total")
    assert value(before, "uplinkd_config_last_load_success") == 1

    # traffic through the router: the byte counters move as the kernel's do
    kernel_before = {name: kernel_link(lab, name) for name in NAMES}
    lab.flows(tcp=6, udp=6, interval_ms=20, duration=2.0)
    scraped, _ = scrape(lab, URL)
    kernel_after = {name: kernel_link(lab, name) for name in NAMES}
    moved = 0.0
    for name in NAMES:
        for field, metric in (
            ("rx_bytes", "uplinkd_uplink_receive_bytes_total"),
            ("tx_bytes", "uplinkd_uplink_transmit_bytes_total"),
            ("rx_packets", "uplinkd_uplink_receive_packets_total"),
            ("tx_packets", "uplinkd_uplink_transmit_packets_total"),
        ):
            got = value(scraped, metric, uplink=name, dev=name)
            assert got is not None, f"{metric} for {name} missing"
            # read between two readings of the kernel's counters (probes keep them moving)
            assert kernel_before[name][field] <= got <= kernel_after[name][field], (name, field)
        moved += (value(scraped, "uplinkd_uplink_transmit_bytes_total", uplink=name, dev=name) or 0) - (
            value(before, "uplinkd_uplink_transmit_bytes_total", uplink=name, dev=name) or 0
        )
    assert moved > 12 * 50 * 20, "the flows' bytes did not show up"  # 12 flows, ~100 packets each

    # lte1 fails (its carrier stays up: only the probes can tell)
    lab.isp("lte1").blackhole()
    c.wait_state("lte1", "down", timeout=30)
    down, _ = scrape(lab, URL)
    assert state_of(down, "lte1") == {"down"}
    assert value(down, "uplinkd_uplink_in_group", uplink="lte1") == 0
    assert transitions(down, "lte1", "up", "down") == 1
    why = {"from": "up", "to": "down", "reason": "probes_failed"}
    assert value(down, "uplinkd_transitions_total", uplink="lte1", **why) == 1
    assert value(down, "uplinkd_failovers_total", uplink="lte1") == 1
    assert value(down, "uplinkd_conntrack_flushed_total", uplink="lte1") is not None
    assert state_of(down, "wan") == {"up"} and transitions(down, "wan", "up", "down") == 0
    assert (value(down, "uplinkd_writes_total") or 0) > (value(before, "uplinkd_writes_total") or 0)
    # the state gauge agrees with the daemon's status at the same moment
    assert c.uplink("lte1")["state"] == "down"

    lab.isp("lte1").blackhole(False)
    c.wait_state("lte1", "up", timeout=30)
    again, _ = scrape(lab, URL)
    assert state_of(again, "lte1") == {"up"}
    assert value(again, "uplinkd_uplink_in_group", uplink="lte1") == 1
    assert transitions(again, "lte1", "up", "down") == 1
    assert transitions(again, "lte1", "down", "up") == 1
    assert value(again, "uplinkd_failovers_total", uplink="lte1") == 1
    assert (value(again, "uplinkd_uplink_state_seconds", uplink="lte1") or 1e9) < (
        value(again, "uplinkd_uplink_state_seconds", uplink="wan") or 0
    )


def test_conntrack_entries_flushed_are_counted(lab: Lab, running: tuple[LabDaemon, Exporter]) -> None:
    c, _ = running
    flows = lab.start_flows(tcp=8, udp=8, interval_ms=20, duration=6.0)
    time.sleep(1.5)
    lab.isp("lte1").blackhole()
    c.wait_state("lte1", "down", timeout=30)
    report = flows.result()
    started = len(report.started_on("lte1"))
    samples, _ = scrape(lab, URL)
    flushed = value(samples, "uplinkd_conntrack_flushed_total", uplink="lte1")
    # every flow pinned to lte1 had one entry, and each was deleted (more may exist: probes' own)
    assert started > 0, "no flow started on lte1; the test proves nothing"
    assert flushed is not None and flushed >= started


def test_metrics_listen_only_where_told_and_survive_the_daemon(
    lab: Lab, running: tuple[LabDaemon, Exporter]
) -> None:
    c, _ = running
    scrape(lab, URL)
    refused = http_get(lab, "router", "http://10.101.0.2:9477/metrics", timeout=3)
    assert refused.returncode == 7, refused  # connection refused: bound to 127.0.0.1 only
    c.stop()
    samples, _ = wait_until(
        lambda: (r := scrape(lab, URL))[0].get(("uplinkd_up", ())) == 0 and r,
        timeout=15,
        what="uplinkd_up to drop to 0 with the daemon stopped",
    )
    assert not any(name == "uplinkd_uplink_state" for name, _ in samples)


def test_watch_is_plain_text_in_a_pipe_and_redraws_on_a_terminal(
    lab: Lab, running: tuple[LabDaemon, Exporter]
) -> None:
    c, _ = running
    piped = c.ctl("watch", "--count", "3", "--interval", "0.3")
    assert "\x1b" not in piped.stdout, "escape codes in a pipe"
    frames = piped.stdout.split("\n\n")
    assert len([f for f in frames if f.startswith("uplinkd ")]) == 3, piped.stdout
    last = frames[-1]
    for name in NAMES:
        assert re.search(rf"^{name}\s+up\s", last, re.M), last
    assert "recent events" in last and "probing → up" in last

    # on a terminal: each frame clears the screen and redraws; the cursor comes back at the end
    main, sub = pty.openpty()
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.router, sys.executable, "-m", "uplinkd.cli", "--socket", str(c.socket),
         "watch", "--count", "2", "--interval", "0.3"],
        stdin=sub, stdout=sub, stderr=sub, close_fds=True, env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )  # fmt: skip
    os.close(sub)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(main)
        assert proc.wait(timeout=20) == 0
    text = out.decode(errors="replace")
    assert text.count("\x1b[H\x1b[2J") == 2, text
    assert text.rstrip().endswith("\x1b[?25h")
    assert "lte1" in text and any(glyph in text for glyph in "▁▂▃▄▅▆▇█")
