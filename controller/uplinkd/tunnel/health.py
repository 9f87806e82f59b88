"""A tunnel's health as its worker last saw it: the facts planning reads about a tunnel. Pure.

A tunnel is up while its peer's last handshake is recent: WireGuard re-keys every two
minutes while packets flow (and the keepalive keeps them flowing), and gives a session up
after three (REJECT_AFTER_TIME, 180 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: a handshake older than this means the session is gone (WireGuard's REJECT_AFTER_TIME)
HANDSHAKE_FRESH_S: Final = 180.0


@dataclass(frozen=True)
class TunnelHealth:
    up: bool
    reason: str
    ifname: str
    last_handshake: float | None = None  # unix time; None = never
    rx_bytes: int = 0
    tx_bytes: int = 0
    endpoint: str | None = None  # where WireGuard sends to now


def judge(ifname: str, *, last_handshake: float | None, now: float) -> tuple[bool, str]:
    """Up, and why, from the peer's last handshake (unix time) at wall-clock `now`."""
    if last_handshake is None:
        return False, "no handshake yet"
    age = now - last_handshake
    if age > HANDSHAKE_FRESH_S:
        return False, f"last handshake {age:.0f} s ago"
    return True, f"handshake {age:.0f} s ago"
