"""The `vxlan` section: an Ethernet segment carried over a WireGuard tunnel.

    vxlan.<name>:
      tunnel       the tunnels.<name> whose inner addresses carry it
      interface    the VXLAN interface (vx0)
      vni          1-16777215
      local        the router's end: one of the tunnel's inner addresses (default: its first
                   address of the remotes' family)
      remotes      the other VTEPs' inner addresses (one flood entry each: no multicast)
      port         UDP port (4789)
      bridge       the bridge the interface joins (not uplinkd's: it must exist), or null
      mtu          "auto" = the tunnel's MTU - 50 (IPv4 inner) or - 70 (IPv6 inner), or a number
      mac          the interface's MAC (default: derived from the name and VNI, so it is stable)
      address      the router's own address on the segment (on the bridge, or on the
                   interface without one), or null
      gateway      the segment's router, for replies from `address` to beyond the segment
      table        the table the "source in, source out" rule of `address` looks up

Cross-checks against the tunnels and the rest of the config are in `cross_check`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from uplinkd.config import ifname
from uplinkd.config.fields import Int, Section, Text, check_range, ranged, shown
from uplinkd.tunnel.vxlan import VXLAN_PORT, check_mac

if TYPE_CHECKING:
    from uplinkd.config import Config

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
MAX_VNI = (1 << 24) - 1
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")


class Vxlan(Section):
    tunnel: Text = Field(description="the tunnels.<name> that carries the segment")
    interface: Text = Field(description="VXLAN interface name")
    vni: Int = Field(description="VXLAN network identifier, 1-16777215")
    local: IPAddress | None = Field(
        default=None,
        description="one of the tunnel's inner addresses; default: the first of the remotes' family",
    )
    remotes: tuple[IPAddress, ...] = Field(min_length=1, description="the other ends' inner addresses")
    port: Int = Field(default=VXLAN_PORT, description="UDP port")
    bridge: Text | None = Field(default=None, description="the bridge the interface joins")
    mtu: Literal["auto"] | Int = Field(default="auto", description="'auto' (tunnel MTU - 50/70) or 576-9000")
    mac: Text | None = Field(
        default=None, description="the interface's MAC; default derived from name and VNI"
    )
    address: IPInterface | None = Field(default=None, description="the router's own address on the segment")
    gateway: IPAddress | None = Field(default=None, description="the segment's router, for replies beyond it")
    table: Int | None = Field(default=None, description="table of the source rule for `address`")

    _vni = ranged("vni", low=1, high=MAX_VNI, use="a VNI from 1 to 16777215")
    _port = ranged("port", low=1, high=65535, use="a UDP port from 1 to 65535 (VXLAN's is 4789)")

    @field_validator("local", "remotes", "gateway", "address", mode="before")
    @classmethod
    def _written_as_text(cls, v: object, info: ValidationInfo) -> object:
        """Addresses are strings as `ip` writes them: not numbers (pydantic would read 1 as
        0.0.0.1), and the segment address with its prefix length."""
        items = v if isinstance(v, (list, tuple)) else [v]
        for item in items:
            if item is not None and not isinstance(item, str):
                raise ValueError(f'{shown(item)} is not an address; write it as a string, e.g. "10.99.0.1"')
        if info.field_name == "address" and isinstance(v, str) and "/" not in v:
            raise ValueError(f'{shown(v)} has no prefix length; write the segment\'s, e.g. "{v}/24"')
        return v

    @field_validator("interface", "bridge")
    @classmethod
    def _ifname(cls, v: str | None) -> str | None:
        if v is not None and (why := ifname.problem(v)) is not None:
            raise ValueError(why)
        return v

    @field_validator("mtu")
    @classmethod
    def _mtu(cls, v: str | int) -> str | int:
        return v if isinstance(v, str) else check_range(v, low=576, high=9000, use="'auto' or 576 to 9000")

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return check_mac(v, what="mac")
        except ValueError as e:
            raise ValueError(str(e).removeprefix("mac: ")) from None

    @field_validator("remotes")
    @classmethod
    def _remotes(cls, v: tuple[IPAddress, ...]) -> tuple[IPAddress, ...]:
        if len(set(v)) != len(v):
            raise ValueError("a remote appears twice; name each once")
        if len({a.version for a in v}) > 1:
            raise ValueError("remotes mix IPv4 and IPv6; a VXLAN interface speaks one family, use one")
        return v

    @model_validator(mode="after")
    def _segment(self) -> Vxlan:
        if self.bridge is not None and self.bridge == self.interface:
            raise ValueError("bridge: the interface cannot be its own bridge; name the bridge it joins")
        if self.local is not None and self.local.version != self.remotes[0].version:
            raise ValueError(
                f"local: {self.local} and the remotes ({self.remotes[0]}) differ in family; use one family"
            )
        if self.local is not None and self.local in self.remotes:
            raise ValueError(f"remotes: {self.local} is the local end; list only the other ends")
        if self.address is None:
            if self.gateway is not None or self.table is not None:
                raise ValueError("gateway and table need `address` (the router's own address on the segment)")
            return self
        if self.table is None:
            raise ValueError(
                "table: `address` needs a table for its source rule (replies leave the way they came); "
                "give a free table id, e.g. 160"
            )
        if self.gateway is not None and self.gateway not in self.address.network:
            raise ValueError(
                f"gateway: {self.gateway} is not on the segment {self.address.network}; "
                "use the segment's router"
            )
        return self

    @property
    def family_version(self) -> int:
        return self.remotes[0].version

    def local_in(self, addresses: tuple[IPInterface, ...]) -> IPAddress | None:
        """The local end: `local`, or the first of `addresses` in the remotes' family."""
        if self.local is not None:
            return self.local
        return next((a.ip for a in addresses if a.version == self.family_version), None)

    @property
    def mac_value(self) -> str:
        """`mac`, or a locally administered unicast MAC derived from the interface and VNI
        (the kernel would pick a random one at every creation, and the far end's bridge
        and ARP caches would learn a new one after each reboot)."""
        if self.mac is not None:
            return self.mac
        digest = hashlib.sha256(f"{self.interface}/{self.vni}".encode()).digest()
        octets = [(digest[0] & 0xFC) | 0x02, *digest[1:6]]
        return ":".join(f"{b:02x}" for b in octets)


