"""The configuration file: its schema, its validation, and its error messages.

This is the edge of the program. Everything here is pydantic; everything past
`load` sees a frozen, validated `Config`. Every error names the field (as a dotted
path, the way the NixOS module spells it) and says how to fix it.

The same schema is rendered by the NixOS module (`services.uplinkd.settings`) and
printed by `uplinkctl schema`. The sections are here; the `probe` section and its timing
profiles are in `config.probe`, the range check every section uses in `config.fields`,
and the translation of pydantic's errors into "field: problem; fix" in `config.errors`.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator

from uplinkd.config import document, ifname
from uplinkd.config.errors import ConfigError, describe
from uplinkd.config.families import FAMILIES, Family, check_list, lan_problems, uplink_problems
from uplinkd.config.fields import Flag, Float, Int, Section, Text, byte_amount, check_range, ranged, shown
from uplinkd.config.lan import Lan, LanIpv6
from uplinkd.config.lan import cross_check as lan_cross_check
from uplinkd.config.modem import ModemAddress
from uplinkd.config.ownership import Ownership
from uplinkd.config.policies import DEFAULT_POLICY, Policy, Steer
from uplinkd.config.policies import check as check_policies
from uplinkd.config.probe import PROFILES, Probe, parse_target
from uplinkd.config.tunnels import (
    FailBackHold,
    Peer,
    Tunnel,
    UnderlayPolicy,
    cross_check,
    give_default_marks,
)
from uplinkd.config.vxlan import Vxlan
from uplinkd.config.vxlan import cross_check as vxlan_cross_check
from uplinkd.linux import RESERVED_TABLES

# what a tunnel's probe never takes from the top-level `probe`: its targets are inside the tunnel
TUNNEL_PROBE_OWN = frozenset({"targets", "method", "dns_name", "quorum"})

__all__ = [
    "DEFAULT_POLICY",
    "PROFILES",
    "Address",
    "Balance",
    "Config",
    "ConfigError",
    "Control",
    "DhcpAddress",
    "ExternalAddress",
    "FailBackHold",
    "Hooks",
    "Lan",
    "LanIpv6",
    "Match",
    "ModemAddress",
    "Ownership",
    "Peer",
    "Policy",
    "Probe",
    "Rules",
    "StaticAddress",
    "Steer",
    "Tunnel",
    "UnderlayPolicy",
    "Uplink",
    "UsbMatch",
    "Vxlan",
    "describe",
    "load",
    "parse",
    "parse_target",
    "schema",
]

# Table ids map onto nexthop ids (see Ownership.nexthop_base), so they are bounded.
MAX_TABLE = (1 << 24) - 1
# The rule band: base + 0 .. base + 30 must stay below main's rule at 32766.
RULE_BAND = 40
MAX_RULE_PRIORITY = 32766 - RULE_BAND

# The longest path a unix socket can bind (sun_path is 108 bytes with its NUL).
MAX_SOCKET_PATH = 107


def _hex_id(value: object, what: str) -> str:
    text = str(value).lower().removeprefix("0x")
    if not re.fullmatch(r"[0-9a-f]{4}", text):
        raise ValueError(f'{shown(value)} is not a USB {what} id; write four hex digits, e.g. "12d1"')
    return text


def _text_only(example: str) -> Any:
    """A BeforeValidator: the value must be written as a string (an address, a path)."""

    def check(value: object) -> object:
        if isinstance(value, bool | int | float | list | dict):  # what JSON/TOML wrote unquoted
            raise ValueError(f"{shown(value)} is not a string; write it in quotes, e.g. {example}")
        return value

    return BeforeValidator(check)


def _absolute(example: str, *, limit: int = 4095) -> Any:
    """A BeforeValidator: an absolute path, written as a string."""

    def check(value: object) -> object:
        if isinstance(value, Path):
            value = str(value)
        if not isinstance(value, str):
            raise ValueError(
                f'{shown(value)} is not a path; write an absolute path in quotes, e.g. "{example}"'
            )
        if not value.startswith("/"):
            raise ValueError(
                f"{shown(value)} is relative, so it would depend on the daemon's working directory; "
                f'use an absolute path, e.g. "{example}"'
            )
        if len(value.encode(errors="replace")) > limit:
            raise ValueError(
                f'{shown(value)} is longer than {limit} bytes; use a shorter path, e.g. "{example}"'
            )
        return value

    return BeforeValidator(check)


SocketPath = Annotated[Path, _absolute("/run/uplinkd/control.sock", limit=MAX_SOCKET_PATH)]
V4Interface = Annotated[ipaddress.IPv4Interface, _text_only('"10.64.0.2/30"')]
V6Interface = Annotated[ipaddress.IPv6Interface, _text_only('"2001:db8::2/64"')]
V4Address = Annotated[ipaddress.IPv4Address, _text_only('"10.64.0.1"')]
V6Address = Annotated[ipaddress.IPv6Address, _text_only('"2001:db8::1"')]


class UsbMatch(Section):
    """USB identity of the device the uplink's network interface belongs to."""

    vendor: Text | None = Field(default=None, description="idVendor, four hex digits")
    product: Text | None = Field(default=None, description="idProduct, four hex digits")
    serial: Text | None = Field(default=None, description="iSerial, tells identical sticks apart")

    @field_validator("vendor")
    @classmethod
    def _vendor(cls, v: str | None) -> str | None:
        return None if v is None else _hex_id(v, "vendor")

    @field_validator("product")
    @classmethod
    def _product(cls, v: str | None) -> str | None:
        return None if v is None else _hex_id(v, "product")

    @model_validator(mode="after")
    def _not_empty(self) -> UsbMatch:
        if self.vendor is None and self.product is None and self.serial is None:
            raise ValueError("matches every USB device; give at least one of vendor, product, serial")
        return self


