"""Small statistics helpers (no numpy needed)."""

from __future__ import annotations

import math


def quantile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50": quantile(values, 0.50),
        "p95": quantile(values, 0.95),
        "min": min(values) if values else None,
        "max": max(values) if values else None,
    }


def ms(seconds: float | None, digits: int = 1) -> str:
    if seconds is None:
        return "–"
    return f"{seconds * 1000:.{digits}f}"
