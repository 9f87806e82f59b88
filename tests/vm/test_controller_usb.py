"""The real controller in the VM: USB sticks plugged and unplugged through QEMU's monitor.

One boot and one controller for the module; tests run in file order and share them. uplinkd
runs in the guest (``python3 -m uplinkd.daemon``), matching sticks by USB identity (QEMU
``usb-net``, 0525:a4a2, driver ``cdc_ether``, real udev) and running its own DHCP client
against QEMU's DHCP server. The user networks are ``restrict=off`` (otherwise QEMU's DHCP
offers no router) with IPv6 off, and every packet the tests cause goes to QEMU's own
addresses: the gateway (.2, answers ping) and the guestfwd 10.0.2.100:7000 that leads to a
test server on the host's loopback. (``ip route get 192.0.2.1`` is a route lookup only.)

Uplinks (``lte2`` first: the more specific match wins when both match):

- ``lte2``: USB 0525:a4a2 with serial UPLINKD0002, table 103, on ``isp1`` (10.0.3.0/24);
- ``lte1``: any USB 0525:a4a2, table 102 (mark 0x6600), on ``isp0`` (10.0.2.0/24).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness.host_server import FWD_ADDR, GUEST_PORT, HostServer
from harness.readback import nhid
from harness.vm import (
    GuestDaemon,
    GuestFwd,
    GuestKernel,
    UserNet,
    Vm,
    VmError,
    missing_requirements,
    read_kernel,
)

pytestmark = [pytest.mark.vm, pytest.mark.timeout(300)]

Record = Callable[[str, object], None]

BALANCE = 200
A_MAC, A_NAME = "52:54:00:12:34:01", "enx525400123401"  # Debian names USB NICs by MAC
B_MAC, B_NAME, B_SERIAL = "52:54:00:12:34:02", "enx525400123402", "UPLINKD0002"
LTE1_TABLE, LTE1_MARK = 102, 0x6600
LTE2_TABLE, LTE2_MARK = 103, 0x6700


def dhcp_uplink(table: int, usb: dict[str, str], target: str) -> dict[str, Any]:
    return {
        "match": {"usb": usb},
        "address": {"mode": "dhcp"},
        "table": table,
        "probe": {"targets": [target], "profile": "fast"},
    }


CONFIG = {
    "uplinks": {
        "lte2": dhcp_uplink(
            LTE2_TABLE, {"vendor": "0525", "product": "a4a2", "serial": B_SERIAL}, "10.0.3.2"
        ),
        "lte1": dhcp_uplink(LTE1_TABLE, {"vendor": "0525", "product": "a4a2"}, "10.0.2.2"),
    },
    "balance": {"table": BALANCE},
}


@pytest.fixture(scope="module")
def cvm(host_server: HostServer) -> Iterator[Vm]:
    missing = missing_requirements()
    if missing:
        pytest.skip("the vm tier needs " + ", ".join(missing))
    nets = [
        UserNet(
            "isp0",
            restrict=False,
            ipv6=False,
            guestfwds=[GuestFwd.to_host_port(GUEST_PORT, host_server.port, FWD_ADDR)],
        ),
        UserNet("isp1", net="10.0.3.0/24", restrict=False, ipv6=False),
    ]
    with Vm(netdevs=nets) as machine:
        machine.ensure_udev()
        yield machine


@pytest.fixture(scope="module")
def ctl(cvm: Vm) -> Iterator[GuestDaemon]:
    controller = GuestDaemon(cvm, CONFIG)
    try:
        controller.start()
        yield controller
    finally:
        controller.stop()


def kernel(vm: Vm) -> GuestKernel:
    return read_kernel(vm)


def balance_v4(k: GuestKernel) -> list[dict[str, Any]]:
    return [r for r in k.table(BALANCE) if r["family"] == "inet"]


def group_members(k: GuestKernel) -> set[int]:
    group = next((n for n in k.nexthops if n.get("id") == nhid(0)), None)
    return {m["id"] for m in group["group"]} if group else set()


def nc(vm: Vm, text: str) -> str:
    return vm.run(f"echo {text} | busybox nc -w 10 {FWD_ADDR} {GUEST_PORT}", timeout=20).stdout


def wait_clean(vm: Vm, **what: Any) -> list[str]:
    left: list[str] = []

    def clean() -> bool:
        left[:] = kernel(vm).leftovers(**what)
        return not left

    try:
        vm.wait_until(clean, timeout=15, what="the uplink's kernel state to go", interval=0.2)
    except VmError:
        return left
    return []


# --- start -------------------------------------------------------------------------------------


def test_controller_starts_with_nothing_plugged(cvm: Vm, ctl: GuestDaemon, record_property: Record) -> None:
    status = ctl.fresh_status()
    assert {u["name"]: u["state"] for u in status["uplinks"]} == {"lte1": "absent", "lte2": "absent"}
    # the real client answers too (started with the daemon; ~25 s of imports in the guest)
    assert {u["name"]: u["state"] for u in ctl.uplinkctl_status()["uplinks"]} == {
        "lte1": "absent",
        "lte2": "absent",
    }
    k = kernel(cvm)
    # nothing present: the balance table refuses rather than falling through to main
    assert [r.get("type") for r in k.table(BALANCE)] == ["unreachable", "unreachable"], k.table(BALANCE)
    prios = sorted({int(r["priority"]) for r in k.rules if r.get("protocol") in ("77", 77)})
    assert prios == [10000, 10030]
    assert k.nft_set() == []
    record_property("boot_s", round(cvm.timings.boot or 0, 1))


# --- one stick ---------------------------------------------------------------------------------


def test_plugged_stick_is_matched_by_usb_identity(cvm: Vm, ctl: GuestDaemon, record_property: Record) -> None:
    started = time.monotonic()
    name = cvm.plug_usb_nic("stickA", "isp0", mac=A_MAC, port="1")
    u = ctl.wait_state("lte1", "up", timeout=60)
    record_property("plug_to_up_s", round(time.monotonic() - started, 2))
    assert name == A_NAME
    assert (u["dev"], u["table"], u["mark"], u["in_group"]) == (A_NAME, LTE1_TABLE, LTE1_MARK, True)
    assert ctl.uplink("lte2")["state"] == "absent"  # its serial is not this stick's
    props = cvm.udev_properties(f"/sys/class/net/{name}")
    assert (props["ID_VENDOR_ID"], props["ID_MODEL_ID"]) == ("0525", "a4a2")


def test_lease_goes_into_its_own_table_never_main(cvm: Vm, ctl: GuestDaemon) -> None:
    u = ctl.uplink("lte1")
    assert (u["addresses"], u["gateway4"]) == (["10.0.2.15/24"], "10.0.2.2")
    assert "10.0.2.15/24" in cvm.check(["ip", "-4", "-br", "addr", "show", "dev", A_NAME])
    k = kernel(cvm)
    route = k.default_route(LTE1_TABLE)
    assert route is not None and (route["gateway"], route["dev"]) == ("10.0.2.2", A_NAME), k.table(LTE1_TABLE)
    assert k.default_route("main") is None, k.table("main")
    assert not [r for r in k.table("main") if r.get("gateway")], k.table("main")
    rules = {(int(r["priority"]), r.get("src"), r.get("fwmark"), str(r.get("table"))) for r in k.rules}
    assert (10010, "all", "0x6600", "102") in rules, rules
    assert (10020, "10.0.2.15", None, "102") in rules, rules
    (balance,) = balance_v4(k)
    assert balance.get("nhid") == nhid(0), balance
    assert group_members(k) == {nhid(LTE1_TABLE)}
    assert k.nft_set() == [A_NAME]


def test_traffic_flows_through_the_stick(cvm: Vm, ctl: GuestDaemon, host_server: HostServer) -> None:
    tx_before = int(cvm.read_file(f"/sys/class/net/{A_NAME}/statistics/tx_packets"))
    assert nc(cvm, "via-lte1") == "pong:via-lte1\n"
    assert b"via-lte1\n" in host_server.received
    assert int(cvm.read_file(f"/sys/class/net/{A_NAME}/statistics/tx_packets")) > tx_before
    # the connection was remembered as lte1's (ct mark) on its way out
    assert LTE1_MARK in kernel(cvm).conntrack_marks
    cvm.check(["ping", "-n", "-c", "3", "-i", "0.2", "-W", "5", "-I", A_NAME, "10.0.2.2"], timeout=20)
    # new connections to anywhere off-link are balanced to the stick (a lookup: nothing is sent)
    assert f"dev {A_NAME}" in cvm.check(["ip", "route", "get", "192.0.2.1"])
    assert f"dev {A_NAME}" in cvm.check(["ip", "route", "get", "192.0.2.1", "mark", hex(LTE1_MARK)])


def test_unplug_leaves_nothing_behind(cvm: Vm, ctl: GuestDaemon, record_property: Record) -> None:
    assert nc(cvm, "before-unplug") == "pong:before-unplug\n"
    k = kernel(cvm)
    assert LTE1_MARK in k.conntrack_marks and k.nft_set() == [A_NAME], "the test would prove nothing"
    started = time.monotonic()
    cvm.unplug("stickA")
    u = ctl.wait_state("lte1", "absent", timeout=30)
    record_property("unplug_to_absent_s", round(time.monotonic() - started, 2))
    left = wait_clean(cvm, ifname=A_NAME, table=LTE1_TABLE, mark=LTE1_MARK, address="10.0.2.15")
    record_property("unplug_to_clean_s", round(time.monotonic() - started, 2))
    assert left == []
    assert (u["dev"], u["addresses"], u["in_group"]) == (None, [], False)
    k = kernel(cvm)
    assert [r.get("type") for r in k.table(BALANCE)] == ["unreachable", "unreachable"], k.table(BALANCE)
    assert not [n for n in k.nexthops if n.get("id", 0) >= nhid(0)], k.nexthops
    assert A_NAME not in cvm.link_names()


def test_replug_in_another_port_is_the_same_uplink(
    cvm: Vm, ctl: GuestDaemon, record_property: Record
) -> None:
    started = time.monotonic()
    name = cvm.plug_usb_nic("stickA", "isp0", mac=A_MAC, port="3")
    u = ctl.wait_state("lte1", "up", timeout=60)
    record_property("replug_to_up_s", round(time.monotonic() - started, 2))
    assert name == A_NAME
    assert cvm.udev_properties(f"/sys/class/net/{name}")["ID_PATH"].endswith("-usb-0:3:1.0")
    assert (u["dev"], u["table"], u["addresses"], u["gateway4"]) == (
        A_NAME,
        LTE1_TABLE,
        ["10.0.2.15/24"],
        "10.0.2.2",
    )
    route = kernel(cvm).default_route(LTE1_TABLE)
    assert route is not None and route["dev"] == A_NAME
    assert nc(cvm, "again") == "pong:again\n"


# --- two sticks --------------------------------------------------------------------------------


def test_second_stick_is_told_apart_by_its_serial(cvm: Vm, ctl: GuestDaemon) -> None:
    name = cvm.plug_usb_nic("stickB", "isp1", mac=B_MAC, serial=B_SERIAL, port="2")
    assert name == B_NAME
    b = ctl.wait_state("lte2", "up", timeout=60)
    a = ctl.uplink("lte1")
    assert (a["dev"], a["state"]) == (A_NAME, "up")
    assert (b["dev"], b["table"], b["mark"]) == (B_NAME, LTE2_TABLE, LTE2_MARK)
    assert (b["addresses"], b["gateway4"]) == (["10.0.3.15/24"], "10.0.3.2")
    k = kernel(cvm)
    rb = k.default_route(LTE2_TABLE)
    assert rb is not None and (rb["gateway"], rb["dev"]) == ("10.0.3.2", B_NAME)
    ra = k.default_route(LTE1_TABLE)
    assert ra is not None and (ra["gateway"], ra["dev"]) == ("10.0.2.2", A_NAME)
    cvm.wait_until(
        lambda: group_members(kernel(cvm)) == {nhid(LTE1_TABLE), nhid(LTE2_TABLE)},
        timeout=20,
        what="both sticks in the balance group",
    )
    assert sorted(kernel(cvm).nft_set()) == [A_NAME, B_NAME]
    cvm.check(["ping", "-n", "-c", "2", "-i", "0.2", "-W", "5", "-I", B_NAME, "10.0.3.2"], timeout=20)

    cvm.unplug("stickB")
    ctl.wait_state("lte2", "absent", timeout=30)
    assert wait_clean(cvm, ifname=B_NAME, table=LTE2_TABLE, mark=LTE2_MARK, address="10.0.3.15") == []
    a = ctl.uplink("lte1")
    assert (a["dev"], a["state"]) == (A_NAME, "up")
    assert group_members(kernel(cvm)) == {nhid(LTE1_TABLE)}
    assert nc(cvm, "still-lte1") == "pong:still-lte1\n"


# --- udev ----------------------------------------------------------------------------------------


def test_controller_leaves_a_new_stick_alone_until_udev_is_done(cvm: Vm, ctl: GuestDaemon) -> None:
    """udev renames a new stick (usb0 → enx<mac>) while it is down; systemd-udevd refuses to
    rename an interface that is already up ("already up, cannot rename"). So the controller
    must not raise (or otherwise use) an interface udev has not finished with. Here udev's
    queue is held while the stick arrives, so the controller sees the kernel's name first."""
    cvm.unplug("stickA")
    ctl.wait_state("lte1", "absent", timeout=30)
    before = cvm.link_names()
    cvm.check(["udevadm", "control", "--stop-exec-queue"])
    try:
        cvm.plug_usb_nic("stickA", "isp0", mac=A_MAC, port="1", wait=False)
        new: list[str] = []

        def appeared() -> bool:
            new[:] = sorted(cvm.link_names() - before)
            return bool(new)

        cvm.wait_until(appeared, timeout=30, what="the stick's interface")
        time.sleep(6)  # ample for the controller (a pass is < 1 s here) to act if it is going to
        link = next(link for link in cvm.links() if link["ifname"] == new[0])
        touched = "UP" in link.get("flags", [])
        state = ctl.uplink("lte1")["state"]
    finally:
        cvm.check(["udevadm", "control", "--start-exec-queue"])
    cvm.check(["udevadm", "settle", "--timeout=30"], timeout=40)
    u = ctl.wait_state("lte1", "up", timeout=60)
    assert (touched, state) == (False, "absent"), f"the controller used {new[0]} before udev was done with it"
    assert u["dev"] == A_NAME, f"udev could not rename it: {sorted(cvm.link_names())}"
