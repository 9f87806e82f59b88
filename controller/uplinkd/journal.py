"""State changes as structured journal entries, so one uplink's history is one query:

    journalctl -u uplinkd UPLINKD_UPLINK=lte1
    journalctl -u uplinkd UPLINKD_STATE=down -o json

Under systemd (the daemon logs to the journal then) a state change is sent with
systemd-python's `journal.send` and the fields below, the same ones `hooks.on_change`
gets in its environment. Outside systemd, or without systemd-python, nothing is sent and
the daemon's usual log line (stderr) is all there is, formatted as before.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

IDENTIFIER = "uplinkd"
# syslog priorities for the logging levels a state change uses
PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4}


def under_systemd(environ: Mapping[str, str] = os.environ) -> bool:
    """The daemon's log goes to the journal (the same test as `daemon.setup_logging`)."""
    return "JOURNAL_STREAM" in environ or "INVOCATION_ID" in environ


def state_change_fields(
    *,
    uplink: str,
    old: str | None,
    new: str,
    reason: str,
    dev: str | None,
    level: int = logging.INFO,
    tunnel: bool = False,
    underlay: str | None = None,
) -> dict[str, str]:
    """The journal entry of one state change: the message as the log line has it, and one
    field per fact. Computes only. A tunnel's (`tunnel`: `uplink` is the tunnel's name) has
    UPLINKD_TUNNEL and UPLINKD_UNDERLAY (the uplink carrying it) instead of UPLINKD_UPLINK, so
    `journalctl UPLINKD_UPLINK=wan` stays the uplink's own history."""
    what = "tunnel" if tunnel else "uplink"
    fields = {
        "MESSAGE": f"{what} {uplink}: {old or '-'} → {new} ({reason})",
        "PRIORITY": str(PRIORITY.get(level, 6)),
        "SYSLOG_IDENTIFIER": IDENTIFIER,
        "UPLINKD_KIND": what,
        "UPLINKD_STATE": new,
        "UPLINKD_OLD_STATE": old or "",
        "UPLINKD_REASON": reason,
        "UPLINKD_DEV": dev or "",
    }
    if tunnel:
        fields.update(UPLINKD_TUNNEL=uplink, UPLINKD_UNDERLAY=underlay or "")
    else:
        fields["UPLINKD_UPLINK"] = uplink
    return fields


def send(fields: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> bool:
    """Send one entry to the journal if the daemon logs there; False if it does not (the
    caller logs the line as usual then). A journal that cannot be reached loses the entry,
    never the daemon."""
    if not under_systemd(environ):
        return False
    try:
        from systemd import journal  # noqa: PLC0415 - optional dependency
    except ImportError:
        return False
    message = fields["MESSAGE"]
    extra = {k: v for k, v in fields.items() if k != "MESSAGE"}
    try:
        journal.send(message, **extra)
    except OSError:
        return False
    return True


def state_change(
    log: logging.Logger,
    level: int,
    *,
    uplink: str,
    old: str | None,
    new: str,
    reason: str,
    dev: str | None,
    tunnel: bool = False,
    underlay: str | None = None,
) -> None:
    """Log one state change: a structured journal entry under systemd, else the usual line."""
    if not log.isEnabledFor(level):
        return
    fields = state_change_fields(
        uplink=uplink, old=old, new=new, reason=reason, dev=dev, level=level, tunnel=tunnel, underlay=underlay
    )
    if not send(fields):
        log.log(level, "%s", fields["MESSAGE"])
