"""The `tunnels` section: WireGuard tunnels that ride the healthy uplinks.

    tunnels.<name>:
      interface          the WireGuard interface (wg0)
      backend            "auto" (kernel WireGuard if the kernel has it, else wireguard-go),
                         "kernel" or "wireguard-go"
      private_key_file   a file holding the key (`wg genkey`), mode 0600; never the key itself
      listen_port        UDP port, or null for any
      addresses          the tunnel's inner addresses (v4 and/or v6)
      mtu                "auto" or a number
      peers              public_key, preshared_key_file, endpoint "address:port" or
                         "name:port" (resolved through the underlay), allowed_ips, keepalive
      resolvers          DNS servers for endpoint names (default: /etc/resolv.conf's, not loopback)
      underlay           "balance" (default), an ordered preference list of uplinks, or
                         {policy = "name"}: the policy's choice (its tiers) carries it
      route              "full" (all LAN traffic, IPv4 and IPv6) or a list of prefixes
      kill_switch        default: on for "full"
      fail_back          back to a more preferred uplink of the underlay list: "immediate"
                         (default), {hold = seconds} (once it has been healthy that long) or
                         "never" (stay while the carrying uplink is healthy)
      probe              health checks sent THROUGH the tunnel to targets inside it (the
                         uplinks' probe fields and profiles; timing defaults from the top-level
                         `probe`, never its targets). No targets: the handshake age alone
      table              T_under: where the tunnel's own encrypted packets are routed
      route_table        T_route: where LAN traffic meets the tunnel (default table + 1)
      fwmark             mark on the tunnel's UDP packets, outside kernel.mark_mask and
                         kernel.policy_mask; default: a single bit of its own

Cross-checks against the rest of the config (uplink names, tables, marks) are in
`cross_check`, called by `Config`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from uplinkd.config.errors import describe
from uplinkd.config.fields import Float, Section, Text, check_range, ranged, shown
from uplinkd.config.probe import Probe
from uplinkd.tunnel.dns import NamedEndpoint
from uplinkd.tunnel.wireguard import Endpoint, decode_key

if TYPE_CHECKING:
    from uplinkd.config import Config

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_TABLE = (1 << 24) - 1


def _ifname(v: str) -> str:
    if not v or len(v) > 15 or "/" in v or " " in v or any(c in v for c in "*?["):
        raise ValueError(
            f"{v!r} cannot be an interface name; use 1-15 characters without '/', spaces or globs"
        )
    return v


class Peer(Section):
    """The other end of the tunnel."""

    public_key: str = Field(description="the peer's public key, base64 as `wg pubkey` writes it")
    preshared_key_file: Path | None = Field(default=None, description="file with a preshared key, mode 0600")
    endpoint: str | None = Field(
        default=None, description="address:port or name:port, e.g. 192.0.2.1:51820, home.example.org:51820"
    )
    allowed_ips: tuple[IPNetwork, ...] = Field(default=(), description="prefixes this peer may send from")
    keepalive: int = Field(default=25, description="persistent keepalive, seconds; 0 = off")

    @field_validator("public_key")
    @classmethod
    def _key(cls, v: str) -> str:
        decode_key(v, what=f"{v!r}")
        return v.strip()

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                Endpoint.parse(v)
            except ValueError:
                NamedEndpoint.parse(v)  # its error says both forms
        return v

    _keepalive = ranged("keepalive", low=0, high=65535, unit="seconds")

    @property
    def endpoint_value(self) -> Endpoint | None:
        """The endpoint when it is an address (None: none, or a DNS name)."""
        if self.endpoint is None or self.endpoint_name is not None:
            return None
        return Endpoint.parse(self.endpoint)

    @property
    def endpoint_name(self) -> NamedEndpoint | None:
        """The endpoint when it is a DNS name, resolved by the tunnel's worker."""
        if self.endpoint is None:
            return None
        try:
            Endpoint.parse(self.endpoint)
        except ValueError:
            return NamedEndpoint.parse(self.endpoint)
        return None


