"""What the benchmarks report: nearest-rank percentiles, summaries, a markdown table (pure),
and :func:`publish` (the JSON into ``bench/results/`` and on stdout, then the table)."""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

SUMMARY = ("n", "p50", "p95", "min", "max", "samples")
"""What :func:`summary` reports unless told otherwise."""


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty sample."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(
    samples: Sequence[float], *, stats: Sequence[str] = SUMMARY, digits: int | None = 1
) -> dict[str, Any]:
    """The ``stats`` of ``samples``, in that order, rounded to ``digits`` (None: as they are).

    A stat is ``n``, ``min``, ``max``, ``median`` (the mean of the middle two for an even
    count), ``samples`` (all of them), or ``pNN``: the nearest-rank NNth percentile.  With no
    samples, ``n`` is 0, ``samples`` empty and every other stat None.
    """
    out: dict[str, Any] = {}
    for stat in stats:
        if stat == "n":
            out[stat] = len(samples)
        elif stat == "samples":
            out[stat] = [_round(s, digits) for s in samples]
        elif not samples:
            out[stat] = None
        else:
            out[stat] = _round(_stat(samples, stat), digits)
    return out


def _stat(samples: Sequence[float], stat: str) -> float:
    if stat == "min":
        return min(samples)
    if stat == "max":
        return max(samples)
    if stat == "median":
        return statistics.median(samples)
    if stat.startswith("p") and stat[1:].isdigit():
        return percentile(samples, int(stat[1:]) / 100)
    raise ValueError(f"unknown stat {stat!r}: n, min, max, median, samples or pNN")


def _round(value: float, digits: int | None) -> float:
    return value if digits is None else round(value, digits)


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    """A markdown table of ``rows`` (the first is the header), columns padded to line up."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def publish(results: dict[str, Any], output: Path, table: str, *, table_to: TextIO | None = None) -> None:
    """What every benchmark ends with: the JSON written to `output` and printed, then the table."""
    text = json.dumps(results, indent=1)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text + "\n")
    print(text)
    print(file=table_to or sys.stdout)
    print(table, file=table_to or sys.stdout)
