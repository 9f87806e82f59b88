"""The kernel's traffic counters of an interface, read from sysfs (no privileges needed).

The exporter runs in the daemon's network namespace, so `/sys/class/net` shows the same
interfaces the daemon routes through.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SYSFS = Path("/sys/class/net")
FIELDS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")


@dataclass(frozen=True)
class LinkCounters:
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int


def read(dev: str, sysfs: Path = SYSFS) -> LinkCounters | None:
    """An interface's counters, or None if it is gone (unplugged between two reads)."""
    if "/" in dev or dev in ("", ".", ".."):
        return None
    stats = sysfs / dev / "statistics"
    try:
        values = [int((stats / name).read_text()) for name in FIELDS]
    except (OSError, ValueError):
        return None
    return LinkCounters(*values)
