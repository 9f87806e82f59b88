"""Which uplink of an ordered underlay list a tunnel rides: the worker's memory between
passes, and one pure step per look. No kernel, no clock (the caller passes `now`).

Planning picks T_under from the uplinks' health alone; this adds what health cannot see:

- **A healthy uplink that carries no tunnel traffic** (a network that drops UDP): when the
  tunnel is down on its carrier for `TRY_S` while that uplink is healthy, the uplink is
  avoided and the next allowed one tried, and the tunnel is `degraded` ("trying lte1"), not
  down. Down is declared only when every healthy uplink of the list has been tried; the list
  is tried again from the top after `RETRY_ALL_S`. An avoided uplink is forgiven when it
  stops being healthy (what comes back may be another network).
- **Fail-back**: after a failover (a carrier that took over from another), the tunnel stays
  on it (`stay_on`) while it is healthy: for `hold` seconds of a more preferred uplink being
  healthy, or for good (`hold` None: "never"); `hold` 0 is "immediate". A first choice at
  start is never pinned, so a preferred uplink that is still being probed wins once up.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from uplinkd.tunnel.health import TunnelState

#: a carrier gets this long to show a working tunnel (WireGuard retries a handshake every 5 s)
TRY_S: Final = 6.0
#: every healthy uplink tried and failed: start again from the top after this long
RETRY_ALL_S: Final = 30.0


@dataclass(frozen=True)
class Ride:
    carrier: str | None = None  # the uplink T_under names now (as the last pass planned)
    avoid: frozenset[str] = frozenset()
    pinned: bool = False  # took over from another carrier: fail-back applies
    failing_since: float | None = None  # the tunnel not working on a healthy carrier since
    better_since: float | None = None  # a more preferred uplink healthy since
    all_failed_since: float | None = None
    published: TunnelState = "unknown"  # the state the last step gave out


@dataclass(frozen=True)
class Verdict:
    """What the worker publishes: the tunnel's state and reason, and the planning hints."""

    state: TunnelState
    reason: str
    avoid: frozenset[str]
    stay_on: str | None


def step(
    ride: Ride,
    *,
    prefs: tuple[str, ...],
    healthy: frozenset[str],
    carrier: str | None,
    state: TunnelState,
    reason: str,
    hold: float | None,
    now: float,
) -> tuple[Ride, Verdict]:
    """One look: `carrier` is the uplink the last pass put in T_under (None: none), `state`
    and `reason` the tunnel's own health there, `healthy` the uplinks up or degraded.

    While another uplink is tried, a tunnel that was working is `degraded` (LAN traffic stays
    in it); one that was not stays `down` (the kill switch stays on)."""
    ride, verdict = _step(
        ride, prefs=prefs, healthy=healthy, carrier=carrier, state=state, reason=reason, hold=hold, now=now
    )
    return replace(ride, published=verdict.state), verdict


def _step(
    ride: Ride,
    *,
    prefs: tuple[str, ...],
    healthy: frozenset[str],
    carrier: str | None,
    state: TunnelState,
    reason: str,
    hold: float | None,
    now: float,
) -> tuple[Ride, Verdict]:
    if carrier != ride.carrier:
        ride = replace(
            ride, carrier=carrier, pinned=ride.carrier is not None and carrier is not None,
            better_since=None, failing_since=None,
        )  # fmt: skip
    ride = replace(ride, avoid=ride.avoid & healthy)  # gone and back: maybe another network
    working = state in ("up", "degraded")
    # the tunnel fails on an uplink that is healthy: not the uplink's fault (its own probes
    # would take it out), so this tunnel cannot pass there. The grace also covers the race
    # with the uplink's prober when the uplink itself is dying.
    suspect = not working and carrier is not None and carrier in healthy and carrier not in ride.avoid
    if not suspect or carrier is None:
        ride = replace(ride, failing_since=None)
    elif ride.failing_since is None:
        ride = replace(ride, failing_since=now)
    elif now - ride.failing_since >= TRY_S:
        ride = replace(ride, avoid=ride.avoid | {carrier}, failing_since=None)
    candidates = [p for p in prefs if p in healthy and p not in ride.avoid]
    if working:
        ride = replace(ride, all_failed_since=None)
    elif not candidates and ride.avoid:
        failed = ride.all_failed_since if ride.all_failed_since is not None else now
        if now - failed >= RETRY_ALL_S:
            ride = replace(ride, avoid=frozenset(), all_failed_since=None)
            return ride, Verdict(state, f"{reason}; trying the underlay list again", frozenset(), None)
        ride = replace(ride, all_failed_since=failed)
        tried = ", ".join(p for p in prefs if p in ride.avoid)
        why = f"{reason}; no tunnel through any healthy uplink (tried {tried}); again after {RETRY_ALL_S:g} s"
        return ride, Verdict("down", why, ride.avoid, None)
    out_state, out_reason = state, reason
    others = [p for p in candidates if p != carrier]
    trying: TunnelState = "degraded" if ride.published in ("up", "degraded") else state
    if not working and ride.failing_since is not None and others:
        # failing on a healthy uplink: another is tried before the tunnel is declared down
        out_state = trying
        out_reason = f"{reason}; {carrier} is healthy: trying {others[0]} if this lasts {TRY_S:g} s"
    elif not working and ride.avoid and candidates:
        out_state = trying
        blocked = ", ".join(p for p in prefs if p in ride.avoid)
        out_reason = f"{reason}; no tunnel through {blocked}: trying {candidates[0]}"
    return _fail_back(ride, prefs=prefs, candidates=candidates, hold=hold, now=now, state=out_state,
                      reason=out_reason)  # fmt: skip


def _fail_back(
    ride: Ride, *, prefs: tuple[str, ...], candidates: list[str], hold: float | None, now: float,
    state: TunnelState, reason: str,
) -> tuple[Ride, Verdict]:  # fmt: skip
    carrier = ride.carrier
    if carrier is None or not ride.pinned or carrier not in candidates or hold == 0:
        return replace(ride, better_since=None), Verdict(state, reason, ride.avoid, None)
    better = candidates.index(carrier) > 0
    if not better:
        return replace(ride, better_since=None), Verdict(state, reason, ride.avoid, carrier)
    since = ride.better_since if ride.better_since is not None else now
    ride = replace(ride, better_since=since)
    if hold is None:
        return ride, Verdict(state, f"{reason}; fail_back never: stays on {carrier}", ride.avoid, carrier)
    if now - since >= hold:
        return replace(ride, pinned=False), Verdict(state, reason, ride.avoid, None)
    return ride, Verdict(
        state, f"{reason}; back to {candidates[0]} once healthy {hold:g} s (fail_back)", ride.avoid, carrier
    )
