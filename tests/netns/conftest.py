"""The netns tier: on a failed test, the tail of the daemon's log goes into the report.

Every test here runs uplinkd with :class:`uplinkd.lab.launcher.LabDaemon` in its ``tmp_path``;
errors the launcher raises (:class:`~uplinkd.lab.launcher.DaemonError`) carry the log's tail
already; this covers failed assertions.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest

from uplinkd.lab.launcher import DaemonError

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
