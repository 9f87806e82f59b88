"""Probes: ask targets beyond an uplink whether it works, through that uplink only.

Every probe socket carries the uplink's fwmark (SO_MARK → `fwmark M_u lookup T_u`) and is
bound to its interface (SO_BINDTODEVICE), so it leaves through the uplink whether or not
the uplink is in the balance group. All targets of a round are asked in parallel.

Methods: ICMP echo (an unprivileged ping socket where `ping_group_range` allows it, a raw
socket otherwise), TCP connect (a refusal counts as an answer: the path works), and a DNS
query (any reply with our id counts). Bytes are counted as they cross the wire, IP
headers included, so `status` can say what probing costs on a metered link.

A `Prober` runs one uplink's probing: it reads the interface's packet counters every tick,
folds them and the rounds into the pure `health.Tracker`, and reports verdict changes.
`ProbeWorkers` says which uplinks are probed: those ready and with probe targets; and which
tunnels: those with probe targets (`tunnels.<n>.probe`), probed through the tunnel interface.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uplinkd.config import Probe, parse_target
from uplinkd.health import RoundResult, Tracker, after_round, after_traffic, next_round
from uplinkd.model import AF_INET, AF_INET6, Bearer, Health, HealthVerdict, IPAddress
from uplinkd.plan import Intent
from uplinkd.runtime import Runtime
from uplinkd.workers import WorkerKind

log = logging.getLogger("uplinkd.probes")

SO_MARK = 36
SO_BINDTODEVICE = 25
ICMP_ECHO, ICMP_ECHOREPLY = 8, 0
ICMP6_ECHO, ICMP6_ECHOREPLY = 128, 129
PAYLOAD = 8  # bytes of echo payload: a sequence stamp, no more (every byte is paid for on LTE)
IP_HEADER = {4: 20, 6: 40}
TCP_PROBE_PACKETS = (60, 60, 52, 40)  # SYN, SYN-ACK, ACK, RST (we close with linger 0)
FAMILY_OF_VERSION = {4: AF_INET, 6: AF_INET6}


def _bind(sock: socket.socket, *, dev: str, mark: int) -> None:
    sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, dev.encode())
    sock.setblocking(False)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


def _icmp_socket(family: int) -> tuple[socket.socket, bool]:
    """A socket for echo requests; True if raw (we see IP headers and others' packets)."""
    proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    try:
        return socket.socket(family, socket.SOCK_DGRAM, proto), False
    except PermissionError:
        return socket.socket(family, socket.SOCK_RAW, proto), True


async def icmp_probe(addr: IPAddress, *, dev: str, mark: int, timeout: float) -> tuple[float | None, int]:
    """One echo request. Returns (rtt or None, bytes on the wire)."""
    family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    sock, raw = _icmp_socket(family)
    wire = IP_HEADER[addr.version] + 8 + PAYLOAD
    try:
        _bind(sock, dev=dev, mark=mark)
        ident = int.from_bytes(os.urandom(2), "big")
        seq = int.from_bytes(os.urandom(2), "big")
        kind = ICMP_ECHO if family == socket.AF_INET else ICMP6_ECHO
        payload = struct.pack("!Q", time.monotonic_ns())
        packet = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + payload
        if family == socket.AF_INET:  # the kernel fills in ICMPv6 checksums itself
            packet = packet[:2] + struct.pack("!H", _checksum(packet)) + packet[4:]
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        await loop.sock_sendto(sock, packet, (str(addr), 0))
        deadline = start + timeout
        while (left := deadline - time.monotonic()) > 0:
            data, peer = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), left)
            if raw and family == socket.AF_INET:
                data = data[(data[0] & 0x0F) * 4 :]
            if len(data) < 8 or ipaddress.ip_address(peer[0]) != addr:
                continue
            rtype, _code, _sum, rid, rseq = struct.unpack_from("!BBHHH", data)
            reply = ICMP_ECHOREPLY if family == socket.AF_INET else ICMP6_ECHOREPLY
            # ping sockets rewrite the id to their port, so match on seq there
            if rtype == reply and rseq == seq and (rid == ident or not raw):
                return time.monotonic() - start, 2 * wire
        return None, wire
    except (TimeoutError, OSError):
        return None, wire
    finally:
        sock.close()


