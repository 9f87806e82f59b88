"""The vm tier: a Debian kernel booted with virtme-ng under QEMU, a USB NIC plugged through QMP.

Every test here is marked ``vm`` and skipped, with the reason, when the machine cannot boot
the VM (not root, no ``vng``, no ``qemu-system-x86_64``, no static busybox, no
``/boot/vmlinuz-*``).  Run alone with ``python3 -m pytest -m vm tests/vm``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.host_server import FWD_ADDR, GUEST_PORT, HostServer
from harness.vm import GuestFwd, UserNet, Vm, missing_requirements


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vm: boots a VM with virtme-ng and QEMU (slow; run alone with -m vm)")


@pytest.fixture(scope="module")
def host_server() -> Iterator[HostServer]:
    server = HostServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def vm(host_server: HostServer) -> Iterator[Vm]:
    """One boot per test module: user network ``lte0`` (10.0.2.0/24, restrict=on) whose
    ``10.0.2.100:7000`` leads to :class:`HostServer`."""
    missing = missing_requirements()
    if missing:
        pytest.skip("the vm tier needs " + ", ".join(missing))
    net = UserNet("lte0", guestfwds=[GuestFwd.to_host_port(GUEST_PORT, host_server.port, FWD_ADDR)])
    with Vm(netdevs=[net]) as machine:
        yield machine
