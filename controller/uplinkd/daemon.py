"""uplinkd, the daemon: one loop that keeps the kernel in step with the world.

    event sources ──wake──► reconcile: read kernel → desired() → diff() → apply()

Event sources (netlink, nftables, timers, signals, the control socket, later probes and
udev) only record facts and set `wake`. `reconcile` is the single path to the kernel.
Every task is started in one TaskGroup; if one dies unexpectedly the daemon logs it and
exits non-zero so systemd restarts it. On SIGTERM it leaves the kernel as it is (fail
static: traffic keeps flowing through a restart) and adopts it again on start.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uplinkd import __version__, control
from uplinkd.config import Config, ConfigError, Probe, load
from uplinkd.dhcp import DhcpClient, stored_lease
from uplinkd.kernel import explain as explain_mod
from uplinkd.kernel.state import ApplyResult, Kernel
from uplinkd.kernel.watch import (
    NETLINK_NETFILTER,
    NETLINK_ROUTE,
    NFNLGRP_NFTABLES,
    ROUTING_GROUPS,
    NetlinkWatch,
)
from uplinkd.model import Health, HealthVerdict, KernelState, Lease, Observed, State, UplinkStatus
from uplinkd.plan import Intent, Plan, desired, diff, failover
from uplinkd.probes import Prober
from uplinkd.udev import UdevWatch, enrich

log = logging.getLogger("uplinkd")

DEBOUNCE = 0.005
ADOPTED = "in service when uplinkd started; probing"  # coalesce a burst of netlink events into one pass
RETRY_MIN, RETRY_MAX = 0.1, 5.0


@dataclass(frozen=True)
class Event:
    """A change in an uplink's state, for the log, `status` and (later) hooks."""

    at: float  # wall clock
    uplink: str
    old: State | None
    new: State
    reason: str


@dataclass
class Runtime:
    """Mutable runtime state, kept apart from the (frozen) config."""

    drained: set[str] = field(default_factory=set)
    paused: bool = False  # after `flush`: hands off the kernel until `resume` or restart
    health: dict[str, HealthVerdict] = field(default_factory=dict)
    leases: dict[str, Lease] = field(default_factory=dict)
    since: dict[str, float] = field(default_factory=dict)  # uplink → monotonic time of last change
    events: collections.deque[Event] = field(default_factory=lambda: collections.deque(maxlen=200))
    intent: Intent | None = None
    plan: Plan = field(default_factory=Plan)
    result: ApplyResult = field(default_factory=ApplyResult)
    passes: int = 0
    writes: int = 0
    started: float = field(default_factory=time.monotonic)


class _Stop(Exception):
    """Raised inside the task group to end it on SIGTERM/SIGINT."""


class Notifier:
    """sd_notify(3): READY, STATUS, WATCHDOG. A no-op outside systemd."""

    def __init__(self) -> None:
        self._addr = os.environ.get("NOTIFY_SOCKET")
        usec = os.environ.get("WATCHDOG_USEC")
        self.watchdog_interval = int(usec) / 2e6 if usec and usec.isdigit() else None

    def send(self, **fields: str) -> None:
        if not self._addr:
            return
        addr = "\0" + self._addr[1:] if self._addr.startswith("@") else self._addr
        msg = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(msg, addr)


