"""The netns tier: on a failed test, the tail of the daemon's log goes into the report; and
`make_controller`, daemons on the module's own `lab` fixture, stopped at the end.

Every test here runs uplinkd with :class:`uplinkd.lab.launcher.LabDaemon` in its ``tmp_path``;
errors the launcher raises (:class:`~uplinkd.lab.launcher.DaemonError`) carry the log's tail
already; this covers failed assertions.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from uplinkd.lab import Lab
from uplinkd.lab.launcher import DaemonError, LabDaemon

LOG_TAIL_LINES = 60


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    tmp = getattr(item, "funcargs", {}).get("tmp_path")
    noted = call.excinfo is not None and isinstance(call.excinfo.value, DaemonError)  # has the tail
    if report.failed and call.when == "call" and isinstance(tmp, Path) and not noted:
        for log in sorted(tmp.glob("**/uplinkd.log")):
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
            report.sections.append((f"{log} (last {LOG_TAIL_LINES} lines)", tail))
    return report


@pytest.fixture
def make_controller(lab: Lab, tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], LabDaemon]]:
    """Make daemons for the test module's `lab` router from a config (started by the test);
    every one made is stopped at the end, also when the test fails."""
    started: list[LabDaemon] = []

    def make(cfg: dict[str, Any]) -> LabDaemon:
        c = LabDaemon(lab.router, cfg, workdir=tmp_path)
        started.append(c)
        return c

    try:
        yield make
    finally:
        for c in started:
            c.stop()