async def tcp_probe(
    addr: IPAddress, port: int, *, dev: str, mark: int, timeout: float
) -> tuple[float | None, int]:
    family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    extra = IP_HEADER[addr.version] - 20
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        _bind(sock, dev=dev, mark=mark)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        start = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (str(addr), port)), timeout)
        except ConnectionRefusedError:  # an RST came back: the path works
            return time.monotonic() - start, TCP_PROBE_PACKETS[0] + 40 + 2 * extra
        return time.monotonic() - start, sum(TCP_PROBE_PACKETS) + 4 * extra
    except (TimeoutError, OSError):
        return None, TCP_PROBE_PACKETS[0] + extra
    finally:
        sock.close()


def _dns_query(name: str, ident: int) -> bytes:
    labels = [p for p in name.strip(".").split(".") if p]
    qname = b"".join(bytes([len(p)]) + p.encode() for p in labels) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 2, 1)


async def dns_probe(
    addr: IPAddress, port: int, name: str, *, dev: str, mark: int, timeout: float
) -> tuple[float | None, int]:
    family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    sock = socket.socket(family, socket.SOCK_DGRAM)
    header = IP_HEADER[addr.version] + 8
    ident = int.from_bytes(os.urandom(2), "big")
    query = _dns_query(name, ident)
    try:
        _bind(sock, dev=dev, mark=mark)
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        await loop.sock_sendto(sock, query, (str(addr), port))
        deadline = start + timeout
        while (left := deadline - time.monotonic()) > 0:
            data, _peer = await asyncio.wait_for(loop.sock_recvfrom(sock, 4096), left)
            if len(data) >= 2 and struct.unpack_from("!H", data)[0] == ident:
                return time.monotonic() - start, 2 * header + len(query) + len(data)
        return None, header + len(query)
    except (TimeoutError, OSError):
        return None, header + len(query)
    finally:
        sock.close()


async def _unanswered_on_error(
    job: Coroutine[Any, Any, tuple[float | None, int]],
) -> tuple[float | None, int]:
    """A probe that cannot even be sent (no socket: EMFILE, EAFNOSUPPORT) is a failed probe,
    not a crash."""
    try:
        return await job
    except OSError as e:
        log.warning("probe failed to start: %s", e)
        return None, 0


def round_targets(probe: Probe, families: Collection[int] | None) -> list[tuple[IPAddress, int | None]]:
    """The targets a round asks: those of the families the uplink routes in now (an IPv6-only
    uplink is judged on its IPv6 targets, not failed for IPv4 ones it cannot reach); all of
    them when none is of those families (then the round fails: no target can say it works)."""
    parsed = [parse_target(probe.method, text) for text in probe.targets]
    if families is None:
        return parsed
    mine = [(addr, port) for addr, port in parsed if FAMILY_OF_VERSION[addr.version] in families]
    return mine or parsed


async def probe_round(
    probe: Probe, *, dev: str, mark: int, families: Collection[int] | None = None
) -> RoundResult:
    """Ask every target (of `families`, see `round_targets`) once, all at the same time."""
    started = time.monotonic()
    jobs = []
    for addr, port in round_targets(probe, families):
        if probe.method == "icmp":
            jobs.append(icmp_probe(addr, dev=dev, mark=mark, timeout=probe.timeout))
        elif probe.method == "tcp":
            assert port is not None
            jobs.append(tcp_probe(addr, port, dev=dev, mark=mark, timeout=probe.timeout))
        else:
            jobs.append(
                dns_probe(addr, port or 53, probe.dns_name, dev=dev, mark=mark, timeout=probe.timeout)
            )
    results = await asyncio.gather(*(_unanswered_on_error(job) for job in jobs))
    rtts = tuple(rtt for rtt, _ in results if rtt is not None)
    return RoundResult(
        started=started,
        sent=len(results),
        answered=len(rtts),
        rtts=rtts,
        bytes=sum(n for _, n in results),
    )


