"""Flows as the tests see them: the traffic client's JSON report as typed values.

:class:`FlowReport` answers the questions tests and benchmarks ask: which uplink each flow
used (the server saw a distinct source address per ISP), whether any flow moved, the longest
silence.  :class:`FlowsRun` is a client running in the background.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from typing import Any, Literal

from uplinkd.lab.netns import LabError

DEFAULT_PORT = 9000
"""The traffic server's TCP and UDP port."""

MAX_DURATION_S = 3600.0
"""Upper bound for a traffic run, and the server's lifetime."""

NO_REPLY = "none"
""":meth:`FlowReport.by_uplink`'s key for flows that never got a reply."""

RESULT_SLACK_S = 15.0
"""How long past its duration a client may take to report (connect timeouts, grace)."""


@dataclass(frozen=True)
class Run:
    """Consecutive replies (sequence numbers ``first_seq..last_seq``, in arrival order)
    that the server saw coming from ``source``."""

    first_seq: int
    last_seq: int
    source: str


@dataclass(frozen=True)
class Flow:
    proto: Literal["tcp", "udp"]
    local_ports: tuple[int, ...]
    """Every local port the flow used; a TCP flow that reconnected has more than one."""
    runs: tuple[Run, ...]
    sent: int
    received: int
    lost: int
    max_gap_ms: float
    """Longest time the flow was sending without getting a reply."""
    reconnects: int
    errors: int
    """Failed connects, ICMP errors and malformed replies."""

    @property
    def local_port(self) -> int:
        return self.local_ports[0] if self.local_ports else 0

    @property
    def sources(self) -> tuple[str, ...]:
        """Distinct server-seen source addresses, in the order they first appeared."""
        return tuple(dict.fromkeys(run.source for run in self.runs))

    @property
    def first_source(self) -> str | None:
        return self.runs[0].source if self.runs else None

    @property
    def last_source(self) -> str | None:
        return self.runs[-1].source if self.runs else None

    @property
    def moved(self) -> bool:
        """The server saw this flow from more than one address."""
        return len(self.runs) > 1


@dataclass(frozen=True)
class FlowReport:
    flows: tuple[Flow, ...]
    uplink_names: Mapping[str, str]
    """Server-seen source address → uplink name (the lab's address plan, see
    :meth:`Lab.uplink_of_source`)."""

    def uplink(self, source: str | None) -> str:
        """The uplink name for a server-seen source; :data:`NO_REPLY` for None."""
        if source is None:
            return NO_REPLY
        name = self.uplink_names.get(source)
        if name is None:  # a prefix an ISP routes unchanged (a "/" key: see Lab.uplink_names)
            address = ip_address(source)
            name = next(
                (n for key, n in self.uplink_names.items() if "/" in key and address in ip_network(key)),
                None,
            )
        return name if name is not None else f"unknown:{source}"

    def uplinks_of(self, flow: Flow) -> tuple[str, ...]:
        """The uplinks ``flow`` went through, in order."""
        return tuple(self.uplink(source) for source in flow.sources)

    def by_uplink(self, at: Literal["first", "last"] = "last") -> dict[str, int]:
        """Number of flows per uplink, by each flow's first or last reply."""
        counts = Counter(
            self.uplink(flow.first_source if at == "first" else flow.last_source)
            for flow in self.flows
        )
        return dict(sorted(counts.items()))

    def started_on(self, uplink: str) -> tuple[Flow, ...]:
        return tuple(f for f in self.flows if self.uplink(f.first_source) == uplink)

    def moved(self) -> tuple[Flow, ...]:
        return tuple(flow for flow in self.flows if flow.moved)

    def max_gap_ms(self) -> float:
        return max((flow.max_gap_ms for flow in self.flows), default=0.0)

    def sent(self) -> int:
        return sum(flow.sent for flow in self.flows)

    def received(self) -> int:
        return sum(flow.received for flow in self.flows)

    def lost(self) -> int:
        return sum(flow.lost for flow in self.flows)

    def reconnects(self) -> int:
        return sum(flow.reconnects for flow in self.flows)

    @classmethod
    def from_json(cls, text: str, uplink_names: Mapping[str, str]) -> FlowReport:
        """Parse the traffic client's output; :class:`LabError` if it is not one."""
        try:
            document = json.loads(text)
            flows = tuple(_flow(entry) for entry in document["flows"])
        except (ValueError, KeyError, TypeError) as exc:
            raise LabError(f"not a traffic report ({exc}): {text[:500]!r}") from exc
        return cls(flows=flows, uplink_names=dict(uplink_names))


def _flow(entry: dict[str, Any]) -> Flow:
    proto = entry["proto"]
    if proto not in ("tcp", "udp"):
        raise ValueError(f"unknown proto {proto!r}")
    return Flow(
        proto=proto,
        local_ports=tuple(int(port) for port in entry["local_ports"]),
        runs=tuple(Run(int(first), int(last), str(source)) for first, last, source in entry["runs"]),
        sent=int(entry["sent"]),
        received=int(entry["received"]),
        lost=int(entry["lost"]),
        max_gap_ms=float(entry["max_gap_ms"]),
        reconnects=int(entry["reconnects"]),
        errors=int(entry["errors"]),
    )


class FlowsRun:
    """A traffic client running in the background.  Made by :meth:`Lab.start_flows`."""

    def __init__(
        self,
        proc: subprocess.Popen[str],
        *,
        duration: float,
        uplink_names: Mapping[str, str],
        stop: Callable[[subprocess.Popen[str]], None],
    ) -> None:
        self._proc = proc
        self._deadline = time.monotonic() + duration + RESULT_SLACK_S
        self._uplink_names = dict(uplink_names)
        self._stop = stop
        self._stderr_head = b""

    @property
    def pid(self) -> int:
        return self._proc.pid

    def wait_established(self, timeout: float = 5.0) -> None:
        """Return once every flow has had a reply; :class:`LabError` after ``timeout``."""
        assert self._proc.stderr is not None
        fd = self._proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        while b"established\n" not in self._stderr_head:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LabError(f"flows not established after {timeout:g} s")
            readable, _, _ = select.select([fd], [], [], left)
            if readable:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise LabError(f"traffic client exited: {self._stderr_head.decode()}")
                self._stderr_head += chunk

    def result(self, timeout: float | None = None) -> FlowReport:
        """Wait for the client to finish and parse its report."""
        if timeout is None:
            timeout = max(0.0, self._deadline - time.monotonic())
        try:
            out, err = self._proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self._stop(self._proc)
            raise LabError(f"traffic client still running after {timeout:g} s") from exc
        self._stop(self._proc)  # exited already: this only forgets it
        err = self._stderr_head.decode(errors="replace") + err
        if self._proc.returncode != 0:
            raise LabError(f"traffic client exit {self._proc.returncode}: {err.strip()}")
        return FlowReport.from_json(out, self._uplink_names)
