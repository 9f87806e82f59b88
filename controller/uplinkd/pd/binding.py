"""A DHCPv6 binding: the delegated prefix (IA_PD) or the uplink's own address (IA_NA), its
server and its times, kept in state_dir.

A binding is what the client holds between exchanges. It is written to a JSON file per
uplink and kind (`<uplink>.pd.json`, `<uplink>.na.json`) after every Reply, so a restarted
controller keeps routing the same prefix to its LANs, and keeps the same address on the
uplink, at once (no kernel write) and asks the server to extend it with a Rebind (RFC 8415
§18.2.2: a client that restarts with valid delegated prefixes rebinds them). A file that
is missing, mangled or expired is no binding.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from uplinkd.model import Delegation, Lease6
from uplinkd.pd.messages import INFINITY, Ia, IaAddress, IaNa, IaPd, IaPrefix

Kind = Literal["pd", "na"]
KINDS: tuple[Kind, ...] = ("na", "pd")

# When a server leaves T1/T2 to the client (0): these fractions of the shortest preferred
# lifetime, the values RFC 8415 §21.21 recommends to servers.
T1_SHARE, T2_SHARE = 0.5, 0.8


def _timers(t1: int, t2: int, *, preferred: int, valid: int) -> tuple[int, int]:
    """T1 and T2 for a binding: the server's, or (0) the client's choice of 0.5 and 0.8 of the
    preferred lifetime (of the valid one for a deprecated binding, whose preferred lifetime is
    0: a Rebind every second otherwise); a finite one never past the valid lifetime (a
    server's T1 of a day for an hour's lease would let the binding lapse before anyone asked).
    An infinite T1 is the server's "do not renew": the binding then runs out and the client
    asks anew."""
    base = preferred if preferred > 0 else valid
    if base == INFINITY:
        t1, t2 = t1 or INFINITY, t2 or INFINITY
    else:
        t1 = t1 or max(1, int(base * T1_SHARE))
        t2 = t2 or max(t1, int(base * T2_SHARE))
    if valid != INFINITY:
        if valid <= t1 < INFINITY:
            t1 = max(1, int(valid * T1_SHARE))
        if valid <= t2 < INFINITY:
            t2 = max(t1, int(valid * T2_SHARE))
    return t1, min(max(t1, t2), INFINITY)


@dataclass(frozen=True)
class Binding:
    """One delegated prefix (`kind` "pd") or one address (`kind` "na": `prefix` is the
    address as a /128), got at wall-clock time `obtained`; lifetimes and T1/T2 in seconds as
    the server gave them (INFINITY: for ever)."""

    server_id: bytes
    iaid: int
    prefix: ipaddress.IPv6Network
    preferred: int
    valid: int
    t1: int
    t2: int
    obtained: float
    kind: Kind = "pd"

    @classmethod
    def from_ia(cls, ia: Ia, *, server_id: bytes, now: float) -> Binding | None:
        """The binding an IA_PD or IA_NA of a Reply gives: its longest-lived prefix (or
        address) with a valid lifetime, or None (none, a failure status, or T1 > T2: RFC 8415
        §21.4 and §21.21 say to discard such an IA)."""
        if ia.status not in (None, 0) or (ia.t1 and ia.t2 and ia.t1 > ia.t2):
            return None
        if isinstance(ia, IaNa):
            held = [
                IaPrefix(ipaddress.IPv6Network(a.address), a.preferred, a.valid)
                for a in ia.addresses
                if a.status in (None, 0) and _address_usable(a)
            ]
            kind: Kind = "na"
        else:
            held, kind = list(ia.prefixes), "pd"
        usable = [p for p in held if p.valid > 0 and p.preferred <= p.valid]
        if not usable:
            return None
        # a preferred one before a deprecated one (a server renumbering lists both), then the
        # longest-lived, then the shortest prefix
        best: IaPrefix = max(usable, key=lambda p: (p.preferred > 0, p.valid, p.prefix.prefixlen * -1))
        t1, t2 = _timers(ia.t1, ia.t2, preferred=best.preferred, valid=best.valid)
        return cls(server_id, ia.iaid, best.prefix, best.preferred, best.valid, t1, t2, now, kind)

    def _at(self, seconds: int) -> float | None:
        return None if seconds == INFINITY else self.obtained + seconds

    @property
    def renew_at(self) -> float | None:
        return self._at(self.t1)

    @property
    def rebind_at(self) -> float | None:
        return self._at(self.t2)

    @property
    def expires_at(self) -> float | None:
        return self._at(self.valid)

    def expired(self, now: float) -> bool:
        end = self.expires_at
        return end is not None and now >= end

    def ia(self) -> Ia:
        """The IA a Renew, Rebind or Decline carries for this binding (lifetimes 0: RFC 8415
        §18.2.4)."""
        if self.kind == "na":
            return IaNa(self.iaid, 0, 0, (IaAddress(self.prefix.network_address, 0, 0),))
        return IaPd(self.iaid, 0, 0, (IaPrefix(self.prefix, 0, 0),))

    def delegation(self) -> Delegation:
        return Delegation(self.prefix, self.expires_at)

    def lease6(self) -> Lease6:
        """An IA_NA binding as the fact the planner reads: the address, as a /128."""
        return Lease6(ipaddress.IPv6Interface(self.prefix), self.expires_at)

    def to_json(self) -> str:
        return json.dumps(
            {
                "server_id": self.server_id.hex(),
                "iaid": self.iaid,
                "prefix": str(self.prefix),
                "preferred": self.preferred,
                "valid": self.valid,
                "t1": self.t1,
                "t2": self.t2,
                "obtained": self.obtained,
                "kind": self.kind,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Binding:
        d = json.loads(text)
        kind = d.get("kind", "pd")  # files from before IA_NA hold a delegation
        if kind not in KINDS:
            raise ValueError(f"a binding of kind {kind!r}")
        return cls(
            bytes.fromhex(d["server_id"]),
            int(d["iaid"]),
            ipaddress.IPv6Network(d["prefix"]),
            int(d["preferred"]),
            int(d["valid"]),
            int(d["t1"]),
            int(d["t2"]),
            float(d["obtained"]),
            kind,
        )


def _address_usable(a: IaAddress) -> bool:
    """An address a server may assign to an uplink: global unicast (not link-local,
    multicast, loopback or unspecified)."""
    ip = a.address
    return not (ip.is_link_local or ip.is_multicast or ip.is_loopback or ip.is_unspecified)


def load(path: Path, *, now: float, kind: Kind = "pd") -> Binding | None:
    """The binding of `kind` a previous run left, unless it is missing, mangled, of another
    kind or expired."""
    try:
        binding = Binding.from_json(path.read_text())
    except (OSError, ValueError, TypeError, LookupError):
        return None
    return None if binding.expired(now) or binding.kind != kind else binding


def save(path: Path, binding: Binding | None) -> None:
    """Keep (or, with None, forget) a binding; written whole, then renamed into place."""
    with contextlib.suppress(OSError):
        if binding is None:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(binding.to_json())
        os.replace(tmp, path)
