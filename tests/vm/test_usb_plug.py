"""The VM harness and the facts about a real USB NIC that the controller relies on.

One boot for the module (``vm`` fixture).  No controller yet: these tests pin down what the
kernel and udev show when a USB CDC-Ethernet stick (QEMU ``usb-net``) is plugged, leased,
used, unplugged and plugged again.  Traffic goes only to QEMU's own emulated network
(10.0.2.x, ``restrict=on``) and, through a ``guestfwd``, to a server on the host's loopback.

Tests run in file order and share the VM; the ``stick`` fixture plugs the first stick once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.host_server import FWD_ADDR, GUEST_PORT, HostServer
from harness.vm import USB_NET_MODEL, USB_NET_VENDOR, Vm

pytestmark = [pytest.mark.vm, pytest.mark.timeout(240)]

STICK_MAC = "52:54:00:12:34:01"
STICK_NAME = "enx525400123401"
"""Debian's ``73-usb-net-by-mac.link`` names USB NICs after their MAC."""

Record = Callable[[str, object], None]


def driver(vm: Vm, ifname: str) -> str:
    return Path(vm.check(["readlink", "-f", f"/sys/class/net/{ifname}/device/driver"]).strip()).name


def wait_gone(vm: Vm, ifname: str, timeout: float = 20.0) -> float:
    return vm.wait_until(lambda: ifname not in vm.link_names(), timeout=timeout, what=f"{ifname} to go away")


@pytest.fixture(scope="module")
def stick(vm: Vm) -> Iterator[str]:
    """USB NIC ``stick0`` on ``lte0`` with a fixed MAC, plugged once; yields its interface name."""
    vm.ensure_udev()
    name = vm.plug_usb_nic("stick0", "lte0", mac=STICK_MAC)
    assert name is not None
    yield name


# --- the harness -----------------------------------------------------------------------------


def test_boots_the_chosen_kernel(vm: Vm, record_property: Record) -> None:
    rc, out, err = vm.run("uname -r")
    assert rc == 0, err
    assert out.strip() == vm.kernel.name.removeprefix("vmlinuz-")
    assert vm.timings.boot is not None
    assert vm.timings.boot < 120
    record_property("boot_s", round(vm.timings.boot, 1))


def test_run_reports_status_output_and_timeout(vm: Vm) -> None:
    assert vm.run(["sh", "-c", "echo out; echo err >&2; exit 3"]) == (3, "out\n", "err\n")
    assert vm.run("cat", input="fed").stdout == "fed"
    started = time.monotonic()
    rc, _, _ = vm.run("sleep 30", timeout=1)
    assert rc == -9
    assert time.monotonic() - started < 10


def test_guest_has_writable_run_and_tmp_and_the_package(vm: Vm) -> None:
    vm.check("touch /run/uplinkd-probe /tmp/uplinkd-probe /var/lib/uplinkd-probe")
    assert "uplinkd" in vm.check(["python3", "-c", "import uplinkd, sys; print(uplinkd.__name__)"])
    # on PATH (the agent puts its interpreter's bin first); not run here: under TCG over 9p,
    # importing the daemon takes ~25 s (python3 -c pass alone ~4 s)
    assert vm.check("command -v uplinkd").strip().endswith("/uplinkd")


def test_shared_directory_is_live_both_ways(vm: Vm) -> None:
    (vm.shared / "from-host").write_text("hello")
    assert vm.read_file(str(vm.shared / "from-host")) == "hello"
    vm.check(f"echo from-guest > {vm.shared}/from-guest")
    assert (vm.shared / "from-guest").read_text() == "from-guest\n"


def test_spawn_runs_in_the_background(vm: Vm) -> None:
    pid = vm.spawn("echo started; sleep 60", log="/tmp/spawned.log")
    vm.wait_until(lambda: vm.run(["cat", "/tmp/spawned.log"]).stdout == "started\n", timeout=10, what="log")
    assert vm.run(["kill", "-0", str(pid)]).ok
    vm.check(["kill", str(pid)])


def test_udevd_runs(vm: Vm) -> None:
    vm.ensure_udev()
    assert vm.run(["udevadm", "control", "--ping"]).ok


def test_qmp_answers(vm: Vm) -> None:
    status = vm.qmp("query-status")
    assert status["status"] == "running"
    assert vm.qemu_pid is not None


# --- the USB NIC -----------------------------------------------------------------------------


def test_plugged_stick_is_a_cdc_ether_interface(vm: Vm, stick: str, record_property: Record) -> None:
    assert stick == STICK_NAME
    assert driver(vm, stick) == "cdc_ether"
    link = next(link for link in vm.links() if link["ifname"] == stick)
    assert link["address"] == STICK_MAC
    record_property("plug_to_interface_s", round(vm.timings.plugs[0], 2))


def test_udev_properties_identify_the_stick(vm: Vm, stick: str, record_property: Record) -> None:
    props = vm.udev_properties(f"/sys/class/net/{stick}")
    assert props["ID_BUS"] == "usb"
    assert props["ID_VENDOR_ID"] == USB_NET_VENDOR
    assert props["ID_MODEL_ID"] == USB_NET_MODEL
    assert props["ID_NET_DRIVER"] == "cdc_ether"
    assert props["ID_PATH"].startswith("pci-") and "-usb-0:" in props["ID_PATH"]
    # QEMU derives the default USB serial from the port: "1-<controller pci address>-<port>"
    assert props["ID_SERIAL_SHORT"].startswith("1-")
    for key in ("ID_PATH", "ID_SERIAL_SHORT", "ID_NET_NAME_PATH", "ID_NET_LINK_FILE"):
        record_property(key, props.get(key))


