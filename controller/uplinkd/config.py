"""The configuration file: its schema, its validation, and its error messages.

This is the edge of the program. Everything here is pydantic; everything past
`load` sees a frozen, validated `Config`. Every error names the field (as a dotted
path, the way the NixOS module spells it) and says how to fix it.

The same schema is rendered by the NixOS module (`services.uplinkd.settings`) and
printed by `uplinkctl schema`.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from uplinkd.linux import RESERVED_TABLES

# Table ids map onto nexthop ids (see Kernel.nexthop_base), so they are bounded.
MAX_TABLE = (1 << 24) - 1
# The rule band: base + 0 .. base + 30 must stay below main's rule at 32766.
RULE_BAND = 40
MAX_RULE_PRIORITY = 32766 - RULE_BAND


class ConfigError(Exception):
    """A config that cannot be used, with one line per problem."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _hex_id(value: object, what: str) -> str:
    text = str(value).lower().removeprefix("0x")
    if not re.fullmatch(r"[0-9a-f]{4}", text):
        raise ValueError(f'{value!r} is not a USB {what} id; write four hex digits, e.g. "12d1"')
    return text


class UsbMatch(_Strict):
    """USB identity of the device the uplink's network interface belongs to."""

    vendor: str | None = Field(default=None, description="idVendor, four hex digits")
    product: str | None = Field(default=None, description="idProduct, four hex digits")
    serial: str | None = Field(default=None, description="iSerial, tells identical sticks apart")

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


class Match(_Strict):
    """Which network interface is this uplink. Every given criterion must hold."""

    name: str | None = Field(default=None, description="kernel interface name, glob allowed")
    driver: tuple[str, ...] = Field(default=(), description="kernel driver name(s), any of")
    usb: UsbMatch | None = None
    path: str | None = Field(default=None, description="udev ID_PATH, glob allowed")

    @field_validator("driver", mode="before")
    @classmethod
    def _driver_list(cls, v: object) -> object:
        return (v,) if isinstance(v, str) else v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and (not v or len(v) > 15 or "/" in v or " " in v):
            raise ValueError(f"{v!r} cannot be an interface name; use 1-15 characters without '/' or spaces")
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


class ExternalAddress(_Strict):
    """Someone else (networkd, ModemManager, ppp) configures the interface; learn it."""

    mode: Literal["external"] = "external"


class StaticAddress(_Strict):
    """The controller puts this address on the interface. gateway null = point-to-point."""

    mode: Literal["static"]
    cidr: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address | None = None
    cidr6: ipaddress.IPv6Interface | None = None
    gateway6: ipaddress.IPv6Address | None = None

    @model_validator(mode="after")
    def _gateway_on_link(self) -> StaticAddress:
        if self.gateway is not None and self.gateway not in self.cidr.network:
            raise ValueError(
                f"gateway: {self.gateway} is outside {self.cidr.network}; "
                "use a gateway inside the uplink's subnet, or null for point-to-point"
            )
        return self


class DhcpAddress(_Strict):
    """The controller runs a DHCPv4 client on the interface; the lease goes into T_u only."""

    mode: Literal["dhcp"]
    hostname: str | None = None


Address = Annotated[ExternalAddress | StaticAddress | DhcpAddress, Field(discriminator="mode")]


PROFILES: dict[str, dict[str, float | int]] = {
    # An idle uplink costs ~2 targets x 72 B every 20 s = 0.6 MB/day; traffic that gets no
    # answer for `suspect_after` starts fast rounds, so a dead uplink in use is seen in ~2-3 s.
    "default": {
        "interval": 20.0,
        "fast_interval": 0.5,
        "down_interval": 2.0,
        "timeout": 1.0,
        "suspect_after": 1.0,
        "down_after": 3,
        "up_after": 3,
    },
    # Sub-second: a blackholed uplink in use is down in ~0.6 s; idle cost ~1.2 MB/day.
    "fast": {
        "interval": 10.0,
        "fast_interval": 0.1,
        "down_interval": 0.5,
        "timeout": 0.2,
        "suspect_after": 0.2,
        "down_after": 2,
        "up_after": 3,
    },
}


