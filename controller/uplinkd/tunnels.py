"""The tunnel worker: one per configured tunnel, it keeps the WireGuard device there and
configured, and records the tunnel's health (its peers' last handshake) for planning.

The device is kernel WireGuard where the kernel has it, else wireguard-go (`backend`:
"auto", "kernel", "wireguard-go"):

- kernel: the worker creates the `wireguard` link over rtnetlink, marked as uplinkd's by its
  alias (as VXLAN links are), and configures it over WireGuard's generic netlink API;
- wireguard-go: the worker starts `wireguard-go -f IF` in a session of its own, logging to a
  file in the state directory, and configures it over the userspace API.

Either way the worker does not remove the device when it is cancelled: a daemon restart
leaves the tunnel running (fail static), and the next worker adopts the device (the backend
is whichever holds it), writes only what differs (for the same config: nothing, so no new
handshake). `uplinkctl flush` removes the interface, which also ends wireguard-go.

The tunnel's routes, rules and addresses are planned by `plan.tunnels` and written by the
applier like everything else; the worker writes only the WireGuard configuration (keys,
peers, fwmark), which is the device's, not the routing's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from uplinkd.config import Tunnel
from uplinkd.kernel import resolver, wguapi
from uplinkd.kernel.state import Kernel
from uplinkd.kernel.wireguard import (
    WIREGUARD_GO,
    Held,
    KernelWg,
    UserspaceWg,
    WgBackend,
    WgError,
    apply,
    create_kernel_device,
    held_by,
    preshared_key_file,
    private_key_file,
    remove_devices,
    start_wireguard_go,
)
from uplinkd.model import HealthVerdict, State
from uplinkd.plan import Intent
from uplinkd.runtime import Runtime
from uplinkd.tunnel import dns
from uplinkd.tunnel.health import TunnelHealth, TunnelState, combined, judge
from uplinkd.tunnel.underlay import Ride, step
from uplinkd.tunnel.wireguard import (
    Endpoint,
    PeerUpdate,
    PublicKey,
    WgDevice,
    WgPeer,
    WgReading,
    WgUpdate,
)
from uplinkd.workers import WorkerKind

log = logging.getLogger("uplinkd.tunnels")

POLL_S = 1.0
RESOLVE_RETRY_S = 5.0  # an endpoint name that did not resolve is asked again this often
RERESOLVE_S = 15.0  # while the tunnel stays down, its endpoint names are asked again this often
START_TIMEOUT_S = 5.0


def device_of(tunnel: Tunnel, resolved: Mapping[str, Endpoint] | None = None) -> WgDevice:
    """The WireGuard device the config asks for (reads the key files: raises KeyFileError);
    an endpoint given as a name is where it last `resolved` to (unset until it has)."""
    peers = tuple(
        WgPeer(
            PublicKey.from_base64(p.public_key),
            preshared_key=preshared_key_file(p.preshared_key_file) if p.preshared_key_file else None,
            endpoint=p.endpoint_value or (resolved or {}).get(p.endpoint or ""),
            allowed_ips=frozenset(p.allowed_ips),
            keepalive=p.keepalive,
        )
        for p in tunnel.peers
    )
    return WgDevice(
        tunnel.interface,
        private_key=private_key_file(tunnel.private_key_file),
        listen_port=tunnel.listen_port,
        fwmark=tunnel.mark,
        peers=peers,
    )


def health_of(
    ifname: str,
    reading: WgReading,
    now: float,
    probed: HealthVerdict | None = None,
    *,
    probing: bool = False,
    previous: TunnelState | None = None,
    backend: str = "",
) -> TunnelHealth:
    """The tunnel's health on its own: its probes' verdict once they have one, else up while
    any peer's last handshake is fresh."""
    stats = sorted(reading.stats, key=lambda s: s.last_handshake or 0, reverse=True)
    best = stats[0] if stats else None
    up, why = judge(ifname, last_handshake=best.last_handshake if best else None, now=now)
    state, reason = combined(
        handshake_up=up,
        handshake_why=why,
        probed=str(probed.health) if probed is not None else ("unknown" if probing else None),
        probe_why=probed.reason if probed is not None else "",
        previous=previous,
    )
    return TunnelHealth(
        state=state,
        reason=reason,
        ifname=ifname,
        last_handshake=best.last_handshake if best else None,
        rx_bytes=sum(s.rx_bytes for s in reading.stats),
        tx_bytes=sum(s.tx_bytes for s in reading.stats),
        endpoint=str(best.endpoint) if best and best.endpoint else None,
        backend=backend,
    )


