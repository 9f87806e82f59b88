"""Test traffic: an echo server that says what it saw, and a client of many small flows.

    python3 -m uplinkd.lab.traffic server --bind 198.51.100.100 --duration 600
    python3 -m uplinkd.lab.traffic client --server 198.51.100.100 --tcp 20 --udp 10 \\
        --interval-ms 20 --duration 5

Protocol (ASCII).  A request is a sequence number; the reply is ``<seq> <address> <port>``,
the source address and port the server saw (after every NAT on the way).  TCP carries one
request per line, UDP one per datagram.  The server only ever answers, and exits by itself
after ``--duration`` seconds.

The client runs every flow at once, each sending one request every ``--interval-ms`` for
``--duration`` seconds, then prints one JSON document on stdout (see :func:`flow_json`).  On
stderr it prints ``established`` once every flow has had its first reply.  A UDP flow keeps
its socket, and so its 5-tuple, for life, as a VPN would.  A TCP flow whose connection
breaks (reset, closed) connects again and carries on; the flow records every local port it
used.  Only the standard library is used: this runs inside namespaces via ``python3 -m``
(and the lab package does not import this module, so ``-m`` runs it cleanly).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from uplinkd.lab.flows import DEFAULT_PORT, MAX_DURATION_S

MAX_FLOWS = 2000
CONNECT_TIMEOUT_S = 1.0
MAX_REQUEST = 24
"""A request is at most this many bytes: a decimal sequence number."""


# --- server -------------------------------------------------------------------------------


def _reply(request: bytes, peer: tuple[Any, ...]) -> bytes | None:
    seq = request.strip()
    if not seq.isdigit() or len(seq) > MAX_REQUEST:
        return None
    return b"%s %s %d" % (seq, str(peer[0]).encode(), int(peer[1]))


async def _tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername")
    try:
        while line := await reader.readline():
            answer = _reply(line, peer)
            if answer is None:
                break
            writer.write(answer + b"\n")
            await writer.drain()
    except (ConnectionError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        writer.close()


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        answer = _reply(data, addr)
        if answer is not None:
            self.transport.sendto(answer, addr)


async def serve(binds: Sequence[str], port: int, duration: float) -> None:
    """Answer TCP and UDP requests on every address in ``binds`` for ``duration`` s."""
    loop = asyncio.get_running_loop()
    servers = [await asyncio.start_server(_tcp_echo, host=host, port=port) for host in binds]
    udp = [
        (await loop.create_datagram_endpoint(_UdpEcho, local_addr=(host, port)))[0]
        for host in binds
    ]
    print("ready", flush=True)
    try:
        await asyncio.sleep(duration)
    finally:
        for server in servers:
            server.close()
        for transport in udp:
            transport.close()


# --- client -------------------------------------------------------------------------------


@dataclass
class FlowLog:
    """What one flow saw.  ``runs`` are ``[first_seq, last_seq, address]``: consecutive
    replies (in arrival order) that came from the same server-seen address."""

    proto: str
    started: float
    ports: list[int] = field(default_factory=list)
    runs: list[list[Any]] = field(default_factory=list)
    sent: int = 0
    received: int = 0
    reconnects: int = 0
    errors: int = 0
    max_gap: float = 0.0
    last_reply: float = 0.0
    last_send: float = 0.0
    seen: set[int] = field(default_factory=set)
    first_reply: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.last_reply = self.started

    def next_seq(self, now: float) -> int:
        seq = self.sent
        self.sent += 1
        self.last_send = now
        return seq

    def on_reply(self, line: bytes, now: float) -> None:
        words = line.split()
        if len(words) != 3 or not words[0].isdigit():
            self.errors += 1
            return
        seq, address = int(words[0]), words[1].decode()
        if seq in self.seen or seq >= self.sent:
            return
        self.seen.add(seq)
        self.received += 1
        self.max_gap = max(self.max_gap, now - self.last_reply)
        self.last_reply = now
        if self.runs and self.runs[-1][2] == address:
            self.runs[-1][1] = seq
        else:
            self.runs.append([seq, seq, address])
        self.first_reply.set()

    def finish(self) -> None:
        """Count the silence at the end: from the last reply to the last request sent."""
        self.max_gap = max(self.max_gap, self.last_send - self.last_reply)


def flow_json(flow: FlowLog) -> dict[str, Any]:
    return {
        "proto": flow.proto,
        "local_ports": flow.ports,
        "runs": flow.runs,
        "sent": flow.sent,
        "received": flow.received,
        "lost": flow.sent - flow.received,
        "max_gap_ms": round(flow.max_gap * 1000, 1),
        "reconnects": flow.reconnects,
        "errors": flow.errors,
    }


class Ticker:
    """Instants ``start + k * interval``; a late tick is skipped, not made up in a burst."""

    def __init__(self, start: float, interval: float) -> None:
        self.start, self.interval, self.k = start, interval, 0

    async def wait(self) -> None:
        now = time.monotonic()
        self.k = max(self.k + 1, int((now - self.start) / self.interval) + 1)
        await asyncio.sleep(max(0.0, self.start + self.k * self.interval - now))


async def _tcp_receive(reader: asyncio.StreamReader, flow: FlowLog) -> None:
    try:
        while line := await reader.readline():
            flow.on_reply(line, time.monotonic())
    except (ConnectionError, asyncio.LimitOverrunError, ValueError):
        pass


@dataclass(frozen=True)
class Target:
    """Where and how long every flow sends."""

    server: str
    port: int
    deadline: float
    grace: float
    """How long to wait for late replies after the deadline."""


async def tcp_flow(flow: FlowLog, target: Target, ticker: Ticker) -> None:
    server, port, deadline = target.server, target.port, target.deadline
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(server, port),
                timeout=max(0.01, min(CONNECT_TIMEOUT_S, deadline - time.monotonic())),
            )
        except (OSError, TimeoutError):
            flow.errors += 1
            await ticker.wait()
            continue
        if flow.ports:
            flow.reconnects += 1
        flow.ports.append(int(writer.get_extra_info("sockname")[1]))
        receiver = asyncio.create_task(_tcp_receive(reader, flow))
        try:
            while time.monotonic() < deadline and not (receiver.done() or writer.is_closing()):
                writer.write(b"%d\n" % flow.next_seq(time.monotonic()))
                await ticker.wait()
            if not receiver.done():
                await asyncio.wait([receiver], timeout=target.grace)
        finally:
            receiver.cancel()
            writer.close()


class _UdpFlow(asyncio.DatagramProtocol):
    def __init__(self, flow: FlowLog) -> None:
        self.flow = flow

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.flow.on_reply(data, time.monotonic())

    def error_received(self, exc: Exception) -> None:
        self.flow.errors += 1


async def udp_flow(flow: FlowLog, target: Target, ticker: Ticker) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _UdpFlow(flow), remote_addr=(target.server, target.port)
    )
    flow.ports.append(int(transport.get_extra_info("sockname")[1]))
    try:
        while time.monotonic() < target.deadline:
            transport.sendto(b"%d" % flow.next_seq(time.monotonic()))
            await ticker.wait()
        await asyncio.sleep(target.grace)
    finally:
        transport.close()


async def _announce_established(flows: Sequence[FlowLog]) -> None:
    await asyncio.gather(*(flow.first_reply.wait() for flow in flows))
    print("established", file=sys.stderr, flush=True)


async def run_flows(
    *, server: str, port: int, tcp: int, udp: int, interval: float, duration: float
) -> list[FlowLog]:
    start = time.monotonic()
    target = Target(server, port, deadline=start + duration, grace=max(0.3, 3 * interval))
    flows = [FlowLog("tcp", start) for _ in range(tcp)] + [FlowLog("udp", start) for _ in range(udp)]
    tasks = [
        (tcp_flow if flow.proto == "tcp" else udp_flow)(flow, target, Ticker(start, interval))
        for flow in flows
    ]
    announcer = asyncio.create_task(_announce_established(flows))
    try:
        await asyncio.gather(*tasks)
    finally:
        announcer.cancel()
    for flow in flows:
        flow.finish()
    return flows


def _client(args: argparse.Namespace) -> None:
    flows = args.tcp + args.udp
    if not 0 < flows <= MAX_FLOWS:
        sys.exit(f"between 1 and {MAX_FLOWS} flows, not {flows}")
    interval = args.interval_ms / 1000
    hard_cap = args.duration + max(0.3, 3 * interval) + CONNECT_TIMEOUT_S + 5
    logs = asyncio.run(
        asyncio.wait_for(
            run_flows(
                server=args.server,
                port=args.port,
                tcp=args.tcp,
                udp=args.udp,
                interval=interval,
                duration=args.duration,
            ),
            timeout=hard_cap,
        )
    )
    document = {
        "server": args.server,
        "port": args.port,
        "interval_ms": args.interval_ms,
        "duration_s": args.duration,
        "flows": [flow_json(flow) for flow in logs],
    }
    json.dump(document, sys.stdout)
    sys.stdout.write("\n")


def _duration(text: str) -> float:
    value = float(text)
    if not 0 < value <= MAX_DURATION_S:
        raise argparse.ArgumentTypeError(f"duration must be in (0, {MAX_DURATION_S:g}] s")
    return value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m uplinkd.lab.traffic")
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("server", help="answer requests with the source seen")
    server.add_argument("--bind", action="append", required=True, help="address (repeatable)")
    server.add_argument("--port", type=int, default=DEFAULT_PORT)
    server.add_argument("--duration", type=_duration, required=True, help="seconds, then exit")
    client = commands.add_parser("client", help="run flows, print a JSON report")
    client.add_argument("--server", required=True)
    client.add_argument("--port", type=int, default=DEFAULT_PORT)
    client.add_argument("--tcp", type=int, default=0, help="number of TCP flows")
    client.add_argument("--udp", type=int, default=0, help="number of UDP flows")
    client.add_argument("--interval-ms", type=int, default=20)
    client.add_argument("--duration", type=_duration, required=True, help="seconds")
    args = parser.parse_args(argv)
    if args.command == "server":
        asyncio.run(serve(args.bind, args.port, args.duration))
    else:
        if args.interval_ms < 1:
            parser.error("--interval-ms must be at least 1")
        _client(args)


if __name__ == "__main__":
    main()
