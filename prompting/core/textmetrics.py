"""Scores of written text against references: sacreBLEU's BLEU and chrF, and ROUGE-L (``rouge-score``).

BLEU and chrF are corpus scores (sacreBLEU's defaults: BLEU with its 13a tokenisation, chrF2 on
characters), each input scored against all its references. Both add up per-input statistics (n-gram
matches and totals), which every input keeps (:func:`text_scores`): a resample of inputs gives its own
corpus score from their sum (:func:`corpus_score`), as sacreBLEU's own paired bootstrap does, so intervals
and paired tests are on the corpus score itself. ROUGE-L is the F-measure of the longest common
subsequence against the closest reference (``score_multi``), averaged over inputs, as the E2E
challenge's scripts do. Every score is on a 0-100 scale. The libraries are imported when first used.
"""

from __future__ import annotations

import functools
from typing import Sequence

__all__ = ["TEXT_METRICS", "text_scores", "corpus_score", "metric_names"]

#: what a generation run records on its test inputs (0-100)
TEXT_METRICS = ("bleu", "chrf", "rouge_l")


def metric_names() -> dict[str, str]:
    return {"bleu": "BLEU", "chrf": "chrF", "rouge_l": "ROUGE-L"}


@functools.lru_cache(maxsize=None)
def _metric(name: str):
    from sacrebleu.metrics import BLEU, CHRF

    return BLEU() if name == "bleu" else CHRF()


@functools.lru_cache(maxsize=None)
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"])


def _streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """sacreBLEU's reference streams: stream j holds each input's j-th reference (None where it has fewer)."""
    most = max(len(refs) for refs in references)
    return [[refs[j] if j < len(refs) else None for refs in references] for j in range(most)]


def text_scores(outputs: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[dict, list[dict]]:
    """Corpus scores ``{bleu, chrf, rouge_l}`` of ``outputs`` (one per input) against each input's
    references, and per input its BLEU and chrF statistics and its ROUGE-L."""
    if len(outputs) != len(references) or not outputs:
        raise ValueError(f"{len(outputs)} outputs for {len(references)} inputs; give one output per input")
    if any(not refs for refs in references):
        raise ValueError("every input needs at least one reference")
    streams = _streams(references)
    per_input = [{} for _ in outputs]
    for name in ("bleu", "chrf"):
        metric = _metric(name)
        for row, stats in zip(per_input, metric._extract_corpus_statistics(list(outputs), streams)):
            row[name] = [int(s) for s in stats]
    rouge = _rouge()
    for row, output, refs in zip(per_input, outputs, references):
        row["rouge_l"] = round(100 * rouge.score_multi(list(refs), output)["rougeL"].fmeasure, 6)
    totals = {name: corpus_score(name, [row[name] for row in per_input]) for name in TEXT_METRICS}
    return totals, per_input


def corpus_score(name: str, rows) -> float:
    """The corpus score ``name`` of inputs' per-input values: summed statistics (BLEU, chrF) or the mean
    (ROUGE-L), on a 0-100 scale, rounded to 6 places."""
    import numpy as np

    values = np.asarray(rows, dtype=float)
    if name == "rouge_l":
        return round(float(values.mean()), 6)
    total = values.sum(0)
    return round(float(_metric(name)._compute_score_from_stats(total.astype(int).tolist()).score), 6)
