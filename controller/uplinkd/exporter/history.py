"""What the status page shows beyond one status: the last hour of RTT, loss and state per
uplink, and the bytes each carried today (the LTE bill), from samples taken every few
seconds while the page is enabled. In memory only; a restart starts the hour afresh.
"""

from __future__ import annotations

import collections
import datetime
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from uplinkd.exporter import kernel_counters

WINDOW = 3600.0  # seconds of history kept for the sparklines


@dataclass(frozen=True)
class Sample:
    at: float  # wall clock
    state: str
    rtt_ms: float | None
    loss_pct: float | None


@dataclass
class Today:
    """Bytes through one uplink since local midnight, summed from counter deltas, so an
    interface that is re-created (a stick replugged: counters from zero) still adds up."""

    day: datetime.date
    rx: int = 0
    tx: int = 0
    last: tuple[str, int, int] | None = None  # (dev, rx, tx) at the previous sample

    def add(self, dev: str, rx: int, tx: int) -> None:
        if self.last is not None and self.last[0] == dev and rx >= self.last[1] and tx >= self.last[2]:
            self.rx += rx - self.last[1]
            self.tx += tx - self.last[2]
        self.last = (dev, rx, tx)


@dataclass
class History:
    read_link: Callable[[str], kernel_counters.LinkCounters | None] = kernel_counters.read
    samples: dict[str, collections.deque[Sample]] = field(default_factory=dict)
    today: dict[str, Today] = field(default_factory=dict)
    latest: Mapping[str, Any] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: Mapping[str, Any] | None, *, now: float) -> None:
        """Fold one status (None: the daemon did not answer) into the history."""
        day = datetime.datetime.fromtimestamp(now).date()
        with self.lock:
            self.latest = status
            if status is None:
                return
            for u in status.get("uplinks", []):
                name = str(u["name"])
                probe = u.get("probe") or {}
                ring = self.samples.setdefault(name, collections.deque())
                ring.append(Sample(now, str(u.get("state")), probe.get("rtt_ms"), probe.get("loss_pct")))
                while ring and ring[0].at < now - WINDOW:
                    ring.popleft()
                today = self.today.get(name)
                if today is None or today.day != day:
                    today = self.today[name] = Today(day, last=today.last if today else None)
                dev = u.get("dev")
                link = self.read_link(dev) if dev else None
                if dev and link is not None:
                    today.add(dev, link.rx_bytes, link.tx_bytes)
            configured = {str(u["name"]) for u in status.get("uplinks", [])}
            for gone in set(self.samples) - configured:
                del self.samples[gone]
                self.today.pop(gone, None)

    def page_json(self, *, drain_enabled: bool, now: float) -> dict[str, Any]:
        """The page's `/status.json`: the latest status with history and today's bytes."""
        with self.lock:
            status = self.latest
            if status is None:
                return {
                    "reachable": False,
                    "at": now,
                    "drain_enabled": drain_enabled,
                    "uplinks": [],
                    "events": [],
                }
            uplinks = []
            for u in status.get("uplinks", []):
                name = str(u["name"])
                probe = u.get("probe") or {}
                ring = list(self.samples.get(name, ()))
                today = self.today.get(name)
                uplinks.append(
                    {
                        "name": name,
                        "state": u.get("state"),
                        "reason": u.get("reason"),
                        "since_s": u.get("since_s"),
                        "dev": u.get("dev"),
                        "in_group": u.get("in_group"),
                        "weight": u.get("weight"),
                        "drained": u.get("drained"),
                        "rtt_ms": probe.get("rtt_ms"),
                        "loss_pct": probe.get("loss_pct"),
                        "rx_today": today.rx if today else 0,
                        "tx_today": today.tx if today else 0,
                        "history": {
                            "at": [round(s.at - now, 1) for s in ring],
                            "rtt_ms": [s.rtt_ms for s in ring],
                            "loss_pct": [s.loss_pct for s in ring],
                            "state": [s.state for s in ring],
                        },
                    }
                )
            return {
                "reachable": True,
                "at": now,
                "summary": status.get("summary"),
                "drain_enabled": drain_enabled,
                "uplinks": uplinks,
                "events": list(reversed(status.get("events", []))),
            }
