"""Where each uplink is in its life, and what the health checker says about it."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from uplinkd.model.net import IPAddress, IPInterface


class State(enum.StrEnum):
    """Where an uplink is in its life. Ordered: each state implies the ones before it."""

    ABSENT = "absent"  # no interface matches
    PRESENT = "present"  # interface there, but no carrier or not up
    ADDRESSED = "addressed"  # carrier and an address, but no usable gateway yet
    PROBING = "probing"  # ready; health not yet known
    UP = "up"  # healthy and in service
    DEGRADED = "degraded"  # in service with a reduced weight
    DOWN = "down"  # ready but failing its health checks


class Health(enum.StrEnum):
    """What the health checker says about a ready uplink."""

    UNKNOWN = "unknown"
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


@dataclass(frozen=True)
class HealthVerdict:
    health: Health
    reason: str = ""
    weight_factor: float = 1.0  # degraded uplinks get a fraction of their weight


@dataclass(frozen=True)
class UplinkStatus:
    """The planner's view of one uplink: what it is and why."""

    name: str
    state: State
    reason: str
    ifindex: int | None = None
    dev: str | None = None
    addresses: tuple[IPInterface, ...] = ()
    gateway4: IPAddress | None = None
    gateway6: IPAddress | None = None
    pointopoint: bool = False
    families: tuple[int, ...] = ()  # the families it can route in now (AF_INET, AF_INET6)
    link_ready: bool = False  # up with carrier
    table: int = 0
    mark: int = 0
    weight: int = 0  # effective weight in the balance group (0: not a member)
    in_group: bool = False
    drained: bool = False
    # other interfaces that match this uplink and no other uplink took: the match is ambiguous
    also_matches: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        """Carrier, address and a way out: can carry traffic if healthy."""
        return self.state in (State.PROBING, State.UP, State.DEGRADED, State.DOWN)