class Probe(_Strict):
    """Health checks for one uplink, sent through it (its fwmark and SO_BINDTODEVICE)."""

    profile: Literal["default", "fast"] = Field(
        default="default", description="timing preset; fields given explicitly win"
    )
    method: Literal["icmp", "tcp", "dns"] = "icmp"
    targets: tuple[str, ...] = Field(
        default=(),
        description="icmp/dns: addresses; tcp: address:port (IPv6: [addr]:port). "
        "Empty: no probes, the uplink is healthy while it has carrier and an address",
    )
    dns_name: str = Field(default=".", description="name asked of DNS targets (type NS)")
    quorum: int = Field(default=1, description="targets that must answer for a round to pass")
    interval: float = Field(default=20.0, description="seconds between rounds while healthy")
    fast_interval: float = Field(default=0.5, description="seconds between rounds while suspicious")
    down_interval: float = Field(default=2.0, description="seconds between rounds while down")
    timeout: float = Field(default=1.0, description="seconds to wait for an answer")
    suspect_after: float = Field(default=1.0, description="packets out but none in for this long: probe hard")
    down_after: int = Field(default=3, description="failed rounds in a row before down")
    up_after: int = Field(default=3, description="good rounds in a row before up")
    loss_threshold: float = Field(default=20.0, description="percent loss (EWMA) that degrades")
    rtt_threshold: float = Field(default=500.0, description="milliseconds RTT (EWMA) that degrades")
    degraded_weight: float = Field(default=0.5, description="weight factor while degraded")

    @model_validator(mode="before")
    @classmethod
    def _profile(cls, data: Any) -> Any:
        if isinstance(data, dict):
            preset = PROFILES.get(str(data.get("profile", "default")))
            if preset is not None:
                return {**preset, **data}
        return data

    @field_validator("dns_name")
    @classmethod
    def _dns_name(cls, v: str) -> str:
        labels = [label for label in v.strip(".").split(".") if label]
        if len(v) > 253 or any(len(label) > 63 for label in labels):
            raise ValueError(f"{v!r} is not a DNS name; use labels of at most 63 characters, 253 in all")
        return v

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(v) > 16:
            raise ValueError(f"{len(v)} targets; use at most 16")
        return v

    @field_validator("interval", "fast_interval", "down_interval")
    @classmethod
    def _intervals(cls, v: float) -> float:
        if not 0.05 <= v <= 3600:
            raise ValueError(f"{v} is out of range; use 0.05 to 3600 seconds")
        return v

    @field_validator("timeout", "suspect_after")
    @classmethod
    def _short(cls, v: float) -> float:
        if not 0.01 <= v <= 60:
            raise ValueError(f"{v} is out of range; use 0.01 to 60 seconds")
        return v

    @field_validator("down_after", "up_after", "quorum")
    @classmethod
    def _counts(cls, v: int) -> int:
        if not 1 <= v <= 100:
            raise ValueError(f"{v} is out of range; use 1 to 100")
        return v

    @field_validator("loss_threshold")
    @classmethod
    def _loss(cls, v: float) -> float:
        if not 0 < v <= 100:
            raise ValueError(f"{v} is out of range; use a percentage above 0, at most 100")
        return v

    @field_validator("rtt_threshold")
    @classmethod
    def _rtt(cls, v: float) -> float:
        if not 1 <= v <= 60000:
            raise ValueError(f"{v} is out of range; use 1 to 60000 milliseconds")
        return v

    @field_validator("degraded_weight")
    @classmethod
    def _factor(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError(f"{v} is out of range; use a factor above 0, at most 1")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Probe:
        problems = []
        if self.quorum > max(1, len(self.targets)) and self.targets:
            problems.append(
                f"quorum: {self.quorum} is more than the {len(self.targets)} targets; "
                f"use 1 to {len(self.targets)}"
            )
        for target in self.targets:
            try:
                parse_target(self.method, target)
            except ValueError as e:
                problems.append(f"targets: {e}")
        if problems:
            raise ValueError("\n".join(problems))
        return self


def parse_target(method: str, text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int | None]:
    """A probe target as (address, port). tcp needs a port; icmp/dns take an address."""
    if method == "tcp":
        host, sep, port = text.rpartition(":")
        host = host.strip("[]")
        if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f'{text!r} needs a port for tcp; write e.g. "198.51.100.1:443"')
        try:
            return ipaddress.ip_address(host), int(port)
        except ValueError:
            raise ValueError(
                f'{text!r}: {host!r} is not an IP address; write e.g. "198.51.100.1:443"'
            ) from None
    try:
        return ipaddress.ip_address(text), 53 if method == "dns" else None
    except ValueError:
        raise ValueError(f'{text!r} is not an IP address; write e.g. "198.51.100.1"') from None


class Uplink(_Strict):
    match: Match
    address: Address = Field(default_factory=ExternalAddress)
    table: int = Field(description="routing table T_u, 1-16777215, not 253/254/255")
    weight: int = Field(default=1, description="share of new connections, 1-256")
    mark: int | None = Field(
        default=None, description="fwmark value under kernel.mark_mask; default: table mod 256"
    )
    probe: Probe = Field(default_factory=Probe, description="health checks; defaults from top-level probe")

    @field_validator("table")
    @classmethod
    def _table(cls, v: int) -> int:
        return _check_table(v)

    @field_validator("weight")
    @classmethod
    def _weight(cls, v: int) -> int:
        if not 1 <= v <= 256:
            raise ValueError(f"{v} is out of range; use a whole number from 1 to 256")
        return v

    @property
    def mark_value(self) -> int:
        """The mark index before it is shifted under the mask (0 means unset/invalid)."""
        return self.mark if self.mark is not None else self.table % 256


