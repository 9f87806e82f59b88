"""uplinkd's own router advertisement sender on `extend` LANs: one worker per LAN interface.

Why its own sender rather than radvd or dnsmasq: what the LAN must be told is decided by the
controller's state — which /64 the uplink has now, whether the uplink is in service — and it
must reach the LAN within a second of a change (the old prefix deprecated, router lifetime 0
when no uplink is left). A daemon that re-reads a config file, or that learns the prefix
from the interface's addresses and keeps advertising a removed one at its configured
lifetimes, puts a config writer, a reload and its own timers between the controller's
decision and the LAN. Here the plan computes the RA (`plan/extend.py`); a new RA restarts the
worker, which sends it at once; a router advertisement is ~100 bytes of a fixed format.

Each worker sends:

- on start, three RAs a second apart (RFC 4861's initial advertisements), then one every
  MIN_INTERVAL..MAX_INTERVAL seconds (fewer when a lifetime is short);
- an answer to each router solicitation (hop limit 255), unicast to the soliciting host
  (RFC 7772), at most one per MIN_ANSWER_GAP;
- prefixes the LAN had before (a renumbered or lost uplink) with preferred lifetime 0, so hosts
  stop choosing them for new connections at once (`AdvertSenders` remembers them for
  DEPRECATED_FOR).

The RA carries the router's link-layer address, the MTU, the prefix(es) and the uplink's DNS
servers (RDNSS), and router lifetime 0 when the LAN has no way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from uplinkd.kernel.ndsock import HOP_LIMIT, NdSocket
from uplinkd.model.adverts import ROUTER_SOLICIT, Advert, AdvertPrefix, encode_advert, is_solicit
from uplinkd.plan import Intent
from uplinkd.runtime import Runtime
from uplinkd.workers import WorkerKind

log = logging.getLogger("uplinkd.advertiser")

INITIAL, INITIAL_GAP = 3, 1.0
MIN_INTERVAL, MAX_INTERVAL = 200.0, 600.0  # RFC 4861's MaxRtrAdvInterval default and a third of it
MIN_ANSWER_GAP = 0.05
DEPRECATED_FOR = 7200.0  # seconds a former prefix is still advertised, deprecated
DEPRECATED_VALID = 7200  # its valid lifetime then (RFC 4862 5.5.3 e: hosts keep it at least 2 h)


@dataclass(frozen=True)
class SendSpec:
    dev: str
    advert: Advert


def interval(advert: Advert, rng: random.Random) -> float:
    """Seconds until the next unsolicited RA: MIN..MAX_INTERVAL, or a third of the shortest
    lifetime in it, so that a host hears it again before anything runs out."""
    lifetimes = (
        [advert.lifetime] + [p.valid for p in advert.prefixes] + [p.preferred for p in advert.prefixes]
    )
    shortest = min((t for t in lifetimes if t > 0), default=None)
    top = MAX_INTERVAL if shortest is None else max(3.0, min(MAX_INTERVAL, shortest / 3))
    return rng.uniform(min(MIN_INTERVAL, top * 0.75), top)


class AdvertSender:
    def __init__(self, *, name: str, spec: SendSpec) -> None:
        self.name = name
        self.spec = spec
        self.sent = 0
        self.answered = 0
        self.rng = random.Random()

    def _lladdr(self) -> bytes | None:
        with contextlib.suppress(OSError, ValueError):
            text = Path("/sys/class/net", self.spec.dev, "address").read_text().strip()
            raw = bytes.fromhex(text.replace(":", ""))
            return raw if len(raw) == 6 else None
        return None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        with NdSocket(self.spec.dev, (ROUTER_SOLICIT,), all_routers=True) as sock:
            message = encode_advert(self.spec.advert, lladdr=self._lladdr())
            initial = INITIAL
            next_at = loop.time()
            answered_at = 0.0
            while True:
                if loop.time() >= next_at:
                    why = sock.send(message)
                    if why is None:
                        self.sent += 1
                    else:
                        log.debug("%s: RA not sent: %s", self.name, why)
                    initial -= 1
                    gap = INITIAL_GAP if initial > 0 else interval(self.spec.advert, self.rng)
                    next_at = loop.time() + gap
                try:
                    data, source, hop_limit = await asyncio.wait_for(
                        sock.receive(), max(0.0, next_at - loop.time())
                    )
                except TimeoutError:
                    continue
                if (
                    hop_limit != HOP_LIMIT
                    or not is_solicit(data)
                    or loop.time() - answered_at < MIN_ANSWER_GAP
                ):
                    continue
                answered_at = loop.time()
                to = source if source.is_link_local else None
                if (sock.send(message, to) if to is not None else sock.send(message)) is None:
                    self.answered += 1


class AdvertSenders(WorkerKind[SendSpec, AdvertSender]):
    """One sender per `extend` LAN that is there. After the pass's writes: the prefix is on
    the LAN before hosts are told about it."""

    name = "ra-sender"
    after_writes = True

    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt)
        # LAN → former prefix → (advertised deprecated until, monotonic; its last lifetimes)
        self._former: dict[str, dict[ipaddress.IPv6Network, tuple[float, AdvertPrefix]]] = {}

    def wanted(self, intent: Intent, running: Mapping[str, SendSpec]) -> dict[str, SendSpec]:
        now = time.monotonic()
        wanted: dict[str, SendSpec] = {}
        for lan, advert in intent.adverts.items():
            live = {p.prefix for p in advert.prefixes}
            former = self._former.setdefault(lan, {})
            before = running.get(lan)
            for p in before.advert.prefixes if before is not None else ():
                if p.preferred > 0 and p.prefix not in live:
                    former[p.prefix] = (now + DEPRECATED_FOR, p)
            for prefix in [*former]:
                if prefix in live or former[prefix][0] <= now:
                    del former[prefix]
            deprecated = tuple(
                AdvertPrefix(p.prefix, min(p.valid, DEPRECATED_VALID), 0, p.onlink, p.autonomous)
                for _, p in sorted(former.values(), key=lambda f: f[1].prefix)
            )
            wanted[lan] = SendSpec(lan, replace(advert, prefixes=advert.prefixes + deprecated))
        for lan in [*self._former]:
            if lan not in intent.adverts:
                del self._former[lan]
        return wanted

    def make(self, name: str, spec: SendSpec) -> AdvertSender:
        prefixes = ", ".join(
            f"{p.prefix}{' (deprecated)' if p.preferred == 0 else ''}" for p in spec.advert.prefixes
        )
        log.info(
            "%s: advertising router lifetime %d s, prefixes %s",
            name,
            spec.advert.lifetime,
            prefixes or "none",
        )
        return AdvertSender(name=name, spec=spec)
