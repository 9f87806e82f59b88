"""What the chaos soak reads back from the kernel: uplinkd's layout, with `ip -json` and `nft -j`.

Independent of the daemon: this never asks uplinkd, it reads what the router namespace holds
(rules and routes carrying protocol 77, nexthops in uplinkd's id range, the nft table `inet
uplinkd`, the addresses on the uplink interfaces) and writes it in a form two reads can be
compared in: interface names and the stick's DHCP address are replaced by the uplink's name
(the stick comes back under a new name, maybe with a new address), counters, handles and the
table's digest comment are dropped.  A `Layout` is a frozen tuple of sorted lines, so `==` says
"the same layout" and `diff` says what differs.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PROTO = 77
NH_BASE = 100_000_000
NH_TOP = NH_BASE + 2 * (1 << 24) + 2
NFT_TABLE = ("inet", "uplinkd")
RULE_KEYS = (
    "priority", "src", "srclen", "fwmark", "fwmask", "table", "suppress_prefixlen", "iif", "oif", "action",
)  # fmt: skip
ROUTE_KEYS = ("table", "type", "dst", "gateway", "dev", "nhid", "prefsrc", "metric", "scope")
NFT_DROP = {"handle", "packets", "bytes", "comment"}


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    if done.returncode != 0:
        if "No such file or directory" in done.stderr or "does not exist" in done.stderr:
            return ""
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _ip(netns: str, *args: str) -> list[dict[str, Any]]:
    out = _run(["ip", "-n", netns, "-json", *args]).strip()
    return list(json.loads(out)) if out else []


@dataclass(frozen=True)
class Names:
    """How to write kernel names in a comparable way: device → uplink, address → label."""

    devices: Mapping[str, str]
    """Interface name → uplink name, for the interfaces plugged in now."""
    addresses: Mapping[str, str]
    """Address (no prefix length) → label, for addresses that may change between reads."""

    def dev(self, name: str | None) -> str | None:
        if name is None:
            return None
        return self.devices.get(name, f"other-dev:{name}")

    def addr(self, address: str | None) -> str | None:
        if address is None:
            return None
        return self.addresses.get(address, address)

    def text(self, text: str) -> str:
        """Replace quoted interface names and labelled addresses inside nft's JSON text."""
        for dev, uplink in self.devices.items():
            text = text.replace(f'"{dev}"', f'"<{uplink}>"')
        for address, label in self.addresses.items():
            text = re.sub(rf"(?<![0-9.]){re.escape(address)}(?![0-9])", f"<{label}>", text)
        return text


@dataclass(frozen=True)
class Layout:
    lines: tuple[str, ...]

    def diff(self, other: Layout) -> dict[str, list[str]]:
        """What this layout has that `other` lacks (`extra`), and the reverse (`missing`)."""
        mine, theirs = set(self.lines), set(other.lines)
        return {"extra": sorted(mine - theirs), "missing": sorted(theirs - mine)}

    def group(self, v6: bool = False) -> dict[str, int]:
        """The balance group's members as written in the layout: uplink → weight."""
        prefix = f"group {NH_BASE + int(v6)} "
        for line in self.lines:
            if line.startswith(prefix):
                return dict(json.loads(line[len(prefix):]))
        return {}

    def without_group(self) -> tuple[str, ...]:
        return tuple(line for line in self.lines if not line.startswith("group "))

    def mentions(self, needle: str) -> list[str]:
        return [line for line in self.lines if needle in line]


def _pick(entry: Mapping[str, Any], keys: tuple[str, ...], names: Names) -> dict[str, Any]:
    picked: dict[str, Any] = {}
    for key in keys:
        if key not in entry:
            continue
        value = entry[key]
        if key in ("dev", "iif", "oif"):
            value = names.dev(value)
        elif key in ("src", "gateway", "prefsrc"):
            value = names.addr(value)
        elif key == "table":
            value = str(value)
        picked[key] = value
    return picked


def _strip(obj: Any) -> Any:
    """Without handles, counters and comments; set and map elements in a fixed order (nft lists
    them in an order that depends on the interface names, and the stick's name changes)."""
    if isinstance(obj, dict):
        unordered = ("elem", "set")
        return {
            k: sorted(_strip(v), key=json.dumps) if k in unordered and isinstance(v, list) else _strip(v)
            for k, v in obj.items()
            if k not in NFT_DROP
        }
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def nft_lines(netns: str, names: Names) -> list[str]:
    out = _run(["ip", "netns", "exec", netns, "nft", "-j", "list", "table", *NFT_TABLE]).strip()
    if not out:
        return []
    lines = []
    for obj in json.loads(out).get("nftables", []):
        kind = next(iter(obj))
        if kind == "metainfo":
            continue
        named = json.loads(names.text(json.dumps(obj[kind])))
        lines.append(f"nft {kind} " + json.dumps(_strip(named), sort_keys=True))
    return lines


