"""DHCPv6 on the uplinks: one client per uplink that wants a delegated prefix (IA_PD, for a
`delegate` LAN), its own address (IA_NA), or both, asked for in one exchange.

`PdWorkers` says which uplinks run a client and what each asks for, while their interface is
up: IA_PD for the uplinks a `lan.<if>.ipv6` of mode `delegate` names; IA_NA for `dhcp`
uplinks whose `address.dhcp6` is "always", or "auto" (the default) while the router's last RA
set the M flag (an ISP that hands out addresses only by DHCPv6: no SLAAC). A change of what
an uplink asks for restarts its client with its bindings kept. Each binding is recorded in
the runtime: a delegation for the planner's LANs (`plan/lan6.py`), an address for the
uplink itself (`plan/uplinks.py` adds it as a /128). Both are kept in the state directory
(`<uplink>.pd.json`, `<uplink>.na.json`) and adopted at start, so a restart changes nothing in
the kernel. The client's DUID (a DUID-UUID) is made once and kept there too (`dhcp6.duid`):
the server sees the same client across restarts and hands out the same prefix and address.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from uplinkd.config import Config, DhcpAddress
from uplinkd.model.adverts import Advert
from uplinkd.pd import binding as store
from uplinkd.pd.binding import Binding, Kind
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


def wants_address(config: Config, name: str, advert: Advert | None) -> bool:
    """Whether uplink `name` asks for its own address by DHCPv6 (IA_NA): a `dhcp` uplink whose
    `dhcp6` is "always", or "auto" while its router's RA sets the M flag."""
    setting = dhcp6_of(config, name)
    return setting == "always" or (setting == "auto" and advert is not None and advert.managed)


def dhcp6_of(config: Config, name: str) -> str:
    """Uplink `name`'s `address.dhcp6` (unset: "auto"); "never" for an uplink not in mode `dhcp`
    or one whose `families` leave out IPv6."""
    uplink = config.uplinks.get(name)
    if uplink is None or not isinstance(uplink.address, DhcpAddress) or "ipv6" not in uplink.families:
        return "never"
    return uplink.address.dhcp6 or "auto"


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
    state_files: tuple[tuple[Kind, Path], ...]  # what the client asks for, and where it keeps it


class PdWorkers(WorkerKind[PdSpec, PdClient]):
    """One DHCPv6 client per present uplink that wants a prefix or an address, on an
    interface that is up with carrier; it stops when the interface goes away (its files stay,
    so a replug asks for the same prefix and address)."""

    name = "dhcp6"

    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt)
        self._duid: bytes | None = None
        self._wanted: dict[str, PdSpec] = {}
        now = time.time()
        for name in delegating_uplinks(rt):
            held = store.load(rt.pd_file(name), now=now, kind="pd")
            if held is not None:
                rt.delegations[name] = held.delegation()  # a restart changes nothing
        for name in rt.config.uplinks:
            if dhcp6_of(rt.config, name) != "never":
                got = store.load(rt.na_file(name), now=now, kind="na")
                if got is not None:
                    rt.leases6[name] = got.lease6()  # likewise

    def _asks(self, name: str, delegating: set[str]) -> tuple[tuple[Kind, Path], ...]:
        asks: list[tuple[Kind, Path]] = []
        held = name in self.rt.leases6 and dhcp6_of(self.rt.config, name) != "never"
        if wants_address(self.rt.config, name, self.rt.adverts.get(name)) or held:
            asks.append(("na", self.rt.na_file(name)))
        if name in delegating:
            asks.append(("pd", self.rt.pd_file(name)))
        return tuple(asks)

    def wanted(self, intent: Intent, running: Mapping[str, PdSpec]) -> dict[str, PdSpec]:
        delegating = delegating_uplinks(self.rt)
        wanted: dict[str, PdSpec] = {}
        for s in intent.uplinks:
            asks = self._asks(s.name, delegating) if s.name in self.rt.config.uplinks else ()
            if not asks:
                if s.name not in running:
                    self._forget(s.name)
                continue
            if s.dev is None:
                self._forget(s.name)
                continue
            now = running.get(s.name)
            if s.link_ready or (now is not None and now.dev == s.dev):
                wanted[s.name] = PdSpec(s.dev, asks)
        self._wanted = wanted
        return wanted

    def make(self, name: str, spec: PdSpec) -> PdClient:
        if self._duid is None:
            self._duid = duid(self.rt.config.control.state_dir)
        log.info(
            "%s: DHCPv6 client started on %s for %s",
            name, spec.dev, " and ".join(WHAT[kind] for kind, _ in spec.state_files),
        )  # fmt: skip
        return PdClient(
            name=name,
            dev=spec.dev,
            state_files=dict(spec.state_files),
            duid=self._duid,
            on_binding=self._binding,
        )

    def stopped(self, name: str) -> None:
        """A client stopped: its bindings are forgotten, but for those its restarted self
        (asking for more or less) keeps, so the kernel sees no gap."""
        again = self._wanted.get(name)
        self._forget(name, keep={kind for kind, _ in again.state_files} if again is not None else set())

    def _forget(self, name: str, *, keep: set[Kind] | frozenset[Kind] = frozenset()) -> None:
        gone = "pd" not in keep and self.rt.delegations.pop(name, None) is not None
        gone = ("na" not in keep and self.rt.leases6.pop(name, None) is not None) or gone
        if gone:
            self.rt.wake.set()

    def _binding(self, name: str, kind: Kind, binding: Binding | None, why: str) -> None:
        if kind == "pd":
            self._delegation(name, binding, why)
        else:
            self._address(name, binding, why)

    def _address(self, name: str, binding: Binding | None, why: str) -> None:
        old = self.rt.leases6.get(name)
        new = binding.lease6() if binding is not None else None
        if new is None:
            self.rt.leases6.pop(name, None)
        else:
            self.rt.leases6[name] = new
        if (old.address if old else None) != (new.address if new else None):
            log.info("%s: DHCPv6 address %s (%s)", name, new.address if new else "none", why)
            self.rt.wake.set()

    def _delegation(self, name: str, binding: Binding | None, why: str) -> None:
        delegation = binding.delegation() if binding is not None else None
        old = self.rt.delegations.get(name)
        if delegation is None:
            self.rt.delegations.pop(name, None)
        else:
            self.rt.delegations[name] = delegation
        if (old is None) != (delegation is None) or (old and delegation and old.prefix != delegation.prefix):
            log.info("%s: delegated prefix %s (%s)", name, delegation.prefix if delegation else "none", why)
            self.rt.wake.set()


WHAT: dict[Kind, str] = {"na": "an address (IA_NA)", "pd": "a delegated prefix (IA_PD)"}