class FailBackHold(Section):
    """Back to a more preferred uplink once it has stayed healthy for `hold` seconds."""

    hold: Float = Field(description="seconds a more preferred uplink must stay healthy first")

    _hold = ranged("hold", low=0, high=86400, unit="seconds")


FAIL_BACK_USE = 'use "immediate", "never" or {hold = seconds}'


class UnderlayPolicy(Section):
    """The tunnel's encrypted packets ride a traffic policy's choice (its tiers)."""

    policy: Text = Field(description="a name from `policies` ('default': the balance group)")


UNDERLAY_USE = "use 'balance', a list of uplink names, or {policy = \"name\"}"


class Tunnel(Section):
    interface: str = Field(description="WireGuard interface name")
    backend: Literal["auto", "kernel", "wireguard-go"] = Field(
        default="auto",
        description="'auto': kernel WireGuard if a wireguard link can be created, else wireguard-go",
    )
    private_key_file: Path = Field(description="file holding the private key (mode 0600)")
    listen_port: int | None = Field(default=None, description="UDP port; null = any")
    addresses: tuple[IPInterface, ...] = Field(default=(), description="inner addresses")
    mtu: Literal["auto"] | int = Field(default="auto", description="'auto' or 1280-9000")
    peers: tuple[Peer, ...] = Field(min_length=1)
    underlay: Literal["balance"] | tuple[str, ...] | UnderlayPolicy = Field(
        default="balance",
        description="'balance', uplink names in order of preference, or {policy = name}",
    )
    route: Literal["full"] | tuple[IPNetwork, ...] = Field(
        default=(), description="'full' = all LAN traffic, or prefixes sent into the tunnel"
    )
    kill_switch: bool | None = Field(default=None, description="default: on for route 'full'")
    fail_back: Literal["immediate", "never"] | FailBackHold = Field(
        default="immediate",
        description='back to a more preferred uplink: "immediate", {hold = seconds} or "never"',
    )
    probe: Probe = Field(
        default_factory=Probe, description="checks through the tunnel to targets inside it"
    )
    resolvers: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = Field(
        default=(),
        description="DNS servers asked for endpoints given as names, through the underlay "
        "(default: the non-loopback nameservers of /etc/resolv.conf)",
    )
    table: int = Field(description="T_under: routes the tunnel's encrypted packets")
    route_table: int | None = Field(default=None, description="T_route; default table + 1")
    fwmark: int | None = Field(
        default=None,
        description="mark on the tunnel's UDP packets; default: a bit of its own outside "
        "kernel.mark_mask and kernel.policy_mask (bit 31, 30, ... in the order of the names)",
    )

    @field_validator("interface")
    @classmethod
    def _interface(cls, v: str) -> str:
        return _ifname(v)

    @field_validator("private_key_file")
    @classmethod
    def _key_file(cls, v: Path) -> Path:
        if not v.is_absolute():
            raise ValueError(f"{v} is relative; give an absolute path (e.g. a systemd credential)")
        return v

    @field_validator("mtu")
    @classmethod
    def _mtu(cls, v: str | int) -> str | int:
        return v if isinstance(v, str) else check_range(v, low=576, high=9000, use="'auto' or 576 to 9000")

    @field_validator("underlay", mode="before")
    @classmethod
    def _underlay_shape(cls, v: object) -> object:
        if isinstance(v, dict):
            try:
                return UnderlayPolicy.model_validate(v)
            except ValidationError as e:
                raise ValueError("\n".join(describe(e))) from None
        if isinstance(v, str) and v != "balance":
            raise ValueError(f"{shown(v)} is not an underlay; {UNDERLAY_USE}")
        if not isinstance(v, str | list | tuple | UnderlayPolicy):
            raise ValueError(f"{shown(v)} is not an underlay; {UNDERLAY_USE}")
        return v

    @field_validator("underlay")
    @classmethod
    def _underlay(
        cls, v: str | tuple[str, ...] | UnderlayPolicy
    ) -> str | tuple[str, ...] | UnderlayPolicy:
        if isinstance(v, tuple) and (not v or len(set(v)) != len(v)):
            raise ValueError("name each uplink once, at least one; or write 'balance'")
        return v

    @field_validator("fail_back", mode="before")
    @classmethod
    def _fail_back(cls, v: object) -> object:
        if isinstance(v, str) and v not in ("immediate", "never"):
            raise ValueError(f"{shown(v)} is not a fail-back; {FAIL_BACK_USE}")
        if isinstance(v, int | float):  # true/false too
            raise ValueError(f"{shown(v)}: write a hold time as {{hold = {shown(v)}}}; {FAIL_BACK_USE}")
        if isinstance(v, dict):
            # validated here, so an error names fail_back.hold, not each member of the union
            try:
                return FailBackHold.model_validate(v)
            except ValidationError as e:
                raise ValueError("\n".join(describe(e))) from None
        if not isinstance(v, str | FailBackHold):
            raise ValueError(f"{shown(v)} is not a fail-back; {FAIL_BACK_USE}")
        return v

    _port = ranged("listen_port", low=1, high=65535, use="a UDP port from 1 to 65535, or null")

    @model_validator(mode="after")
    def _keys(self) -> Tunnel:
        keys = [p.public_key for p in self.peers]
        if len(set(keys)) != len(keys):
            raise ValueError("peers: a public key appears twice; give each peer once")
        return self

    @property
    def hold(self) -> float | None:
        """Seconds to hold before failing back; 0 = immediate, None = never."""
        if isinstance(self.fail_back, FailBackHold):
            return self.fail_back.hold
        return 0.0 if self.fail_back == "immediate" else None

    @property
    def full(self) -> bool:
        return self.route == "full"

    @property
    def kills(self) -> bool:
        """Whether LAN traffic the route sends into the tunnel is refused while it is down."""
        return self.kill_switch if self.kill_switch is not None else self.full

    @property
    def t_route(self) -> int:
        return self.route_table if self.route_table is not None else self.table + 1

    # the default mark `Config` gives a tunnel without fwmark (see `default_marks`); private,
    # so the config reads back as it was written
    _default_mark: int = PrivateAttr(default=0)

    @property
    def mark(self) -> int:
        """The fwmark on the tunnel's own packets: fwmark, or the default the config gave it."""
        return self.fwmark if self.fwmark is not None else self._default_mark

    @property
    def carries(self) -> frozenset[int]:
        """IP versions (4, 6) the tunnel carries: those its peers allow a default for, or
        any of its addresses' families."""
        versions = {a.version for a in self.addresses}
        versions |= {n.version for p in self.peers for n in p.allowed_ips}
        return frozenset(versions)


