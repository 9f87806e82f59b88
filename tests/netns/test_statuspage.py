"""The LAN status page in a real headless Chromium (Debian's), on a LAN client of the lab.

The page loads, shows the lab's uplinks, and updates by itself when one fails; a screenshot
of it (after the failure) is written to the test's tmp directory and its path printed.
The page answers only on the address it was given and only to requests that name it in their
Host header (DNS rebinding), and drain/undrain are refused unless a token file enables them,
then refused without the token.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from uplinkd.lab import Lab
from uplinkd.lab.launcher import LabDaemon

from exporting import (
    NAMES,
    Exporter,
    config,
    http_get,
    page_address,
    three_uplink_lab,  # noqa: F401  (the `lab` fixture)
)
from harness.readback import group_members, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.timeout(240),
]

TABLES = {101 + i: name for i, name in enumerate(NAMES)}
PORT = 8080
BROWSER = Path(__file__).with_name("browser.py")


@pytest.fixture
def daemon(lab: Lab, tmp_path: Path) -> Iterator[LabDaemon]:
    c = LabDaemon(lab.router, config(), workdir=tmp_path)
    try:
        c.start()
        for name in NAMES:
            c.wait_state(name, "up", timeout=30)
        yield c
    finally:
        c.stop()


@pytest.fixture
def exporters() -> Iterator[list[Exporter]]:
    started: list[Exporter] = []
    try:
        yield started
    finally:
        for e in started:
            e.stop()


def page_url(lab: Lab) -> str:
    return f"http://{page_address(lab)}:{PORT}/"


def wait_page(lab: Lab, exporter: Exporter) -> None:
    wait_until(
        lambda: http_get(lab, "lan1", page_url(lab) + "status.json", timeout=3).stdout.endswith("\n200"),
        timeout=20,
        what=f"the status page to answer (log: {exporter.log_path})",
    )


class Browser:
    def __init__(self, lab: Lab, url: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.netns("lan1"), sys.executable, str(BROWSER), url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            assert self.proc.stderr is not None
            raise AssertionError(f"the browser driver ended: {self.proc.stderr.read()[-3000:]}")
        return dict(json.loads(line))

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.answer()

    def close(self) -> None:
        if self.proc.poll() is None:
            with_stdin = self.proc.stdin
            if with_stdin is not None:
                with_stdin.close()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.mark.skipif(not shutil.which("chromium") or not shutil.which("chromedriver"), reason="needs chromium")
def test_page_shows_the_uplinks_and_follows_a_failure(
    lab: Lab, daemon: LabDaemon, exporters: list[Exporter], tmp_path: Path
) -> None:
    exporter = Exporter(
        lab, daemon, "--listen", "", "--page", f"{page_address(lab)}:{PORT}", "--sample-interval", "1"
    )
    exporters.append(exporter)
    wait_page(lab, exporter)
    browser = Browser(lab, page_url(lab))
    try:
        first = browser.answer()
        assert first["states"] == dict.fromkeys(NAMES, "up"), first

        lab.isp("lte1").blackhole()
        daemon.wait_state("lte1", "down", timeout=30)
        seen = browser.ask("wait lte1 down")
        assert seen["states"] == {"wan": "up", "lte1": "down", "lte2": "up"}, seen
        assert not seen["reloaded"], "the page was reloaded; it should update itself"
        assert int(seen["updates"]) > 1
        assert any("lte1: up → down" in e for e in seen["events"]), seen["events"]
        assert "not in service" in seen["text"]

        shot = tmp_path / "statuspage.png"
        browser.ask(f"screenshot {shot}")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000
        print(f"status page screenshot: {shot}")
    finally:
        browser.close()


def test_page_answers_only_on_its_address_and_is_read_only(
    lab: Lab, daemon: LabDaemon, exporters: list[Exporter]
) -> None:
    exporter = Exporter(lab, daemon, "--listen", "", "--page", f"{page_address(lab)}:{PORT}")
    exporters.append(exporter)
    wait_page(lab, exporter)
    page = http_get(lab, "lan1", page_url(lab))
    assert page.stdout.endswith("\n200") and "<title>uplinkd</title>" in page.stdout
    # the router's other addresses: nothing listens there (curl exit 7: connection refused)
    for role, url in (
        ("router", f"http://127.0.0.1:{PORT}/"),
        ("router", f"http://10.101.0.2:{PORT}/"),
        ("lan1", f"http://[fd50::1]:{PORT}/"),
    ):
        refused = http_get(lab, role, url, timeout=3)
        assert refused.returncode == 7, (url, refused)
    drain = post(lab, "api/drain", {"uplink": "lte1"}, token="x" * 20)
    assert drain.stdout.endswith("\n403"), drain.stdout
    assert group_members(lab.router, TABLES) == dict.fromkeys(NAMES, 1)


def test_drain_from_the_page_needs_the_token(
    lab: Lab, daemon: LabDaemon, exporters: list[Exporter], tmp_path: Path
) -> None:
    token = "s3cret-token-for-the-lab-0123456789"
    token_file = tmp_path / "page.token"
    token_file.write_text(token + "\n")
    exporter = Exporter(
        lab,
        daemon,
        "--listen",
        "",
        "--page",
        f"{page_address(lab)}:{PORT}",
        "--page-token-file",
        str(token_file),
    )
    exporters.append(exporter)
    wait_page(lab, exporter)
    assert post(lab, "api/drain", {"uplink": "lte1"}, token=None).stdout.endswith("\n401")
    assert post(lab, "api/drain", {"uplink": "lte1"}, token=token + "x").stdout.endswith("\n401")
    assert group_members(lab.router, TABLES) == dict.fromkeys(NAMES, 1)
    bad = post(lab, "api/drain", {"uplink": "nope"}, token=token)
    assert bad.stdout.endswith("\n400") and "not configured" in bad.stdout
    ok = post(lab, "api/drain", {"uplink": "lte1"}, token=token)
    assert ok.stdout.endswith("\n200"), ok.stdout
    assert set(group_members(lab.router, TABLES)) == {"wan", "lte2"}
    assert post(lab, "api/undrain", {"uplink": "lte1"}, token=token).stdout.endswith("\n200")
    assert set(group_members(lab.router, TABLES)) == set(NAMES)


def test_page_refuses_a_foreign_host_header(
    lab: Lab, daemon: LabDaemon, exporters: list[Exporter], tmp_path: Path
) -> None:
    """A rebinding page's requests reach the router's address but carry the attacker's name as
    Host: the page answers 421 to those (reads and drains alike), and serves its own address and
    the names given with --page-host."""
    token = "s3cret-token-for-the-lab-0123456789"
    token_file = tmp_path / "page.token"
    token_file.write_text(token + "\n")
    exporter = Exporter(
        lab, daemon, "--listen", "", "--page", f"{page_address(lab)}:{PORT}",
        "--page-host", "router.lan", "--page-token-file", str(token_file),
    )  # fmt: skip
    exporters.append(exporter)
    wait_page(lab, exporter)
    status = page_url(lab) + "status.json"
    foreigners = (f"rebind.example:{PORT}", "rebind.example", page_address(lab), f"router.lan:{PORT + 1}", "")
    for foreign in foreigners:
        refused = http_get(lab, "lan1", status, host=foreign)
        assert refused.stdout.endswith("\n421"), (foreign, refused.stdout)
        assert "uplinks" not in refused.stdout
    drain = post(lab, "api/drain", {"uplink": "lte1"}, token=token, host=f"rebind.example:{PORT}")
    assert drain.stdout.endswith("\n421"), drain.stdout
    assert group_members(lab.router, TABLES) == dict.fromkeys(NAMES, 1)

    for own in (f"{page_address(lab)}:{PORT}", f"router.lan:{PORT}", f"ROUTER.lan.:{PORT}"):
        served = http_get(lab, "lan1", status, host=own)
        assert served.stdout.endswith("\n200"), (own, served.stdout)
        shown = json.loads(served.stdout.rsplit("\n", 1)[0])["uplinks"]
        assert {u["name"] for u in shown} == set(NAMES)
    ok = post(lab, "api/drain", {"uplink": "lte1"}, token=token, host=f"router.lan:{PORT}")
    assert ok.stdout.endswith("\n200"), ok.stdout
    assert set(group_members(lab.router, TABLES)) == {"wan", "lte2"}
    assert "is not the page's" in exporter.log()


def post(
    lab: Lab, path: str, body: dict[str, Any], *, token: str | None, host: str | None = None
) -> subprocess.CompletedProcess[str]:
    auth = ["-H", f"Authorization: Bearer {token}"] if token is not None else []
    auth += ["-H", f"Host: {host}"] if host is not None else []
    return subprocess.run(
        ["ip", "netns", "exec", lab.netns("lan1"), "curl", "-sS", "--max-time", "15", "-o", "-",
         "-w", "\n%{http_code}", "-X", "POST", "-H", "Content-Type: application/json", *auth,
         "--data", json.dumps(body), page_url(lab) + path],
        capture_output=True, text=True, check=False, timeout=20,
    )  # fmt: skip
