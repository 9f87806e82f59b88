"""The health tracker (uplinkd.health): pure functions, fake clock."""

from __future__ import annotations

from dataclasses import replace

from uplinkd.config import Probe
from uplinkd.health import RoundResult, Tracker, after_round, after_traffic, next_round
from uplinkd.model import Health

FAST = Probe.model_validate({"profile": "fast", "targets": ["198.51.100.1", "198.51.100.2"]})


def round_(at: float, answered: int, sent: int = 2) -> RoundResult:
    return RoundResult(started=at, sent=sent, answered=answered, rtts=(0.001,) * answered, bytes=72 * sent)


def test_up_after_up_after_good_rounds() -> None:
    t = Tracker()
    for i in range(FAST.up_after - 1):
        t = after_round(t, round_(i, 2), FAST)
        assert t.health == Health.UNKNOWN
    t = after_round(t, round_(9, 2), FAST)
    assert t.health == Health.UP


def test_rounds_failed_while_dead_do_not_count_as_loss_once_it_answers() -> None:
    # the first round of a new prober failed (sent before its route existed): the uplink
    # must come up `up`, not `degraded` with "loss 34%"
    t = after_round(Tracker(), round_(0, 0), FAST)
    for i in range(FAST.up_after):
        t = after_round(t, round_(1 + i, 2), FAST)
    assert t.health == Health.UP and t.loss == 0
    # the same after a long outage
    for i in range(10):
        t = after_round(t, round_(10 + i, 0), FAST)
    assert t.health == Health.DOWN and t.loss > 0.9
    for i in range(FAST.up_after):
        t = after_round(t, round_(30 + i, 2), FAST)
    assert t.health == Health.UP and t.loss == 0


def test_loss_while_up_still_degrades() -> None:
    t = Tracker()
    for i in range(FAST.up_after):
        t = after_round(t, round_(i, 2), FAST)
    for i in range(6):
        t = after_round(t, round_(10 + i, 1), FAST)  # 50% loss, every round passes (quorum 1)
    assert t.health == Health.DEGRADED and t.verdict(FAST).weight_factor == FAST.degraded_weight


def test_a_down_uplink_is_probed_at_the_down_interval_despite_its_own_unanswered_probes() -> None:
    t = Tracker()
    for i in range(FAST.down_after):
        t = after_round(t, round_(i, 0), FAST)
    assert t.health == Health.DOWN
    t = replace(t, suspicious=True)  # our own probes go out, nothing comes back
    assert next_round(t, now=5.0, probe=FAST) == t.last_round + FAST.down_interval
    # once it answers, the confirming rounds come fast
    t = after_round(t, round_(10, 2), FAST)
    assert t.health == Health.DOWN
    assert next_round(t, now=10.0, probe=FAST) == 10 + FAST.fast_interval


def traffic(t: Tracker, readings: list[tuple[float, int, int]]) -> Tracker:
    for now, tx, rx in readings:
        t = after_traffic(t, now=now, tx=tx, rx=rx, probe=FAST)
    return t


def test_packets_out_and_none_back_is_suspicious() -> None:
    t = traffic(Tracker(), [(i * 0.05, 100 + 10 * i, 100) for i in range(3)])
    assert not t.suspicious  # not for suspect_after yet
    t = traffic(t, [(0.05 * i, 100 + 10 * i, 100) for i in range(3, 8)])
    assert t.suspicious


def test_far_fewer_packets_back_than_out_is_suspicious() -> None:
    # only the way out is dead: the far end retransmits now and then, which would reset a
    # "nothing came back" timer for ever
    readings = [(0.05 * i, 1000 + 12 * i, 1000 + (i // 2)) for i in range(12)]
    assert traffic(Tracker(), readings).suspicious
    # a healthy uplink: about as many in as out
    readings = [(0.05 * i, 1000 + 12 * i, 1000 + 10 * i) for i in range(12)]
    assert not traffic(Tracker(), readings).suspicious
    # a trickle out, nothing said either way (fewer than SUSPECT_MIN_TX packets)
    readings = [(0.05 * i, 1000 + i // 2, 1000 + i // 4) for i in range(12)]
    assert not traffic(Tracker(), readings).suspicious


def test_a_passing_round_clears_suspicion() -> None:
    t = traffic(Tracker(), [(0.05 * i, 100 + 10 * i, 100) for i in range(8)])
    assert t.suspicious
    t = after_round(t, round_(0.4, 2), FAST)
    assert not t.suspicious


def test_good_rounds_while_up_do_not_change_the_verdict() -> None:
    # every verdict change costs the daemon a full pass; a new RTT is not a change
    t = Tracker()
    for i in range(FAST.up_after):
        t = after_round(t, round_(i, 2), FAST)
    verdict = t.verdict(FAST)
    for i in range(5):
        t = after_round(t, RoundResult(10 + i, 2, 2, (0.001 * (i + 2),) * 2, 144), FAST)
    assert t.verdict(FAST) == verdict and t.rtt is not None and t.rtt > 0.001


def test_one_last_packet_out_is_not_suspicious() -> None:
    # a connection's last ACK: one packet out, nothing expected back
    t = traffic(Tracker(), [(0.0, 100, 100), (0.05, 101, 100)])
    t = traffic(t, [(0.05 * i, 101, 100) for i in range(2, 12)])
    assert not t.suspicious
    # a second packet out with still nothing back is
    t = traffic(t, [(0.6, 102, 100), (0.65, 102, 100)])
    assert t.suspicious
