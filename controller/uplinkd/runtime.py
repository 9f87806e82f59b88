"""What a running daemon knows beyond its config: facts its workers recorded (verdicts,
leases), what the operator asked for (drain, pause), and what the last pass planned and did.

Workers and control requests change these facts and set `wake`; only the loop reads the
kernel and writes to it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from uplinkd import journal
from uplinkd.config import Config
from uplinkd.counters import Counters
from uplinkd.kernel.state import ApplyResult
from uplinkd.model import Bearer, Delegation, HealthVerdict, Lease, Lease6, State
from uplinkd.model.adverts import Advert
from uplinkd.plan import Intent, Plan, verdicts
from uplinkd.tunnel.health import TunnelHealth
from uplinkd.usage import SAVE_S, USAGE_FILE, Usage
from uplinkd.usage import save as save_usage

log = logging.getLogger("uplinkd")


@dataclass(frozen=True)
class Event:
    """A change in an uplink's or a tunnel's state, for the log, `status` and hooks."""

    at: float  # wall clock
    uplink: str  # the uplink's name; a tunnel's event: the tunnel's name
    old: str | None  # a `State` for uplinks; unknown, up, degraded or down for tunnels
    new: str
    reason: str
    dev: str | None = None
    kind: str = "uplink"  # or "tunnel"
    underlay: str | None = None  # a tunnel's event: the uplink(s) carrying it then


@dataclass
class Runtime:
    """Mutable runtime state, kept apart from the (frozen) config it runs with."""

    config: Config
    drained: set[str] = field(default_factory=set)
    paused: bool = False  # after `flush`: hands off the kernel until `resume` or restart
    health: dict[str, HealthVerdict] = field(default_factory=dict)
    leases: dict[str, Lease] = field(default_factory=dict)
    delegations: dict[str, Delegation] = field(default_factory=dict)  # uplink → its DHCPv6-PD prefix
    leases6: dict[str, Lease6] = field(default_factory=dict)  # uplink → its DHCPv6 (IA_NA) address
    tunnels: dict[str, TunnelHealth] = field(default_factory=dict)  # tunnel → its worker's last look
    tunnel_probes: dict[str, HealthVerdict] = field(default_factory=dict)  # tunnel → probes' verdict
    bearers: dict[str, Bearer] = field(default_factory=dict)  # modem uplinks' connected bearers
    adverts: dict[str, Advert] = field(default_factory=dict)  # uplink → its router's last RA
    adopted: set[str] = field(default_factory=set)  # in the group when we started; up until probed
    since: dict[str, float] = field(default_factory=dict)  # uplink → monotonic time of last change
    events: collections.deque[Event] = field(default_factory=lambda: collections.deque(maxlen=200))
    intent: Intent | None = None
    plan: Plan = field(default_factory=Plan)
    result: ApplyResult = field(default_factory=ApplyResult)
    passes: int = 0
    writes: int = 0
    started: float = field(default_factory=time.monotonic)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # a fact changed: run a pass
    counters: Counters = field(default_factory=Counters)  # for the metrics exporter, in `status`
    usage: dict[str, Usage] = field(default_factory=dict)  # metered uplinks' bytes this month
    spent: frozenset[str] = frozenset()  # uplinks whose monthly budget is used up
    saved_usage: float = 0.0  # monotonic time usage.json was last written

    @property
    def usage_file(self) -> Path:
        return self.config.control.state_dir / USAGE_FILE

    def save_usage(self, *, force: bool) -> None:
        """Keep the usage in state_dir: now when forced, else at most every SAVE_S."""
        now = time.monotonic()
        if force or now - self.saved_usage >= SAVE_S:
            save_usage(self.usage_file, self.usage)
            self.saved_usage = now

    def lease_file(self, name: str) -> Path:
        return self.config.control.state_dir / f"{name}.lease.json"

    def pd_file(self, name: str) -> Path:
        return self.config.control.state_dir / f"{name}.pd.json"

    def na_file(self, name: str) -> Path:
        return self.config.control.state_dir / f"{name}.na.json"

    def verdicts(self) -> dict[str, HealthVerdict]:
        """Verdicts from the probers; an uplink with targets but no verdict yet is unknown,
        unless it was in service when we started (then it is up until probed otherwise)."""
        return verdicts(self.config, self.health, self.adopted)

    def record(self, intent: Intent) -> list[Event]:
        """Take the pass's intent as current; log each uplink whose state changed and return
        those changes of uplinks known before (the first state of an uplink is no change)."""
        now, wall = time.monotonic(), time.time()
        before = {s.name: s for s in self.intent.uplinks} if self.intent else {}
        changes: list[Event] = []
        for s in intent.uplinks:
            old = before.get(s.name)
            if old is None or old.state != s.state:
                self.since[s.name] = now
                ev = Event(wall, s.name, old.state if old else None, s.state, s.reason, s.dev)
                self.events.append(ev)
                if old is not None:
                    changes.append(ev)
                level = logging.INFO if old is not None or s.state != State.ABSENT else logging.DEBUG
                left = old is not None and old.in_group and not s.in_group and not s.drained
                self.counters.transition(
                    uplink=s.name, old=ev.old, new=s.state, reason=s.reason, failover=left
                )
                journal.state_change(
                    log, level, uplink=s.name, old=ev.old, new=s.state, reason=s.reason, dev=s.dev
                )
            if "cannot be used" in s.reason and (old is None or old.reason != s.reason):
                log.warning("uplink %s: %s", s.name, s.reason)
            if s.also_matches and (old is None or old.also_matches != s.also_matches):
                log.warning(
                    "uplink %s: %s also match%s its match criteria; using %s (the lowest interface index)."
                    " Make the match more specific (a USB serial, match.path or an exact name)",
                    s.name,
                    ", ".join(s.also_matches),
                    "es" if len(s.also_matches) == 1 else "",
                    s.dev,
                )
        changes += self._tunnel_changes(intent, wall)
        self.intent = intent
        return changes

    def _tunnel_changes(self, intent: Intent, wall: float) -> list[Event]:
        """Each tunnel whose state changed (the `tunnel <name>` reason: "state: why"), logged
        and journalled like an uplink's; the first state of a tunnel is no change."""
        before = self.intent.reasons if self.intent else {}
        changes: list[Event] = []
        for name, tunnel in self.config.tunnels.items():
            topic = f"tunnel {name}"
            now_text = intent.reasons.get(topic)
            if now_text is None:
                continue
            new, _, reason = now_text.partition(": ")
            old_text = before.get(topic)
            old = old_text.partition(": ")[0] if old_text is not None else None
            if old == new:
                continue
            vias = [v for k, v in sorted(intent.reasons.items()) if k.startswith(f"{topic} underlay ") and v]
            underlay = vias[0] if vias else None
            ev = Event(wall, name, old, new, reason, tunnel.interface, kind="tunnel", underlay=underlay)
            self.events.append(ev)
            if old is not None:
                changes.append(ev)
            journal.state_change(
                log, logging.INFO, uplink=name, old=old, new=new, reason=reason, dev=tunnel.interface,
                tunnel=True, underlay=underlay,
            )  # fmt: skip
        return changes
