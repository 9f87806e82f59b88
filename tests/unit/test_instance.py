"""The daemon's hold on its state directory, the control socket's client bound, and the log's
bound on repeated warnings (issue 9, items 1, 4 and 6): pure or local-file code, no root."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from uplinkd import instance
from uplinkd.control_server import MAX_CLIENTS, client_limit
from uplinkd.logs import RepeatLimit


def test_a_claimed_state_dir_names_its_holder_and_refuses_a_second(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert instance.holder(state) is None  # no daemon, not even a directory yet
    claim = instance.claim(state)
    try:
        assert instance.holder(state) == os.getpid()
        with pytest.raises(instance.SetupError, match=f"another uplinkd \\(pid {os.getpid()}\\) is running"):
            instance.claim(state)
    finally:
        claim.release()
    assert instance.holder(state) is None  # released: the file stays, the lock does not


def test_an_unusable_state_dir_says_which_path_why_and_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(instance.SetupError) as e:
        instance.claim(blocker / "state")
    assert str(e.value).startswith(f"control.state_dir: cannot create {blocker / 'state'} (Not a directory)")
    assert "set control.state_dir" in str(e.value)
    with pytest.raises(instance.SetupError, match="exists and is not a directory"):
        instance.claim(blocker)


@pytest.mark.parametrize(
    ("nofile", "limit"), [(16384, MAX_CLIENTS), (1024, MAX_CLIENTS), (64, 8), (50, 1), (10, 1)]
)
def test_clients_are_bounded_by_the_descriptors_left(nofile: int, limit: int) -> None:
    assert client_limit(nofile) == limit


def record(msg: str, level: int = logging.WARNING, *args: object) -> logging.LogRecord:
    return logging.LogRecord("uplinkd", level, __file__, 1, msg, args or None, None)


def test_repeated_warnings_pass_a_burst_then_one_count() -> None:
    now = [0.0]
    f = RepeatLimit(burst=3, interval=10.0, clock=lambda: now[0])
    passed = [f.filter(record("accept failed: %s", logging.WARNING, "EMFILE")) for _ in range(1000)]
    assert passed.count(True) == 3 and passed[:3] == [True] * 3
    assert f.filter(record("another warning"))  # a different message has its own budget
    assert all(f.filter(record("probe round", logging.DEBUG)) for _ in range(100))  # debug: untouched
    now[0] = 10.0
    r = record("accept failed: %s", logging.WARNING, "EMFILE")
    assert f.filter(r)
    assert r.getMessage() == "accept failed: EMFILE [suppressed 997 like this in the last 10 s]"
    assert f.filter(record("accept failed: %s", logging.WARNING, "EMFILE"))  # a new window
