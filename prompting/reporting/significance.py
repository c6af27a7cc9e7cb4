"""Is one row of a report better than another, or is the difference luck? And where does the luck come from?

``paired_bootstrap`` compares two settings on the same test examples and the same data splits: its
statistic is the mean, over data seeds and test examples, of (A right) − (B right) for the run each
setting's seed search selected in each split. Every resample draws the data seeds and the test
examples again, with replacement (the same draw for both settings: that is the pairing), so both
sources of luck are in the interval. The p-value is two-sided, from the same draws: twice the share
of resampled differences on the far side of zero (with the usual +1 so that it is never 0).

``variance_split`` divides the variance of a method's test scores over all its runs into what lies
between templates, between data seeds of one template, and between training seeds of one data seed
(nested sums of squares, which add up to the total).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

__all__ = ["resampled_differences", "two_sided_p", "paired_bootstrap", "stratified_bootstrap", "variance_split"]


def resampled_differences(a, b, seed_draws, example_draws) -> np.ndarray:
    """The mean difference ``a - b`` under each resample. ``a``, ``b``: [S, N] per-example scores (1 right,
    0 wrong) of S data seeds on the same N test examples; ``seed_draws`` [R, S] and ``example_draws``
    [R, N]: the indices each resample draws."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    seed_draws, example_draws = np.asarray(seed_draws), np.asarray(example_draws)
    by_seed = diff[seed_draws]  # [R, S, N]
    picked = np.take_along_axis(by_seed, np.broadcast_to(example_draws[:, None, :], by_seed.shape), axis=2)
    return picked.mean(axis=(1, 2))


def two_sided_p(differences) -> float:
    """Twice the share of resampled differences at or beyond zero on the side away from their bulk
    (``(count + 1) / (R + 1)``, so never 0), at most 1."""
    differences = np.asarray(differences)
    total = len(differences) + 1
    below, above = (np.sum(differences <= 0) + 1) / total, (np.sum(differences >= 0) + 1) / total
    return float(min(1.0, 2 * min(below, above)))


def paired_bootstrap(a, b, resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Paired bootstrap of ``mean(a) - mean(b)`` over data seeds and test examples (see the module
    docstring): ``{"difference", "low", "high", "p", "seeds", "examples"}``."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 2 or not a.size:
        raise ValueError(f"paired scores need one shape [data seeds, test examples]; got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    seeds, examples = a.shape
    draws = resampled_differences(a, b, rng.integers(0, seeds, (resamples, seeds)),
                                  rng.integers(0, examples, (resamples, examples)))
    tail = 100 * (1 - level) / 2
    return {"difference": float((a - b).mean()), "low": float(np.percentile(draws, tail)),
            "high": float(np.percentile(draws, 100 - tail)), "p": two_sided_p(draws),
            "seeds": seeds, "examples": examples}


def variance_split(runs: Sequence[tuple[object, object, object, float]]) -> dict[str, float] | None:
    """Shares of the variance of ``(template, data_seed, train_seed, score)`` runs: between templates,
    between data seeds within a template, between training seeds within a data seed (nested sums of
    squares; they add up to 1). None when the scores do not vary."""
    scores = np.array([r[3] for r in runs], dtype=float)
    if len(scores) < 2 or not np.isfinite(scores).all():
        return None
    total = float(((scores - scores.mean()) ** 2).sum())
    if total <= 0:
        return None
    template_mean, split_mean = _means(runs, 1), _means(runs, 2)
    grand = scores.mean()
    between_templates = sum((template_mean[r[:1]] - grand) ** 2 for r in runs)
    between_splits = sum((split_mean[r[:2]] - template_mean[r[:1]]) ** 2 for r in runs)
    within = sum((r[3] - split_mean[r[:2]]) ** 2 for r in runs)
    return {"templates": between_templates / total, "data seeds": between_splits / total,
            "training seeds": within / total}


def _means(runs, depth: int) -> dict[tuple, float]:
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in runs:
        groups[tuple(r[:depth])].append(r[3])
    return {key: float(np.mean(values)) for key, values in groups.items()}


def stratified_bootstrap(groups, resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Bootstrap of the macro-average ``mean over groups of mean(a - b)``, each group (a relation, say)
    resampled on its own: every draw takes each group's examples again with replacement (the same draw for
    ``a`` and ``b``: paired), so every group keeps its weight whatever its size. ``groups``: ``(a, b)`` per
    group, 1-D per-example scores of equal length (``b`` all zero: the interval of ``a``'s macro-average).
    Returns ``{"difference", "low", "high", "p", "groups", "examples"}`` (``p`` as in :func:`two_sided_p`)."""
    groups = [(np.asarray(a, dtype=float), np.asarray(b, dtype=float)) for a, b in groups]
    if not groups or any(a.shape != b.shape or a.ndim != 1 or not a.size for a, b in groups):
        raise ValueError("stratified scores need, per group, two 1-D arrays of one non-zero length; got shapes "
                         f"{[(a.shape, b.shape) for a, b in groups]}")
    rng = np.random.default_rng(seed)
    draws = np.zeros(resamples)
    for a, b in groups:
        diff = a - b
        draws += diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(axis=1)
    draws /= len(groups)
    tail = 100 * (1 - level) / 2
    return {"difference": float(np.mean([(a - b).mean() for a, b in groups])),
            "low": float(np.percentile(draws, tail)), "high": float(np.percentile(draws, 100 - tail)),
            "p": two_sided_p(draws), "groups": len(groups), "examples": sum(len(a) for a, _ in groups)}
