"""The metrics exporter run for real beside the daemon in a lab's router namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from uplinkd.lab import Lab
from uplinkd.lab.addresses import LAN_ROUTER4
from uplinkd.lab.launcher import LabDaemon

from harness.readback import wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# The lab both the metrics and the status-page tests watch: three static uplinks, fast probes.
NAMES = ("wan", "lte1", "lte2")
SERVER = "198.51.100.100"


def config() -> dict[str, Any]:
    return {
        "uplinks": {
            name: {
                "match": {"name": name},
                "address": {"mode": "static", "cidr": f"10.{101 + i}.0.2/24", "gateway": f"10.{101 + i}.0.1"},
                "table": 101 + i,
                "probe": {"targets": [SERVER, f"198.51.100.{i + 1}"]},
            }
            for i, name in enumerate(NAMES)
        },
        "probe": {"profile": "fast"},
        "balance": {"table": 200},
    }


@pytest.fixture(name="lab")
def three_uplink_lab() -> Iterator[Lab]:
    with Lab() as lab:
        for name in NAMES:
            lab.add_isp(name, address="none")
        lab.add_client()
        yield lab


class Exporter:
    """uplinkd-exporter in the router namespace, stopped by pid."""

    def __init__(self, lab: Lab, controller: LabDaemon, *args: str) -> None:
        self.lab = lab
        self.log_path = controller.workdir / "exporter.log"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", lab.router, sys.executable, "-m", "uplinkd.exporter.server",
                 "--socket", str(controller.socket), "-v", *args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def http_get(
    lab: Lab, role: str, url: str, *, timeout: float = 10, host: str | None = None
) -> subprocess.CompletedProcess[str]:
    """curl from inside a lab namespace (exit code 7: connection refused); `host` replaces the
    Host header curl derives from the URL."""
    headers = ["-H", f"Host: {host}"] if host is not None else []
    return subprocess.run(
        ["ip", "netns", "exec", lab.netns(role), "curl", "-sS", "--max-time", str(timeout), "-o", "-",
         "-w", "\n%{http_code}", *headers, url],
        capture_output=True, text=True, check=False, timeout=timeout + 5,
    )  # fmt: skip


def scrape(lab: Lab, url: str) -> tuple[Samples, str]:
    """Every sample of an exposition, parsed by prometheus_client's own parser."""
    done = wait_until(
        lambda: (r := http_get(lab, "router", url)).returncode == 0 and r.stdout.endswith("\n200") and r,
        timeout=20,
        what=f"{url} to answer",
    )
    text = done.stdout.rsplit("\n", 1)[0]
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, text


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def kernel_link(lab: Lab, dev: str) -> dict[str, int]:
    """`ip -s -json link show` in the router namespace: the kernel's own counters."""
    out = subprocess.run(
        ["ip", "-n", lab.router, "-s", "-json", "link", "show", "dev", dev],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip
    stats = json.loads(out)[0]["stats64"]
    return {
        "rx_bytes": stats["rx"]["bytes"],
        "tx_bytes": stats["tx"]["bytes"],
        "rx_packets": stats["rx"]["packets"],
        "tx_packets": stats["tx"]["packets"],
    }


def page_address(lab: Lab) -> str:
    return str(LAN_ROUTER4.ip)
