"""Is an uplink healthy? A pure state machine over probe rounds and traffic counters.

Computes only: every function takes the current state and the time (`now`, monotonic
seconds) and returns a new state. The prober (`uplinkd.probes`) feeds it; the daemon
turns its verdicts into group membership.

Two kinds of evidence:

- Probe rounds: every target probed in parallel; a round passes when `quorum` answer.
  `down_after` failed rounds in a row take the uplink down, `up_after` good rounds in a
  row bring it up (hysteresis: no flapping faster than that). Loss and RTT are smoothed
  (EWMA); over threshold the uplink is `degraded` (weight cut) before it is dead.
- Traffic: the interface's packet counters. Packets going out while nothing comes back
  for `suspect_after` seconds makes the uplink *suspicious*, and suspicion switches
  probing from the slow idle cadence (cheap on metered LTE) to fast rounds. So an idle
  uplink costs little, and a dead uplink that carries traffic is seen in a second or two.
  "Nothing comes back" alone is fooled when only the way out is dead: the far end keeps
  retransmitting what we never acknowledged (TCP backs off 0.2, 0.4, 0.8 s...), and each
  retransmission resets the quiet timer, so suspicion came 0.7-1 s late in the lab. So an
  uplink is also suspicious when, over the last `suspect_after` seconds, far fewer packets
  came in than went out (fewer than 1 in `SUSPECT_RATIO`). A healthy bulk upload with
  stretch ACKs can look like that too; it only costs fast rounds, which pass. And one packet
  out with no answer is not suspicious: a connection's last ACK expects none (every close
  of a connection the client ended cost a probe round).

Rounds while down come every `down_interval` (the prober's own unanswered packets must not
make a dead uplink "suspicious" and probe it at the fast rate forever); once a round passes,
the next ones come at `fast_interval` until `up_after` confirm it (the hysteresis counts
rounds, so recovery takes `up_after` fast rounds, not `up_after` slow ones).

Loss and RTT smoothing restart when an uplink that was down or unknown answers again: the
rounds that failed while it was dead are not "loss" of the working uplink, and counting them
made every uplink come up `degraded` (the first round, sent before its routes existed,
failed) and stay so for many slow rounds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from uplinkd.config import Probe
from uplinkd.model import Health, HealthVerdict

EWMA_ALPHA = 0.3
RECOVER_FRACTION = 0.5  # degraded → up once smoothed loss/RTT fall below half the threshold
SUSPECT_RATIO = 4  # over suspect_after: fewer than 1 packet in per this many out is suspicious
SUSPECT_MIN_TX = 8  # ... once at least this many went out (a few packets prove nothing)
QUIET_MIN_TX = 2  # "nothing came back" needs this many out: a lone last ACK expects no answer


@dataclass(frozen=True)
class RoundResult:
    """One probe round: every target asked once, in parallel."""

    started: float
    sent: int
    answered: int
    rtts: tuple[float, ...]  # seconds, one per answer
    bytes: int  # on the wire (IP headers included), both directions

    @property
    def loss(self) -> float:
        return 1.0 - self.answered / self.sent if self.sent else 1.0


@dataclass(frozen=True)
class Tracker:
    """Everything the health checker remembers about one uplink."""

    health: Health = Health.UNKNOWN
    reason: str = "not probed yet"
    good_streak: int = 0
    bad_streak: int = 0
    loss: float = 0.0  # EWMA, 0..1
    rtt: float | None = None  # EWMA, seconds
    rounds: int = 0
    last_round: float | None = None  # start time of the last round
    # traffic
    tx: int | None = None
    rx: int | None = None
    quiet_since: float | None = None  # first packet out with nothing back since
    quiet_tx: int = 0  # tx just before that packet
    window: tuple[tuple[float, int, int], ...] = ()  # counter readings (time, tx, rx), oldest first
    suspicious: bool = False

    def verdict(self, probe: Probe) -> HealthVerdict:
        factor = probe.degraded_weight if self.health == Health.DEGRADED else 1.0
        return HealthVerdict(self.health, self.reason, factor)


def after_round(t: Tracker, r: RoundResult, probe: Probe) -> Tracker:
    """Fold one probe round into the tracker."""
    quorum = min(probe.quorum, r.sent) if r.sent else probe.quorum
    passed = r.sent > 0 and r.answered >= quorum
    # back from the dead (or first answer ever): smoothing starts afresh with this round
    fresh = t.rounds == 0 or (passed and t.good_streak == 0 and t.health in (Health.UNKNOWN, Health.DOWN))
    loss = r.loss if fresh else EWMA_ALPHA * r.loss + (1 - EWMA_ALPHA) * t.loss
    rtt = None if fresh else t.rtt
    if r.rtts:
        sample = sum(r.rtts) / len(r.rtts)
        rtt = sample if rtt is None else EWMA_ALPHA * sample + (1 - EWMA_ALPHA) * rtt
    t = replace(
        t,
        rounds=t.rounds + 1,
        last_round=r.started,
        loss=loss,
        rtt=rtt,
        good_streak=t.good_streak + 1 if passed else 0,
        bad_streak=0 if passed else t.bad_streak + 1,
    )
    if passed:
        # an answer is traffic coming back: whatever made us suspicious is answered
        t = replace(t, suspicious=False, quiet_since=None, window=t.window[-1:])
    answered = f"{r.answered}/{r.sent} targets answered"
    if not passed:
        if t.health != Health.DOWN and t.bad_streak >= probe.down_after:
            return replace(t, health=Health.DOWN, reason=f"{answered}, {t.bad_streak} rounds in a row")
        return t
    over = _over_thresholds(t, probe)
    if t.health in (Health.UNKNOWN, Health.DOWN):
        if t.good_streak >= probe.up_after:
            if over:
                return replace(t, health=Health.DEGRADED, reason=over)
            return replace(t, health=Health.UP, reason=f"{answered}, {_rtt_text(t)}")
        return t
    if t.health == Health.UP and over:
        return replace(t, health=Health.DEGRADED, reason=over)
    if t.health == Health.DEGRADED and _recovered(t, probe):
        return replace(t, health=Health.UP, reason=f"recovered: {_loss_text(t)}, {_rtt_text(t)}")
    # The reason says why the state is what it is; it is not refreshed every round (a new
    # RTT in it made every round a verdict change, and so a full daemon pass). Live loss
    # and RTT are in the tracker, which `status` shows.
    return t


def after_traffic(t: Tracker, *, now: float, tx: int, rx: int, probe: Probe) -> Tracker:
    """Fold a reading of the interface's packet counters into the tracker."""
    if t.tx is None or t.rx is None or tx < t.tx or rx < t.rx:  # first reading, or counters reset
        return replace(t, tx=tx, rx=rx, quiet_since=None, window=((now, tx, rx),), suspicious=False)
    quiet_since, quiet_tx = t.quiet_since, t.quiet_tx
    if rx > t.rx:
        quiet_since = None
    elif tx > t.tx and quiet_since is None:
        quiet_since, quiet_tx = now, t.tx
    quiet = (
        quiet_since is not None and now - quiet_since >= probe.suspect_after and tx - quiet_tx >= QUIET_MIN_TX
    )
    # keep the newest reading that is at least suspect_after old, and all after it
    window = (*t.window, (now, tx, rx))
    start = 0
    for i, (at, _, _) in enumerate(window):
        if now - at >= probe.suspect_after:
            start = i
    window = window[start:]
    since, tx0, rx0 = window[0]
    sent, got = tx - tx0, rx - rx0
    lopsided = now - since >= probe.suspect_after and sent >= SUSPECT_MIN_TX and got * SUSPECT_RATIO < sent
    return replace(
        t,
        tx=tx,
        rx=rx,
        quiet_since=quiet_since,
        quiet_tx=quiet_tx,
        window=window,
        suspicious=quiet or lopsided,
    )


