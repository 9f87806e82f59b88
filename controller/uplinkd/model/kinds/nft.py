"""The controller's nftables table `inet uplinkd`: which interfaces are uplinks, and their marks.

The object is what the table is rendered from; the ruleset text itself, and parsing it
back, live in `kernel/nft.py` next to each other (one format, one module), behind the
transport's `nft_load`/`nft_delete` and the snapshot's `nft`.

A change is loaded in two steps. An interface joins the table early, before any route
leads out of it (a connection routed in between would be confirmed without NAT and stay
broken); it leaves late, once nothing routes to it any more.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

from uplinkd.config import Ownership
from uplinkd.model.kinds.base import CHANGE, Change, Kind, Op, Ref, Stage, Verb
from uplinkd.model.kinds.io import Snapshot, Transport


@dataclass(frozen=True)
class NftUplink:
    ifname: str
    mark: int


@dataclass(frozen=True, order=True)
class NftPrefix:
    """An uplink's own IPv6 prefix: what may leave it as a source (the guard, `guard6_<mark>`)."""

    ifname: str
    prefix: str  # "2001:db8:1::/64"


@dataclass(frozen=True, order=True)
class NftTranslation:
    """IPv6 from LAN interface `lan` with a source in `inner` leaves uplink `ifname` with
    `inner`'s network half swapped for `outer` (the interface ID kept); conntrack undoes it."""

    lan: str
    inner: str
    ifname: str
    outer: str


@dataclass(frozen=True, order=True)
class NftDelegated:
    """IPv6 from LAN interface `lan` with a source in its delegated /64 `prefix` may leave
    by uplink `ifname` (the one that delegated it), and by no other."""

    lan: str
    ifname: str
    prefix: str


@dataclass(frozen=True)
class NftIpv6:
    """The table's IPv6 part: uplink prefixes, prefix translations, LANs shut off. Sorted."""

    prefixes: tuple[NftPrefix, ...] = ()
    translations: tuple[NftTranslation, ...] = ()
    # LAN interfaces whose IPv6 may not go out of any uplink (but for `delegated`)
    closed: tuple[str, ...] = ()
    delegated: tuple[NftDelegated, ...] = ()

    @property
    def text(self) -> str:
        return "|".join(
            (
                ",".join(f"{p.ifname}={p.prefix}" for p in self.prefixes),
                ",".join(f"{t.lan}:{t.inner}>{t.ifname}:{t.outer}" for t in self.translations),
                ",".join(self.closed),
                ",".join(f"{d.lan}:{d.prefix}>{d.ifname}" for d in self.delegated),
            )
        )


# Bumped when the rendered table changes shape, so a table an older version loaded is replaced
# (v2: the masquerade is IPv4 only; the IPv6 part; v3: delegated LAN prefixes; v4: outbound
# connections remembered in a nat chain, one filter chain after routing instead of forward,
# postrouting and ipv6_guard; v5: the mark restored straight from the ct mark, new
# connections from outside with a source of the router's own dropped here, not by rp_filter,
# and the tunnels' own packets keep their mark in the output hook; v6: the tunnels' own
# connections carry the tunnel's bits in their ct mark).
TABLE_VERSION = 6


@dataclass(frozen=True)
class NftSteer:
    """One steering rule for one chain and family: new connections it matches get `mark`
    under the policy mask (0: the built-in default policy, so no mark, and no later rule)."""

    rule: int  # index in rules.steer
    policy: str
    mark: int
    local: bool = False  # the router's own traffic (output) instead of forwarded (prerouting)
    family: int | None = None  # 4, 6, or None: both
    src: tuple[str, ...] = ()
    dst: tuple[str, ...] = ()
    protocol: str | None = None
    sport: tuple[tuple[int, int], ...] = ()
    dport: tuple[tuple[int, int], ...] = ()
    iif: str | None = None
    dscp: int | None = None
    uid: int | None = None


