"""What a namespace's kernel holds, read independently of uplinkd (``ip -json``, ``nft -j``,
``conntrack``), for the tests' assertions and the benchmarks' clocks.

Tests assert on what the kernel holds and on what packets do, never on which functions ran;
the constants here are uplinkd's ownership layout restated (protocol 77, nexthop ids from
100000000 + 2·table), not imported from it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

from uplinkd.lab import wait_until as lab_wait_until

PROTO = 77
NH_BASE = 100_000_000


def nhid(table: int, v6: bool = False) -> int:
    return NH_BASE + 2 * table + int(v6)


def wait_until(predicate: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy and return it; fail the test with `what` after `timeout`."""
    return lab_wait_until(predicate, timeout=timeout, what=what, interval=0.05)


def ip_json(netns: str, *args: str) -> Any:
    out = subprocess.run(
        ["ip", "-n", netns, "-json", *args], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    return json.loads(out) if out.strip() else []


def rules(netns: str, family: str = "-4") -> list[dict[str, Any]]:
    return [r for r in ip_json(netns, family, "rule", "show") if r.get("protocol") in (str(PROTO), PROTO)]


def all_rules(netns: str, family: str = "-4") -> list[dict[str, Any]]:
    return list(ip_json(netns, family, "rule", "show"))


def routes(netns: str, table: int | str, family: str = "-4") -> list[dict[str, Any]]:
    return list(ip_json(netns, family, "route", "show", "table", str(table)))


def nexthops(netns: str) -> dict[int, dict[str, Any]]:
    return {n["id"]: n for n in ip_json(netns, "nexthop", "show")}


def group_members(netns: str, table_of: dict[int, str], v6: bool = False) -> dict[str, int]:
    """Uplink name → weight in the balance group (empty if there is no group)."""
    group = nexthops(netns).get(NH_BASE + int(v6))
    if group is None:
        return {}
    by_id = {nhid(t, v6): name for t, name in table_of.items()}
    return {by_id[m["id"]]: m.get("weight", 1) for m in group["group"]}


def nft_tables(netns: str) -> list[tuple[str, str]]:
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-j", "list", "tables"],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip
    return [(t["table"]["family"], t["table"]["name"]) for t in json.loads(out)["nftables"] if "table" in t]


def conntrack_marks(netns: str) -> list[int]:
    """The ct mark of every conntrack entry in the namespace (via the conntrack tool)."""
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "conntrack", "-L", "-o", "extended"],
        capture_output=True, text=True, check=False, timeout=10,
    ).stdout  # fmt: skip
    marks = []
    for line in out.splitlines():
        for word in line.split():
            if word.startswith("mark="):
                marks.append(int(word[5:]))
    return marks


SEND_UDP6 = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
for _ in range(3):
    s.sendto(b"x", (sys.argv[3], int(sys.argv[4])))
"""
"""A client's few UDP packets from one source address and port (a flow `explain` can be asked
about), no answer awaited."""


def udp6_flow(netns: str, *, src: str, sport: int, dst: str, dport: int) -> None:
    subprocess.run(
        ["ip", "netns", "exec", netns, "python3", "-c", SEND_UDP6, src, str(sport), dst, str(dport)],
        check=True, timeout=10,
    )  # fmt: skip


def ct_udp6(netns: str, sport: int) -> dict[str, Any] | None:
    """The conntrack entry of the IPv6 UDP flow from `sport`: its mark and the reply tuple's
    destination (the source its packets left with, after any translation); None if none."""
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "conntrack", "-L", "-f", "ipv6", "-p", "udp", "--sport", str(sport),
         "-o", "extended"],
        capture_output=True, text=True, check=False, timeout=10,
    ).stdout  # fmt: skip
    lines = [line for line in out.splitlines() if "udp" in line]
    if len(lines) != 1:
        return None
    words = lines[0].split()
    dsts = [w.removeprefix("dst=") for w in words if w.startswith("dst=")]
    mark = next((int(w.removeprefix("mark=")) for w in words if w.startswith("mark=")), 0)
    return {"mark": mark, "reply_dst": dsts[1] if len(dsts) > 1 else None}
