"""Kernel WireGuard through uplinkd's generic netlink backend, in the VM (Debian's kernel has
the module; the netns tier's does not). The guest runs tests/vm/wg_guest.py, which prints
what it found; asserted here: handshake and ping, read-back, no write and no new handshake for
the same config, and what the kernel does when an unchanged peer is written anyway."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.vm import Vm

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]

HERE = Path(__file__).resolve().parent
CONTROLLER = HERE.parent.parent / "controller"


@pytest.fixture(scope="module")
def found(vm: Vm) -> dict[str, Any]:
    result = vm.run(["python3", str(HERE / "wg_guest.py")], timeout=400, env={"PYTHONPATH": str(CONTROLLER)})
    assert result.ok, result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def test_kernel_wireguard_handshakes_and_reads_back(found: dict[str, Any]) -> None:
    assert found["owned"] == ["wgk0"]
    assert found["ping"] and found["read_back_matches"] and found["wg_show_peer"]
    assert found["handshake_age"] is not None and found["handshake_age"] < 60
    assert all(n > 0 for n in found["rx_tx"])


def test_the_same_config_writes_nothing_and_keeps_the_session(found: dict[str, Any]) -> None:
    assert found["same_again_empty"] and found["ping_after_same"] and found["handshake_kept_by_apply"]


def test_an_unchanged_peer_written_anyway_keeps_its_session(found: dict[str, Any]) -> None:
    assert found["ping_after_forced"] and found["handshake_kept_by_forced_reset"]


def test_changes_take_effect(found: dict[str, Any]) -> None:
    assert found["move_update"].endswith("endpoint 10.201.0.3:51821")
    assert found["ping_after_move"] and found["endpoint_after_move"] == "10.201.0.3:51821"
    assert found["fwmark_read"] == 0x4200
    assert found["peers_after_remove"] == 0 and not found["ping_after_remove"]
