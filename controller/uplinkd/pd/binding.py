"""A DHCPv6-PD binding: the delegated prefix, its server and its times, kept in state_dir.

A binding is what the client holds between exchanges. It is written to a JSON file per
uplink after every Reply, so a restarted controller keeps routing the same prefix to its
LANs at once (no kernel write) and asks the server to extend it with a Rebind (RFC 8415
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

from uplinkd.model import Delegation
from uplinkd.pd.messages import INFINITY, IaPd, IaPrefix

# When a server leaves T1/T2 to the client (0): these fractions of the shortest preferred
# lifetime, the values RFC 8415 §21.21 recommends to servers.
T1_SHARE, T2_SHARE = 0.5, 0.8


@dataclass(frozen=True)
class Binding:
    """One delegated prefix, got at wall-clock time `obtained`; lifetimes and T1/T2 in
    seconds as the server gave them (INFINITY: for ever)."""

    server_id: bytes
    iaid: int
    prefix: ipaddress.IPv6Network
    preferred: int
    valid: int
    t1: int
    t2: int
    obtained: float

    @classmethod
    def from_ia(cls, ia: IaPd, *, server_id: bytes, now: float) -> Binding | None:
        """The binding an IA_PD of a Reply gives: its longest-lived prefix with a valid
        lifetime, or None (no prefix, a failure status, or T1 > T2: RFC 8415 §21.21 says
        to discard such an IA_PD)."""
        usable = [p for p in ia.prefixes if p.valid > 0 and p.preferred <= p.valid]
        if ia.status not in (None, 0) or not usable or (ia.t1 and ia.t2 and ia.t1 > ia.t2):
            return None
        best: IaPrefix = max(usable, key=lambda p: (p.valid, p.prefix.prefixlen * -1))
        t1, t2 = ia.t1, ia.t2
        if best.preferred != INFINITY:
            t1 = t1 or max(1, int(best.preferred * T1_SHARE))
            t2 = t2 or max(t1, int(best.preferred * T2_SHARE))
        else:
            t1, t2 = t1 or INFINITY, t2 or INFINITY
        return cls(server_id, ia.iaid, best.prefix, best.preferred, best.valid, t1, t2, now)

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

    def ia(self) -> IaPd:
        """The IA_PD a Renew or Rebind carries for this binding (lifetimes 0: RFC 8415 §18.2.4)."""
        return IaPd(self.iaid, 0, 0, (IaPrefix(self.prefix, 0, 0),))

    def delegation(self) -> Delegation:
        return Delegation(self.prefix, self.expires_at)

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
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Binding:
        d = json.loads(text)
        return cls(
            bytes.fromhex(d["server_id"]),
            int(d["iaid"]),
            ipaddress.IPv6Network(d["prefix"]),
            int(d["preferred"]),
            int(d["valid"]),
            int(d["t1"]),
            int(d["t2"]),
            float(d["obtained"]),
        )


def load(path: Path, *, now: float) -> Binding | None:
    """The binding a previous run left, unless it is missing, mangled or expired."""
    try:
        binding = Binding.from_json(path.read_text())
    except (OSError, ValueError, TypeError, LookupError):
        return None
    return None if binding.expired(now) else binding


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