class Match(Section):
    """Which network interface is this uplink. Every given criterion must hold."""

    name: Text | None = Field(
        default=None,
        description="kernel interface name (1-15 bytes), glob allowed; no quote, ':', '/' or space",
    )
    driver: tuple[Text, ...] = Field(default=(), description="kernel driver name(s), any of")
    usb: UsbMatch | None = None
    path: Text | None = Field(default=None, description="udev ID_PATH, glob allowed")

    @field_validator("driver", mode="before")
    @classmethod
    def _driver_list(cls, v: object) -> object:
        return (v,) if isinstance(v, str) else v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        why = None if v is None else ifname.glob_problem(v)
        if why is not None:
            raise ValueError(why)
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> Match:
        if self.name is None and not self.driver and self.usb is None and self.path is None:
            raise ValueError("matches nothing; give at least one of name, driver, usb, path")
        return self

    @property
    def is_exact_name(self) -> bool:
        return self.name is not None and not any(c in self.name for c in "*?[")

    def matches_name(self, ifname: str) -> bool:
        return self.name is None or fnmatch.fnmatchcase(ifname, self.name)


class ExternalAddress(Section):
    """Someone else (networkd, ModemManager, ppp) configures the interface; learn it."""

    mode: Literal["external"] = "external"


class StaticAddress(Section):
    """The controller puts these addresses on the interface. gateway null = point-to-point.
    `cidr` is required unless the uplink's families leave out IPv4 (then `cidr6` is)."""

    mode: Literal["static"]
    cidr: V4Interface | None = None
    gateway: V4Address | None = None
    cidr6: V6Interface | None = None
    gateway6: V6Address | None = None

    @model_validator(mode="after")
    def _gateway_on_link(self) -> StaticAddress:
        if self.cidr is None:
            if self.gateway is not None:
                raise ValueError(
                    f"gateway: {self.gateway} is given without cidr; give the uplink's IPv4 address "
                    "in cidr too, or remove gateway"
                )
            return self
        if self.gateway is not None and self.gateway not in self.cidr.network:
            raise ValueError(
                f"gateway: {self.gateway} is outside {self.cidr.network}; "
                "use a gateway inside the uplink's subnet, or null for point-to-point"
            )
        return self


