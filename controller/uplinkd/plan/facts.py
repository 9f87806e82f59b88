"""What planning reads and what its contributors return.

`Facts` is every fact a pass plans from, as one frozen value: the kernel as observed, the
health verdicts, the DHCP leases, the drained uplinks and which interface each uplink had
on the last pass. The daemon builds one per pass; tests build them by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from uplinkd.config import Config
from uplinkd.model import (
    Bearer,
    Delegation,
    HealthVerdict,
    IPAddress,
    IPInterface,
    Lease,
    Lease6,
    Observed,
    UplinkStatus,
)
from uplinkd.model.adverts import Advert
from uplinkd.tunnel.health import TunnelHealth


def _frozen(mapping: Mapping[Any, Any] | None) -> Mapping[Any, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Facts:
    """The facts one planning pass reads. Mappings are copied: later changes to the
    caller's dicts do not reach a value already built."""

    observed: Observed = field(default_factory=Observed)
    # uplink → verdict; an uplink with none is taken as up ("no health checks configured")
    health: Mapping[str, HealthVerdict] = field(default_factory=dict)
    leases: Mapping[str, Lease] = field(default_factory=dict)
    drained: frozenset[str] = frozenset()
    # uplinks whose monthly budget is spent: used only as a last tier
    spent: frozenset[str] = frozenset()
    # uplink → ifindex it had on the last pass: an uplink keeps its interface
    previous: Mapping[str, int] = field(default_factory=dict)
    # tunnel → what its worker last saw; a tunnel with none is down (not running yet)
    tunnels: Mapping[str, TunnelHealth] = field(default_factory=dict)
    # uplink → its modem's connected bearer (mode modem; none: not connected)
    bearers: Mapping[str, Bearer] = field(default_factory=dict)
    # uplink → the prefix delegated over it by DHCPv6-PD (for `delegate` LANs)
    delegations: Mapping[str, Delegation] = field(default_factory=dict)
    # uplink → the address it holds by DHCPv6 IA_NA (dhcp uplinks whose ISP hands out addresses)
    leases6: Mapping[str, Lease6] = field(default_factory=dict)
    # uplink → the last router advertisement heard on it (dhcp and extended uplinks)
    adverts: Mapping[str, Advert] = field(default_factory=dict)

    def __post_init__(self) -> None:
        maps = ("health", "leases", "previous", "tunnels", "bearers", "delegations", "leases6", "adverts")
        for name in maps:
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        object.__setattr__(self, "drained", frozenset(self.drained))
        object.__setattr__(self, "spent", frozenset(self.spent))


@dataclass(frozen=True)
class Way:
    """How one uplink reaches the world in one family."""

    addresses: tuple[IPInterface, ...]
    gateway: IPAddress | None  # None: point-to-point, `default dev X`


@dataclass(frozen=True)
class Survey:
    """Each uplink's status (before any contributor decides about it), and how each ready
    one routes, per family: what every contributor plans from."""

    statuses: tuple[UplinkStatus, ...]
    ways: Mapping[str, Mapping[int, Way]]


@dataclass(frozen=True)
class Contribution:
    """One contributor's part of the desired state. Nothing in it may be claimed by another
    contributor: the same kernel object key, uplink or reason topic twice is an error."""

    objects: tuple[object, ...] = ()
    in_service: Mapping[str, int] = field(default_factory=dict)  # uplink → weight for new connections
    reasons: Mapping[str, str] = field(default_factory=dict)  # topic ("balance ipv4") → why
    # LAN interface → the router advertisement uplinkd's own sender sends there (extend)
    adverts: Mapping[str, Advert] = field(default_factory=dict)


Contributor = Callable[[Config, Facts, Survey], Contribution]