def read(netns: str, names: Names, uplink_devices: tuple[str, ...] = ()) -> Layout:
    """uplinkd's kernel state in `netns`, normalised with `names` (see the module doc).

    `uplink_devices`: interfaces whose addresses belong in the layout (static and DHCP
    addresses uplinkd puts there; the external uplink's address too, which is the lab's)."""
    lines: list[str] = []
    for family in ("-4", "-6"):
        for rule in _ip(netns, family, "rule", "show"):
            if str(rule.get("protocol")) in (str(PROTO), "uplinkd"):
                lines.append(f"rule{family} " + json.dumps(_pick(rule, RULE_KEYS, names), sort_keys=True))
        for route in _ip(netns, family, "route", "show", "table", "all", "proto", str(PROTO)):
            lines.append(f"route{family} " + json.dumps(_pick(route, ROUTE_KEYS, names), sort_keys=True))
    nexthops = _ip(netns, "nexthop", "show")
    by_id = {int(n["id"]): n for n in nexthops}
    for nh in nexthops:
        nh_id = int(nh["id"])
        if not NH_BASE <= nh_id < NH_TOP:
            continue
        if "group" in nh:
            members = {}
            for member in nh["group"]:
                dev = by_id.get(int(member["id"]), {}).get("dev")
                members[names.dev(dev) or f"nhid:{member['id']}"] = int(member.get("weight", 1))
            lines.append(f"group {nh_id} " + json.dumps(dict(sorted(members.items()))))
            lines.append(f"nexthop {nh_id} type={nh.get('type', 'mpath')}")
        else:
            lines.append(
                f"nexthop {nh_id} dev={names.dev(nh.get('dev'))} gateway={names.addr(nh.get('gateway'))}"
                f" flags={','.join(sorted(nh.get('flags', [])))}"
            )
    lines += nft_lines(netns, names)
    present = set(uplink_devices)
    for link in _ip(netns, "address", "show"):
        if link.get("ifname") not in present:
            continue
        for info in link.get("addr_info", []):
            if info.get("scope") == "link":
                continue
            address = f"{names.addr(info['local'])}/{info['prefixlen']}"
            lines.append(f"address {names.dev(link['ifname'])} {address}")
    return Layout(tuple(sorted(lines)))


def group(netns: str, names: Names, v6: bool = False) -> dict[str, int]:
    """Just the balance group (one `ip nexthop show`): uplink → weight; empty if none."""
    nexthops = _ip(netns, "nexthop", "show")
    by_id = {int(n["id"]): n for n in nexthops}
    head = by_id.get(NH_BASE + int(v6))
    if head is None:
        return {}
    return {
        names.dev(by_id.get(int(m["id"]), {}).get("dev")) or f"nhid:{m['id']}": int(m.get("weight", 1))
        for m in head.get("group", [])
    }


def ipv4_addresses(netns: str, dev: str) -> list[str]:
    """The global IPv4 addresses on `dev` (none if it is not there)."""
    found: list[str] = []
    for link in _ip(netns, "-4", "address", "show"):
        if link.get("ifname") == dev:
            found += [info["local"] for info in link.get("addr_info", []) if info.get("scope") != "link"]
    return found


def our_rules(netns: str) -> list[dict[str, Any]]:
    return [r for r in _ip(netns, "-4", "rule", "show") if str(r.get("protocol")) in (str(PROTO), "uplinkd")]


def our_routes(netns: str) -> list[dict[str, Any]]:
    return _ip(netns, "-4", "route", "show", "table", "all", "proto", str(PROTO))


def rule_delete_argv(rule: Mapping[str, Any]) -> list[str]:
    """`ip rule del` arguments selecting exactly this rule."""
    argv = ["ip", "-4", "rule", "del", "priority", str(rule["priority"])]
    if rule.get("src") not in (None, "all"):
        argv += ["from", f"{rule['src']}/{rule.get('srclen', 32)}"]
    if "fwmark" in rule:
        argv += ["fwmark", f"{rule['fwmark']}/{rule.get('fwmask', '0xffffffff')}"]
    argv += ["table", str(rule["table"])]
    if "suppress_prefixlen" in rule:
        argv += ["suppress_prefixlength", str(rule["suppress_prefixlen"])]
    return argv


def route_delete_argv(route: Mapping[str, Any]) -> list[str]:
    """`ip route del` arguments selecting exactly this route."""
    argv = ["ip", "-4", "route", "del"]
    if route.get("type") not in (None, "unicast"):
        argv.append(str(route["type"]))
    argv += [str(route["dst"]), "table", str(route["table"]), "proto", str(PROTO)]
    return argv