class Controller:
    def __init__(self, config: Config, config_path: Path | None, socket_path: Path) -> None:
        self.config = config
        self.config_path = config_path
        self.socket_path = socket_path
        self.kernel = Kernel(config)
        self.rt = Runtime()
        self.wake = asyncio.Event()
        self.notifier = Notifier()
        self._lock = asyncio.Lock()
        self._retry = RETRY_MIN
        self._tasks: asyncio.TaskGroup | None = None
        self.first_pass = asyncio.Event()
        self._adopted: set[str] = set()  # in the group when we started; up until probed
        self.probers: dict[str, tuple[Prober, asyncio.Task[None]]] = {}
        self.dhcp: dict[str, tuple[DhcpClient, asyncio.Task[None]]] = {}
        self.udev = UdevWatch(self.poke)
        for name, uplink in config.uplinks.items():
            if uplink.address.mode == "dhcp" and (lease := stored_lease(self._lease_file(name))):
                self.rt.leases[name] = lease  # adopt what the last run had: a restart changes nothing

    # --- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        watches = [
            NetlinkWatch("rtnetlink", NETLINK_ROUTE, ROUTING_GROUPS, self.poke),
            NetlinkWatch("nftables", NETLINK_NETFILTER, (NFNLGRP_NFTABLES,), self._nft_changed),
        ]
        for w in watches:
            w.start(loop)
        try:
            self.udev.start(loop)
        except (OSError, ImportError) as e:  # no libudev: netlink link events still tell us
            log.warning("udev unavailable (%s); matching by sysfs facts only", e)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._sighup)
        server = await self._serve()

        async def until_stopped() -> None:
            await stop.wait()
            log.info("stopping; the kernel is left as it is")
            raise _Stop

        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                tasks.create_task(self._guard("reconcile", self._reconcile_loop()))
                tasks.create_task(self._guard("resync", self._resync_loop()))
                if self.notifier.watchdog_interval:
                    tasks.create_task(self._guard("watchdog", self._watchdog_loop()))
                tasks.create_task(until_stopped())
        except* _Stop:
            pass
        finally:
            server.close()
            for w in watches:
                w.stop()
            self.udev.stop()
            with contextlib.suppress(OSError):
                self.socket_path.unlink()
            self.kernel.close()

    async def _guard(self, name: str, coro: Any) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("task %s died; exiting so the service manager restarts us", name)
            raise

    def _sighup(self) -> None:
        if self._tasks is not None:
            self._tasks.create_task(self._guard("reload", self.reload()))

    def _nft_changed(self, why: str) -> None:
        self.kernel.nft_stale = True
        self.wake.set()

    def poke(self, why: str = "") -> None:
        self.wake.set()

    async def _reconcile_loop(self) -> None:
        self.wake.set()
        first = True
        while True:
            await self.wake.wait()
            await asyncio.sleep(DEBOUNCE)
            self.wake.clear()
            result = await self.reconcile()
            if first:
                self.first_pass.set()
                self.notifier.send(ready="1", status=self.summary())
                first = False
            else:
                self.notifier.send(status=self.summary())
            if result.failed and any(f.transient for f in result.failed):
                # retry later, but stay awake for events meanwhile (a plug may be what fixes it)
                asyncio.get_running_loop().call_later(self._retry, self.wake.set)
                self._retry = min(self._retry * 2, RETRY_MAX)
            else:
                self._retry = RETRY_MIN

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.control.resync_interval)
            self.kernel.nft_stale = True
            self.wake.set()

    async def _watchdog_loop(self) -> None:
        assert self.notifier.watchdog_interval is not None
        while True:
            self.notifier.send(watchdog="1")
            await asyncio.sleep(self.notifier.watchdog_interval)

    async def compute(self) -> tuple[Intent, Plan]:
        observed, actual = await self.kernel.read()
        if self.rt.intent is None:
            self._adopt(actual)
        intent = self._intent(enrich(observed, self.udev.facts))
        plan = diff(actual, intent.kernel)
        if self.rt.intent is not None:
            flushes = failover(self.rt.intent.uplinks, intent.uplinks, mask=self.config.kernel.mark_mask)
            plan = Plan(plan.ops + flushes)
        return intent, plan

    def _adopt(self, actual: KernelState) -> None:
        """At start: uplinks already in the kernel's balance group stay in service until their
        probes say otherwise, so a restart neither moves nor drops anything."""
        base = self.config.kernel.nexthop_base
        by_table = {up.table: name for name, up in self.config.uplinks.items()}
        for group in actual.groups.values():
            for m in group.members:
                name = by_table.get((m.id - base) // 2)
                if name is not None:
                    self._adopted.add(name)

    def _health(self) -> dict[str, HealthVerdict]:
        """Verdicts from the probers; an uplink with targets but no verdict yet is unknown,
        unless it was in service when we started (then it is up until probed otherwise)."""
        health = {
            name: HealthVerdict(Health.UP, ADOPTED)
            if name in self._adopted
            else HealthVerdict(Health.UNKNOWN, "not probed yet")
            for name, up in self.config.uplinks.items()
            if up.probe.targets
        }
        health.update({k: v for k, v in self.rt.health.items() if k in health})
        return health

    def _intent(self, observed: Observed) -> Intent:
        return desired(
            self.config,
            observed,
            health=self._health(),
            drained=frozenset(self.rt.drained),
            leases=self.rt.leases,
            previous={s.name: s.ifindex for s in self.rt.intent.uplinks if s.ifindex is not None}
            if self.rt.intent
            else None,
        )

    async def reconcile(self) -> ApplyResult:
        async with self._lock:
            intent, plan = await self.compute()
            self.rt.plan = plan
            self.rt.passes += 1
            if self.rt.paused:  # after flush: watch, but neither write nor keep score
                self.rt.result = ApplyResult()
                return self.rt.result
            self._record(intent)
            self._sync_dhcp(intent)
            if not plan:
                self.rt.result = ApplyResult()
            else:
                self.rt.result = await self.kernel.apply(plan)
                self.rt.writes += len(self.rt.result.done)
            # after the writes: a probe sent before its uplink's route exists is lost
            self._sync_probers(intent)
            return self.rt.result

    def _record(self, intent: Intent) -> None:
        now, wall = time.monotonic(), time.time()
        before = {s.name: s for s in self.rt.intent.uplinks} if self.rt.intent else {}
        for s in intent.uplinks:
            old = before.get(s.name)
            if old is None or old.state != s.state:
                self.rt.since[s.name] = now
                ev = Event(wall, s.name, old.state if old else None, s.state, s.reason)
                self.rt.events.append(ev)
                if old is not None:
                    self._hook(ev, s.dev)
                level = logging.INFO if old is not None or s.state != State.ABSENT else logging.DEBUG
                log.log(
                    level, "uplink %s: %s → %s (%s)", s.name, old.state if old else "-", s.state, s.reason
                )
        self.rt.intent = intent

    def _sync_probers(self, intent: Intent) -> None:
        """One prober per ready uplink that has probe targets; none for the others."""
        wanted: dict[str, tuple[str, int, Probe]] = {}
        for s in intent.uplinks:
            probe = self.config.uplinks[s.name].probe
            if s.ready and s.dev is not None and probe.targets:
                wanted[s.name] = (s.dev, s.mark, probe)
        for name, (prober, task) in list(self.probers.items()):
            if wanted.get(name) != prober.key:
                task.cancel()
                del self.probers[name]
                self.rt.health.pop(name, None)
        for name, (dev, mark, probe) in wanted.items():
            if name in self.probers or self._tasks is None:
                continue
            adopted = name in self._adopted
            self._adopted.discard(name)
            prober = Prober(
                name=name, dev=dev, mark=mark, probe=probe, on_verdict=self._verdict, adopted=adopted
            )
            task = self._tasks.create_task(self._guard(f"probe {name}", prober.run()))
            self.probers[name] = (prober, task)

    def _lease_file(self, name: str) -> Path:
        return self.config.control.state_dir / f"{name}.lease.json"

    def _sync_dhcp(self, intent: Intent) -> None:
        """One DHCP client per present `dhcp` uplink whose interface is up with carrier; it
        keeps running through carrier flaps and stops when the interface goes away."""
        wanted: dict[str, tuple[str, Path, str | None]] = {}
        for s in intent.uplinks:
            addr = self.config.uplinks[s.name].address
            if addr.mode != "dhcp":
                continue
            if s.dev is None:
                # a stick that is not plugged in has no lease in force (its file stays, so a
                # replug asks for the same address again)
                if self.rt.leases.pop(s.name, None) is not None:
                    self.wake.set()
                continue
            running = self.dhcp.get(s.name)
            if s.link_ready or (running is not None and running[0].dev == s.dev):
                wanted[s.name] = (s.dev, self._lease_file(s.name), addr.hostname)
        for name, (client, task) in list(self.dhcp.items()):
            if wanted.get(name) != client.key:
                task.cancel()
                del self.dhcp[name]
                if self.rt.leases.pop(name, None) is not None:
                    self.wake.set()
        for name, (dev, path, hostname) in wanted.items():
            if name in self.dhcp or self._tasks is None:
                continue
            client = DhcpClient(name=name, dev=dev, state_file=path, hostname=hostname, on_lease=self._lease)
            self.dhcp[name] = (client, self._tasks.create_task(self._guard(f"dhcp {name}", client.run())))
            log.info("%s: DHCP client started on %s", name, dev)

    def _lease(self, name: str, lease: Lease | None, why: str) -> None:
        if self.rt.leases.get(name) == lease:
            return
        if lease is None:
            self.rt.leases.pop(name, None)
            log.info("%s: no lease (%s)", name, why)
        else:
            self.rt.leases[name] = lease
            log.info("%s: lease %s via %s (%s)", name, lease.address, lease.gateway or "point-to-point", why)
        self.wake.set()

    def _verdict(self, name: str, verdict: HealthVerdict) -> None:
        """Record a prober's verdict; only a change of health or weight needs a pass (the
        reason text changes every round, with the RTT in it)."""
        old = self.rt.health.get(name)
        self.rt.health[name] = verdict
        if old is None or (old.health, old.weight_factor) != (verdict.health, verdict.weight_factor):
            self.wake.set()

    def _hook(self, event: Event, dev: str | None) -> None:
        hook = self.config.hooks.on_change
        if hook is None or self._tasks is None:
            return
        env = {
            **os.environ,
            "UPLINKD_UPLINK": event.uplink,
            "UPLINKD_STATE": str(event.new),
            "UPLINKD_OLD_STATE": str(event.old or ""),
            "UPLINKD_REASON": event.reason,
            "UPLINKD_DEV": dev or "",
        }
        self._tasks.create_task(self._run_hook(hook, env))

    async def _run_hook(self, hook: Path, env: dict[str, str]) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(str(hook), env=env, stdin=asyncio.subprocess.DEVNULL)
        except OSError as e:
            log.warning("hook %s could not start: %s", hook, e)
            return
        try:
            code = await asyncio.wait_for(proc.wait(), self.config.hooks.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            log.warning("hook %s killed after %gs", hook, self.config.hooks.timeout)
            return
        if code != 0:
            log.warning("hook %s exited %d for %s", hook, code, env["UPLINKD_UPLINK"])

    # --- commands ---------------------------------------------------------------------------

    def summary(self) -> str:
        if self.rt.intent is None:
            return "starting"
        ups = self.rt.intent.uplinks
        in_group = [s.name for s in ups if s.in_group]
        text = f"{len(in_group)}/{len(ups)} uplinks in service"
        if in_group:
            text += f" ({', '.join(in_group)})"
        if self.rt.paused:
            text += "; PAUSED after flush"
        if self.rt.result.failed:
            text += f"; {len(self.rt.result.failed)} writes failing"
        return text

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        ups = self.rt.intent.uplinks if self.rt.intent else ()
        return {
            "version": __version__,
            "paused": self.rt.paused,
            "summary": self.summary(),
            "uplinks": [
                {
                    **_status_json(s, now - self.rt.since.get(s.name, now)),
                    # the latest round's words (a new verdict's reason alone does not re-plan)
                    "reason": self.rt.health[s.name].reason
                    if s.ready and s.name in self.rt.health
                    else s.reason,
                    "probe": self._probe_json(s.name, now),
                }
                for s in ups
            ],
            "balance": {
                "table": self.config.balance.table,
                "ipv4": self.rt.intent.balance_reason.get(socket.AF_INET) if self.rt.intent else None,
                "ipv6": self.rt.intent.balance_reason.get(socket.AF_INET6) if self.rt.intent else None,
            },
            "pending": [str(op) for op in self.rt.plan.ops] if self.rt.paused else [],
            "failures": [{"op": str(f.op), "error": f.error} for f in self.rt.result.failed],
            "events": [
                {"at": e.at, "uplink": e.uplink, "from": e.old, "to": e.new, "reason": e.reason}
                for e in list(self.rt.events)[-20:]
            ],
            "passes": self.rt.passes,
            "writes": self.rt.writes,
        }

    def _probe_json(self, name: str, now: float) -> dict[str, Any] | None:
        probe = self.config.uplinks[name].probe if name in self.config.uplinks else None
        if probe is None or not probe.targets:
            return None
        entry = self.probers.get(name)
        tracker = entry[0].tracker if entry else None
        return {
            "method": probe.method,
            "targets": list(probe.targets),
            "health": str(tracker.health) if tracker else "unknown",
            "loss_pct": round(tracker.loss * 100, 1) if tracker else None,
            "rtt_ms": round(tracker.rtt * 1000, 2) if tracker and tracker.rtt is not None else None,
            "suspicious": tracker.suspicious if tracker else False,
            "bytes_per_minute": entry[0].bytes_per_minute(now) if entry else 0,
        }

    async def reload(self) -> str | None:
        """Re-read the config. An invalid one keeps the running config; returns the error."""
        if self.config_path is None:
            return "no config file to reload"
        try:
            config = load(self.config_path)
        except ConfigError as e:
            log.error("reload: keeping the running config; %s is invalid:\n%s", self.config_path, e)
            return str(e)
        if config.kernel != self.config.kernel:
            why = (
                "kernel: protocol, nexthop_base, mark_mask and nft_table say what uplinkd owns; "
                "changing them live would orphan what it made. Run `uplinkctl flush`, then restart"
            )
            log.error("reload: keeping the running config; %s", why)
            return why
        async with self._lock:
            self.config = config
            self.kernel.config = config
            self.kernel.nft_stale = True
            self.rt.drained &= set(config.uplinks)
        log.info("reload: %s loaded (%d uplinks)", self.config_path, len(config.uplinks))
        self.wake.set()
        return None

    async def flush(self) -> dict[str, Any]:
        async with self._lock:
            result = await self.kernel.teardown()
            self.rt.paused = True
            # hands off: probes would fail without our rules and report every uplink down
            for _, task in self.probers.values():
                task.cancel()
            self.probers.clear()
            self.rt.health.clear()
        return {"removed": [str(op) for op in result.done], "failed": [f.error for f in result.failed]}

    async def _handle_safely(self, line: bytes) -> bytes:
        """A request must never take the daemon down: anything unexpected is logged, reported
        to the client, and the daemon carries on."""
        try:
            return await self.handle(line)
        except Exception as e:
            log.exception("control request failed: %r", line[:200])
            return control.reply(False, error=f"internal error: {type(e).__name__}: {e}")

    async def handle(self, line: bytes) -> bytes:
        try:
            req = control.parse_request(line)
        except control.BadRequest as e:
            return control.reply(False, error=str(e))
        if isinstance(req, control.Status):
            return control.reply(True, self.status())
        if isinstance(req, control.PlanReq):
            async with self._lock:  # one netlink conversation at a time on our socket
                _, plan = await self.compute()
            return control.reply(True, {"ops": [str(op) for op in plan.ops], "paused": self.rt.paused})
        if isinstance(req, control.Drain):
            if req.uplink not in self.config.uplinks:
                known = ", ".join(self.config.uplinks) or "none configured"
                return control.reply(False, error=f"uplink: {req.uplink!r} is not configured; known: {known}")
            if req.command == "drain":
                self.rt.drained.add(req.uplink)
            else:
                self.rt.drained.discard(req.uplink)
            log.info("%s %s by request", req.command, req.uplink)
            await self.reconcile()
            return control.reply(True, self.status())
        if isinstance(req, control.Flush):
            return control.reply(True, await self.flush())
        if isinstance(req, control.Resume):
            self.rt.paused = False
            await self.reconcile()
            return control.reply(True, self.status())
        if isinstance(req, control.Reload):
            error = await self.reload()
            return control.reply(error is None, self.status() if error is None else None, error)
        assert isinstance(req, control.Explain)
        async with self._lock:
            return control.reply(True, (await self._explain(req)).as_dict())

    async def _explain(self, req: control.Explain) -> explain_mod.Explanation:
        by_dev = {s.dev: s.name for s in (self.rt.intent.uplinks if self.rt.intent else ()) if s.dev}
        return await explain_mod.explain(
            self.kernel.ipr,
            dst=req.dst,
            src=req.src,
            iif=req.iif,
            mark=req.mark,
            ipproto=req.ipproto,
            sport=req.sport,
            dport=req.dport,
            uplinks_by_dev=by_dev,
        )

    async def _serve(self) -> asyncio.AbstractServer:
        path = self.socket_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await self.first_pass.wait()  # before it, status would say "no uplinks"
                line = await reader.readline()
                if len(line) > control.MAX_REQUEST:
                    answer = control.reply(False, error="request too large")
                else:
                    answer = await self._handle_safely(line)
                writer.write(answer)
                await writer.drain()
            except (ConnectionError, asyncio.LimitOverrunError, ValueError) as e:
                log.debug("control client: %s", e)
            finally:
                writer.close()

        server = await asyncio.start_unix_server(client, path=str(path), limit=control.MAX_REQUEST)
        os.chmod(path, 0o660)
        return server


def _status_json(s: UplinkStatus, age: float) -> dict[str, Any]:
    return {
        "name": s.name,
        "state": str(s.state),
        "reason": s.reason,
        "since_s": round(age, 3),
        "dev": s.dev,
        "ifindex": s.ifindex,
        "addresses": [str(a) for a in s.addresses],
        "gateway4": str(s.gateway4) if s.gateway4 else None,
        "gateway6": str(s.gateway6) if s.gateway6 else None,
        "table": s.table,
        "mark": s.mark,
        "weight": s.weight,
        "in_group": s.in_group,
        "drained": s.drained,
    }


def setup_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    under_systemd = "JOURNAL_STREAM" in os.environ or "INVOCATION_ID" in os.environ
    handler: logging.Handler | None = None
    if under_systemd:
        try:
            from systemd.journal import JournalHandler  # noqa: PLC0415 - optional dependency

            handler = JournalHandler(SYSLOG_IDENTIFIER="uplinkd")
        except ImportError:
            handler = None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        fmt = "%(levelname)s %(message)s" if under_systemd else "%(asctime)s %(levelname)s %(message)s"
        handler.setFormatter(logging.Formatter(fmt))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("pyroute2").setLevel(logging.WARNING)
    # its DHCP client logs an ERROR on every unplug ("network is down"); ours logs the restart
    logging.getLogger("pyroute2.dhcp").setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uplinkd", description="multi-uplink routing controller")
    parser.add_argument("--config", type=Path, required=True, help="config file (JSON or TOML)")
    parser.add_argument("--socket", type=Path, help="control socket (default: from the config)")
    parser.add_argument("--verbose", "-v", action="store_true")
    parser.add_argument("--version", action="version", version=__version__)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        config = load(args.config)
    except ConfigError as e:
        log.error("%s is invalid:\n%s", args.config, e)
        return 2
    socket_path = args.socket or config.control.socket

    async def run() -> None:
        await Controller(config, args.config, socket_path).run()

    try:
        asyncio.run(run())
    except Exception:  # a task died: it was logged; exit non-zero so systemd restarts us
        log.exception("uplinkd failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
