"""Per-interface settings an uplink's own IP configuration asks for: the MTU a modem's bearer
names, and `accept_ra = 2` on a modem's or `dhcp` uplink's interface (its IPv6 comes by router
advertisement, and the router forwards, where the kernel's default 1 ignores RAs), with the
other RA settings uplinkd needs (`conf6`): `accept_ra_defrtr = 0` (the RA's router goes into
the uplink's table only, by uplinkd, never into main by the kernel), `accept_ra_pinfo = 0` on
an uplink whose /64 is extended to a LAN, `proxy_ndp = 1` where that LAN's hosts are proxied.

Like `LinkUp`, only ever set, never undone: nothing here is pruned, nothing is "ours". The
object names only the settings wanted (None: leave as it is); what is read back names every
setting the interface has, so a wanted object equals its reading once the kernel holds it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from uplinkd.config import Ownership
from uplinkd.model.kinds.base import Change, Kind, Ref, Stage, Verb
from uplinkd.model.kinds.io import Snapshot, Transport


@dataclass(frozen=True)
class LinkTuning:
    ifindex: int
    mtu: int | None = None
    accept_ra: int | None = None
    conf6: tuple[tuple[str, int], ...] = ()  # more net.ipv6.conf.<dev> settings (CONF6 keys), sorted
    dev: str = field(default="", compare=False)

    def __str__(self) -> str:
        name = self.dev or str(self.ifindex)
        parts = [f"ip link set dev {name} mtu {self.mtu}"] if self.mtu is not None else []
        parts += [f"sysctl -w net.ipv6.conf.{name}.{key}={value}" for key, value in self.conf6]
        if self.accept_ra is not None:  # last: see `write`
            parts.append(f"sysctl -w net.ipv6.conf.{name}.accept_ra={self.accept_ra}")
        return "; ".join(parts) or f"# nothing to set on {name}"


class LinkTunings(Kind[int, LinkTuning]):
    name = "link-tuning"
    type = LinkTuning
    create_stage = Stage.LINKS
    delete_stage = Stage.LINKS  # never used: settings are not undone
    prune = False

    def key(self, obj: LinkTuning) -> int:
        return obj.ifindex

    def render(self, verb: Verb, obj: LinkTuning) -> str:
        return str(obj)

    def changes(
        self, have: Mapping[int, LinkTuning], want: Mapping[int, LinkTuning], *, recreated: frozenset[Ref]
    ) -> Iterator[Change]:
        # compare only the settings wanted: the reading names them all
        narrowed = {
            key: LinkTuning(
                key,
                mtu=old.mtu if want[key].mtu is not None else None,
                accept_ra=old.accept_ra if want[key].accept_ra is not None else None,
                conf6=tuple((k, v) for k, v in old.conf6 if k in dict(want[key].conf6)),
                dev=old.dev,
            )
            for key, old in have.items()
            if key in want
        }
        return super().changes(narrowed, want, recreated=recreated)

    def read(self, snapshot: Snapshot, owner: Ownership) -> Iterator[LinkTuning]:
        return (
            LinkTuning(i, mtu=link.mtu, accept_ra=link.accept_ra, conf6=link.conf6, dev=link.name)
            for i, link in snapshot.links.items()
            if link.mtu is not None or link.accept_ra is not None
        )

    async def write(self, io: Transport, verb: Verb, obj: LinkTuning, owner: Ownership) -> None:
        if obj.mtu is not None:
            await io.link_mtu(index=obj.ifindex, mtu=obj.mtu)
        # What to take from an RA (accept_ra_defrtr, accept_ra_pinfo) before accept_ra itself:
        # an RA that arrives between the writes must meet the narrowed settings. The other
        # way round, one RA (the ISP's answer to the link coming up) put a SLAAC address and
        # an on-link route for an extended /64 on the uplink, and the LAN lost its IPv6.
        for key, value in obj.conf6:
            await io.ipv6_conf(dev=obj.dev, key=key, value=value)
        if obj.accept_ra is not None:
            await io.ipv6_conf(dev=obj.dev, key="accept_ra", value=obj.accept_ra)


KIND = LinkTunings()
