"""uplinkd, the daemon: one loop that keeps the kernel in step with the world.

    event sources ──wake──► reconcile: read kernel → desired() → diff() → apply()

Event sources (netlink, nftables, udev, timers, signals, the control socket, the workers:
probers and DHCP clients) only record facts and set `wake`. `reconcile` is the single path
to the kernel. Every task is started in one TaskGroup; if one of the daemon's own dies
unexpectedly the daemon logs it and exits non-zero so systemd restarts it (a worker that
dies is restarted by the supervisor instead). On SIGTERM it leaves the kernel as it is
(fail static: traffic keeps flowing through a restart) and adopts it again on start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from typing import Any

from uplinkd import __version__, control_server, hooks, instance, meter, usage
from uplinkd.advertiser import AdvertSenders
from uplinkd.adverts import AdvertListeners
from uplinkd.config import Config, ConfigError, load
from uplinkd.dhcp import DhcpWorkers
from uplinkd.instance import SetupError
from uplinkd.kernel.state import ApplyResult, Kernel
from uplinkd.kernel.watch import (
    NETLINK_NETFILTER,
    NETLINK_ROUTE,
    NFNLGRP_NFTABLES,
    ROUTING_GROUPS,
    NetlinkWatch,
)
from uplinkd.logs import RepeatLimit
from uplinkd.model import Observed
from uplinkd.modem import ModemWorkers
from uplinkd.ndproxy import NeighbourProxies
from uplinkd.pd import PdWorkers
from uplinkd.plan import Facts, Intent, Plan, adopt, desired, step
from uplinkd.probes import ProbeWorkers
from uplinkd.runtime import Runtime
from uplinkd.status import render, summary
from uplinkd.tunnels import TunnelWorkers, remove_interfaces
from uplinkd.udev import UdevWatch, enrich
from uplinkd.workers import Supervisor, WorkerKind

log = logging.getLogger("uplinkd")

DEBOUNCE = 0.005  # coalesce a burst of netlink events into one pass
RETRY_MIN, RETRY_MAX = 0.1, 5.0

# Every kind of worker the daemon runs, synced in this order after each pass (workers.py).
WORKERS: tuple[type[WorkerKind[Any, Any]], ...] = (
    DhcpWorkers,
    PdWorkers,
    AdvertListeners,
    AdvertSenders,
    NeighbourProxies,
    ModemWorkers,
    ProbeWorkers,
    TunnelWorkers,
    meter.MeterWorkers,
)


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

    async def watchdog(self) -> None:
        assert self.watchdog_interval is not None
        while True:
            self.send(watchdog="1")
            await asyncio.sleep(self.watchdog_interval)


class Controller:
    """The loop: wakes on a fact, plans, writes, then syncs the workers to the new intent."""

    def __init__(self, config: Config, config_path: Path | None, listener: socket.socket) -> None:
        self.rt = Runtime(config)
        self.rt.usage = usage.load(self.rt.usage_file)  # metered uplinks' bytes, kept across restarts
        self.rt.spent = meter.spent(self.rt, time.time())
        self.config_path = config_path
        self.listener = listener  # bound and listening (control_server.listen)
        self.kernel = Kernel(config)
        self.kernel.conntrack_flushed = self.rt.counters.conntrack_flushed  # counted as it flushes
        self.notifier = Notifier()
        self.lock = asyncio.Lock()  # one pass, or one netlink conversation, at a time
        self.first_pass = asyncio.Event()
        self.workers = Supervisor([kind(self.rt) for kind in WORKERS])
        self.udev = UdevWatch(self.poke)
        self._retry = RETRY_MIN
        self._tasks: asyncio.TaskGroup | None = None

    @property
    def config(self) -> Config:
        return self.rt.config

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
        server = control_server.Server(self, self.listener, limit=control_server.client_limit(nofile_limit()))

        async def until_stopped() -> None:
            await stop.wait()
            log.info("stopping; the kernel is left as it is")
            raise _Stop

        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                self.workers.start_in(tasks)
                tasks.create_task(self._guard("control socket", server.run()))
                tasks.create_task(self._guard("reconcile", self._reconcile_loop()))
                tasks.create_task(self._guard("resync", self._resync_loop()))
                if self.notifier.watchdog_interval:
                    tasks.create_task(self._guard("watchdog", self.notifier.watchdog()))
                tasks.create_task(until_stopped())
        except* _Stop:
            pass
        finally:
            for w in watches:
                w.stop()
            self.udev.stop()
            self.kernel.close()

    async def _guard(self, name: str, coro: Awaitable[object]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("task %s died; exiting so the service manager restarts us", name)
            raise

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._tasks is None:
            coro.close()
        else:
            self._tasks.create_task(coro)

    def _sighup(self) -> None:
        self._spawn(self._guard("reload", self.reload()))  # an invalid config is logged, not used

    def _nft_changed(self, why: str) -> None:
        self.kernel.nft_changed()
        self.rt.wake.set()

    def poke(self, why: str = "") -> None:
        self.rt.wake.set()

    async def _reconcile_loop(self) -> None:
        wake = self.rt.wake
        wake.set()
        first = True
        while True:
            await wake.wait()
            await asyncio.sleep(DEBOUNCE)
            wake.clear()
            result = await self.reconcile()
            if first:
                self.first_pass.set()
                self.notifier.send(ready="1", status=summary(self.rt))
                first = False
            else:
                self.notifier.send(status=summary(self.rt))
            if result.failed and any(f.transient for f in result.failed):
                # retry later, but stay awake for events meanwhile (a plug may be what fixes it)
                asyncio.get_running_loop().call_later(self._retry, wake.set)
                self._retry = min(self._retry * 2, RETRY_MAX)
            else:
                self._retry = RETRY_MIN

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.control.resync_interval)
            self._nft_changed("resync")

    async def compute(self) -> tuple[Intent, Plan]:
        observed, actual = await self.kernel.read()
        if self.rt.intent is None:
            self.rt.adopted |= adopt(self.config, actual)
        intent = desired(self.config, self._facts(enrich(observed, self.udev.facts)))
        return intent, step(
            actual, intent, before=self.rt.intent, mask=self.config.kernel.mark_mask, config=self.config
        )

    def _facts(self, observed: Observed) -> Facts:
        return Facts(
            observed=observed,
            health=self.rt.verdicts(),
            drained=frozenset(self.rt.drained),
            spent=self.rt.spent,
            leases=self.rt.leases,
            tunnels=self.rt.tunnels,
            bearers=self.rt.bearers,
            adverts=self.rt.adverts,
            delegations=self.rt.delegations,
            leases6=self.rt.leases6,
            previous={s.name: s.ifindex for s in self.rt.intent.uplinks if s.ifindex is not None}
            if self.rt.intent
            else {},
        )

    async def reconcile(self) -> ApplyResult:
        async with self.lock:
            started = time.monotonic()
            intent, plan = await self.compute()
            self.rt.plan = plan
            self.rt.passes += 1
            if self.rt.paused:  # after flush: watch, but neither write nor keep score
                self.rt.result = ApplyResult()
                return self.rt.result
            for event in self.rt.record(intent):
                hooks.fire(self.config.hooks, event, spawn=self._spawn)
            self.workers.sync(intent, after_writes=False)
            if not plan:
                self.rt.result = ApplyResult()
            else:
                self.rt.result = await self.kernel.apply(plan)
                self.rt.writes += len(self.rt.result.done)
            self.workers.sync(intent, after_writes=True)
            done, failed = len(self.rt.result.done), len(self.rt.result.failed)
            self.rt.counters.pass_done(seconds=time.monotonic() - started, writes=done, failed=failed)
            return self.rt.result

    # --- commands (the control socket's requests are in control_server.py) ----------------------

    def status(self) -> dict[str, Any]:
        return render(
            self.rt,
            probers=self.workers.running(ProbeWorkers),
            modems=self.workers.running(ModemWorkers),
            senders=self.workers.running(AdvertSenders),
        )

    async def reload(self) -> str | None:
        """Re-read the config. An invalid one keeps the running config; returns the error."""
        if self.config_path is None:
            return "no config file to reload"
        config = _reloadable(self.config_path, running=self.config)
        self.rt.counters.config_loaded(not isinstance(config, str))
        if isinstance(config, str):
            return config
        async with self.lock:
            self.rt.config = config
            self.kernel.reconfigure(config)
            self.rt.drained &= set(config.uplinks)
        log.info("reload: %s loaded (%d uplinks)", self.config_path, len(config.uplinks))
        self.rt.wake.set()
        return None

    async def flush(self) -> dict[str, Any]:
        async with self.lock:
            result = await self.kernel.teardown()
            self.rt.paused = True
            # hands off: probes would fail without our rules and report every uplink down
            self.workers.stop(needs_our_routes=True)
            self.rt.health.clear()
            gone = await remove_interfaces(self.config.tunnels)  # wireguard-go ends with its interface
        return {"removed": [str(op) for op in result.done] + gone, "failed": [f.error for f in result.failed]}


def _reloadable(path: Path, *, running: Config) -> Config | str:
    """The config at `path` if the running daemon can switch to it; else the error (logged)."""
    try:
        config = load(path)
    except ConfigError as e:
        log.error("reload: keeping the running config; %s is invalid:\n%s", path, e)
        return str(e)
    if config.kernel != running.kernel:
        why = (
            "kernel: protocol, nexthop_base, mark_mask and nft_table say what uplinkd owns; "
            "changing them live would orphan what it made. Run `uplinkctl flush`, then restart"
        )
        log.error("reload: keeping the running config; %s", why)
        return why
    return config


def setup_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    under_systemd = "JOURNAL_STREAM" in os.environ or "INVOCATION_ID" in os.environ
    handler: logging.Handler | None = None
    if under_systemd:
        try:
            from systemd.journal import JournalHandler  # noqa: PLC0415 - optional dependency

            handler = JournalHandler(SYSLOG_IDENTIFIER="uplinkd")
            handler.setFormatter(logging.Formatter("%(message)s"))  # the level is PRIORITY already
        except ImportError:
            handler = None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        fmt = "%(levelname)s %(message)s" if under_systemd else "%(asctime)s %(levelname)s %(message)s"
        handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(RepeatLimit())  # no flood of one warning fills the journal
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
    socket_path: Path = args.socket or config.control.socket
    raise_nofile_limit()
    try:
        claim = instance.claim(config.control.state_dir)
    except SetupError as e:
        log.error("%s", e)
        return 1
    try:
        listener = control_server.listen(socket_path)
        bound = socket_path.lstat().st_ino  # the file we made, to remove at exit (only it)
    except SetupError as e:
        log.error("%s", e)
        claim.release()
        return 1

    async def run() -> None:
        await Controller(config, args.config, listener).run()

    try:
        asyncio.run(run())
    except Exception:  # a task died: it was logged; exit non-zero so systemd restarts us
        log.exception("uplinkd failed")
        return 1
    finally:
        listener.close()
        _remove_own_socket(socket_path, bound)
        claim.release()
    return 0


def _remove_own_socket(path: Path, inode: int) -> None:
    """Remove the socket file at `path` if it is still the one we made (inode `inode`), not
    one a newer daemon has put there since."""
    with contextlib.suppress(OSError):
        if path.lstat().st_ino == inode:
            path.unlink()


def nofile_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def raise_nofile_limit() -> None:
    """Raise the soft limit on open files to the hard one (the unit's LimitNOFILE): clients
    of the control socket are bounded, but probes and DHCP clients need descriptors too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as e:
        log.warning("cannot raise the open files limit from %d to %d (%s)", soft, hard, e)
        return
    log.debug("open files limit raised from %d to %d", soft, hard)


if __name__ == "__main__":
    sys.exit(main())
