"""Counters only the daemon can know, kept in memory and shown in `status --json`.

The metrics exporter (`uplinkd-exporter`, a separate process) turns them into Prometheus
metrics; the daemon itself serves nothing over HTTP. Everything here is a plain number
bumped in O(1) on the daemon's loop: no locks, no I/O, no allocation per probe beyond a
dict entry per uplink. They restart from zero with the daemon, as Prometheus counters may.

Labels stay bounded: a transition's reason is reduced to a short kind (`reason_kind`),
never the free text with RTTs in it.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class Round(Protocol):
    """What a probe round reports (`health.RoundResult` has these)."""

    @property
    def sent(self) -> int: ...
    @property
    def rtts(self) -> tuple[float, ...]: ...
    @property
    def bytes(self) -> int: ...


# seconds; a converged pass takes ~10 ms, a pass with many writes ~100 ms
PASS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# seconds; LAN-ish to satellite
RTT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# (words in the reason, kind): the first match names the kind
REASON_KINDS = (
    ("no interface matches", "unplugged"),
    ("administratively down", "admin_down"),
    ("no carrier", "no_carrier"),
    ("DHCP lease", "no_address"),
    ("no address", "no_address"),
    ("no default gateway", "no_gateway"),
    ("rounds in a row", "probes_failed"),
    ("recovered", "recovered"),
    ("targets answered", "probes_ok"),
    ("loss ", "loss"),
    ("rtt ", "rtt"),
    ("not probed yet", "not_probed"),
    ("when uplinkd started", "adopted"),
    ("no health checks", "no_checks"),
)


def reason_kind(reason: str) -> str:
    """A short, bounded name for a state change's reason (a metric label). Computes only."""
    for words, kind in REASON_KINDS:
        if words in reason:
            return kind
    return "other"


@dataclass
class Histogram:
    """Observations counted into fixed buckets (upper bounds, +Inf implied)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative; last is +Inf
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.total += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def as_json(self) -> dict[str, Any]:
        """Cumulative counts per upper bound, as Prometheus has them; "+Inf" last."""
        cumulative, running = [], 0
        for n in self.counts:
            running += n
            cumulative.append(running)
        return {
            "le": [*self.bounds, "+Inf"],
            "counts": cumulative,
            "sum": round(self.total, 6),
            "count": running,
        }


@dataclass
class Counters:
    """Since the daemon started. Bumped by the daemon; read by `status`."""

    passes: int = 0
    writes: int = 0
    failed_writes: int = 0
    pass_seconds: Histogram = field(default_factory=lambda: Histogram(PASS_BUCKETS))
    # (uplink, from, to, reason kind) → count
    transitions: collections.Counter[tuple[str, str, str, str]] = field(default_factory=collections.Counter)
    failovers: collections.Counter[str] = field(default_factory=collections.Counter)
    probe_rounds: collections.Counter[str] = field(default_factory=collections.Counter)
    probes_sent: collections.Counter[str] = field(default_factory=collections.Counter)
    probes_answered: collections.Counter[str] = field(default_factory=collections.Counter)
    probe_bytes: collections.Counter[str] = field(default_factory=collections.Counter)
    probe_rtt: dict[str, Histogram] = field(default_factory=dict)
    config_loads: int = 1  # the daemon starts only with a valid config
    config_load_failures: int = 0
    config_last_ok: bool = True
    config_last_at: float = field(default_factory=time.time)
    # ct mark → conntrack entries deleted on failover; the kernel applier adds to it
    conntrack_flushed: dict[int, int] = field(default_factory=dict)

    def pass_done(self, *, seconds: float, writes: int, failed: int) -> None:
        self.passes += 1
        self.writes += writes
        self.failed_writes += failed
        self.pass_seconds.observe(seconds)

    def transition(self, *, uplink: str, old: str | None, new: str, reason: str, failover: bool) -> None:
        """A state change; `failover` when the uplink left the group because it failed."""
        self.transitions[(uplink, old or "", new, reason_kind(reason))] += 1
        if failover:
            self.failovers[uplink] += 1

    def probe_round(self, uplink: str, result: Round) -> None:
        self.probe_rounds[uplink] += 1
        self.probes_sent[uplink] += result.sent
        self.probes_answered[uplink] += len(result.rtts)
        self.probe_bytes[uplink] += result.bytes
        hist = self.probe_rtt.setdefault(uplink, Histogram(RTT_BUCKETS))
        for rtt in result.rtts:
            hist.observe(rtt)

    def config_loaded(self, ok: bool, *, at: float | None = None) -> None:
        self.config_loads += ok
        self.config_load_failures += not ok
        self.config_last_ok = ok
        self.config_last_at = time.time() if at is None else at

    def as_json(self, *, marks: Mapping[int, str]) -> dict[str, Any]:
        """The `counters` object of `status --json` (fields are only ever added); `marks`
        names the uplink of each ct mark (a flushed mark may name it with a tunnel's bits)."""
        conntrack_flushed: dict[str, int] = {}
        for m, n in self.conntrack_flushed.items():
            if m in marks:
                conntrack_flushed[marks[m]] = conntrack_flushed.get(marks[m], 0) + n
        uplinks = sorted(
            {*self.probe_rounds, *self.failovers, *conntrack_flushed, *(k[0] for k in self.transitions)}
        )
        return {
            "passes": self.passes,
            "writes": self.writes,
            "failed_writes": self.failed_writes,
            "pass_seconds": self.pass_seconds.as_json(),
            "config": {
                "loads": self.config_loads,
                "load_failures": self.config_load_failures,
                "last_ok": self.config_last_ok,
                "last_at": round(self.config_last_at, 3),
            },
            "transitions": [
                {"uplink": u, "from": old, "to": new, "reason": kind, "count": n}
                for (u, old, new, kind), n in sorted(self.transitions.items())
            ],
            "uplinks": {
                name: {
                    "failovers": self.failovers[name],
                    "conntrack_flushed": conntrack_flushed.get(name, 0),
                    "probe_rounds": self.probe_rounds[name],
                    "probes_sent": self.probes_sent[name],
                    "probes_answered": self.probes_answered[name],
                    "probe_bytes": self.probe_bytes[name],
                    "probe_rtt_seconds": self.probe_rtt[name].as_json() if name in self.probe_rtt else None,
                }
                for name in uplinks
            },
        }