def next_round(t: Tracker, *, now: float, probe: Probe) -> float:
    """When the next probe round is due (monotonic time)."""
    if t.last_round is None:
        return now
    if t.health == Health.DOWN:
        # our own unanswered probes make a dead uplink look "suspicious": ignore that here;
        # once it answers, confirm quickly (hysteresis counts rounds)
        gap = probe.fast_interval if 0 < t.good_streak < probe.up_after else probe.down_interval
    elif t.suspicious or t.health == Health.UNKNOWN or (0 < t.bad_streak < probe.down_after):
        gap = probe.fast_interval
    else:
        gap = probe.interval
    return t.last_round + gap


def _over_thresholds(t: Tracker, probe: Probe) -> str | None:
    if t.loss * 100 > probe.loss_threshold:
        return f"loss {t.loss * 100:.0f}% over {probe.loss_threshold:g}%"
    if t.rtt is not None and t.rtt * 1000 > probe.rtt_threshold:
        return f"rtt {t.rtt * 1000:.0f} ms over {probe.rtt_threshold:g} ms"
    return None


def _recovered(t: Tracker, probe: Probe) -> bool:
    loss_ok = t.loss * 100 <= probe.loss_threshold * RECOVER_FRACTION
    rtt_ok = t.rtt is None or t.rtt * 1000 <= probe.rtt_threshold * RECOVER_FRACTION
    return loss_ok and rtt_ok


def _rtt_text(t: Tracker) -> str:
    return f"rtt {t.rtt * 1000:.1f} ms" if t.rtt is not None else "rtt -"


def _loss_text(t: Tracker) -> str:
    return f"loss {t.loss * 100:.0f}%"
