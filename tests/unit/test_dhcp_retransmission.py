"""The DHCP client's retransmission schedule (pure): quick while looking for a lease, the
RFC 2131 §4.1 backoff otherwise and after the first seconds, capped, randomized."""

from __future__ import annotations

import itertools
import random

import pytest

from uplinkd.dhcp import RETRANSMISSION, Retransmission


def take(waits: object, n: int) -> list[float]:
    return list(itertools.islice(waits, n))  # type: ignore[call-overload]


def test_looking_for_a_lease_repeats_within_a_second_then_backs_off_as_the_rfc() -> None:
    base = take(RETRANSMISSION.base(looking=True), 14)
    sub_second = list(itertools.takewhile(lambda d: d < 1.0, base))
    assert len(sub_second) >= 3 and sub_second[0] == 0.25
    assert base == sorted(base), "waits never shrink"
    rfc = base[base.index(4.0):]
    assert rfc[:5] == [4.0, 8.0, 16.0, 32.0, 32.0]
    # a server that starts 1 s after the first DISCOVER is asked again within a second
    sent = list(itertools.accumulate(base))
    assert next(t for t in sent if t >= 1.0) < 2.0


def test_a_client_with_a_lease_follows_the_rfc_from_the_start() -> None:
    assert take(RETRANSMISSION.base(looking=False), 5) == [4.0, 8.0, 16.0, 32.0, 32.0]


def test_waits_are_randomized_by_a_quarter_at_most_one_second() -> None:
    rng = random.Random(9)
    for looking in (True, False):
        base = take(RETRANSMISSION.base(looking=looking), 12)
        runs = [take(RETRANSMISSION.waits(looking=looking, rng=rng), 12) for _ in range(50)]
        for waits in runs:
            for delay, wait in zip(base, waits, strict=True):
                assert abs(wait - delay) <= min(delay / 4, 1.0) + 1e-9
        assert len({waits[0] for waits in runs}) == len(runs), "clients would stay in step"


def test_without_jitter_the_waits_are_the_base() -> None:
    plain = Retransmission(jitter=0.0)
    assert take(plain.waits(looking=True), 10) == take(plain.base(looking=True), 10)


@pytest.mark.parametrize(
    "kwargs",
    [{"first": 0.0}, {"first": 5.0}, {"cap": 2.0}, {"growth": 1.0}, {"jitter": 1.0}, {"jitter": -0.1}],
)
def test_a_schedule_that_would_not_back_off_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="growth > 1"):
        Retransmission(**kwargs)
