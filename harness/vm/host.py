"""What this machine offers for booting a VM: a kernel image, the tools, KVM or not."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Literal

KERNEL_ENV = "UPLINKD_VM_KERNEL"
"""Environment variable naming the kernel image to boot (default: :func:`find_kernel`)."""

_KVM_DEVICE = "/dev/kvm"


def find_kernel() -> Path | None:
    """The kernel image to boot: ``$UPLINKD_VM_KERNEL``, else the newest plain Debian kernel
    ``/boot/vmlinuz-*`` (one without ``-rt-``, whose modules are installed), else any."""
    if env := os.environ.get(KERNEL_ENV):
        return Path(env)
    images = [p for p in Path("/boot").glob("vmlinuz-*") if p.is_file()]
    with_modules = [p for p in images if Path("/lib/modules", p.name.removeprefix("vmlinuz-")).is_dir()]
    candidates = with_modules or images
    if not candidates:
        return None

    def key(path: Path) -> tuple[bool, list[int | str]]:
        version = path.name.removeprefix("vmlinuz-")
        words: list[int | str] = [int(w) if w.isdigit() else w for w in re.split(r"[.+-]", version)]
        return ("-rt-" not in version, [w if isinstance(w, int) else -1 for w in words])

    return max(candidates, key=key)


def missing_requirements() -> list[str]:
    """What this machine lacks to boot a :class:`~harness.vm.machine.Vm` (empty: all there)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    if shutil.which("vng") is None:
        missing.append("vng (pip install virtme-ng)")
    if shutil.which("qemu-system-x86_64") is None:
        missing.append("qemu-system-x86_64 (apt-get install qemu-system-x86)")
    busyboxes = ("busybox-static", "busybox.static", "busybox")  # where vng looks
    if not any(is_static_elf(shutil.which(name)) for name in busyboxes):
        missing.append("a static busybox (apt-get install busybox-static)")
    if shutil.which("file") is None:
        missing.append("file (apt-get install file; vng runs it on busybox)")
    if find_kernel() is None:
        missing.append("a kernel /boot/vmlinuz-* (apt-get install linux-image-amd64)")
    return missing


def is_static_elf(path: str | None) -> bool:
    """Whether ``path`` is an ELF executable without a program interpreter (PT_INTERP), which
    is what virtme-ng needs of busybox for its initramfs."""
    if path is None:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only: amd64 hosts
                return False
            order: Literal["little", "big"] = "little" if head[5] == 1 else "big"
            phoff = int.from_bytes(head[32:40], order)
            phentsize = int.from_bytes(head[54:56], order)
            phnum = int.from_bytes(head[56:58], order)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    pt_interp = 3
    return all(
        int.from_bytes(table[i * phentsize : i * phentsize + 4], order) != pt_interp for i in range(phnum)
    )


def kvm_usable() -> bool:
    """Whether QEMU can use KVM here: ``/dev/kvm`` is usable *and* the CPU shows vmx/svm.
    (Some sandboxes expose a ``/dev/kvm`` without hardware virtualization behind it: a guest
    started with it hangs before its first console line.)"""
    if not os.access(_KVM_DEVICE, os.R_OK | os.W_OK):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.MULTILINE) is not None