def _check_table(v: int) -> int:
    if v in RESERVED_TABLES:
        raise ValueError(
            f"{v} is the kernel's '{RESERVED_TABLES[v]}' table; pick another number, e.g. 100-252"
        )
    if not 1 <= v <= MAX_TABLE:
        raise ValueError(f"{v} is out of range; use a table id from 1 to {MAX_TABLE}")
    return v


class Balance(_Strict):
    table: int = Field(default=200, description="T_balance: weighted default for new connections")
    last_resort: Literal["carrier", "unreachable"] = Field(
        default="carrier",
        description="when no uplink is healthy: 'carrier' = every uplink with carrier; "
        "'unreachable' = refuse",
    )
    buckets: int = Field(default=512, description="resilient nexthop group size, 16-4096")
    idle_timer: float = Field(
        default=10.0, description="seconds a bucket must be idle before it may move to a new member"
    )
    unbalanced_timer: float = Field(
        default=0.0, description="seconds after which buckets move even if busy; 0 = never"
    )

    @field_validator("table")
    @classmethod
    def _table(cls, v: int) -> int:
        return _check_table(v)

    @field_validator("buckets")
    @classmethod
    def _buckets(cls, v: int) -> int:
        if not 16 <= v <= 4096:
            raise ValueError(f"{v} is out of range; use 16 to 4096 buckets (512 is a good default)")
        return v

    @field_validator("idle_timer", "unbalanced_timer")
    @classmethod
    def _timer(cls, v: float) -> float:
        if not 0 <= v <= 3600:
            raise ValueError(f"{v} is out of range; use 0 to 3600 seconds")
        return v


class Rules(_Strict):
    priority: int = Field(default=10000, description="base of the rule band; uses base+0 .. base+30")

    @field_validator("priority")
    @classmethod
    def _priority(cls, v: int) -> int:
        if not 1 <= v <= MAX_RULE_PRIORITY:
            raise ValueError(
                f"{v} is out of range; use 1 to {MAX_RULE_PRIORITY} so the band "
                "(base .. base+30) stays below main's rule at 32766"
            )
        return v


def _int_or_hex(v: object) -> object:
    if isinstance(v, str):
        try:
            return int(v, 0)
        except ValueError:
            raise ValueError(f'{v!r} is not a number; write e.g. 65280 or "0xff00"') from None
    return v


