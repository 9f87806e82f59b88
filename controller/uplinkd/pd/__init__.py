"""DHCPv6 prefix delegation: one requesting-router client per uplink a `delegate` LAN names.

`PdWorkers` says which uplinks run a client (those a `lan.<if>.ipv6` of mode `delegate`
names, while their interface is up) and records each delegation in the runtime, where the
planner (`plan/lan6.py`) takes a /64 of it for each such LAN. Delegations are kept in the
state directory (`<uplink>.pd.json`) and adopted at start, so a restart changes nothing in
the kernel. The client's DUID (a DUID-UUID) is made once and kept there too (`dhcp6.duid`):
the server sees the same client across restarts and hands out the same prefix.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from uplinkd.model import Delegation
from uplinkd.pd import binding as store
from uplinkd.pd.client import PdClient
from uplinkd.pd.messages import duid_uuid
from uplinkd.plan import Intent
from uplinkd.runtime import Runtime
from uplinkd.workers import WorkerKind

log = logging.getLogger("uplinkd.pd")

DUID_FILE = "dhcp6.duid"


def delegating_uplinks(rt: Runtime) -> set[str]:
    """The uplinks some `delegate` LAN names."""
    return {
        lan.ipv6.uplink for lan in rt.config.lan.values() if lan.ipv6.mode == "delegate" and lan.ipv6.uplink
    }


def duid(state_dir: Path) -> bytes:
    """This router's DUID: read from state_dir, or made and kept there."""
    path = state_dir / DUID_FILE
    with contextlib.suppress(OSError, ValueError):
        raw = bytes.fromhex(path.read_text().strip())
        if 3 <= len(raw) <= 130:
            return raw
    made = duid_uuid(uuid.uuid4().bytes)
    with contextlib.suppress(OSError):
        state_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(made.hex() + "\n")
    return made


@dataclass(frozen=True)
class PdSpec:
    dev: str
    state_file: Path


class PdWorkers(WorkerKind[PdSpec, PdClient]):
    """One DHCPv6-PD client per present uplink that a `delegate` LAN names, on an interface
    that is up with carrier; it stops when the interface goes away (its file stays, so a
    replug asks for the same prefix)."""

    name = "dhcp6-pd"

    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt)
        self._duid: bytes | None = None
        now = time.time()
        for name in delegating_uplinks(rt):
            held = store.load(rt.pd_file(name), now=now)
            if held is not None:
                rt.delegations[name] = held.delegation()  # a restart changes nothing

    def wanted(self, intent: Intent, running: Mapping[str, PdSpec]) -> dict[str, PdSpec]:
        names = delegating_uplinks(self.rt)
        wanted: dict[str, PdSpec] = {}
        for s in intent.uplinks:
            if s.name not in names:
                continue
            if s.dev is None:
                self._forget(s.name)
                continue
            now = running.get(s.name)
            if s.link_ready or (now is not None and now.dev == s.dev):
                wanted[s.name] = PdSpec(s.dev, self.rt.pd_file(s.name))
        return wanted

    def make(self, name: str, spec: PdSpec) -> PdClient:
        if self._duid is None:
            self._duid = duid(self.rt.config.control.state_dir)
        log.info("%s: DHCPv6-PD client started on %s", name, spec.dev)
        return PdClient(
            name=name,
            dev=spec.dev,
            state_file=spec.state_file,
            duid=self._duid,
            on_delegation=self._delegation,
        )

    def stopped(self, name: str) -> None:
        self._forget(name)

    def _forget(self, name: str) -> None:
        if self.rt.delegations.pop(name, None) is not None:
            self.rt.wake.set()

    def _delegation(self, name: str, delegation: Delegation | None, why: str) -> None:
        old = self.rt.delegations.get(name)
        if delegation is None:
            self.rt.delegations.pop(name, None)
        else:
            self.rt.delegations[name] = delegation
        if (old is None) != (delegation is None) or (old and delegation and old.prefix != delegation.prefix):
            log.info("%s: delegated prefix %s (%s)", name, delegation.prefix if delegation else "none", why)
            self.rt.wake.set()