class DhcpAddress(Section):
    """The controller runs a DHCPv4 client on the interface (unless the uplink's families leave
    out IPv4); the lease goes into T_u only. IPv6 comes by router advertisement."""

    mode: Literal["dhcp"]
    hostname: Text | None = Field(default=None, description="sent in DHCP option 12; at most 63 characters")
    dhcp6: Literal["auto", "always", "never"] | None = Field(
        default=None,
        description="the uplink's own IPv6 address by DHCPv6 (IA_NA): 'auto' (null means it) = when "
        "the router's RA sets the M (managed) flag, 'always', or 'never' (SLAAC only)",
    )

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", v):
            raise ValueError(f"{shown(v)} is not a host name; use up to 63 letters, digits, '.', '-' or '_'")
        return v


Address = Annotated[
    ExternalAddress | StaticAddress | DhcpAddress | ModemAddress, Field(discriminator="mode")
]


class Uplink(Section):
    match: Match
    address: Address = Field(default_factory=ExternalAddress)
    table: Int = Field(description="routing table T_u, 1-16777215, not 253/254/255")
    weight: Int = Field(default=1, description="share of new connections, 1-256")
    mark: Int | None = Field(
        default=None, description="fwmark value under kernel.mark_mask; default: table mod 256"
    )
    probe: Probe = Field(default_factory=Probe, description="health checks; defaults from top-level probe")
    families: tuple[Family, ...] = Field(
        default=FAMILIES,
        description='address families the uplink carries: "ipv4", "ipv6" or both. ["ipv6"]: an '
        "IPv6-only ISP (no DHCPv4 client, static needs only cidr6, IPv4 refused in its table, "
        "probed on its IPv6 targets)",
    )
    metered: Flag = Field(
        default=False,
        description="paid by volume: in the default policy only when no unmetered uplink is healthy",
    )
    budget: Int | None = Field(
        default=None,
        description="bytes per calendar month (UTC), in and out; when spent, the uplink is used "
        "only as a last tier. Units allowed: \"10G\", \"500M\" (powers of 1000)",
    )

    _budget = field_validator("budget", mode="before")(classmethod(lambda cls, v: byte_amount(v)))
    _budget_range = ranged("budget", low=1, high=1 << 62, use="a number of bytes above 0, e.g. \"5G\"")

    @field_validator("table")
    @classmethod
    def _table(cls, v: int) -> int:
        return _check_table(v)

    @field_validator("families")
    @classmethod
    def _families(cls, v: tuple[Family, ...]) -> tuple[Family, ...]:
        check_list(v)
        return v

    @model_validator(mode="after")
    def _fits_families(self) -> Uplink:
        problems = uplink_problems(self.address, self.families, self.probe)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    _weight = ranged("weight", low=1, high=256, use="a whole number from 1 to 256")

    @property
    def mark_value(self) -> int:
        """The mark index before it is shifted under the mask (0 means unset/invalid)."""
        return self.mark if self.mark is not None else self.table % 256


def _check_table(v: int) -> int:
    if v in RESERVED_TABLES:
        raise ValueError(
            f"{v} is the kernel's '{RESERVED_TABLES[v]}' table; pick another number, e.g. 100-252"
        )
    return check_range(v, low=1, high=MAX_TABLE, use=f"a table id from 1 to {MAX_TABLE}")


class Balance(Section):
    table: Int = Field(default=200, description="T_balance: weighted default for new connections")
    last_resort: Literal["carrier", "unreachable"] = Field(
        default="carrier",
        description="when no uplink is healthy: 'carrier' = every uplink with carrier; "
        "'unreachable' = refuse",
    )
    buckets: Int = Field(default=512, description="resilient nexthop group size, 16-4096")
    idle_timer: Float = Field(
        default=10.0, description="seconds a bucket must be idle before it may move to a new member"
    )
    unbalanced_timer: Float = Field(
        default=0.0, description="seconds after which buckets move even if busy; 0 = never"
    )

    @field_validator("table")
    @classmethod
    def _table(cls, v: int) -> int:
        return _check_table(v)

    _buckets = ranged("buckets", low=16, high=4096, use="16 to 4096 buckets (512 is a good default)")
    _timers = ranged("idle_timer", "unbalanced_timer", low=0, high=3600, unit="seconds")