class Kernel(_Strict):
    """What the controller owns in the kernel. Nothing outside these is ever touched."""

    protocol: int = Field(default=77, description="route/rule/nexthop protocol number (rt_protos)")
    nexthop_base: int = Field(
        default=100_000_000,
        description="first nexthop id owned; ids base .. base+2^25 are reserved",
    )
    mark_mask: int = Field(default=0xFF00, description="fwmark/ct mark bits the controller owns")
    nft_table: str = Field(default="uplinkd", description="name of the 'inet' nftables table")

    _int_fields = field_validator("protocol", "nexthop_base", "mark_mask", mode="before")(
        classmethod(lambda cls, v: _int_or_hex(v))
    )

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, v: int) -> int:
        if not 5 <= v <= 254:
            raise ValueError(
                f"{v} is out of range; use 5-254, a number no routing daemon here uses (default 77)"
            )
        return v

    @field_validator("nexthop_base")
    @classmethod
    def _nh_base(cls, v: int) -> int:
        if not 1 <= v <= (1 << 32) - (1 << 25) - 1:
            raise ValueError(f"{v} is out of range; use 1 to {(1 << 32) - (1 << 25) - 1}")
        return v

    @field_validator("mark_mask")
    @classmethod
    def _mask(cls, v: int) -> int:
        if not 0 < v < (1 << 32):
            raise ValueError(f"{v:#x} is not a 32-bit mask; use e.g. 0xff00")
        low = v & -v
        if (v // low) & ((v // low) + 1):
            raise ValueError(f"{v:#x} is not one run of bits; use contiguous bits, e.g. 0xff00")
        return v

    @field_validator("nft_table")
    @classmethod
    def _nft_table(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,31}", v):
            raise ValueError(f"{v!r} is not an nftables table name; use letters, digits, _")
        return v

    @property
    def mark_shift(self) -> int:
        return (self.mark_mask & -self.mark_mask).bit_length() - 1

    @property
    def mark_slots(self) -> int:
        return self.mark_mask >> self.mark_shift


class Control(_Strict):
    socket: Path = Field(default=Path("/run/uplinkd/control.sock"))
    state_dir: Path = Field(default=Path("/var/lib/uplinkd"), description="DHCP leases kept across restarts")
    resync_interval: float = Field(default=30.0, description="full kernel resync, seconds")

    @field_validator("resync_interval")
    @classmethod
    def _resync(cls, v: float) -> float:
        if not 1 <= v <= 3600:
            raise ValueError(f"{v} is out of range; use 1 to 3600 seconds")
        return v


class Hooks(_Strict):
    on_change: Path | None = Field(
        default=None,
        description="program run on every uplink state change, with UPLINKD_UPLINK, "
        "UPLINKD_STATE, UPLINKD_OLD_STATE, UPLINKD_REASON, UPLINKD_DEV in its environment",
    )
    timeout: float = Field(default=10.0, description="seconds before a hook is killed")


class Config(_Strict):
    uplinks: dict[str, Uplink] = Field(default_factory=dict)
    probe: Probe = Field(default_factory=Probe, description="defaults for every uplink's probe")
    hooks: Hooks = Field(default_factory=Hooks)
    balance: Balance = Field(default_factory=Balance)
    rules: Rules = Field(default_factory=Rules)
    kernel: Kernel = Field(default_factory=Kernel)
    control: Control = Field(default_factory=Control)

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
        return {**data, "uplinks": merged}

    @field_validator("uplinks")
    @classmethod
    def _names(cls, v: dict[str, Uplink]) -> dict[str, Uplink]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,31}", name):
                raise ValueError(
                    f"uplink name {name!r} is not usable; use a letter then letters, digits, "
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
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def mark_of(self, uplink: str) -> int:
        """The uplink's fwmark, shifted under the mask."""
        return self.uplinks[uplink].mark_value << self.kernel.mark_shift


# --- loading -------------------------------------------------------------------------------

_FIXES = {
    "extra_forbidden": "unknown key; remove it or check its spelling",
    "missing": "is required; add it",
    "int_parsing": "expected a whole number",
    "int_type": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "dict_type": "expected a table/object",
    "model_type": "expected a table/object",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "literal_error": "",
    "union_tag_invalid": "",
    "union_tag_not_found": "needs a 'mode'; use one of 'external', 'static', 'dhcp'",
    "ip_v4_interface": 'expected an IPv4 address with prefix, e.g. "10.64.0.2/30"',
    "ip_v6_interface": 'expected an IPv6 address with prefix, e.g. "2001:db8::2/64"',
    "ip_v4_address": 'expected an IPv4 address, e.g. "10.64.0.1"',
    "ip_v6_address": 'expected an IPv6 address, e.g. "2001:db8::1"',
}


def _location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for part in loc:
        text = str(part)
        # Discriminated unions add the tag as a path element ("address.static.cidr").
        if parts and parts[-1] == "address" and text in ("external", "static", "dhcp"):
            continue
        if text.startswith("function-") or text.endswith("]"):
            continue
        parts.append(text)
    return ".".join(parts)


def describe(error: ValidationError) -> list[str]:
    """One line per problem: `dotted.field: what is wrong; how to fix it`."""
    lines: list[str] = []
    for err in error.errors(include_url=False):
        where = _location(tuple(err["loc"]))
        kind = err["type"]
        if kind == "value_error":
            text = str(err["ctx"]["error"]) if "ctx" in err else err["msg"]
            # A model-level check may report several problems, already prefixed with paths.
            # Model-wide checks (empty location) already name their fields; a model's own
            # checks name a field inside it ("quorum: ..."), which joins the path.
            for line in text.splitlines():
                if not where:
                    lines.append(line)
                elif re.match(r"[a-z_]+: ", line):
                    lines.append(f"{where}.{line}")
                else:
                    lines.append(f"{where}: {line}")
            continue
        fix = _FIXES.get(kind)
        if kind == "literal_error":
            fix = f"{err['input']!r} is not allowed; use {err['ctx']['expected']}"
        elif kind == "union_tag_invalid":
            fix = f"{err['ctx']['tag']!r} is not a mode; use one of {err['ctx']['expected_tags']}"
        elif fix is None:
            fix = err["msg"]
        elif kind not in ("missing", "extra_forbidden"):
            fix = f"{err['input']!r}: {fix}"
        lines.append(f"{where}: {fix}" if where else fix)
    return lines


def parse(data: Mapping[str, Any]) -> Config:
    """Validate an already-decoded config document."""
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe(e)) from None


def load(path: Path) -> Config:
    """Read and validate a JSON or TOML config file (by extension; JSON otherwise)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read ({e.strerror}); check the path"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: not UTF-8 text ({e}); save it as UTF-8 JSON or TOML"]) from None
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        else:
            data = json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise ConfigError([f"{path}: not valid {kind} ({e})"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be an object with 'uplinks'"])
    return parse(data)


def schema() -> dict[str, Any]:
    return Config.model_json_schema()
