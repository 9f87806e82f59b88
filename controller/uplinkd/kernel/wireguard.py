"""Configuring WireGuard devices: one interface, two backends.

- `KernelWg`: kernel WireGuard over its generic netlink API (`uplinkd.kernel.wggenl`); the
  interface is created with rtnetlink (`ip link add … type wireguard`).
- `UserspaceWg`: wireguard-go over WireGuard's userspace API (`uplinkd.kernel.wguapi`); the
  interface exists while the `wireguard-go` process runs (`start_wireguard_go`), a worker the
  daemon's supervisor owns.

Both read a device into a `WgReading` and write a `WgUpdate`, so `apply` is the same code for
both: read, compute the smallest update, write it only when it is not empty. A restart with the
same configuration therefore writes nothing and cannot disturb a session.

Key files: a private or preshared key is read from a file holding the base64 key (what `wg
genkey` writes), refused when the group or others may read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final, Literal, Protocol

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from uplinkd.kernel import wggenl, wguapi
from uplinkd.tunnel.wireguard import (
    PresharedKey,
    PrivateKey,
    WgDevice,
    WgReading,
    WgUpdate,
    decode_key,
    wg_update,
)

log = logging.getLogger("uplinkd.kernel")

WIREGUARD_GO: Final = "wireguard-go"


class KeyFileError(ValueError):
    """A key file that cannot be used; the message names the file and the fix."""


def read_key_file(path: Path, *, what: str = "private key") -> bytes:
    """The 32-byte key in `path`, which must not be readable by group or others."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise KeyFileError(f"{what} file {path}: {e.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{what} file {path}: not a regular file")
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"{what} file {path}: mode {stat.S_IMODE(info.st_mode):04o} lets group or others read it; "
                f"`chmod 600 {path}` (or pass it as a systemd credential)"
            )
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(f"{what} file {path}: not a key; expected what `wg genkey` writes") from None
    try:
        return decode_key(text, what=f"{what} file {path}")
    except ValueError as e:
        raise KeyFileError(str(e)) from None


def private_key_file(path: Path) -> PrivateKey:
    return PrivateKey(read_key_file(path, what="private key"))


def preshared_key_file(path: Path) -> PresharedKey:
    return PresharedKey(read_key_file(path, what="preshared key"))


class WgBackend(Protocol):
    """How a WireGuard device is read and written; both backends raise `WgError`."""

    async def read(self, ifname: str) -> WgReading | None:
        """The device, or None when there is no such WireGuard device."""
        ...

    async def write(self, update: WgUpdate) -> None: ...


class WgError(Exception):
    """A backend failed; `errno` is the kernel's or wireguard-go's answer (0 if none)."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


class UserspaceWg:
    """wireguard-go, through its socket in `socket_dir`."""

    def __init__(self, *, socket_dir: Path = wguapi.SOCKET_DIR, timeout: float = 2.0) -> None:
        self.socket_dir = socket_dir
        self.timeout = timeout

    async def read(self, ifname: str) -> WgReading | None:
        if not wguapi.socket_path(ifname, socket_dir=self.socket_dir).exists():
            return None
        try:
            return await wguapi.get(ifname, socket_dir=self.socket_dir, timeout=self.timeout)
        except wguapi.WgUapiError as e:
            raise WgError(f"{ifname}: {e}", e.errno) from None

    async def write(self, update: WgUpdate) -> None:
        try:
            await wguapi.set_(update, socket_dir=self.socket_dir, timeout=self.timeout)
        except wguapi.WgUapiError as e:
            raise WgError(f"{update}: {e}", e.errno) from None


class KernelWg:
    """Kernel WireGuard, over generic netlink, in the caller's network namespace."""

    def __init__(self) -> None:
        self._client = wggenl.GenlClient()

    def close(self) -> None:
        self._client.close()

    async def read(self, ifname: str) -> WgReading | None:
        try:
            return await self._client.read(ifname)
        except wggenl.WgGenlError as e:
            raise WgError(str(e), e.errno) from None

    async def write(self, update: WgUpdate) -> None:
        try:
            await self._client.write(update)
        except wggenl.WgGenlError as e:
            raise WgError(str(e), e.errno) from None


Held = Literal["kernel", "wireguard-go"]


async def held_by(ifname: str, *, socket_dir: Path = wguapi.SOCKET_DIR) -> Held | None:
    """Which backend holds the interface `ifname` now: "kernel" (a `wireguard` link uplinkd
    created), "wireguard-go" (a link whose wireguard-go socket is there), None (no such link).
    Raises WgError, naming the fix, for a link by that name that is neither: not ours."""
    ipr = AsyncIPRoute()
    try:
        found = await wggenl.link_kind(ipr, ifname)
    except wggenl.WgGenlError as e:
        raise WgError(str(e), e.errno) from None
    finally:
        ipr.close()
    if found is None:
        return None
    kind, owned = found
    if kind == "wireguard" and owned:
        return "kernel"
    if kind != "wireguard" and wguapi.socket_path(ifname, socket_dir=socket_dir).exists():
        return "wireguard-go"
    what = f"a {kind or 'plain'} link"
    if kind == "wireguard":
        what = "a WireGuard interface uplinkd did not create"
    raise WgError(
        f"{ifname} is {what}; uplinkd configures only its own: delete it or give the tunnel another interface"
    )