def cross_check(config: Config, tunnels: Mapping[str, Tunnel]) -> list[str]:
    """Problems between the tunnels and the rest of the config, each naming its field."""
    problems: list[str] = []
    tables: dict[int, str] = {config.balance.table: "balance.table"}
    tables.update({up.table: f"uplinks.{n}.table" for n, up in config.uplinks.items()})
    tables.update({p.table: f"policies.{n}.table" for n, p in config.policies.items()})
    names = {up.match.name for up in config.uplinks.values() if up.match.name}
    seen_if: dict[str, str] = {}
    marks: dict[int, str] = {}
    mask = config.kernel.mark_mask
    for name, t in tunnels.items():
        where = f"tunnels.{name}"
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,31}", name):
            problems.append(f"{where}: the name is not usable; use a letter then letters, digits, '-' or '_'")
        if isinstance(t.underlay, tuple):
            for u in t.underlay:
                if u not in config.uplinks:
                    problems.append(
                        f"{where}.underlay: {u!r} is not an uplink; use names from uplinks "
                        f"({', '.join(config.uplinks) or 'none configured'})"
                    )
        elif t.fail_back != "immediate":
            problems.append(
                f"{where}.fail_back: applies to an ordered underlay list, not to underlay "
                f"{'balance' if t.underlay == 'balance' else 'policy'}; remove it (or leave \"immediate\")"
            )
        if isinstance(t.underlay, UnderlayPolicy) and t.underlay.policy not in (*config.policies, "default"):
            problems.append(
                f"{where}.underlay.policy: {t.underlay.policy!r} is not a policy; use a name from "
                f"policies ({', '.join(config.policies) or 'none configured'}) or 'default'"
            )
        for field, table in (("table", t.table), ("route_table", t.t_route)):
            if not 1 <= table <= MAX_TABLE or table in (253, 254, 255):
                problems.append(f"{where}.{field}: {table} is not usable; pick a free table id, e.g. 100-252")
            elif table in tables:
                problems.append(
                    f"{where}.{field}: {table} is already used by {tables[table]}; give it its own table"
                )
            tables.setdefault(table, f"{where}.{field}")
        if t.mark == 0 or t.mark & mask or t.mark >= 1 << 32:
            problems.append(
                f"{where}.fwmark: {t.mark:#x} must be non-zero and outside kernel.mark_mask {mask:#x}; "
                "e.g. 0x10000"
            )
        elif config.policies and t.mark & config.kernel.policy_bits:
            # a steering rule would rewrite these bits of the tunnel's own packets, and a
            # policy's mark could match the tunnel's `fwmark T/T` rule
            problems.append(
                f"{where}.fwmark: {t.mark:#x} shares bits with the policies' marks "
                f"(kernel.policy_mask {config.kernel.policy_bits:#x}); set fwmark outside both masks, "
                f"e.g. {_free_mark(config.kernel.mark_mask | config.kernel.policy_bits):#x}"
            )
        elif any(t.mark & m == m or t.mark & m == t.mark for m in marks):
            other = next(m for m in marks if t.mark & m == m or t.mark & m == t.mark)
            problems.append(
                f"{where}.fwmark: {t.mark:#x} {'is' if other == t.mark else 'contains or is contained in'} "
                f"{marks[other]}'s {other:#x}, so one tunnel's packets would match the other's rule; "
                f"give each tunnel a mark of its own bits, e.g. "
                f"{_free_mark(config.kernel.mark_mask | config.kernel.policy_bits | sum(marks)):#x}"
            )
        marks.setdefault(t.mark, where)
        if t.interface in names:
            problems.append(
                f"{where}.interface: {t.interface!r} is an uplink's interface; name the tunnel's own"
            )
        if t.interface in seen_if:
            problems.append(f"{where}.interface: {t.interface!r} is also {seen_if[t.interface]}'s")
        seen_if.setdefault(t.interface, where)
    return problems


def give_default_marks(tunnels: Mapping[str, Tunnel], reserved: int) -> None:
    """Give each tunnel without a fwmark a single bit of its own: the highest bit outside
    `reserved` (the uplink and policy masks) and the other tunnels' marks, by name. A single
    bit, because the underlay rule is `fwmark T/T`: a mark whose bits include another
    tunnel's would match that tunnel's rule too. The policy mask is reserved even without
    policies, so adding the first policy does not move a tunnel's mark."""
    used = reserved
    for t in tunnels.values():
        used |= t.fwmark or 0
    for name in sorted(tunnels):
        if tunnels[name].fwmark is None:
            bit = _free_mark(used)
            used |= bit
            tunnels[name]._default_mark = bit


def _free_mark(used: int) -> int:
    """The highest single mark bit outside `used` (0 when every bit is taken)."""
    for bit in range(31, -1, -1):
        if not used & (1 << bit):
            return 1 << bit
    return 0
