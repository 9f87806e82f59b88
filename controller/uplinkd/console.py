"""`uplinkctl watch`: a live view of the uplinks for someone on the router's console.

A table refreshed in place (state, time in it, weight, RTT and loss with sparklines of
the last samples), then the recent events. On a terminal each frame replaces the last
(cursor home, clear); in a pipe or a file the frames follow one another as plain text,
separated by a blank line (a frame has none inside), with no escape codes at all.

The history behind the sparklines is what this view has seen since it started; the page
and Prometheus keep longer ones.
"""

from __future__ import annotations

import collections
import datetime
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from uplinkd import control

SPARK_UNICODE = "▁▂▃▄▅▆▇█"
SPARK_ASCII = "_.-=+*#@"
SPARK_WIDTH = 24
EVENTS = 8
CLEAR = "\x1b[H\x1b[2J"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


def age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h"


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def sparkline(
    values: Sequence[float | None], *, top: float | None = None, glyphs: str = SPARK_UNICODE
) -> str:
    """One glyph per value, scaled to `top` (default: the largest); a gap for no value."""
    known = [v for v in values if v is not None]
    scale = top if top is not None else max(known, default=0.0)
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        elif scale <= 0:
            out.append(glyphs[0])
        else:
            out.append(glyphs[min(len(glyphs) - 1, int(v / scale * (len(glyphs) - 1) + 0.5))])
    return "".join(out)


@dataclass
class Samples:
    """RTT (ms) and loss (%) per uplink, as this view saw them."""

    width: int = SPARK_WIDTH
    rtt: dict[str, collections.deque[float | None]] = field(default_factory=dict)
    loss: dict[str, collections.deque[float | None]] = field(default_factory=dict)

    def add(self, status: Mapping[str, Any]) -> None:
        for u in status.get("uplinks", []):
            probe = u.get("probe") or {}
            for store, key in ((self.rtt, "rtt_ms"), (self.loss, "loss_pct")):
                store.setdefault(u["name"], collections.deque(maxlen=self.width)).append(probe.get(key))


def render(
    status: Mapping[str, Any] | None,
    samples: Samples,
    *,
    now: float,
    glyphs: str = SPARK_UNICODE,
    error: str | None = None,
) -> str:
    """One frame, plain text. Computes only."""
    clock = datetime.datetime.fromtimestamp(now).strftime("%H:%M:%S")
    if status is None:
        return f"uplinkd: not answering ({error or 'no status'})    {clock}"
    lines = [f"uplinkd {status.get('version', '')}: {status.get('summary', '')}    {clock}"]
    rows = [("UPLINK", "STATE", "FOR", "DEV", "WEIGHT", "GROUP", "RTT", "LOSS", "RTT TREND", "LOSS TREND")]
    for u in status.get("uplinks", []):
        probe = u.get("probe") or {}
        rtt, loss = probe.get("rtt_ms"), probe.get("loss_pct")
        rows.append(
            (
                u["name"] + (" (drained)" if u.get("drained") else ""),
                u["state"],
                age(u.get("since_s") or 0),
                u.get("dev") or "-",
                str(u.get("weight") or "-"),
                group_text(u),
                f"{rtt:.1f} ms" if rtt is not None else "-",
                f"{loss:.0f}%" if loss is not None else "-",
                sparkline(list(samples.rtt.get(u["name"], ())), glyphs=glyphs),
                sparkline(list(samples.loss.get(u["name"], ())), top=100.0, glyphs=glyphs),
            )
        )
    lines.append(table(rows))
    for f in status.get("failures", []):
        lines.append(f"failing: {f['op']}: {f['error']}")
    events = list(status.get("events", []))[-EVENTS:]
    if events:
        lines.append("recent events")
        for e in reversed(events):
            when = datetime.datetime.fromtimestamp(e["at"]).strftime("%H:%M:%S")
            lines.append(f"  {when}  {e['uplink']}: {e['from'] or '-'} → {e['to']} ({e['reason']})")
    return "\n".join(lines)


def explain_rows(ex: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`explain`'s rows about a LAN's IPv6 through uplinkd's table (the source it leaves with,
    and the audit's word on it) and its note on multipath choices."""
    rows: list[tuple[str, str]] = []
    lan6 = ex.get("lan6")
    if lan6:
        fate = f"leaves as {lan6['source']} ({lan6['how']})" if lan6["leaves"] else str(lan6["how"])
        rows.append((f"lan {lan6['mode']}", fate + ("" if lan6["allowed"] else "; NOT ALLOWED by the mode")))
    if ex.get("note"):
        rows.append(("note", str(ex["note"])))
    return rows


def group_text(u: Mapping[str, Any]) -> str:
    """In the balance group: yes, no, or the one family whose group holds it ("ipv6 only")."""
    if not u.get("in_group"):
        return "no"
    groups = list(u.get("groups") or ())
    return f"{groups[0]} only" if len(groups) == 1 else "yes"


def watch(
    fetch: Callable[[], Mapping[str, Any]],
    *,
    out: TextIO = sys.stdout,
    interval: float = 2.0,
    count: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Show frames until `count` have been shown (forever if None). Returns whether the
    daemon answered the last time it was asked."""
    tty = out.isatty()
    encoding = (getattr(out, "encoding", None) or "").lower().replace("-", "")
    glyphs = SPARK_UNICODE if encoding in ("utf8", "utf16", "utf32") else SPARK_ASCII
    samples = Samples()
    shown, answered = 0, False
    if tty:
        out.write(HIDE_CURSOR)
    try:
        while count is None or shown < count:
            try:
                status: Mapping[str, Any] | None = fetch()
                error = None
            except control.ControlError as e:
                status, error = None, str(e)
            answered = status is not None
            if status is not None:
                samples.add(status)
            frame = render(status, samples, now=time.time(), glyphs=glyphs, error=error)
            if glyphs is SPARK_ASCII:  # a terminal or file that cannot take UTF-8
                frame = frame.replace("→", "->").encode("ascii", "replace").decode()
            out.write((CLEAR + frame + "\n") if tty else (("\n" if shown else "") + frame + "\n"))
            out.flush()
            shown += 1
            if count is None or shown < count:
                sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        if tty:
            out.write(SHOW_CURSOR)
            out.flush()
    return answered
