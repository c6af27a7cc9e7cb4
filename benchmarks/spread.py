"""Ratios of two timings measured round by round in one process, with their spread over the rounds.

Every benchmark here times two ways of doing the same work in the same process, in rounds whose order
is rotated; a ratio is reported as the median of the per-round ratios with their min and max, so that
one noisy round on a shared machine shows up as spread instead of moving the figure.
"""

from __future__ import annotations

import statistics


def per_round(numerator: list[float], denominator: list[float]) -> dict | None:
    """Median, min and max of ``numerator[i] / denominator[i]`` over the rounds both have."""
    ratios = [a / b for a, b in zip(numerator or [], denominator or []) if b]
    if not ratios:
        return None
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "rounds": len(ratios)}


def shown(ratio: dict | float | None, digits: int = 2) -> str:
    """``0.32 (0.31–0.33)``: median (min–max) of a :func:`per_round` ratio; a bare number as it is."""
    if ratio is None:
        return "–"
    if isinstance(ratio, (int, float)):
        return f"{ratio:.{digits}f}"
    return f"{ratio['median']:.{digits}f} ({ratio['min']:.{digits}f}–{ratio['max']:.{digits}f})"


def rotated(names: list, round_index: int) -> list:
    """``names`` rotated by the round's index, so that no variant always runs after the same one."""
    k = round_index % len(names)
    return names[k:] + names[:k]
