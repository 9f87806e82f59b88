"""What the guest's kernel holds, read back with one guest command (one agent round trip).

``ip -json`` (rules, routes of every table, nexthops), ``nft -j`` (the ``inet uplinkd`` table)
and ``conntrack -L``, run in one shell command, so one check costs one round trip (~1 s under
TCG).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from harness.readback import nhid
from harness.vm.channel import VmError
from harness.vm.guest import GuestCommands

_READ_BACK = [
    "ip -json -4 rule show",
    "ip -json -6 rule show",
    "ip -json -4 route show table all",
    "ip -json -6 route show table all",
    "ip -json nexthop show",
    "nft -j list table inet uplinkd",
    "conntrack -L -o extended",
]
_SEPARATOR = "@@uplinkd-vm@@"


def _json_or_empty(text: str) -> Any:
    text = text.strip()
    if not text:
        return []
    with contextlib.suppress(ValueError):
        return json.loads(text)
    return []


def _family(text: str, family: str) -> list[dict[str, Any]]:
    """``ip -json`` objects, each with a ``family`` key added (``ip`` leaves it out)."""
    return [{**obj, "family": family} for obj in _json_or_empty(text) if isinstance(obj, dict)]


@dataclass(frozen=True)
class GuestKernel:
    """What the guest's kernel holds, read in one go (``ip -json``, ``nft -j``, conntrack)."""

    rules: list[dict[str, Any]]
    """Both families, each with ``family`` ``inet`` or ``inet6``; so are ``routes``."""
    routes: list[dict[str, Any]]
    nexthops: list[dict[str, Any]]
    nft: list[dict[str, Any]]
    conntrack_marks: list[int]

    def table(self, table: int | str) -> list[dict[str, Any]]:
        """Routes of one table (``main`` routes carry no ``table`` key in ``ip -json``)."""
        name = str(table)
        return [r for r in self.routes if str(r.get("table", "main")) == name]

    def default_route(self, table: int | str) -> dict[str, Any] | None:
        return next((r for r in self.table(table) if r.get("dst") == "default"), None)

    def nft_set(self, name: str = "uplinks") -> list[str]:
        for obj in self.nft:
            if "set" in obj and obj["set"].get("name") == name:
                return [str(e) for e in obj["set"].get("elem", [])]
        return []

    def leftovers(self, *, ifname: str, table: int, mark: int, address: str | None) -> list[str]:
        """Whatever is still there of an uplink that is gone: rules with its table or
        address, routes in its table or out of its interface, its nexthops and group
        membership, nft set elements and rules naming it or its mark, conntrack entries
        with its mark."""
        left = [
            f"rule {r}"
            for r in self.rules
            if str(r.get("table")) == str(table) or (address is not None and r.get("src") == address)
        ]
        left += [f"route {r}" for r in self.table(table)]
        left += [f"route {r}" for r in self.routes if r.get("dev") == ifname]
        ours = {nhid(table), nhid(table, True)}
        for nh in self.nexthops:
            if nh.get("dev") == ifname or nh.get("id") in ours:
                left.append(f"nexthop {nh}")
            if any(m.get("id") in ours for m in nh.get("group", [])):
                left.append(f"group member {nh}")
        for obj in self.nft:
            if "set" in obj and ifname in json.dumps(obj["set"].get("elem", [])):
                left.append(f"nft set {obj['set']['name']}: element {ifname}")
            if "rule" in obj:
                text = json.dumps(obj["rule"]["expr"])
                if f'"{ifname}"' in text or f": {mark}" in text:
                    left.append(f"nft chain {obj['rule']['chain']}: {text}")
        left += [f"conntrack mark {m:#x}" for m in self.conntrack_marks if m & 0xFF00 == mark]
        return left


def read_kernel(vm: GuestCommands, timeout: float = 30.0) -> GuestKernel:
    """The guest's rules, routes (all tables, both families), nexthops, the ``inet uplinkd``
    nft table and the conntrack marks, with one guest command."""
    script = f"; echo {_SEPARATOR}; ".join(f"{cmd} 2>/dev/null" for cmd in _READ_BACK)
    out = vm.check(script, timeout)
    parts = out.split(_SEPARATOR + "\n")
    if len(parts) != len(_READ_BACK):
        raise VmError(f"kernel read-back: expected {len(_READ_BACK)} parts, got {len(parts)}")
    rules4, rules6, routes4, routes6, nexthops, nft, conntrack = parts
    nft_json = _json_or_empty(nft)
    marks = [
        int(word[5:])
        for line in conntrack.splitlines()
        for word in line.split()
        if word.startswith("mark=") and word[5:].isdigit()
    ]
    return GuestKernel(
        rules=_family(rules4, "inet") + _family(rules6, "inet6"),
        routes=_family(routes4, "inet") + _family(routes6, "inet6"),
        nexthops=list(_json_or_empty(nexthops)),
        nft=[o for o in nft_json.get("nftables", []) if "metainfo" not in o]
        if isinstance(nft_json, dict)
        else [],
        conntrack_marks=marks,
    )