def test_sysfs_parent_has_usb_ids(vm: Vm, stick: str) -> None:
    base = f"/sys/class/net/{stick}/device/.."
    assert vm.read_file(f"{base}/idVendor").strip() == USB_NET_VENDOR
    assert vm.read_file(f"{base}/idProduct").strip() == USB_NET_MODEL


def test_lease_and_traffic_through_the_stick(
    vm: Vm, stick: str, host_server: HostServer, record_property: Record
) -> None:
    started = time.monotonic()
    lease = vm.dhcp(stick)
    record_property("dhcp_s", round(time.monotonic() - started, 2))
    assert (lease.address, lease.prefixlen) == ("10.0.2.15", 24)
    assert lease.server == "10.0.2.2"
    # restrict=on: QEMU's DHCP server leaves out the router and DNS options (libslirp offers
    # them only on unrestricted networks), although 10.0.2.2 does route and answer.
    assert (lease.router, lease.dns) == ("", "")
    assert "10.0.2.15/24" in vm.check(["ip", "-4", "-br", "addr", "show", "dev", stick])
    assert f"dev {stick}" in vm.check(["ip", "route", "get", FWD_ADDR])

    # QEMU's gateway answers ICMP echo itself (nothing leaves the QEMU process).
    vm.check(["ping", "-n", "-c", "1", "-W", "5", "-I", stick, "10.0.2.2"], timeout=15)

    tx_before = int(vm.read_file(f"/sys/class/net/{stick}/statistics/tx_packets"))
    out = vm.check(["busybox", "nc", "-w", "10", FWD_ADDR, str(GUEST_PORT)], timeout=20)
    assert out == "pong:"  # stdin is empty: the host read nothing and answered
    reply = vm.run(f"echo carried | busybox nc -w 10 {FWD_ADDR} {GUEST_PORT}", timeout=20)
    assert reply.stdout == "pong:carried\n"
    assert b"carried\n" in host_server.received
    assert int(vm.read_file(f"/sys/class/net/{stick}/statistics/tx_packets")) > tx_before


def test_restricted_network_refuses_everything_else(vm: Vm, stick: str) -> None:
    # restrict=on: only the guestfwd leads out; QEMU refuses other TCP connections itself.
    rc, _, err = vm.run(["busybox", "nc", "-w", "5", "10.0.2.2", "80"], timeout=15)
    assert rc != 0
    assert "refused" in err


def test_unplug_removes_the_interface_and_its_routes(vm: Vm, stick: str, record_property: Record) -> None:
    started = time.monotonic()
    vm.unplug("stick0")
    wait_gone(vm, stick)
    record_property("unplug_to_gone_s", round(time.monotonic() - started, 2))
    assert "10.0.2.0/24" not in vm.check(["ip", "-4", "route", "show", "table", "all"])


def test_replug_in_another_port_keeps_the_name(vm: Vm, stick: str, record_property: Record) -> None:
    """Same stick (same MAC), another USB port: same name (Debian names USB NICs by MAC),
    another ID_PATH, and QEMU's default serial follows the port."""
    started = time.monotonic()
    name = vm.plug_usb_nic("stick0", "lte0", mac=STICK_MAC, port="3")
    plugged = time.monotonic() - started
    lease = vm.dhcp(str(name))
    record_property("replug_to_interface_s", round(plugged, 2))
    record_property("replug_to_lease_s", round(time.monotonic() - started, 2))
    assert name == STICK_NAME
    assert lease.address == "10.0.2.15"
    props = vm.udev_properties(f"/sys/class/net/{name}")
    record_property("replug_ID_PATH", props["ID_PATH"])
    record_property("replug_ID_SERIAL_SHORT", props["ID_SERIAL_SHORT"])
    assert props["ID_PATH"].endswith("-usb-0:3:1.0")
    assert props["ID_SERIAL_SHORT"].endswith("-3")
    again = vm.run(f"echo again | busybox nc -w 10 {FWD_ADDR} {GUEST_PORT}", timeout=20)
    assert again.stdout == "pong:again\n"
    vm.unplug("stick0")
    wait_gone(vm, name)


def test_second_stick_with_serial_gets_its_own_name(vm: Vm) -> None:
    """QEMU's default MAC: enx525400123456; an explicit USB serial shows in ID_SERIAL_SHORT."""
    name = vm.plug_usb_nic("stick1", "lte0", serial="UPLINKD0001")
    try:
        assert name == "enx525400123456"
        assert driver(vm, name) == "cdc_ether"
        assert vm.udev_properties(f"/sys/class/net/{name}")["ID_SERIAL_SHORT"] == "UPLINKD0001"
    finally:
        vm.unplug("stick1")
    wait_gone(vm, name)


def test_kernel_wireguard(vm: Vm) -> None:
    vm.check("ip link add wgvm0 type wireguard && wg set wgvm0 listen-port 51820 && ip link set wgvm0 up")
    assert "listening port: 51820" in vm.check(["wg", "show", "wgvm0"])
    vm.check(["ip", "link", "del", "wgvm0"])
