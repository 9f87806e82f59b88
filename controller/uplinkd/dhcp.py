"""DHCPv4 for uplinks in `dhcp` mode: pyroute2's asyncio client, run by the controller.

Why this client: it is the DHCP implementation of the netlink library we already use, runs
in our event loop (no extra process to supervise, no scripts), and speaks through a raw
socket, so it works before the interface has an address and ignores our policy rules.
It handles renew, rebind, expiry and NAK itself; we only listen to its hooks.

The client never touches the kernel. A lease is a fact: it is recorded and wakes the
loop, and the planner puts the address on the interface and the default route into the
uplink's own table — never into main, so no DHCP client fights over main's default route.

Leases are kept in the state directory, so a restarted controller asks for the same
lease again (INIT-REBOOT) and, meanwhile, keeps the address it had: a restart changes
nothing in the kernel. `DhcpWorkers` says which uplinks run a client and records leases.

A stick's own DHCP server often starts a moment after the USB device appears, so the first
DISCOVERs go unanswered. pyroute2 repeats a request after 4 s, then 4-8 s, ... (RFC 2131
§4.1), which left such a stick unused for 4-14 s. While it looks for a lease, our client
repeats itself within a second instead (`Retransmission`), through ClientConfig's
`retransmission` hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from pyroute2.dhcp.client import AsyncDHCPClient, ClientConfig
from pyroute2.dhcp.fsm import State
from pyroute2.dhcp.hooks import Hook, Trigger
from pyroute2.dhcp.leases import Lease as PyLease

from uplinkd.model import Lease
from uplinkd.plan import Intent
from uplinkd.runtime import Runtime
from uplinkd.workers import WorkerKind

log = logging.getLogger("uplinkd.dhcp")

RETRY_MIN, RETRY_MAX = 1.0, 30.0

LOOKING = frozenset({State.SELECTING, State.REQUESTING, State.REBOOTING})
"""States in which the client has no lease in force and the uplink waits for one."""


@dataclass(frozen=True)
class Retransmission:
    """How long to wait for an answer before sending a DHCP request again.

    RFC 2131 §4.1: wait 4 s, then 8, 16, ... up to 64 s, each randomized by ±1 s. That suits
    a server that lost a packet; it does not suit a stick whose server comes up a second
    after the device does, which is when a client looks for a lease (DISCOVER, a REQUEST
    for an offer, INIT-REBOOT). Then the waits start at `first` and grow by `growth` until
    they reach `rfc_first`; from there they double as the RFC's, up to `cap` (pyroute2's
    own cap), for as long as nobody answers. A client with a lease in force (renewing,
    rebinding) follows the RFC's from the start.

    Every wait is randomized by ±`jitter` of itself, at most ±1 s (the RFC's), so clients
    that came up together do not stay in step.
    """

    first: float = 0.25
    growth: float = math.sqrt(2)
    rfc_first: float = 4.0
    cap: float = 32.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if not (0 < self.first <= self.rfc_first <= self.cap and self.growth > 1 and 0 <= self.jitter < 1):
            raise ValueError(f"{self}: need 0 < first <= rfc_first <= cap, growth > 1, 0 <= jitter < 1")

    def base(self, *, looking: bool) -> Iterator[float]:
        """The waits before randomization, for ever."""
        delay = self.first if looking else self.rfc_first
        while delay < self.rfc_first * (1 - 1e-9):  # not a second wait of ~rfc_first
            yield delay
            delay *= self.growth
        delay = self.rfc_first
        while True:
            yield delay
            delay = min(delay * 2, self.cap)

    def waits(self, *, looking: bool, rng: random.Random | None = None) -> Iterator[float]:
        """The randomized waits, for ever."""
        uniform = (rng or random).uniform
        for delay in self.base(looking=looking):
            spread = min(delay * self.jitter, 1.0)
            yield uniform(delay - spread, delay + spread)


RETRANSMISSION = Retransmission()


@dataclass
class _StoredLease(PyLease):  # type: ignore[misc]
    """A pyroute2 lease kept as JSON in our state directory, one file per uplink."""

    path: ClassVar[Path]

    def dump(self) -> None:
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, interface: str) -> _StoredLease | None:
        try:
            lease = cls(**json.loads(cls.path.read_text()))
            return None if lease.expired else lease
        except (OSError, ValueError, TypeError, LookupError, AttributeError):  # missing or mangled
            return None


def lease_class(path: Path) -> type[_StoredLease]:
    return type(f"Lease_{path.stem}", (_StoredLease,), {"path": path})


def to_lease(lease: Any) -> Lease | None:
    """Our view of a pyroute2 lease: address/prefix and the first router (None: none given).

    pyroute2 raises MissingOptionError, a LookupError (not a KeyError), for an option the
    server did not send; uncaught, it would end the hook and the lease would never be used."""
    try:
        address = ipaddress.IPv4Interface(f"{lease.ip}/{lease.prefixlen}")
    except (ValueError, LookupError, TypeError, AttributeError):
        return None
    try:
        routers = lease.routers or []
    except (LookupError, AttributeError):
        routers = []
    gateway = ipaddress.IPv4Address(routers[0]) if routers else None
    return Lease(address=address, gateway=gateway)


def stored_lease(path: Path) -> Lease | None:
    """A lease left by a previous run, if it has not expired (used at start)."""
    loaded = lease_class(path).load("")
    return to_lease(loaded) if loaded is not None else None


class DhcpClient:
    """Keeps a lease for one uplink's interface for as long as it is present."""

    def __init__(
        self,
        *,
        name: str,
        dev: str,
        state_file: Path,
        hostname: str | None,
        on_lease: Callable[[str, Lease | None, str], None],
    ) -> None:
        self.name = name
        self.dev = dev
        self.state_file = state_file
        self.hostname = hostname
        self.on_lease = on_lease
        self.bound_at: float | None = None
        self._client: AsyncDHCPClient | None = None

    async def _bound(self, lease: Any) -> None:
        ours = to_lease(lease)
        self.bound_at = time.monotonic()
        self.on_lease(self.name, ours, "bound" if ours else "lease without an address")

    async def _lost(self, lease: Any) -> None:
        self.state_file.unlink(missing_ok=True)
        self.on_lease(self.name, None, "lease expired or refused")

    def _waits(self) -> Iterator[float]:
        """ClientConfig.retransmission: called by pyroute2's sender with no arguments each
        time it starts sending a new message, after the state change that message goes with;
        so the client's state says whether it is looking for a lease."""
        client = self._client
        return RETRANSMISSION.waits(looking=client is None or client.state in LOOKING)

    def _config(self) -> ClientConfig:
        kwargs: dict[str, Any] = {}
        if self.hostname is not None:
            kwargs["host_name"] = self.hostname
        return ClientConfig(
            interface=self.dev,
            lease_type=lease_class(self.state_file),
            hooks=(
                Hook(self._bound, {Trigger.BOUND, Trigger.RENEWED, Trigger.REBOUND}),
                Hook(self._lost, {Trigger.UNBOUND, Trigger.EXPIRED}),
            ),
            handle_signals=False,  # the daemon owns its signals
            write_pidfile=False,
            release=False,  # fail static: a stopping controller keeps the lease in use
            vendor_id="uplinkd",
            retransmission=self._waits,
            **kwargs,
        )

    async def _expire_stored(self, stored: PyLease, started: float) -> None:
        """A lease loaded from the state file is one pyroute2 arms no timer for: it asks for
        it again (INIT-REBOOT) and, if nobody answers, falls back to DISCOVER without a hook.
        So we let it go ourselves when it runs out, unless a lease was bound since."""
        try:
            left = stored.expiration_in
        except LookupError:  # no lease time: pyroute2 does not take such leases
            return
        if left is None:  # infinite
            return
        await asyncio.sleep(max(0.0, left))
        if self.bound_at is None or self.bound_at < started:
            await self._lost(stored)

    async def _session(self) -> None:
        """One AsyncDHCPClient, for as long as its socket works."""
        started = time.monotonic()
        stored = lease_class(self.state_file).load(self.dev)
        if stored is None:
            # nothing stored, or it ran out: a lease kept from before (adopted at start) is gone
            self.on_lease(self.name, None, "no stored lease")
        expiry = asyncio.create_task(self._expire_stored(stored, started)) if stored is not None else None
        try:
            self._client = AsyncDHCPClient(self._config())
            async with self._client as client:
                await client.bootstrap()
                # pyroute2's receiver and sender tasks end, logging only, when the interface
                # goes down (ENETDOWN), and the client then hears nothing for ever: start anew.
                tasks = (getattr(client, "_receiver_task", None), getattr(client, "_sender_task", None))
                workers = [task for task in tasks if isinstance(task, asyncio.Task)]
                if workers:
                    await asyncio.wait(workers, return_when=asyncio.FIRST_COMPLETED)
                else:  # another pyroute2: nothing to watch
                    await asyncio.Event().wait()
        finally:
            self._client = None
            if expiry is not None:
                expiry.cancel()
        raise OSError(errno.ENETDOWN, "its socket stopped (interface down)")

    async def run(self) -> None:
        retry = RETRY_MIN
        while True:
            began = time.monotonic()
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except OSError as e:  # the interface went down or away, or is not up yet
                log.info(
                    "%s: DHCP client on %s stopped (%s); retrying in %.0fs", self.name, self.dev, e, retry
                )
            except (ValueError, RuntimeError) as e:  # a malformed packet or a state the client refused
                log.warning(
                    "%s: DHCP client on %s failed (%s); retrying in %.0fs", self.name, self.dev, e, retry
                )
            await asyncio.sleep(retry)
            # a client that ran for a while starts again at once; one that keeps failing backs off
            retry = RETRY_MIN if time.monotonic() - began > RETRY_MAX else min(retry * 2, RETRY_MAX)


@dataclass(frozen=True)
class DhcpSpec:
    dev: str
    state_file: Path
    hostname: str | None


class DhcpWorkers(WorkerKind[DhcpSpec, DhcpClient]):
    """One DHCP client per present `dhcp` uplink whose interface is up with carrier; it
    keeps running through carrier flaps and stops when the interface goes away."""

    name = "dhcp"

    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt)
        for name, uplink in rt.config.uplinks.items():
            if uplink.address.mode == "dhcp" and (lease := stored_lease(rt.lease_file(name))):
                rt.leases[name] = lease  # adopt what the last run had: a restart changes nothing

    def wanted(self, intent: Intent, running: Mapping[str, DhcpSpec]) -> dict[str, DhcpSpec]:
        wanted: dict[str, DhcpSpec] = {}
        for s in intent.uplinks:
            uplink = self.rt.config.uplinks[s.name]
            addr = uplink.address
            if addr.mode != "dhcp" or "ipv4" not in uplink.families:
                continue  # an IPv6-only uplink (`families`) asks for no DHCPv4 lease
            if s.dev is None:
                # a stick that is not plugged in has no lease in force (its file stays, so a
                # replug asks for the same address again)
                self._forget(s.name)
                continue
            now = running.get(s.name)
            if s.link_ready or (now is not None and now.dev == s.dev):
                wanted[s.name] = DhcpSpec(s.dev, self.rt.lease_file(s.name), addr.hostname)
        return wanted

    def make(self, name: str, spec: DhcpSpec) -> DhcpClient:
        log.info("%s: DHCP client started on %s", name, spec.dev)
        return DhcpClient(
            name=name, dev=spec.dev, state_file=spec.state_file, hostname=spec.hostname, on_lease=self._lease
        )

    def stopped(self, name: str) -> None:
        self._forget(name)

    def _forget(self, name: str) -> None:
        if self.rt.leases.pop(name, None) is not None:
            self.rt.wake.set()

    def _lease(self, name: str, lease: Lease | None, why: str) -> None:
        if self.rt.leases.get(name) == lease:
            return
        if lease is None:
            self.rt.leases.pop(name, None)
            log.info("%s: no lease (%s)", name, why)
        else:
            self.rt.leases[name] = lease
            log.info("%s: lease %s via %s (%s)", name, lease.address, lease.gateway or "point-to-point", why)
        self.rt.wake.set()
