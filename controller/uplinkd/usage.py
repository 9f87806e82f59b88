"""Monthly byte usage of metered uplinks: the value, its arithmetic, and keeping it in
`state_dir/usage.json` across restarts. Counting is done by the meter workers (`meter`)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("uplinkd.usage")

USAGE_FILE = "usage.json"
SAVE_S = 10.0  # at most this often, unless a budget is crossed


@dataclass(frozen=True)
class Usage:
    month: str  # "2026-12"
    bytes: int = 0


def month_of(wall: float) -> str:
    return time.strftime("%Y-%m", time.gmtime(wall))


def account(usage: Usage | None, *, month: str, moved: int) -> Usage:
    """The usage after `moved` more bytes in `month` (a new month starts from zero)."""
    if usage is None or usage.month != month:
        return Usage(month, moved)
    return Usage(month, usage.bytes + moved)


def moved_since(last: int | None, now: int) -> int:
    """Bytes moved between two readings of a counter (a reset counts from zero)."""
    if last is None:
        return 0
    return now - last if now >= last else now


def read_bytes(dev: str, sysfs: Path = Path("/sys/class/net")) -> int | None:
    """rx_bytes + tx_bytes of an interface, or None if it is gone."""
    stats = sysfs / dev / "statistics"
    try:
        return int((stats / "rx_bytes").read_text()) + int((stats / "tx_bytes").read_text())
    except (OSError, ValueError):
        return None


def load(path: Path) -> dict[str, Usage]:
    """The usages kept in `path`; {} when there is none or it is unreadable (logged)."""
    try:
        data = json.loads(path.read_text())
        return {name: Usage(str(u["month"]), int(u["bytes"])) for name, u in data["uplinks"].items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("%s: cannot read the kept usage (%s); counting from zero", path, e)
        return {}


def save(path: Path, usage: Mapping[str, Usage]) -> None:
    """Write the usages atomically (a crash leaves the old file or the new one)."""
    data = {"uplinks": {n: {"month": u.month, "bytes": u.bytes} for n, u in sorted(usage.items())}}
    tmp = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        log.warning("%s: cannot keep the usage (%s)", path, e)
