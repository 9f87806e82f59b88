"""Summaries the benchmarks report: nearest-rank percentiles, computed, no side effects."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


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
