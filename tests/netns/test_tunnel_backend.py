"""Which WireGuard a tunnel gets (`backend`), on this machine's kernel, which has no WireGuard
module: `auto` falls back to wireguard-go (tests/netns/test_tunnels.py runs on it), `kernel`
is refused with the fix named and nothing created, and an interface by the tunnel's name that
uplinkd did not make is neither configured nor removed by `flush`. Kernel WireGuard itself is
the VM tier's (tests/vm/test_wireguard_kernel.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from uplinkd import control
from uplinkd.lab import Lab
from uplinkd.lab.launcher import LabDaemon

from harness.readback import wait_until
from harness.tunnel_home import NAMES, Home, kill_router_wireguard_go, router_config

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.timeout(120),
]


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        for name in NAMES:
            lab.add_isp(name, address="none")
        lab.add_client()
        try:
            yield lab
        finally:
            kill_router_wireguard_go(lab)


def kernel_has_wireguard(lab: Lab) -> bool:
    probe = lab.run("router", ["ip", "link", "add", "wgprobe0", "type", "wireguard"], check=False)
    lab.run("router", ["ip", "link", "delete", "wgprobe0"], check=False)
    return probe.returncode == 0


def start(lab: Lab, tmp_path: Path, **tunnel: Any) -> tuple[LabDaemon, str]:
    cfg, _ = router_config(tmp_path, Home(lab, tmp_path), **tunnel)
    daemon = LabDaemon(lab.router, cfg, workdir=tmp_path)
    daemon.start()
    return daemon, str(cfg["tunnels"]["home"]["interface"])


def tunnel(daemon: LabDaemon) -> dict[str, Any]:
    return dict(control.call(daemon.socket, {"command": "status"})["tunnels"][0])


def links(lab: Lab) -> dict[str, dict[str, Any]]:
    shown = lab.run("router", ["ip", "-d", "-j", "link", "show"]).stdout
    return {li["ifname"]: li for li in json.loads(shown)}


def test_backend_kernel_without_kernel_wireguard_is_refused_with_the_fix(lab: Lab, tmp_path: Path) -> None:
    if kernel_has_wireguard(lab):
        pytest.skip("this kernel has WireGuard: the refusal cannot be shown here")
    daemon, ifname = start(lab, tmp_path, backend="kernel")
    try:
        wait_until(
            lambda: "this kernel has no WireGuard" in daemon.log(), timeout=20, what="the worker's refusal"
        )
        assert "set backend to 'auto' or 'wireguard-go'" in daemon.log()
        assert daemon.running
        assert ifname not in links(lab)  # nothing created, no wireguard-go started
        t = tunnel(daemon)
        assert t["state"] == "down" and t["backend"] is None
        # the kill switch holds meanwhile: LAN traffic the full route sends into the tunnel
        out = lab.run("router", ["ip", "-4", "route", "show", "table", "151"]).stdout
        assert "unreachable default" in out, out
    finally:
        daemon.stop()


def test_auto_falls_back_to_wireguard_go(lab: Lab, tmp_path: Path) -> None:
    if kernel_has_wireguard(lab):
        pytest.skip("this kernel has WireGuard: auto would use it")
    daemon, ifname = start(lab, tmp_path)  # backend defaults to auto
    try:
        wait_until(lambda: tunnel(daemon)["backend"] == "wireguard-go", timeout=20, what="wireguard-go")
        assert links(lab)[ifname].get("linkinfo", {}).get("info_kind") == "tun"
    finally:
        daemon.stop()


def test_a_foreign_link_by_the_tunnels_name_is_left_alone(lab: Lab, tmp_path: Path) -> None:
    cfg, _ = router_config(tmp_path, Home(lab, tmp_path))
    ifname = str(cfg["tunnels"]["home"]["interface"])
    lab.run("router", ["ip", "link", "add", ifname, "type", "veth", "peer", "name", "vforeign0"])
    before = links(lab)[ifname]
    addresses = ["ip", "-j", "address", "show", "dev", ifname]
    daemon = LabDaemon(lab.router, cfg, workdir=tmp_path)
    daemon.start()
    try:
        wait_until(lambda: "uplinkd configures only its own" in daemon.log(), timeout=20, what="the refusal")
        assert daemon.running
        # not configured: no address, MTU or state from the tunnel's plan
        after = links(lab)[ifname]
        assert (after["mtu"], after["operstate"], after["flags"]) == (
            before["mtu"], before["operstate"], before["flags"]
        )  # fmt: skip
        assert json.loads(lab.run("router", addresses).stdout)[0]["addr_info"] == []
        assert tunnel(daemon)["state"] == "down"
        # and not removed
        flushed = control.call(daemon.socket, {"command": "flush"})
        assert not any(ifname in r for r in flushed["removed"]), flushed
        assert links(lab)[ifname]["linkinfo"]["info_kind"] == "veth"
    finally:
        daemon.stop()