def cross_check(config: Config, segments: Mapping[str, Vxlan]) -> list[str]:
    """Problems between the segments and the rest of the config, each naming its field."""
    problems: list[str] = []
    used_tables: dict[int, str] = {config.balance.table: "balance.table"}
    used_tables.update({up.table: f"uplinks.{n}.table" for n, up in config.uplinks.items()})
    used_tables.update({p.table: f"policies.{n}.table" for n, p in config.policies.items()})
    for n, t in config.tunnels.items():
        used_tables.update({t.table: f"tunnels.{n}.table", t.t_route: f"tunnels.{n}.route_table"})
    others = {t.interface: f"tunnels.{n}.interface" for n, t in config.tunnels.items()}
    others.update({up.match.name: f"uplinks.{n}" for n, up in config.uplinks.items() if up.match.name})
    seen_if: dict[str, str] = {}
    vnis: dict[tuple[int, int], str] = {}
    for name, v in segments.items():
        where = f"vxlan.{name}"
        if not _NAME.fullmatch(name):
            problems.append(f"{where}: the name is not usable; use a letter then letters, digits, '-' or '_'")
        for field, dev in (("interface", v.interface), ("bridge", v.bridge)):
            if dev is not None and dev in others:
                problems.append(f"{where}.{field}: {dev!r} is {others[dev]}'s; name another interface")
        if v.interface in seen_if:
            problems.append(f"{where}.interface: {v.interface!r} is also {seen_if[v.interface]}'s")
        seen_if.setdefault(v.interface, where)
        if (v.vni, v.port) in vnis:
            problems.append(
                f"{where}.vni: {v.vni} on port {v.port} is also {vnis[(v.vni, v.port)]}'s; "
                "the kernel takes one interface per VNI and port: give each segment its own VNI"
            )
        vnis.setdefault((v.vni, v.port), where)
        if v.table is not None:
            if not 1 <= v.table <= MAX_VNI or v.table in (253, 254, 255):
                problems.append(f"{where}.table: {v.table} is not usable; pick a free table id, e.g. 100-252")
            elif v.table in used_tables:
                problems.append(
                    f"{where}.table: {v.table} is already used by {used_tables[v.table]}; "
                    "give it its own table"
                )
            used_tables.setdefault(v.table, f"{where}.table")
        tunnel = config.tunnels.get(v.tunnel)
        if tunnel is None:
            problems.append(
                f"{where}.tunnel: {v.tunnel!r} is not a tunnel; use a name from tunnels "
                f"({', '.join(config.tunnels) or 'none configured'})"
            )
            continue
        problems += _against_tunnel(where, v, tunnel_name=v.tunnel, addresses=tunnel.addresses, routed=[
            n for p in tunnel.peers for n in p.allowed_ips
        ])  # fmt: skip
    return problems


def _against_tunnel(
    where: str,
    v: Vxlan,
    *,
    tunnel_name: str,
    addresses: tuple[IPInterface, ...],
    routed: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> list[str]:
    problems: list[str] = []
    inner = ", ".join(str(a.ip) for a in addresses) or "none"
    local = v.local_in(addresses)
    if local is None:
        problems.append(
            f"{where}.local: tunnels.{tunnel_name} has no IPv{v.family_version} address for the local end; "
            f"add one to tunnels.{tunnel_name}.addresses or use remotes of its family ({inner})"
        )
    elif local not in {a.ip for a in addresses}:
        problems.append(
            f"{where}.local: {local} is not among tunnels.{tunnel_name}.addresses ({inner}); use one of them"
        )
    nets = [a.network for a in addresses] + routed
    for remote in v.remotes:
        if not any(remote.version == n.version and remote in n for n in nets):
            problems.append(
                f"{where}.remotes: {remote} is not reached through tunnels.{tunnel_name} (neither in its "
                f"addresses' subnets nor in a peer's allowed_ips); add it to the peer's allowed_ips"
            )
    return problems