def read_now(ifname: str, *, socket_dir: Path = wguapi.SOCKET_DIR, timeout: float = 1.0) -> WgReading | None:
    """The device read synchronously (at start, before the first pass), or None."""
    path = wguapi.socket_path(ifname, socket_dir=socket_dir)
    if not path.exists():
        return read_kernel_now(ifname, timeout=timeout)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(b"get=1\n\n")
            data = b""
            while not data.endswith(b"\n\n") and len(data) < wguapi.MAX_REPLY:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        lines = [tuple(line.split("=", 1)) for line in data.decode().splitlines() if "=" in line]
        return wguapi.parse_get(ifname, [(k, v) for k, v in lines if k != "errno"])
    except (OSError, ValueError, wguapi.WgUapiError) as e:
        log.warning("%s: cannot read the WireGuard device at start (%s)", ifname, e)
        return None


def read_kernel_now(ifname: str, *, timeout: float = 1.0) -> WgReading | None:
    """A kernel WireGuard device read synchronously, or None (no such link, or no WireGuard in
    this kernel). The daemon's loop may be running in this thread: the read runs in another."""
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        return None

    async def read() -> WgReading | None:
        client = KernelWg()
        try:
            return await client.read(ifname)
        finally:
            client.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            return pool.submit(asyncio.run, read()).result(timeout)
        except (WgError, OSError, TimeoutError) as e:
            log.warning("%s: cannot read the WireGuard device at start (%s)", ifname, e or "timeout")
            return None


