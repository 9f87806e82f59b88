"""Metering: how many bytes each metered or budgeted uplink moved this month, kept across
restarts, and whose monthly budget is spent.

A meter worker per present uplink that is `metered` or has a `budget` reads the interface's
byte counters (sysfs `rx_bytes` + `tx_bytes`: what the provider bills, probes included)
every `SAMPLE_S`, adds what moved since the last reading to the uplink's usage for the
current calendar month (UTC), and writes the usages to `state_dir/usage.json` (atomically,
at most every `SAVE_S`, and at once when a budget is crossed). A counter that went
backwards (the stick was replugged) counts from zero; the first reading after the worker
starts is only a baseline, so traffic while the daemon was stopped is not counted.

When an uplink's usage reaches its budget it is recorded as spent (a fact: `Facts.spent`)
and the loop is woken; planning then uses it only as a last tier. A new month starts from 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from uplinkd.plan import Intent
from uplinkd.runtime import Runtime
from uplinkd.usage import account, month_of, moved_since, read_bytes
from uplinkd.workers import WorkerKind

log = logging.getLogger("uplinkd.meter")

SAMPLE_S = 1.0


def spent(rt: Runtime, wall: float) -> frozenset[str]:
    """The uplinks whose budget this month is used up."""
    month = month_of(wall)
    return frozenset(
        name
        for name, up in rt.config.uplinks.items()
        if up.budget is not None
        and (u := rt.usage.get(name)) is not None
        and u.month == month
        and u.bytes >= up.budget
    )


@dataclass(frozen=True)
class MeterSpec:
    dev: str


class Meter:
    """Counts one uplink's bytes into the runtime's usage."""

    def __init__(self, *, name: str, dev: str, rt: Runtime) -> None:
        self.name, self.dev, self.rt = name, dev, rt
        self.last: int | None = None

    async def run(self) -> None:
        while True:
            self.sample(time.time())
            await asyncio.sleep(SAMPLE_S)

    def sample(self, wall: float) -> None:
        now = read_bytes(self.dev)
        if now is None:
            return
        moved = moved_since(self.last, now)
        self.last = now
        old = self.rt.usage.get(self.name)
        new = account(old, month=month_of(wall), moved=moved)
        if new == old:
            return
        self.rt.usage[self.name] = new
        was_spent = self.rt.spent
        self.rt.spent = spent(self.rt, wall)
        if self.rt.spent != was_spent:
            log.info("uplink %s: budget %s", self.name, "spent" if self.name in self.rt.spent else "renewed")
            self.rt.save_usage(force=True)
            self.rt.wake.set()
        else:
            self.rt.save_usage(force=False)


class MeterWorkers(WorkerKind[MeterSpec, Meter]):
    """One meter per present uplink that is metered or has a budget."""

    name = "meter"

    def wanted(self, intent: Intent, running: Mapping[str, MeterSpec]) -> dict[str, MeterSpec]:
        return {
            s.name: MeterSpec(s.dev)
            for s in intent.uplinks
            if s.dev is not None
            and s.name in self.rt.config.uplinks
            and (self.rt.config.uplinks[s.name].metered or self.rt.config.uplinks[s.name].budget is not None)
        }

    def make(self, name: str, spec: MeterSpec) -> Meter:
        return Meter(name=name, dev=spec.dev, rt=self.rt)

    def stopped(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self.rt.save_usage(force=True)
