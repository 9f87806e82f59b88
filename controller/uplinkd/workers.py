"""One supervisor for every long-running worker: probers, DHCP clients, and later modem
watchers and tunnel handshake monitors.

After each pass the daemon hands the pass's intent to `Supervisor.sync`. For each kind of
worker, the kind says which workers are wanted (name → spec, a value); the supervisor starts
the missing ones, restarts those whose spec changed, and stops the ones no longer wanted.
Workers only record facts (a verdict, a lease) in the `Runtime` and set `wake`; they never
touch the kernel.

A worker that dies (raises, or returns) is logged and started again with backoff: one bad
probe reply or a DHCP library bug neither ends the daemon nor goes unnoticed. The same worker
object runs again, so what it learnt (a prober's health history) survives.

A new kind of worker is one module holding the worker and a `WorkerKind` subclass, and one
entry in `daemon.WORKERS`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast

from uplinkd.plan import Intent
from uplinkd.runtime import Runtime

log = logging.getLogger("uplinkd.workers")

RESTART_MIN, RESTART_MAX = 1.0, 60.0


class Worker(Protocol):
    async def run(self) -> None: ...


S = TypeVar("S")  # what a worker is started with; a frozen value: a change restarts the worker
W = TypeVar("W", bound=Worker)


class WorkerKind(ABC, Generic[S, W]):
    """One kind of worker: which are wanted, how one is made, what to forget when one stops."""

    name: ClassVar[str]  # for the log: "probe", "dhcp"
    # synced after the pass's kernel writes rather than before them (a probe sent before its
    # uplink's route exists is lost)
    after_writes: ClassVar[bool] = False
    # stopped while uplinkd is paused after `flush` (they would fail without our rules)
    needs_our_routes: ClassVar[bool] = False

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    @abstractmethod
    def wanted(self, intent: Intent, running: Mapping[str, S]) -> dict[str, S]:
        """The workers this pass wants, by name; `running` holds the specs of those running."""

    @abstractmethod
    def make(self, name: str, spec: S) -> W:
        """A new worker for `name`, not yet running."""

    def stopped(self, name: str) -> None:
        """`name`'s worker was stopped: forget the facts it recorded."""


@dataclass
class _Running:
    spec: Any
    worker: Worker
    task: asyncio.Task[None]


class Supervisor:
    """Runs the workers of every kind in the daemon's task group."""

    def __init__(
        self,
        kinds: Sequence[WorkerKind[Any, Any]],
        *,
        backoff: tuple[float, float] = (RESTART_MIN, RESTART_MAX),
    ) -> None:
        self.kinds = tuple(kinds)
        self.backoff = backoff  # first and longest wait before a dead worker runs again
        self._running: dict[str, dict[str, _Running]] = {kind.name: {} for kind in self.kinds}
        self._tasks: asyncio.TaskGroup | None = None

    def start_in(self, tasks: asyncio.TaskGroup) -> None:
        """Workers run in this group (until then, `sync` starts none)."""
        self._tasks = tasks

    def sync(self, intent: Intent, *, after_writes: bool) -> None:
        for kind in self.kinds:
            if kind.after_writes == after_writes:
                running = self._running[kind.name]
                self._sync(kind, kind.wanted(intent, {n: r.spec for n, r in running.items()}))

    def stop(self, *, needs_our_routes: bool) -> None:
        """Stop every worker of the kinds that need (or do not need) our rules and routes."""
        for kind in self.kinds:
            if kind.needs_our_routes == needs_our_routes:
                self._sync(kind, {})

    def running(self, kind: type[WorkerKind[Any, W]]) -> dict[str, W]:
        """The running workers of one kind, by name (for `status`)."""
        out: dict[str, W] = {}
        for k in self.kinds:
            if isinstance(k, kind):
                out.update({n: cast(W, r.worker) for n, r in self._running[k.name].items()})
        return out

    def _sync(self, kind: WorkerKind[S, W], wanted: Mapping[str, S]) -> None:
        running = self._running[kind.name]
        for name, r in list(running.items()):
            if name not in wanted or wanted[name] != r.spec:
                r.task.cancel()
                del running[name]
                kind.stopped(name)
        for name, spec in wanted.items():
            if name in running or self._tasks is None:
                continue
            worker = kind.make(name, spec)
            task = self._tasks.create_task(self._keep(kind.name, name, worker))
            running[name] = _Running(spec, worker, task)

    async def _keep(self, kind: str, name: str, worker: Worker) -> None:
        """Run a worker until it is cancelled, starting it again whenever it ends. What it
        recorded (a verdict, a lease) stands meanwhile: the last word until it speaks again."""
        first, longest = self.backoff
        delay = first
        while True:
            began = time.monotonic()
            try:
                await worker.run()
                why = "returned"
            except asyncio.CancelledError:
                raise
            except Exception:
                why = "died"
                log.exception("%s worker for %s raised", kind, name)
            # one that ran for a while starts again soon; one that keeps dying backs off
            delay = first if time.monotonic() - began > longest else delay
            log.error("%s worker for %s %s; starting it again in %gs", kind, name, why, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)
