"""A bound on repeated log lines, so that no flood (a client hammering the control socket,
the process out of file descriptors) can fill the journal or slow the loop down.

:class:`RepeatLimit` is a logging filter: the same warning or error (same logger, level and
text) passes at most ``burst`` times per ``interval`` seconds; the rest are dropped and
counted, and the first one after the interval carries the count ("… [suppressed 59,000 like
this in the last 60 s]"). Debug and info lines pass untouched: they are the daemon's normal
account of what it does (every kernel write, every probe round) and come at a bounded rate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

BURST = 10
INTERVAL_S = 60.0
MAX_KEYS = 1024  # distinct messages remembered; beyond that, the oldest windows are forgotten


@dataclass
class _Window:
    start: float
    passed: int = 0
    suppressed: int = 0


class RepeatLimit(logging.Filter):
    """At most `burst` identical warnings/errors per `interval` s; then one count of the rest."""

    def __init__(
        self,
        *,
        burst: int = BURST,
        interval: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._windows: dict[tuple[str, int, str], _Window] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        try:
            text = record.getMessage()
        except Exception:  # a malformed call: let the handler report it as usual
            return True
        key = (record.name, record.levelno, text)
        now = self.clock()
        window = self._windows.get(key)
        if window is None or now - window.start >= self.interval:
            suppressed = window.suppressed if window is not None else 0
            if window is None and len(self._windows) >= MAX_KEYS:
                self._forget(now)
            self._windows[key] = _Window(start=now, passed=1)
            if suppressed:
                span = now - window.start if window is not None else self.interval
                record.msg = f"{text} [suppressed {suppressed} like this in the last {span:.0f} s]"
                record.args = None
            return True
        if window.passed < self.burst:
            window.passed += 1
            return True
        window.suppressed += 1
        return False

    def _forget(self, now: float) -> None:
        expired = [k for k, w in self._windows.items() if now - w.start >= self.interval]
        for k in expired or list(self._windows)[: MAX_KEYS // 2]:
            del self._windows[k]
