"""How the DHCPv6 client reads a server's answers: which Advertise is best, what bindings a
Reply gives, and how a Renew or Rebind went. Pure: no sockets, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping

from uplinkd.pd.binding import Binding, Kind
from uplinkd.pd.messages import Ia, IaNa, IaPd, Message, Status


def pure_rank(msg: Message, *, iaid: int, kinds: frozenset[Kind]) -> int | None:
    """An Advertise's score: its preference, less 256 per wanted IA it offers nothing for;
    None when it offers nothing at all (or a top-level failure status)."""
    if msg.status not in (None, 0):
        return None
    offered = sum(1 for kind in kinds if offers(msg, iaid=iaid, kind=kind))
    if offered == 0:
        return None
    return msg.preference - 256 * (len(kinds) - offered)


def ia_of(msg: Message, *, iaid: int, kind: Kind) -> Ia | None:
    """The message's IA of `kind` with our IAID, if any."""
    found: tuple[Ia, ...] = msg.ia_na if kind == "na" else msg.ia_pd
    return next((ia for ia in found if ia.iaid == iaid), None)


def offers(msg: Message, *, iaid: int, kind: Kind) -> bool:
    """Whether the message holds a usable binding of `kind` for us."""
    ia = ia_of(msg, iaid=iaid, kind=kind)
    return ia is not None and Binding.from_ia(ia, server_id=b"", now=0.0) is not None


def bindings_of(msg: Message, *, iaid: int, kinds: frozenset[Kind], now: float) -> dict[Kind, Binding]:
    """The bindings a Reply gives, per kind (only kinds that got a usable one)."""
    found: dict[Kind, Binding] = {}
    for kind in sorted(kinds):
        ia = ia_of(msg, iaid=iaid, kind=kind)
        got = Binding.from_ia(ia, server_id=msg.server_id or b"", now=now) if ia is not None else None
        if got is not None:
            found[kind] = got
    return found


def outcome_of(reply: Message | None, held: Mapping[Kind, Binding], got: Mapping[Kind, Binding]) -> str:
    """How a Renew or Rebind went: "silent" (no Reply), "bound" (every held binding was
    extended) or "refused" (a top-level failure, or a held binding left out or refused)."""
    if reply is None:
        return "silent"
    if reply.status not in (None, 0) or any(kind not in got for kind in held):
        return "refused"
    return "bound"


def ended_of(reply: Message | None, held: Mapping[Kind, Binding], *, iaid: int) -> set[Kind]:
    """The held bindings a Reply ends now (RFC 8415 §18.2.10.1): it lists the held address or
    prefix with a valid lifetime of 0, or says NotOnLink (the uplink was moved to another
    network). Not a plain refusal (NoBinding, or an IA left out): the binding then stays in
    force until its own valid lifetime while the client asks anew."""
    if reply is None:
        return set()
    ended: set[Kind] = set()
    for kind, binding in held.items():
        ia = ia_of(reply, iaid=iaid, kind=kind)
        if ia is None:
            continue
        if isinstance(ia, IaNa):
            mine = binding.prefix.network_address
            listed = [(a.valid, a.status) for a in ia.addresses if a.address == mine]
        else:
            listed = [(p.valid, None) for p in ia.prefixes if p.prefix == binding.prefix]
        if ia.status == Status.NOT_ON_LINK or any(v == 0 or st == Status.NOT_ON_LINK for v, st in listed):
            ended.add(kind)
    return ended


def empty_ia(kind: Kind, iaid: int) -> Ia:
    return IaNa(iaid) if kind == "na" else IaPd(iaid)
