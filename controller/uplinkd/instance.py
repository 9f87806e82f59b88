"""One running daemon per state directory, and how anyone else can tell that it runs.

At start the daemon creates its state directory and takes an exclusive `flock(2)` on
``STATE_DIR/uplinkd.lock`` (mode 0600, its pid inside) for as long as it lives; the kernel
drops the lock when the process ends, however it ends (SIGKILL included), so there is no
stale lock to clean up. ``uplinkctl flush`` checks the lock before it flushes the kernel
itself: a daemon that holds it is running and would put everything back.

Every failure here is a :class:`SetupError` that says which path, why, and how to fix it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = "uplinkd.lock"


class SetupError(Exception):
    """The daemon cannot use a path it needs: the message names it, says why and the fix."""


@dataclass(frozen=True)
class Claim:
    """The daemon's hold on its state directory: an open, locked file (closing it releases)."""

    path: Path
    fd: int

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def lock_path(state_dir: Path) -> Path:
    return state_dir / LOCK_NAME


def why(e: OSError) -> str:
    """An OSError's reason in words, without the path (the caller names it)."""
    return e.strerror or errno.errorcode.get(e.errno or 0, str(e))


def usable_dir(path: Path, *, what: str, fix: str) -> None:
    """Create directory `path` (and parents) if missing; :class:`SetupError` if it cannot be
    created or used. `what` names the setting (``control.state_dir``), `fix` the remedy."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SetupError(f"{what}: {path} exists and is not a directory; {fix}") from None
    except OSError as e:
        raise SetupError(f"{what}: cannot create {path} ({why(e)}); {fix}") from None
    if not path.is_dir():
        raise SetupError(f"{what}: {path} is not a directory; {fix}")
    if not os.access(path, os.W_OK | os.X_OK):
        raise SetupError(f"{what}: {path} is not writable for this user (uid {os.geteuid()}); {fix}")


def claim(state_dir: Path) -> Claim:
    """Create `state_dir` if needed and lock it for this process; :class:`SetupError` if it is
    unusable or another uplinkd holds it."""
    fix = (
        "create it writable for uplinkd's user (the NixOS unit's StateDirectory does), "
        "or set control.state_dir to such a directory"
    )
    usable_dir(state_dir, what="control.state_dir", fix=fix)
    path = lock_path(state_dir)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise SetupError(f"control.state_dir: cannot open {path} ({why(e)}); {fix}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = _read_pid(fd)
        os.close(fd)
        raise SetupError(
            f"control.state_dir: another uplinkd{f' (pid {other})' if other else ''} is running with "
            f"{state_dir} (it holds {path}); stop it first, or give this one its own state_dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return Claim(path, fd)


def holder(state_dir: Path) -> int | None:
    """The pid of the running uplinkd that holds `state_dir`'s lock (0 if it cannot be read),
    or None when no daemon holds it. OSError (PermissionError: not root) if it cannot tell."""
    path = lock_path(state_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        return None
    finally:
        os.close(fd)  # also drops our shared lock, if we took it


def _read_pid(fd: int) -> int:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return 0
    return int(text) if text.isdigit() else 0
