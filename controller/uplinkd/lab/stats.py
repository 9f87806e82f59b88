"""What the benchmarks report: nearest-rank percentiles and summaries (pure), and `publish`."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty sample."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(samples: Sequence[float], *, digits: int = 1) -> dict[str, Any]:
    """n, p50, p95, min, max and the samples themselves (rounded); just n for none."""
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "p50": round(percentile(samples, 0.5), digits),
        "p95": round(percentile(samples, 0.95), digits),
        "min": round(min(samples), digits),
        "max": round(max(samples), digits),
        "samples": [round(s, digits) for s in samples],
    }


def publish(results: dict[str, Any], output: Path, table: str, *, table_to: TextIO | None = None) -> None:
    """What every benchmark ends with: the JSON written to `output` and printed, then the table."""
    text = json.dumps(results, indent=1)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text + "\n")
    print(text)
    print(file=table_to or sys.stdout)
    print(table, file=table_to or sys.stdout)