class TunnelWorker:
    def __init__(self, *, name: str, tunnel: Tunnel, log_dir: Path, rt: Runtime) -> None:
        self.name = name
        self.tunnel = tunnel
        self.log_dir = log_dir
        self.rt = rt
        self.backend: WgBackend = UserspaceWg()
        self.held: Held = "wireguard-go"
        self.proc: asyncio.subprocess.Process | None = None
        # set when the tunnel's underlay changed: WireGuard must forget the source address
        # and interface it learnt from the old uplink (wireguard-go pins both; the kernel
        # would route a pinned interface "on link" whatever the rules say)
        self.unstick = asyncio.Event()
        self.poke = asyncio.Event()  # a pass ran: look again now (verdicts, underlay)
        self.ride = Ride()
        self.resolved: dict[str, Endpoint] = {}  # endpoint "name:port" → where it resolved to
        self.resolved_at: float | None = None  # monotonic; None: never asked
        self.failing_since: float | None = None  # the tunnel's own health not working since
        self.resolving = ""  # what the last resolution said
        self.own: TunnelState | None = None  # the tunnel's own state at the last look

    async def run(self) -> None:
        ifname = self.tunnel.interface
        try:
            await self._open(ifname)
            while True:
                await self._maybe_resolve()
                desired = device_of(self.tunnel, self.resolved)
                if not (await apply(self.backend, desired)).empty:
                    self.rt.writes += 1  # counted with the kernel writes `status` reports
                reading = await self.backend.read(ifname)
                if reading is None:
                    raise WgError(f"{ifname}: the WireGuard device went away")
                health = health_of(
                    ifname, reading, time.time(), self.rt.tunnel_probes.get(self.name),
                    probing=bool(self.tunnel.probe.targets), previous=self.own, backend=self.held,
                )  # fmt: skip
                self.own = health.state
                now = time.monotonic()
                self.failing_since = None if health.up else (self.failing_since or now)
                if self.resolving:
                    health = replace(health, reason=f"{health.reason}; {self.resolving}")
                health = replace(health, resolved=tuple(sorted(self.resolved.items())))
                self._record(self._ridden(health))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.poke.wait(), POLL_S)
                self.poke.clear()
                if self.unstick.is_set():
                    self.unstick.clear()
                    await self._forget_sources(desired)
        finally:
            if isinstance(self.backend, KernelWg):
                self.backend.close()

    async def _open(self, ifname: str) -> None:
        """Adopt the device that is there, or make one with the configured backend."""
        wanted = self.tunnel.backend
        held = await held_by(ifname)
        if held is not None and wanted not in ("auto", held):
            raise WgError(
                f"tunnels.{self.name}.backend is {wanted!r} but {ifname} is a {held} device; "
                f"`uplinkctl flush` (removes it) and restart, or set backend to 'auto'"
            )
        if held is None and wanted in ("auto", "kernel"):
            if await create_kernel_device(ifname):
                held = "kernel"
            elif wanted == "kernel":
                raise WgError(
                    f"tunnels.{self.name}.backend is 'kernel' but this kernel has no WireGuard "
                    "(`modprobe wireguard` fails or the module is missing); set backend to 'auto' "
                    "or 'wireguard-go'"
                )
        if held == "kernel":
            self.backend, self.held = KernelWg(), "kernel"
            log.info("%s: %s is kernel WireGuard (generic netlink)", self.name, ifname)
            return
        self.backend, self.held = UserspaceWg(), "wireguard-go"
        if held is None:
            await self._start(ifname)

    def _ridden(self, health: TunnelHealth) -> TunnelHealth:
        """The tunnel's health with what its ride over a preference list adds: a healthy
        uplink it cannot pass is avoided (the tunnel degraded, not down, while the next is
        tried), and fail-back holds it on its carrier (`tunnel.underlay`)."""
        prefs = self.tunnel.underlay
        intent = self.rt.intent
        if not isinstance(prefs, tuple) or intent is None:
            return health
        healthy = frozenset(s.name for s in intent.uplinks if s.state in (State.UP, State.DEGRADED))
        self.ride, verdict = step(
            self.ride,
            prefs=prefs,
            healthy=healthy,
            carrier=carrier_of(self.name, self.tunnel, intent.reasons, self.resolved),
            state=health.state,
            reason=health.reason,
            hold=self.tunnel.hold,
            now=time.monotonic(),
        )
        return replace(
            health, state=verdict.state, reason=verdict.reason, avoid=verdict.avoid, stay_on=verdict.stay_on
        )

    async def _maybe_resolve(self) -> None:
        """Resolve the endpoints given as names: at start, every RESOLVE_RETRY_S until they
        resolve, and again every RERESOLVE_S while the tunnel stays down (home may have
        moved). A new address is a new chance for every uplink of the underlay list."""
        names = [(p.endpoint, p.endpoint_name) for p in self.tunnel.peers if p.endpoint and p.endpoint_name]
        if not names:
            return
        now = time.monotonic()
        if self.resolved_at is not None:
            missing = len(self.resolved) < len(names)
            stale = self.failing_since is not None and now - max(self.failing_since, self.resolved_at) >= (
                RERESOLVE_S
            )
            if not stale and not (missing and now - self.resolved_at >= RESOLVE_RETRY_S):
                return
        self.resolved_at = now
        servers = self.tunnel.resolvers or resolver.system_resolvers()
        said: list[str] = []
        for text, named in names:
            found, why = await resolver.resolve(named.name, servers, mark=self.tunnel.mark)
            said.append(why)
            current = self.resolved.get(text)
            # the address in use stays while the answer still has it (round-robin DNS)
            keep = current is not None and current.address in found and current.port == named.port
            endpoint = current if keep else dns.endpoint(found, named.port)
            if endpoint is not None and current != endpoint:
                log.info("%s: endpoint %s: %s", self.name, named, why)
                self.resolved[text] = endpoint
                self.ride = replace(self.ride, avoid=frozenset())
            elif endpoint is None:
                log.warning("%s: endpoint %s: %s", self.name, named, why)
        self.resolving = "" if len(self.resolved) == len(names) else "; ".join(said)

    async def _forget_sources(self, desired: WgDevice) -> None:
        """Set each peer's endpoint again (and, for kernel WireGuard, the device's fwmark,
        which clears every peer's remembered source): WireGuard then drops the source address
        it remembered, and the next packet is routed by the tunnel's mark through the new
        underlay."""
        peers = tuple(PeerUpdate(p, fields=frozenset({"endpoint"})) for p in desired.peers if p.endpoint)
        fwmark = desired.fwmark if self.held == "kernel" else None
        if peers or fwmark is not None:
            update = WgUpdate(desired.ifname, fwmark=fwmark, peers=peers)
            log.info("%s: underlay changed: %s", self.name, update)
            await self.backend.write(update)
            self.rt.writes += 1

    async def _start(self, ifname: str) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        logfile = self.log_dir / f"{ifname}.wireguard-go.log"
        self.proc = await start_wireguard_go(ifname, log_file=logfile, timeout=START_TIMEOUT_S)
        log.info(
            "%s: started %s %s (pid %d; log %s)", self.name, WIREGUARD_GO, ifname, self.proc.pid, logfile
        )

    def _record(self, health: TunnelHealth) -> None:
        """Keep the worker's latest look; a pass is needed when what planning reads changed
        (state, avoided uplinks, fail-back hold, resolved endpoints), not for a new handshake age."""
        old = self.rt.tunnels.get(self.name)
        self.rt.tunnels[self.name] = health
        if old is None or _planned(old) != _planned(health):
            self.rt.wake.set()


def _planned(h: TunnelHealth) -> tuple[object, ...]:
    """What planning reads of a tunnel's health (not its handshake age or byte counts)."""
    return (h.state, h.avoid, h.stay_on, h.resolved)


@dataclass(frozen=True)
class TunnelSpec:
    tunnel: Tunnel


