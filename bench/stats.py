"""Small statistics: nearest-rank percentiles and median (min-max) spreads."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values: a value that was actually observed."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


# Spelled as escapes: ruff flags the literal characters as look-alikes of x and -.
TIMES = "\u00d7"  # multiplication sign: "0.83 TIMES bare"
DASH = "\u2013"  # en dash: "min DASH max"


@dataclasses.dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no values")
        return cls(statistics.median(values), min(values), max(values))