class Rules(Section):
    priority: Int = Field(default=10000, description="base of the rule band; uses base+0 .. base+30")
    steer: tuple[Steer, ...] = Field(
        default=(),
        max_length=1000,
        description="which new connections use which policy; first match wins, in order (at most 1000)",
    )

    _priority = ranged(
        "priority",
        low=1,
        high=MAX_RULE_PRIORITY,
        use=f"1 to {MAX_RULE_PRIORITY} so the band (base .. base+30) stays below main's rule at 32766",
    )


class Control(Section):
    socket: SocketPath = Field(
        default=Path("/run/uplinkd/control.sock"), description="absolute path, at most 107 bytes"
    )
    state_dir: Annotated[Path, _absolute("/var/lib/uplinkd")] = Field(
        default=Path("/var/lib/uplinkd"), description="DHCP leases kept across restarts; absolute path"
    )
    resync_interval: Float = Field(default=30.0, description="full kernel resync, seconds")

    _resync = ranged("resync_interval", low=1, high=3600, unit="seconds")


class Hooks(Section):
    on_change: Annotated[Path, _absolute("/etc/uplinkd/on-change")] | None = Field(
        default=None,
        description="absolute path of a program run on every uplink and tunnel state change, with "
        "UPLINKD_KIND (uplink, tunnel), UPLINKD_UPLINK, UPLINKD_STATE, UPLINKD_OLD_STATE, UPLINKD_REASON, "
        "UPLINKD_DEV (a tunnel's: UPLINKD_TUNNEL, UPLINKD_UNDERLAY; UPLINKD_UPLINK empty) in its environment",
    )
    timeout: Float = Field(default=10.0, description="seconds before a hook is killed")

    _timeout = ranged("timeout", low=0.1, high=3600, unit="seconds")


