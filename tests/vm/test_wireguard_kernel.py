"""Kernel WireGuard through uplinkd's generic netlink backend, in the VM (Debian's kernel has
the module; the netns tier's does not). One boot for both guest programs, each printing what
it found:

- tests/vm/wg_guest.py (the I/O layer): handshake and ping, read-back, no write and no new
  handshake for the same config, and what the kernel does when an unchanged peer is written
  anyway;
- tests/vm/tunnel_guest.py (the controller's tunnel, `backend = "kernel"`, in the netns
  tier's tunnel lab built in the guest): the interface is a WireGuard link the controller
  created and marked; a restart writes nothing and keeps the handshake; the stuck-source
  trap (the carrying uplink blackholed with its carrier up: the encrypted packets leave by the
  other uplink with its address, and none by the old one for 30 s, counted at both ISPs);
  flush removes the tunnel's interface and nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.vm import Vm

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CONTROLLER = ROOT / "controller"
REKEY_AFTER_S = 120  # WireGuard's REKEY_AFTER_TIME


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


@pytest.fixture(scope="module")
def tunnel(vm: Vm) -> dict[str, Any]:
    result = vm.run(
        ["python3", str(HERE / "tunnel_guest.py")], timeout=800, env={"PYTHONPATH": f"{CONTROLLER}:{ROOT}"}
    )
    assert result.ok, result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    assert "error" not in data, data["error"] + "\n--- uplinkd log ---\n" + data.get("log_tail", "")
    return data


def test_the_controller_creates_a_kernel_wireguard_link_it_owns(tunnel: dict[str, Any]) -> None:
    assert tunnel["backend"] == "kernel"
    assert tunnel["kind"] == "wireguard" and tunnel["alias"] == "uplinkd"
    assert tunnel["underlay_first"] == "wan"
    assert tunnel["fwmark"] == tunnel["fwmark_wanted"]  # the tunnel's mark on the device
    assert tunnel["mtu"] == 1440  # mtu auto: 1500 - 60 (IPv4 underlay)


def test_a_restart_with_the_same_config_writes_nothing_and_keeps_the_handshake(
    tunnel: dict[str, Any],
) -> None:
    """No write (kernel or WireGuard) and no handshake the restart caused. Under TCG a restart
    takes a minute or more, so WireGuard may re-key on its own meanwhile (REKEY_AFTER_TIME:
    120 s after the last handshake, with the keepalive's packets flowing): a new handshake is
    the restart's only when it came sooner than that."""
    assert tunnel["survives_stop"]
    assert tunnel["writes_after_restart"] == 0, tunnel["restart_log"]
    assert not tunnel["restart_log"], tunnel["restart_log"]
    before, after = tunnel["handshake_before"], tunnel["handshake_after"]
    since, took = tunnel["restart_s"]
    print(f"restart: stopped {since} s after the handshake, took {took} s; handshake {before} -> {after}")
    for b, a in zip(before, after, strict=True):
        assert a == b or a - b >= REKEY_AFTER_S - 1, (before, after, tunnel["restart_s"])


def test_stuck_source_trap_kernel_wireguard_leaves_the_blackholed_uplink(tunnel: dict[str, Any]) -> None:
    before, after = tunnel["before"], tunnel["after"]
    assert before["wan"]["encrypted"] > 0 and before["lte1"]["encrypted"] == 0, before
    assert tunnel["endpoint_before"].startswith("198.51.100.1:")
    # after the cut: nothing encrypted leaves by wan for HOLD_S s; lte1 carries it all, every
    # packet with lte1's own address as its source; home sees the router on lte1's ISP
    assert after["wan"]["encrypted"] == 0, after
    assert after["lte1"]["encrypted"] > 0, after
    assert after["lte1"]["encrypted_own_src"] == after["lte1"]["encrypted"], after
    assert tunnel["endpoint_after"].startswith("198.51.100.2:")
    assert tunnel["state_after"] == "up" and tunnel["ping_inside_after"]
    print(f"underlay moved {tunnel['moved_s']} s after the cut, home saw the roam at {tunnel['roamed_s']} s")


def test_flush_removes_the_tunnel_interface_and_nothing_else(tunnel: dict[str, Any]) -> None:
    links = tunnel["links_after_flush"]
    assert not any(name.startswith("wgt") for name in links), links
    assert {"wan", "lte1", "lan0", "wgforeign0"} <= set(links), links
    assert len(tunnel["flush_removed"]) == 1, tunnel["flush_removed"]
