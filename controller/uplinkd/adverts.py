"""Router advertisements heard on the uplinks: the controller's own listener, one per uplink
whose IPv6 it handles by RA (`dhcp` uplinks, and any uplink a LAN `extend`s).

The kernel still does SLAAC and honours the RA's MTU on those interfaces (`accept_ra = 2`),
but installs no default route (`accept_ra_defrtr = 0`): the listener records the RA — router,
router lifetime, prefixes with their lifetimes, MTU, DNS servers — as a fact, like a DHCP
lease, and the planner puts the router into the uplink's own table only (`plan/extend.py`).

A raw ICMPv6 socket bound to the interface sees only RAs, and only those with hop limit 255
from a link-local address count (RFC 4861 6.1.2). On start the listener solicits (up to three
router solicitations a second apart, until an RA comes) rather than wait for the router's
next unsolicited one. A router lifetime that runs out without a new RA is recorded as 0.

The last RA per uplink is kept in the state directory, so a restarted controller routes as
before until the router speaks again: a restart changes nothing in the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from uplinkd.kernel.ndsock import ALL_ROUTERS, HOP_LIMIT, NdSocket
from uplinkd.model.adverts import ROUTER_ADVERT, Advert, AdvertPrefix, decode, encode_solicit
from uplinkd.plan import Intent
from uplinkd.plan.extend import by_ra
from uplinkd.runtime import Runtime
from uplinkd.workers import WorkerKind

log = logging.getLogger("uplinkd.adverts")

SOLICITS, SOLICIT_GAP = 3, 1.0  # router solicitations on start, a second apart, until an RA
RA_FILE = "{name}.ra.json"


@dataclass(frozen=True)
class ListenSpec:
    dev: str
    ifindex: int
    state_file: Path


class AdvertListener:
    """Listens for RAs on one uplink and reports each new one (None: forget the last)."""

    def __init__(self, *, name: str, spec: ListenSpec, on_advert: Callable[[Advert], None]) -> None:
        self.name = name
        self.spec = spec
        self.on_advert = on_advert
        self.heard: Advert | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        with NdSocket(self.spec.dev, (ROUTER_ADVERT,)) as sock:
            solicits = SOLICITS if self.heard is None else 0
            next_solicit = loop.time()
            ends: float | None = None  # when the last RA's router lifetime runs out
            while True:
                now = loop.time()
                if solicits and now >= next_solicit:
                    why = sock.send(encode_solicit(), ALL_ROUTERS)
                    if why is not None:
                        log.debug("%s: router solicitation on %s not sent: %s", self.name, self.spec.dev, why)
                    solicits -= 1
                    next_solicit = now + SOLICIT_GAP
                deadlines = [t for t in (next_solicit if solicits else None, ends) if t is not None]
                timeout = max(0.0, min(deadlines) - loop.time()) if deadlines else None
                try:
                    data, source, hop_limit = await asyncio.wait_for(sock.receive(), timeout)
                except TimeoutError:
                    if ends is not None and loop.time() >= ends and self.heard is not None:
                        self._record(replace(self.heard, lifetime=0))
                        ends = None
                    continue
                advert = decode(data, source) if hop_limit == HOP_LIMIT else None
                if advert is None:
                    log.debug(
                        "%s: ignored an RA from %s (malformed or hop limit %d)", self.name, source, hop_limit
                    )
                    continue
                solicits = 0
                ends = loop.time() + advert.lifetime if advert.lifetime > 0 else None
                self._record(advert)

    def _record(self, advert: Advert) -> None:
        if advert != self.heard:
            self.heard = advert
            self.on_advert(advert)


class AdvertListeners(WorkerKind[ListenSpec, AdvertListener]):
    """One listener per present uplink with carrier whose IPv6 the controller handles by RA.
    After the pass's writes: its solicitation should find `accept_ra = 2` already set, so the
    kernel configures addresses and the MTU from the answer."""

    name = "ra"
    after_writes = True

    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt)
        for name in rt.config.uplinks:
            if by_ra(rt.config, name) and (advert := stored(self._file(name))) is not None:
                rt.adverts[name] = advert  # adopt what the last run heard: a restart changes nothing

    def _file(self, name: str) -> Path:
        return self.rt.config.control.state_dir / RA_FILE.format(name=name)

    def wanted(self, intent: Intent, running: Mapping[str, ListenSpec]) -> dict[str, ListenSpec]:
        wanted: dict[str, ListenSpec] = {}
        for s in intent.uplinks:
            if s.name not in self.rt.config.uplinks or not by_ra(self.rt.config, s.name):
                continue
            if s.dev is None or s.ifindex is None:
                self._forget(s.name)
                continue
            now = running.get(s.name)
            if s.link_ready or (now is not None and now.ifindex == s.ifindex):
                wanted[s.name] = ListenSpec(s.dev, s.ifindex, self._file(s.name))
        return wanted

    def make(self, name: str, spec: ListenSpec) -> AdvertListener:
        log.info("%s: listening for router advertisements on %s", name, spec.dev)
        listener = AdvertListener(name=name, spec=spec, on_advert=lambda a: self._heard(name, spec, a))
        listener.heard = self.rt.adverts.get(name)
        return listener

    def stopped(self, name: str) -> None:
        if name not in self.rt.config.uplinks or not by_ra(self.rt.config, name):
            self._forget(name)

    def _heard(self, name: str, spec: ListenSpec, advert: Advert) -> None:
        log.info("%s: %s", name, describe(advert))
        self.rt.adverts[name] = advert
        save(spec.state_file, advert)
        self.rt.wake.set()

    def _forget(self, name: str) -> None:
        if self.rt.adverts.pop(name, None) is not None:
            self.rt.wake.set()
        with contextlib.suppress(OSError):
            self._file(name).unlink()


def describe(advert: Advert) -> str:
    prefixes = ", ".join(
        f"{p.prefix} (preferred {p.preferred} s, valid {p.valid} s)" for p in advert.prefixes
    )
    mtu = f", MTU {advert.mtu}" if advert.mtu is not None else ""
    managed = ", addresses by DHCPv6 (M flag)" if advert.managed else ""
    return f"router {advert.router} for {advert.lifetime} s; prefixes {prefixes or 'none'}{mtu}{managed}"


# --- kept across restarts ---------------------------------------------------------------------


def save(path: Path, advert: Advert) -> None:
    data: dict[str, Any] = asdict(advert)
    data["at"] = time.time()
    text = json.dumps(data, default=str)
    with contextlib.suppress(OSError):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)


def stored(path: Path) -> Advert | None:
    """The advert kept at `path` if its router lifetime has not run out since; None if there is
    none, it is stale or it does not parse (then it is as if none was kept)."""
    try:
        data = json.loads(path.read_text())
        age = time.time() - float(data["at"])
        advert = Advert(
            router=ipaddress.IPv6Address(data["router"]),
            lifetime=int(data["lifetime"]),
            prefixes=tuple(
                AdvertPrefix(
                    ipaddress.IPv6Network(p["prefix"]),
                    int(p["valid"]),
                    int(p["preferred"]),
                    bool(p["onlink"]),
                    bool(p["autonomous"]),
                )
                for p in data["prefixes"]
            ),
            mtu=int(data["mtu"]) if data["mtu"] is not None else None,
            rdnss=tuple(ipaddress.IPv6Address(a) for a in data["rdnss"]),
            rdnss_lifetime=int(data["rdnss_lifetime"]),
            hop_limit=int(data["hop_limit"]),
            managed=bool(data.get("managed", False)),  # files from before the M flag: not managed
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return advert if 0 <= age < advert.lifetime else None
