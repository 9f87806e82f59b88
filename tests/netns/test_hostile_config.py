"""Hostile config files against the running daemon, and interface names from the kernel that
nft cannot take. Every test builds its own lab and tears it down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from uplinkd.config.ifname import problem
from uplinkd.kernel.nft import render
from uplinkd.lab import Lab
from uplinkd.lab.launcher import LabDaemon
from uplinkd.model import NftState, NftUplink

from harness.readback import group_members, ip_json, nexthops, routes, rules, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.timeout(180),
]

TABLES = {102: "lte1", 103: "lte2"}


def two_uplinks() -> dict[str, Any]:
    return {
        "uplinks": {
            "lte1": {
                "match": {"name": "lte1"},
                "address": {"mode": "static", "cidr": "10.102.0.2/24", "gateway": "10.102.0.1"},
                "table": 102,
            },
            "lte2": {
                "match": {"name": "lte2"},
                "address": {"mode": "static", "cidr": "10.103.0.2/24", "gateway": "10.103.0.1"},
                "table": 103,
            },
        },
        "balance": {"table": 200},
    }


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        lab.add_isp("wan", address="none")  # isp1, unused: keeps lte1/lte2 on 10.102/10.103
        lab.add_isp("lte1", address="none")
        lab.add_isp("lte2", address="none")
        yield lab


@pytest.fixture
def controller(lab: Lab, tmp_path: Path) -> Iterator[LabDaemon]:
    c = LabDaemon(lab.router, two_uplinks(), workdir=tmp_path)
    try:
        yield c
    finally:
        c.stop()


def _deep_json(p: Path) -> None:
    p.write_text('{"uplinks": ' + "[" * 100_000 + "]" * 100_000 + "}")  # 200 KB, 100,000 deep


def _deep_toml_as_json(p: Path) -> None:  # the name says JSON: a TOML body is refused as JSON
    p.write_text("a = " + "[" * 100_000 + "]" * 100_000)


def _big_int(p: Path) -> None:
    p.write_text('{"uplinks": {}, "balance": {"table": ' + "9" * 5000 + "}}")


def _fifo(p: Path) -> None:
    os.mkfifo(p)  # reading it used to block the daemon's event loop for ever


def _garbage(p: Path) -> None:
    p.write_bytes(bytes(range(256)) * 64)


PATHOLOGICAL: list[tuple[Callable[[Path], None], str]] = [
    (_deep_json, "nested too deeply"),
    (_deep_toml_as_json, "not valid JSON"),
    (_big_int, "(4300 digits)"),
    (_fifo, "is a FIFO"),
    (_garbage, "not UTF-8 text"),
]


def test_pathological_files_on_sighup_and_reload_keep_the_daemon_and_its_config(
    lab: Lab, controller: LabDaemon
) -> None:
    controller.start()
    wait_until(lambda: len(group_members(lab.router, TABLES)) == 2, what="two uplinks in the group")
    before = (rules(lab.router), nexthops(lab.router))
    path = controller.config_path
    for make, expected in PATHOLOGICAL:
        refused = controller.log().count("keeping the running config")
        path.unlink()
        make(path)
        controller.signal(signal.SIGHUP)
        wait_until(
            lambda n=refused: controller.log().count("keeping the running config") > n,
            what=f"the reload of {make.__name__} to be refused",
        )
        assert expected in controller.log().rsplit("keeping the running config", 1)[1]
        assert controller.running, controller.log()[-3000:]
        assert controller.status()["passes"] > 0
        assert (rules(lab.router), nexthops(lab.router)) == before
        # the same file through `uplinkctl reload`: an answer naming the problem, exit 2
        out = controller.ctl("reload", check=False)
        assert out.returncode == 2 and expected in out.stderr and "internal error" not in out.stderr, out
        assert controller.running
    assert "Traceback" not in controller.log()
    # the reload path still works: a good config takes effect, lte2 leaves
    good = two_uplinks()
    del good["uplinks"]["lte2"]
    good["control"] = controller.config["control"]
    path.unlink()
    controller.write_config(good)
    controller.signal(signal.SIGHUP)
    wait_until(lambda: set(group_members(lab.router, TABLES)) == {"lte1"}, what="lte2 removed by reload")
    assert not routes(lab.router, 103)


def _nft_loads(lab: Lab, names: list[str]) -> subprocess.CompletedProcess[bytes]:
    state = NftState("uplinkd_t", 0xFF00, tuple(NftUplink(n, (i + 1) << 8) for i, n in enumerate(names)))
    return subprocess.run(
        ["ip", "netns", "exec", lab.router, "nft", "-f", "-"],
        input=render(state).encode(), capture_output=True, timeout=30, check=False,
    )  # fmt: skip


def test_interface_names_the_kernel_allows_but_nft_cannot_take(lab: Lab, tmp_path: Path) -> None:
    """The kernel takes `lte"9` (and a trailing `*`); `check` refuses the quote in the config, and
    `ifname.problem` names exactly the kernel names that would break the nft table, so the
    planner can refuse such an uplink with that reason before `render` sees it."""
    odd = ['lte"9', "wwan*", "lte'9", "ä" * 7, "a#b;c{d}"]
    for i, name in enumerate(odd):
        lab.run("router", ["ip", "link", "add", name, "type", "veth", "peer", "name", f"peer{i}"])
    from_kernel = [link["ifname"] for link in ip_json(lab.router, "link", "show") if link["ifname"] in odd]
    assert sorted(from_kernel) == sorted(odd), "the kernel refused a name this test relies on"

    config = tmp_path / "quote.json"
    config.write_text(json.dumps({"uplinks": {"lte9": {"match": {"name": 'lte"9'}, "table": 109}}}))
    run = subprocess.run(
        [sys.executable, "-m", "uplinkd.cli", "check", str(config)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert "uplinks.lte9.match.name: 'lte\"9' contains '\"', which nft cannot quote" in run.stderr

    refused = {name: problem(name) for name in from_kernel if problem(name) is not None}
    assert set(refused) == {'lte"9', "wwan*"}, refused
    for name in refused:  # what happens if one reaches the renderer: the table does not load
        assert _nft_loads(lab, [name]).returncode != 0, name
    fine = [name for name in from_kernel if name not in refused]
    loaded = _nft_loads(lab, fine)
    assert loaded.returncode == 0, loaded.stderr.decode()
    listed = subprocess.run(
        ["ip", "netns", "exec", lab.router, "nft", "list", "set", "inet", "uplinkd_t", "uplinks"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert all(f'"{name}"' in listed for name in fine), listed