async def create_kernel_device(ifname: str) -> bool:
    """`ip link add IFNAME type wireguard`, marked as uplinkd's; False when the kernel has no
    WireGuard (EOPNOTSUPP), WgError for any other refusal."""
    ipr = AsyncIPRoute()
    try:
        await wggenl.create_interface(ipr, ifname)
    except wggenl.WgGenlError as e:
        if e.errno == errno.EOPNOTSUPP:
            return False
        raise WgError(str(e), e.errno) from None
    finally:
        ipr.close()
    log.info("ip link add %s type wireguard (alias %s)", ifname, wggenl.OWNER_ALIAS)
    return True


async def remove_devices(ifnames: Iterable[str], *, socket_dir: Path = wguapi.SOCKET_DIR) -> list[str]:
    """Delete the WireGuard interfaces uplinkd holds: those named (kernel ones it created,
    wireguard-go ones, which end with their interface) and any other kernel one it created.
    Returns the deletions in `ip` syntax; anything else by those names is left alone."""
    ipr = AsyncIPRoute()
    try:
        names = []
        for ifname in ifnames:
            try:
                if await held_by(ifname, socket_dir=socket_dir) is not None:
                    names.append(ifname)
            except WgError as e:
                log.warning("flush: %s", e)
        with contextlib.suppress(NetlinkError):
            names += [n for n in await wggenl.owned_interfaces(ipr) if n not in names]
        done = []
        for ifname in names:
            try:
                await ipr.link("del", ifname=ifname)
            except NetlinkError as e:
                if e.code != errno.ENODEV:
                    log.warning("flush: ip link delete dev %s: %s", ifname, e)
                continue
            done.append(f"ip link delete dev {ifname}")
        return done
    finally:
        ipr.close()


async def apply(backend: WgBackend, desired: WgDevice) -> WgUpdate:
    """Make the device `desired`, writing only what differs; returns what was written (empty:
    nothing was). Every write is logged once in `wg set` syntax, secret keys as fingerprints."""
    reading = await backend.read(desired.ifname)
    if reading is None:
        raise WgError(f"{desired.ifname}: no such WireGuard device")
    update = wg_update(reading.device, desired)
    if not update.empty:
        log.info("%s", update)
        await backend.write(update)
    return update


async def start_wireguard_go(
    ifname: str,
    *,
    log_file: Path,
    program: str = WIREGUARD_GO,
    wrapper: Sequence[str] = (),
    socket_dir: Path = wguapi.SOCKET_DIR,
    timeout: float = 5.0,
) -> asyncio.subprocess.Process:
    """Start `wireguard-go -f ifname` (foreground: the process is the device; it ends when
    the interface is deleted or it is sent SIGTERM, which removes the interface and its socket)
    and wait until its socket answers. Its messages (errors only, LOG_LEVEL=error) are
    appended to `log_file`.

    It runs in a session of its own, as systemd starts a service: it outlives the daemon
    (fail static), no terminal signal meant for the daemon reaches it, and with the
    scheduler's autogroups its CPU is shared with other sessions as one (bench/README.md,
    tunnel throughput). The caller owns the process. `wrapper` is prepended to the command
    line and must exec it (tests pass `ip netns exec NS`). Raises WgError if it exits or
    stays silent for `timeout` s (then it is stopped)."""
    if len(ifname) > 15 or not ifname or "/" in ifname:
        raise WgError(f"interface name {ifname!r}: 1-15 characters, no '/'")
    with open(log_file, "ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *wrapper, program, "-f", ifname,
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
            env={**os.environ, "LOG_LEVEL": "error"}, start_new_session=True,
        )  # fmt: skip
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    path = wguapi.socket_path(ifname, socket_dir=socket_dir)
    while True:
        if proc.returncode is not None:
            raise WgError(f"{program} {ifname} exited {proc.returncode}; see {log_file}")
        if path.exists():
            try:
                await wguapi.get(ifname, socket_dir=socket_dir, timeout=1.0)
                return proc
            except wguapi.WgUapiError:
                pass
        if loop.time() > deadline:
            await stop_wireguard_go(proc)
            raise WgError(f"{program} {ifname}: no answer on {path} after {timeout:g} s; see {log_file}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 0.02)


async def stop_wireguard_go(proc: asyncio.subprocess.Process, *, timeout: float = 5.0) -> int:
    """SIGTERM (wireguard-go then removes its interface and socket), SIGKILL after `timeout`."""
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return proc.returncode if proc.returncode is not None else -1
