"""A tunnel's health as its worker last saw it: the facts planning reads about a tunnel. Pure.

Two kinds of evidence, as for uplinks:

- The peers' last handshake. WireGuard re-keys every two minutes while packets flow (and
  the keepalive keeps them flowing), and gives a session up after three (REJECT_AFTER_TIME,
  180 s). Alone, it is slow: a dead tunnel is seen only when its session expires.
- Probes THROUGH the tunnel to targets inside it (`tunnels.<n>.probe`), folded by the same
  state machine as the uplinks' (`uplinkd.health`): up, degraded, down, with hysteresis.
  While probes have no verdict yet (none configured, or just (re)started on a new underlay)
  the handshake decides.

The worker also says where the tunnel may ride (`avoid`: uplinks that are healthy but carry
no tunnel traffic, e.g. a network that drops UDP; `stay_on`: the uplink fail-back keeps it
on), and planning turns that into T_under.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from uplinkd.tunnel.wireguard import Endpoint

#: a handshake older than this means the session is gone (WireGuard's REJECT_AFTER_TIME)
HANDSHAKE_FRESH_S: Final = 180.0

TunnelState = Literal["unknown", "up", "degraded", "down"]
PROBED: Final[dict[str, TunnelState]] = {"up": "up", "degraded": "degraded", "down": "down"}


@dataclass(frozen=True)
class TunnelHealth:
    state: TunnelState
    reason: str
    ifname: str
    last_handshake: float | None = None  # unix time; None = never
    rx_bytes: int = 0
    tx_bytes: int = 0
    endpoint: str | None = None  # where WireGuard sends to now
    # healthy uplinks of the underlay list this tunnel does not work through (tried, failed)
    avoid: frozenset[str] = frozenset()
    # fail-back: keep the tunnel on this uplink while it is healthy (None: the first healthy)
    stay_on: str | None = None
    # endpoints given as DNS names, as last resolved: (the config's "name:port", the endpoint)
    resolved: tuple[tuple[str, Endpoint], ...] = ()

    def endpoint_of(self, text: str) -> Endpoint | None:
        """Where a named endpoint resolved to (None: not yet, or not a name)."""
        return next((e for t, e in self.resolved if t == text), None)

    @property
    def up(self) -> bool:
        """LAN traffic goes into the tunnel (and not to the kill switch)."""
        return self.state in ("up", "degraded")
    backend: str = ""  # "kernel" or "wireguard-go": what holds the device


def judge(ifname: str, *, last_handshake: float | None, now: float) -> tuple[bool, str]:
    """Up, and why, from the peer's last handshake (unix time) at wall-clock `now`."""
    if last_handshake is None:
        return False, "no handshake yet"
    age = now - last_handshake
    if age > HANDSHAKE_FRESH_S:
        return False, f"last handshake {age:.0f} s ago"
    return True, f"handshake {age:.0f} s ago"


def combined(
    *,
    handshake_up: bool,
    handshake_why: str,
    probed: str | None,
    probe_why: str = "",
    previous: TunnelState | None = None,
) -> tuple[TunnelState, str]:
    """The tunnel's state from its handshake and its probes' verdict (`probed`: unknown, up,
    degraded, down; None: no probes configured). A probe verdict wins once there is one;
    while probes are (re)starting (on a new underlay) the `previous` state holds, so a
    restarted prober does not turn a dead tunnel "up" on an old handshake."""
    state = PROBED.get(probed or "")
    if state is not None:
        return state, f"probes: {probe_why}" if probe_why else "probes"
    if probed is not None and previous in PROBED:
        return previous, f"{handshake_why}; probes starting"
    return ("up" if handshake_up else "down"), handshake_why
