"""The VM tier: a Debian kernel booted with virtme-ng under QEMU, USB NICs plugged through QMP.

Host side: :mod:`~harness.vm.host` (can this machine boot one?), :mod:`~harness.vm.netdevs`
(QEMU user networks), :mod:`~harness.vm.channel` and :mod:`~harness.vm.qmp` (talking to
QEMU), :mod:`~harness.vm.guest` (commands in the guest), :mod:`~harness.vm.machine` (the
VM itself), :mod:`~harness.vm.guest_daemon` and :mod:`~harness.vm.guest_kernel` (uplinkd in
the guest, and what the guest's kernel holds).  Programs, each run by path with
``python3 -I``, standard library only: :mod:`~harness.vm.agent` (in the guest, on a
virtio-serial port), :mod:`~harness.vm.status_poller` and :mod:`~harness.vm.connect_loop`
(in the guest), :mod:`~harness.vm.relay` (QEMU's guestfwd helper) and
:mod:`~harness.vm.watchdog` (kills the VM if its owner dies) on the host.
"""

from harness.vm.channel import VmError
from harness.vm.guest import GuestClock, GuestLease, GuestResult
from harness.vm.guest_daemon import GuestDaemon
from harness.vm.guest_kernel import GuestKernel, read_kernel
from harness.vm.host import find_kernel, kvm_usable, missing_requirements
from harness.vm.machine import USB_NET_MODEL, USB_NET_VENDOR, Vm
from harness.vm.netdevs import GuestFwd, UserNet

__all__ = [
    "USB_NET_MODEL",
    "USB_NET_VENDOR",
    "GuestClock",
    "GuestDaemon",
    "GuestFwd",
    "GuestKernel",
    "GuestLease",
    "GuestResult",
    "UserNet",
    "Vm",
    "VmError",
    "find_kernel",
    "kvm_usable",
    "missing_requirements",
    "read_kernel",
]