class Config(Section):
    uplinks: dict[str, Uplink] = Field(default_factory=dict)
    probe: Probe = Field(default_factory=Probe, description="defaults for every uplink's probe")
    hooks: Hooks = Field(default_factory=Hooks)
    balance: Balance = Field(default_factory=Balance)
    rules: Rules = Field(default_factory=Rules)
    policies: dict[str, Policy] = Field(
        default_factory=dict, description="named tiers of uplinks that steering rules send traffic to"
    )
    kernel: Ownership = Field(default_factory=Ownership)
    control: Control = Field(default_factory=Control)
    lan: dict[str, Lan] = Field(
        default_factory=dict, description="per LAN interface (by kernel name): what its IPv6 may do"
    )
    tunnels: dict[str, Tunnel] = Field(default_factory=dict, description="WireGuard tunnels")
    vxlan: dict[str, Vxlan] = Field(default_factory=dict, description="Ethernet segments over a tunnel")

    @model_validator(mode="before")
    @classmethod
    def _probe_defaults(cls, data: Any) -> Any:
        """Each uplink's probe settings start from the top-level `probe` section."""
        if not isinstance(data, dict):
            return data
        defaults = data.get("probe")
        uplinks = data.get("uplinks")
        if not isinstance(defaults, dict) or not isinstance(uplinks, dict):
            return data
        try:
            Probe.model_validate(defaults)
        except ValidationError:
            return data  # reported once, at `probe.*`, not again under every uplink
        merged: dict[Any, Any] = {}
        for name, up in uplinks.items():
            own = up.get("probe") if isinstance(up, dict) else None
            if isinstance(up, dict) and (own is None or isinstance(own, dict)):
                merged[name] = {**up, "probe": {**defaults, **(own or {})}}
            else:
                merged[name] = up
        out = {**data, "uplinks": merged}
        tunnels = data.get("tunnels")
        if isinstance(tunnels, dict):
            # a tunnel's probe takes the timing, never the targets: those are inside the tunnel
            timing = {k: v for k, v in defaults.items() if k not in TUNNEL_PROBE_OWN}
            out["tunnels"] = {
                name: {**t, "probe": {**timing, **(t.get("probe") or {})}}
                if isinstance(t, dict) and isinstance(t.get("probe", {}), dict)
                else t
                for name, t in tunnels.items()
            }
        return out

    @field_validator("uplinks")
    @classmethod
    def _names(cls, v: dict[str, Uplink]) -> dict[str, Uplink]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,31}", name):
                raise ValueError(
                    f"uplink name {shown(name)} is not usable; use a letter then letters, digits, "
                    "'-' or '_' (at most 32)"
                )
        return v

    @field_validator("policies")
    @classmethod
    def _policy_names(cls, v: dict[str, Policy]) -> dict[str, Policy]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,31}", name):
                raise ValueError(
                    f"policy name {name!r} is not usable; use a letter then letters, digits, "
                    "'-' or '_' (at most 32)"
                )
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        problems: list[str] = []
        tables: dict[int, str] = {self.balance.table: "balance.table"}
        marks: dict[int, str] = {}
        exact_names: dict[str, str] = {}
        for name, up in self.uplinks.items():
            where = f"uplinks.{name}"
            if up.table in tables:
                problems.append(
                    f"{where}.table: {up.table} is already used by {tables[up.table]}; "
                    "give every uplink and the balance table its own table id"
                )
            tables.setdefault(up.table, f"{where}.table")
            mark = up.mark_value
            field = f"{where}.mark" if up.mark is not None else f"{where}.mark (default: table mod 256)"
            if not 1 <= mark <= self.kernel.mark_slots:
                problems.append(
                    f"{field}: {mark} does not fit kernel.mark_mask {self.kernel.mark_mask:#x}; "
                    f"set {where}.mark to a value from 1 to {self.kernel.mark_slots}"
                )
            elif mark in marks:
                problems.append(
                    f"{field}: {mark} is already used by {marks[mark]}; "
                    f"set {where}.mark to a free value from 1 to {self.kernel.mark_slots}"
                )
            marks.setdefault(mark, f"uplinks.{name}")
            if up.match.is_exact_name and up.match.name is not None:
                other = exact_names.get(up.match.name)
                if other is not None:
                    problems.append(
                        f"{where}.match.name: {up.match.name!r} is also matched by {other}; "
                        "each interface can be only one uplink"
                    )
                exact_names.setdefault(up.match.name, f"uplinks.{name}")
        problems += check_policies(
            policies=self.policies,
            steer=self.rules.steer,
            uplinks=list(self.uplinks),
            tables=tables,
            policy_slots=self.kernel.policy_bits >> self.kernel.policy_shift,
        )
        problems += lan_cross_check(self.lan, dict(self.uplinks), set(exact_names), self.tunnels)
        problems += lan_problems(self.lan, self.uplinks)
        for lan_name, lan in self.lan.items():
            extended = self.uplinks.get(lan.ipv6.uplink or "") if lan.ipv6.mode == "extend" else None
            if extended is not None and extended.address.mode == "external":
                problems.append(
                    f"lan.{lan_name}.ipv6.uplink: {lan.ipv6.uplink!r} is configured by someone else "
                    "(address mode 'external'), who would keep its /64 on the uplink; extend an "
                    "uplink in mode 'dhcp', 'static' or 'modem'"
                )
        give_default_marks(self.tunnels, self.kernel.mark_mask | self.kernel.policy_bits)
        problems += cross_check(self, self.tunnels)
        problems += vxlan_cross_check(self, self.vxlan)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def policy_mark(self, policy: str) -> int:
        """A policy's mark, shifted under kernel.policy_mask (0 for the built-in default)."""
        if policy not in self.policies:
            return 0
        return self.policies[policy].mark_value << self.kernel.policy_shift

    def mark_of(self, uplink: str) -> int:
        """The uplink's fwmark, shifted under the mask."""
        return self.uplinks[uplink].mark_value << self.kernel.mark_shift


# --- loading -------------------------------------------------------------------------------


def parse(data: Mapping[str, Any]) -> Config:
    """Validate an already-decoded config document."""
    problems = document.check(data)
    if problems:
        raise ConfigError(problems)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe(e)) from None


def load(path: Path) -> Config:
    """Read and validate a JSON or TOML config file (by extension; JSON otherwise).

    Every failure, whatever the file holds or is, is a `ConfigError`.
    """
    return parse(document.read(path))


def schema() -> dict[str, Any]:
    return Config.model_json_schema()