@dataclass(frozen=True)
class NftState:
    """What the controller's nftables table must say: the uplinks and their marks, the
    steering rules that give new connections a policy mark, and the IPv6 part (which LAN
    prefixes are translated to which uplink's, which may leave where).

    The steering rules are not read back from nft's listing (normalising it is fragile):
    their digest is, from the table's comment. So `steer` takes no part in equality; two
    states are equal when their other fields and `steer_digest` are."""

    table: str
    mask: int
    uplinks: tuple[NftUplink, ...]  # sorted by ifname
    ipv6: NftIpv6 = field(default_factory=NftIpv6)
    # tunnels (plan/tunnels.py): their interfaces get the MSS clamp; their peers' endpoints
    # (address, port, the uplink interfaces of the current underlay), sorted: not tracked
    # inbound (the tunnel's conntrack entry is made by its outgoing packet, and masqueraded by
    # the uplink it leaves by), and dropped when they arrive by another uplink (WireGuard
    # would learn that uplink's address and interface as its source again)
    tunnel_ifnames: tuple[str, ...] = ()
    tunnel_peers: tuple[tuple[str, int, tuple[str, ...]], ...] = ()
    # the tunnels' own fwmarks, sorted: their encrypted packets are routed by the P+5 rule
    # (`fwmark T/T`), so the output hook leaves their mark alone (restoring the uplink's bits
    # would change the mark and make the kernel route each packet a second time)
    tunnel_marks: tuple[int, ...] = ()
    policy_mask: int = 0
    steer: tuple[NftSteer, ...] = field(default=(), compare=False)
    steer_digest: str = ""  # derived from `steer` when that is given

    def __post_init__(self) -> None:
        if self.steer:
            text = repr(self.steer).encode()
            object.__setattr__(self, "steer_digest", hashlib.sha256(text).hexdigest()[:16])

    @property
    def digest(self) -> str:
        """A short stable fingerprint, stored in the table's comment to detect drift cheaply."""
        text = f"v{TABLE_VERSION}|{self.table}|{self.mask}|" + ",".join(
            f"{u.ifname}={u.mark}" for u in self.uplinks
        )
        text += "|" + self.ipv6.text
        if self.tunnel_ifnames or self.tunnel_peers:  # (a table without tunnels keeps its digest)
            text += (
                "|"
                + ",".join(self.tunnel_ifnames)
                + "|"
                + ",".join(f"{a}:{p}@{'+'.join(i)}" for a, p, i in self.tunnel_peers)
            )
        if self.tunnel_marks:
            text += "|marks " + ",".join(f"{m:#x}" for m in self.tunnel_marks)
        if self.steer_digest:  # no steering: the same digest as without policies
            text += f"|{self.policy_mask}|{self.steer_digest}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class NftTables(Kind[str, NftState]):
    name = "nft-table"
    type = NftState
    create_stage = Stage.NFT_JOIN
    delete_stage = Stage.NFT_LEAVE

    def key(self, obj: NftState) -> str:
        return obj.table

    def render(self, verb: Verb, obj: NftState) -> str:
        names = ", ".join(f"{u.ifname}={u.mark:#x}" for u in obj.uplinks) or "no uplinks"
        if obj.steer_digest:
            names += f"; {len(obj.steer) or '?'} steering rules {obj.steer_digest}"
        v6 = [f"{t.inner}>{t.outer} out {t.ifname}" for t in obj.ipv6.translations]
        v6 += [f"{lan} ipv6 off" for lan in obj.ipv6.closed]
        extra = f"; {', '.join(v6)}" if v6 else ""
        return f"nft -f - # {verb} table inet {obj.table} ({names}{extra})"

    def changes(
        self, have: Mapping[str, NftState], want: Mapping[str, NftState], *, recreated: frozenset[Ref]
    ) -> Iterator[Change]:
        for table, wanted in sorted(want.items()):
            early, late = steps(have.get(table), wanted)
            if early is not None:
                yield (int(Stage.NFT_JOIN), CHANGE), Op("replace", early)
            if late is not None:
                yield (int(Stage.NFT_LEAVE), CHANGE), Op("replace", late)
        for table, had in sorted(have.items()):
            if table not in want:
                yield (int(Stage.NFT_LEAVE), CHANGE), Op("delete", had)

    def read(self, snapshot: Snapshot, owner: Ownership) -> Iterator[NftState]:
        if snapshot.nft is not None:
            yield snapshot.nft

    async def write(self, io: Transport, verb: Verb, obj: NftState, owner: Ownership) -> None:
        if verb == "delete":
            await io.nft_delete(obj.table)
        else:
            await io.nft_load(obj)


def steps(have: NftState | None, want: NftState) -> tuple[NftState | None, NftState | None]:
    """(early, late) table loads: early adds the wanted uplinks to what is there, late makes
    it exactly what is wanted. Either is None when it would change nothing."""
    same_shape = have is not None and (have.table, have.mask) == (want.table, want.mask)
    kept = {u.ifname: u for u in have.uplinks} if have is not None and same_shape else {}
    kept.update({u.ifname: u for u in want.uplinks})
    union = replace(want, uplinks=tuple(sorted(kept.values(), key=lambda u: u.ifname)))
    current = have.digest if have is not None else None
    early = union if union.digest != current else None
    late = want if want.digest != union.digest else None
    return early, late


KIND = NftTables()
