"""The `policies` section and the steering rules (`rules.steer`): which traffic may use which
uplinks, in tiers.

A policy is an ordered list of tiers; a tier maps uplink names to weights (null: the uplink's
own weight). New connections steered to a policy use the first tier with a healthy member;
with none, the policy's `last_resort`: `carrier` (every uplink of its tiers with carrier),
`unreachable`, or the name of another policy to fall back to. `default` is built in (the
balance over every uplink) and cannot be redefined.

A steering rule matches new connections by any combination of source/destination prefixes,
protocol, source/destination port ranges, input interface and DSCP (forwarded traffic), or
the router's own traffic (`local`, optionally by `uid`); the first rule that matches, in
config order, names the connection's policy. Cross-checks that need the whole config
(unknown uplinks and policies, shadowed rules) are in `check`, called by `Config`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import Field, field_validator, model_validator

from uplinkd.config.fields import Flag, Int, Section, Text, check_range

DEFAULT_POLICY = "default"
LAST_RESORTS = ("carrier", "unreachable")
PROTOCOLS = ("tcp", "udp", "sctp", "icmp", "icmpv6")
PORT_PROTOCOLS = ("tcp", "udp", "sctp")

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
PortRange = tuple[int, int]


def _port_range(value: object) -> PortRange:
    if isinstance(value, list | tuple) and len(value) == 2:  # [low, high], as the Nix module writes
        value = f"{value[0]}-{value[1]}"
    text = str(value).strip()
    m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", text)
    if m is None:
        raise ValueError(f'{value!r} is not a port or port range; write e.g. 5060 or "5060-5061"')
    low, high = int(m.group(1)), int(m.group(2) or m.group(1))
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"{text} is out of range; use ports from 1 to 65535, low-high with low <= high")
    return (low, high)


class Policy(Section):
    """A named policy: tiers of uplinks, tried in order."""

    tiers: tuple[dict[Text, Int | None], ...] = Field(
        description="ordered tiers; each maps uplink name → weight (null: the uplink's weight); "
        "a list of names is read as weights null"
    )
    table: Int = Field(description="routing table T_policy, 1-16777215, not 253/254/255")
    mark: Int | None = Field(
        default=None, description="policy mark under kernel.policy_mask; default: table mod 256"
    )
    last_resort: Text = Field(
        default="carrier",
        description="when no tier has a healthy member: 'carrier' (its uplinks with carrier), "
        "'unreachable', or another policy's name",
    )
    flush_on_recovery: Flag = Field(
        default=False,
        description="when a higher tier comes back, delete the connections of this policy on "
        "lower tiers (they reconnect through the higher tier); default: they stay",
    )

    @field_validator("tiers", mode="before")
    @classmethod
    def _lists_are_tiers(cls, v: object) -> object:
        if isinstance(v, list | tuple):
            return tuple({name: None for name in t} if isinstance(t, list | tuple) else t for t in v)
        return v

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, v: tuple[dict[str, int | None], ...]) -> tuple[dict[str, int | None], ...]:
        if not v:
            raise ValueError('the policy has no tier; give at least one tier, e.g. [{"wan": 1}]')
        for i, tier in enumerate(v):
            if not tier:
                raise ValueError(f"tier {i} is empty; name at least one uplink in it, or remove it")
            for name, weight in tier.items():
                if weight is not None:
                    check_range(weight, low=1, high=256, use=f"a weight for {name!r} from 1 to 256 (or null)")
        return v

    @property
    def mark_value(self) -> int:
        return self.mark if self.mark is not None else self.table % 256


class Steer(Section):
    """One steering rule: every given criterion must hold; the first matching rule wins."""

    policy: Text = Field(description="the policy new connections matching this rule use")
    src: tuple[IPNet, ...] = Field(default=(), description="source prefix(es), any of")
    dst: tuple[IPNet, ...] = Field(default=(), description="destination prefix(es), any of")
    protocol: Literal["tcp", "udp", "sctp", "icmp", "icmpv6"] | None = None
    sport: tuple[PortRange, ...] = Field(default=(), description='source port(s): 5060 or "5060-5061"')
    dport: tuple[PortRange, ...] = Field(default=(), description="destination port(s), like sport")
    iif: Text | None = Field(
        default=None, description="input interface (forwarded traffic), '*' glob at the end"
    )
    dscp: Int | None = Field(default=None, description="DSCP value, 0-63")
    local: Flag = Field(default=False, description="the router's own traffic instead of forwarded traffic")
    uid: Int | None = Field(default=None, description="with local: only sockets of this uid")

    @field_validator("src", "dst", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return (v,) if isinstance(v, str) else v

    @field_validator("sport", "dport", mode="before")
    @classmethod
    def _ports(cls, v: object) -> object:
        items = v if isinstance(v, list | tuple) else [v]
        return tuple(_port_range(p) for p in items)

    @field_validator("iif")
    @classmethod
    def _iif(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,15}\*?", v):
            raise ValueError(f"{v!r} cannot be an interface name; use 1-15 characters, '*' only at the end")
        return v

    @field_validator("dscp")
    @classmethod
    def _dscp(cls, v: int | None) -> int | None:
        return None if v is None else check_range(v, low=0, high=63, use="a DSCP value from 0 to 63")

    @field_validator("uid")
    @classmethod
    def _uid(cls, v: int | None) -> int | None:
        return (
            None if v is None else check_range(v, low=0, high=(1 << 32) - 2, use="a uid from 0 to 4294967294")
        )

    @model_validator(mode="after")
    def _coherent(self) -> Steer:
        if (self.sport or self.dport) and self.protocol not in (None, *PORT_PROTOCOLS):
            raise ValueError(
                f"ports need a protocol with ports; use protocol tcp, udp or sctp, not {self.protocol}"
            )
        if self.uid is not None and not self.local:
            raise ValueError("uid applies to the router's own traffic; set local = true, or drop uid")
        if self.local and self.iif is not None:
            raise ValueError("the router's own traffic has no input interface; drop iif, or local")
        if not self.families:
            raise ValueError("src and dst are of different address families; this rule can never match")
        return self

    @property
    def families(self) -> frozenset[int]:
        """The IP versions (4, 6) this rule can match."""
        fams = {4, 6}
        for prefixes in (self.src, self.dst):
            if prefixes:
                fams &= {p.version for p in prefixes}
        if self.protocol == "icmp":
            fams &= {4}
        elif self.protocol == "icmpv6":
            fams &= {6}
        return frozenset(fams)

    def covers(self, other: Steer) -> bool:
        """Whether every connection `other` matches is matched by this rule (so `other`,
        placed after it, can never match)."""
        if self.local != other.local or not other.families <= self.families:
            return False
        if not (_prefixes_cover(self.src, other.src) and _prefixes_cover(self.dst, other.dst)):
            return False
        if self.protocol is not None and self.protocol != other.protocol:
            return False
        if not (_ports_cover(self.sport, other.sport) and _ports_cover(self.dport, other.dport)):
            return False
        return all(
            mine is None or mine == theirs
            for mine, theirs in ((self.iif, other.iif), (self.dscp, other.dscp), (self.uid, other.uid))
        )


def _prefixes_cover(mine: Sequence[IPNet], theirs: Sequence[IPNet]) -> bool:
    if not mine:
        return True
    if not theirs:
        return False
    return all(any(t.version == m.version and t.subnet_of(m) for m in mine) for t in theirs)  # type: ignore[arg-type]


def _ports_cover(mine: Sequence[PortRange], theirs: Sequence[PortRange]) -> bool:
    if not mine:
        return True
    if not theirs:
        return False
    return all(any(m[0] <= t[0] and t[1] <= m[1] for m in mine) for t in theirs)


def check(
    *,
    policies: Mapping[str, Policy],
    steer: Sequence[Steer],
    uplinks: Sequence[str],
    tables: dict[int, str],
    policy_slots: int,
) -> list[str]:
    """Problems that need the whole config, each naming its field and the fix. `tables`
    (table id → field using it) is extended with the policies' tables."""
    problems: list[str] = []
    marks: dict[int, str] = {}
    for name, policy in policies.items():
        where = f"policies.{name}"
        if name == DEFAULT_POLICY:
            problems.append(
                f"{where}: 'default' is built in (the balance over every uplink); use another name"
            )
        for i, tier in enumerate(policy.tiers):
            problems += [
                f"{where}.tiers.{i}.{u}: no uplink is named {u!r}; "
                f"use one of {', '.join(uplinks) or '(none)'}"
                for u in tier
                if u not in uplinks
            ]
        if policy.table in tables:
            problems.append(
                f"{where}.table: {policy.table} is already used by {tables[policy.table]}; "
                "give every policy its own table id"
            )
        tables.setdefault(policy.table, f"{where}.table")
        field = f"{where}.mark" if policy.mark is not None else f"{where}.mark (default: table mod 256)"
        mark = policy.mark_value
        if not 1 <= mark <= policy_slots:
            problems.append(
                f"{field}: {mark} does not fit kernel.policy_mask; "
                f"set {where}.mark to a value from 1 to {policy_slots}"
            )
        elif mark in marks:
            problems.append(
                f"{field}: {mark} is already used by {marks[mark]}; set {where}.mark to a free value "
                f"from 1 to {policy_slots}"
            )
        marks.setdefault(mark, where)
        resort = policy.last_resort
        if resort not in LAST_RESORTS and resort not in policies and resort != DEFAULT_POLICY:
            problems.append(
                f"{where}.last_resort: {resort!r} is no policy; use carrier, unreachable, default "
                f"or one of {', '.join(policies)}"
            )
    problems += _fallback_cycles(policies)
    known = set(policies) | {DEFAULT_POLICY}
    for i, rule in enumerate(steer):
        if rule.policy not in known:
            problems.append(
                f"rules.steer.{i}.policy: {rule.policy!r} is no policy; use one of {', '.join(sorted(known))}"
            )
        for j, earlier in enumerate(steer[:i]):
            if earlier.covers(rule):
                problems.append(
                    f"rules.steer.{i}: can never match, rules.steer.{j} matches everything it does first; "
                    "move it before that rule, or remove it"
                )
                break
    return problems


def _fallback_cycles(policies: Mapping[str, Policy]) -> list[str]:
    problems: list[str] = []
    for start in policies:
        seen = [start]
        name = policies[start].last_resort
        while name in policies:
            if name == start:
                chain = " → ".join([*seen, name])
                problems.append(
                    f"policies.{start}.last_resort: the fallbacks go round in a circle ({chain}); "
                    "end one of them with carrier, unreachable or default"
                )
                break
            if name in seen:
                break  # a circle not through `start`: reported from one of its members
            seen.append(name)
            name = policies[name].last_resort
    return problems