class Counters:
    """An interface's (tx_packets, rx_packets), read from sysfs through two descriptors kept
    open: a look is two pread()s at offset 0, which sysfs answers afresh each time (~1 µs;
    opening the files for each look was ~20 µs and eight syscalls). The fast profile looks
    20 times a second per uplink, on a router whose CPU may be busy with a tunnel's
    userspace crypto.

    The files are opened again every `reopen_s` and after a failed read (a removed
    interface's attributes answer ENODEV), so a device that went and came back under the
    same name (a replugged modem) is read, not the old one's last values."""

    def __init__(self, dev: str, *, sysfs: Path = Path("/sys/class/net"), reopen_s: float = 1.0) -> None:
        self.dev = dev
        self.sysfs = sysfs
        self.reopen_s = reopen_s
        self._fds: tuple[int, int] | None = None
        self._opened = 0.0

    def read(self, now: float) -> tuple[int, int] | None:
        """The counters now, or None while the interface is not there. `now`: monotonic."""
        if self._fds is not None and now - self._opened >= self.reopen_s:
            self.close()
        for _ in range(2):  # the kept descriptors, then fresh ones if those failed
            if self._fds is None:
                self._fds = self._open()
                self._opened = now
                if self._fds is None:
                    return None
            try:
                tx, rx = (int(os.pread(fd, 32, 0)) for fd in self._fds)
                return tx, rx
            except (OSError, ValueError):
                self.close()
        return None

    def close(self) -> None:
        for fd in self._fds or ():
            os.close(fd)
        self._fds = None

    def _open(self) -> tuple[int, int] | None:
        stats = self.sysfs / self.dev / "statistics"
        fds: list[int] = []
        try:
            for name in ("tx_packets", "rx_packets"):
                fds.append(os.open(stats / name, os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            for fd in fds:
                os.close(fd)
            return None
        return fds[0], fds[1]


class Prober:
    """Probes one uplink for as long as it is ready; reports each verdict change."""

    def __init__(
        self,
        *,
        name: str,
        dev: str,
        mark: int,
        probe: Probe,
        on_verdict: Callable[[str, HealthVerdict], None],
        adopted: bool = False,
    ) -> None:
        self.name = name
        self.dev = dev
        self.mark = mark
        self.probe = probe
        self.on_verdict = on_verdict
        self.on_round: Callable[[str, RoundResult], None] | None = None  # every round, for counters
        # the families the uplink routes in now, kept current by its worker kind (not part of
        # the spec: a dual-stack uplink whose RA comes late keeps its health history)
        self.families: Callable[[], Collection[int] | None] = lambda: None
        # an uplink that was in service when the daemon started stays up until probes disagree
        self.tracker = (
            Tracker(health=Health.UP, reason="in service when uplinkd started; probing")
            if adopted
            else Tracker()
        )
        self._bytes: collections.deque[tuple[float, int]] = collections.deque()
        self.tick = min(0.5, max(0.05, probe.suspect_after / 4))

    def bytes_per_minute(self, now: float) -> int:
        while self._bytes and self._bytes[0][0] < now - 60:
            self._bytes.popleft()
        return sum(n for _, n in self._bytes)

    async def run(self) -> None:
        # The daemon starts a prober in the pass that writes the uplink's route and rule;
        # a probe sent before they exist is not dropped but sent as if the target were
        # on-link (SO_BINDTODEVICE), and is lost. Let that pass finish first.
        await asyncio.sleep(self.tick)
        counters = Counters(self.dev)
        try:
            await self._watch(counters)
        finally:
            counters.close()

    async def _watch(self, counters: Counters) -> None:
        last: HealthVerdict | None = None
        probe = self.probe
        while True:
            now = time.monotonic()
            seen = counters.read(now)
            if seen is not None:
                self.tracker = after_traffic(self.tracker, now=now, tx=seen[0], rx=seen[1], probe=probe)
            if now >= next_round(self.tracker, now=now, probe=probe):
                result = await probe_round(probe, dev=self.dev, mark=self.mark, families=self.families())
                self._bytes.append((result.started, result.bytes))
                if self.on_round is not None:
                    self.on_round(self.name, result)
                self.tracker = after_round(self.tracker, result, probe)
                log.debug(
                    "%s: %d/%d answered, tracker %s",
                    self.name,
                    result.answered,
                    result.sent,
                    self.tracker.health,
                )
            verdict = self.tracker.verdict(probe)
            if verdict != last:
                last = verdict
                self.on_verdict(self.name, verdict)
            now = time.monotonic()
            due = next_round(self.tracker, now=now, probe=probe)
            await asyncio.sleep(max(0.0, min(due - now, self.tick)))


@dataclass(frozen=True)
class ProbeSpec:
    dev: str
    mark: int
    probe: Probe
    via: str = ""  # a tunnel's: the uplink(s) carrying it; a new underlay restarts its probing


TUNNEL_PREFIX = "tunnel "  # a tunnel's prober is named "tunnel <name>" (no uplink name has a space)


def effective_probe(probe: Probe, bearer: Bearer | None) -> Probe:
    """The probe an uplink runs: a `dns` probe that names no targets of its own asks the DNS
    servers of its modem's bearer (Ip4Config/Ip6Config dns1..3), so a new bearer with new
    servers is a new spec and restarts the prober. Targets in the config always win."""
    if probe.method != "dns" or probe.targets or bearer is None:
        return probe
    servers = tuple(str(d) for ip in (bearer.ip4, bearer.ip6) if ip is not None for d in ip.dns)
    if not servers:
        return probe
    return probe.model_copy(update={"targets": servers, "quorum": min(probe.quorum, len(servers))})


class ProbeWorkers(WorkerKind[ProbeSpec, Prober]):
    """One prober per ready uplink that has probe targets (a modem uplink's `dns` probe
    without targets: its bearer's DNS servers); none for the others. Its verdicts are the
    uplinks' health."""

    name = "probe"
    after_writes = True  # a probe sent before its uplink's route exists is lost
    needs_our_routes = True  # without our rules every probe fails: every uplink would be "down"

    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt)
        self.families: dict[str, tuple[int, ...]] = {}  # uplink → families it routes in now

    def wanted(self, intent: Intent, running: Mapping[str, ProbeSpec]) -> dict[str, ProbeSpec]:
        wanted: dict[str, ProbeSpec] = {}
        for s in intent.uplinks:
            probe = effective_probe(self.rt.config.uplinks[s.name].probe, self.rt.bearers.get(s.name))
            if s.ready and s.dev is not None and probe.targets:
                wanted[s.name] = ProbeSpec(s.dev, s.mark, probe)
                self.families[s.name] = s.families
        for name, tunnel in self.rt.config.tunnels.items():
            # through the tunnel: bound to its interface, unmarked (no uplink's rule takes it);
            # once the worker has seen the device. Its health there starts afresh on a new underlay.
            if tunnel.probe.targets and name in self.rt.tunnels:
                via = " ".join(
                    v for k, v in sorted(intent.reasons.items()) if k.startswith(f"tunnel {name} underlay ")
                )
                wanted[TUNNEL_PREFIX + name] = ProbeSpec(tunnel.interface, 0, tunnel.probe, via)
        return wanted

    def make(self, name: str, spec: ProbeSpec) -> Prober:
        if name.startswith(TUNNEL_PREFIX):
            return Prober(name=name, dev=spec.dev, mark=spec.mark, probe=spec.probe, on_verdict=self._tunnel)
        adopted = name in self.rt.adopted
        self.rt.adopted.discard(name)
        prober = Prober(
            name=name,
            dev=spec.dev,
            mark=spec.mark,
            probe=spec.probe,
            on_verdict=self._verdict,
            adopted=adopted,
        )
        prober.on_round = self.rt.counters.probe_round
        prober.families = lambda: self.families.get(name)
        return prober

    def stopped(self, name: str) -> None:
        self.families.pop(name, None)
        if name.startswith(TUNNEL_PREFIX):
            self.rt.tunnel_probes.pop(name.removeprefix(TUNNEL_PREFIX), None)
        else:
            self.rt.health.pop(name, None)

    def _tunnel(self, name: str, verdict: HealthVerdict) -> None:
        """A tunnel prober's verdict: its worker folds it into the tunnel's state."""
        tunnel = name.removeprefix(TUNNEL_PREFIX)
        old = self.rt.tunnel_probes.get(tunnel)
        self.rt.tunnel_probes[tunnel] = verdict
        if old is None or old.health != verdict.health:
            self.rt.wake.set()

    def _verdict(self, name: str, verdict: HealthVerdict) -> None:
        """Record a prober's verdict; only a change of health or weight needs a pass (the
        reason text changes every round, with the RTT in it)."""
        old = self.rt.health.get(name)
        self.rt.health[name] = verdict
        if old is None or (old.health, old.weight_factor) != (verdict.health, verdict.weight_factor):
            self.rt.wake.set()