class TunnelWorkers(WorkerKind[TunnelSpec, TunnelWorker]):
    """One worker per configured tunnel. Stopped by `flush` (which removes the interface)."""

    name = "tunnel"
    needs_our_routes = True
    after_writes = True  # a new underlay is in the kernel before WireGuard forgets the old one

    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt)
        self._workers: dict[str, TunnelWorker] = {}
        self._underlay: dict[str, tuple[str, ...]] = {}
        now = time.time()
        for name, tunnel in rt.config.tunnels.items():
            reading = read_now(tunnel.interface)
            if reading is not None:  # adopt: a restart plans from the tunnel as it is
                adopted = health_of(tunnel.interface, reading, now)
                rt.tunnels[name] = replace(adopted, resolved=resolved_in(tunnel, reading))

    def wanted(self, intent: Intent, running: Mapping[str, TunnelSpec]) -> dict[str, TunnelSpec]:
        for name in self.rt.config.tunnels:
            now = tuple(
                v for k, v in sorted(intent.reasons.items()) if k.startswith(f"tunnel {name} underlay ")
            )
            before = self._underlay.get(name)
            self._underlay[name] = now
            worker = self._workers.get(name)
            if before is not None and before != now and worker is not None:
                worker.unstick.set()
            if worker is not None:
                worker.poke.set()
        return {name: TunnelSpec(t) for name, t in self.rt.config.tunnels.items()}

    def make(self, name: str, spec: TunnelSpec) -> TunnelWorker:
        worker = TunnelWorker(
            name=name, tunnel=spec.tunnel, log_dir=self.rt.config.control.state_dir, rt=self.rt
        )
        adopted = self.rt.tunnels.get(name)
        if adopted is not None:  # a named endpoint keeps the address the device has until asked again
            worker.resolved = dict(adopted.resolved)
        self._workers[name] = worker
        return worker

    def stopped(self, name: str) -> None:
        self._workers.pop(name, None)
        if self.rt.tunnels.pop(name, None) is not None:
            self.rt.wake.set()


def resolved_in(tunnel: Tunnel, reading: WgReading) -> tuple[tuple[str, Endpoint], ...]:
    """At a restart, the endpoints given as names as the device has them (what they last
    resolved to), so the first pass plans the same nft table as before: no write."""
    found: list[tuple[str, Endpoint]] = []
    for p in tunnel.peers:
        if p.endpoint is None or p.endpoint_name is None:
            continue
        key = PublicKey.from_base64(p.public_key)
        peer = next((q for q in reading.device.peers if q.public_key == key), None)
        if peer is not None and peer.endpoint is not None:
            found.append((p.endpoint, peer.endpoint))
    return tuple(sorted(found))


def carrier_of(
    name: str, tunnel: Tunnel, reasons: Mapping[str, str], resolved: Mapping[str, Endpoint] | None = None
) -> str | None:
    """The uplink the last pass put in the tunnel's T_under, in its first endpoint's family."""
    endpoints = (p.endpoint_value or (resolved or {}).get(p.endpoint or "") for p in tunnel.peers)
    endpoint = next((e for e in endpoints if e is not None), None)
    family = "ipv6" if endpoint is not None and endpoint.address.version == 6 else "ipv4"
    return reasons.get(f"tunnel {name} underlay {family}") or None


async def remove_interfaces(tunnels: Mapping[str, Tunnel]) -> list[str]:
    """Delete the tunnels' interfaces (`flush`), and any other kernel WireGuard link uplinkd
    created: wireguard-go ends with its interface. Nothing else is touched."""
    return await remove_devices(t.interface for t in tunnels.values())


async def explain_tunnel(
    kernel: Kernel,
    tunnels: Mapping[str, Tunnel],
    explained: dict[str, Any],
    by_dev: Mapping[str, str],
    *,
    health: Mapping[str, TunnelHealth] | None = None,
) -> dict[str, Any]:
    """`uplinkctl explain` for a packet routed into a tunnel: which tunnel, and which uplink
    the tunnel's encrypted packets to its (first) peer leave by, as the kernel routes them now
    (the device's fwmark, UDP to the endpoint)."""
    tunnel = next(((n, t) for n, t in tunnels.items() if t.interface == explained.get("dev")), None)
    if tunnel is None:
        return explained
    name, t = tunnel
    h = (health or {}).get(name)
    endpoints = (p.endpoint_value or (h.endpoint_of(p.endpoint or "") if h else None) for p in t.peers)
    endpoint = next((e for e in endpoints if e is not None), None)
    out = {**explained, "tunnel": name, "encrypted_via": None, "encrypted_dev": None}
    if endpoint is not None:
        outer = await kernel.explain(
            dst=endpoint.address, mark=t.mark, ipproto="udp", dport=endpoint.port, uplinks_by_dev=by_dev
        )
        out.update(encrypted_via=outer.uplink, encrypted_dev=outer.dev, encrypted_rule=outer.rule)
    return out
