"""Generation runs in a report (text the model writes, scored by BLEU, chrF and ROUGE-L): one row per method
and template, its dev-selected runs' scores over data seeds, the BLEU interval of the test sample, paired
tests of the best row against every other, and what each row wrote on the first test inputs.

The seed search selects, per setting and data seed, the run with the lowest dev NLL of its targets (a run
without one, a zero-shot or in-context prompt, after those with one; a tie to the first training seed).
Intervals and paired tests draw the test inputs again with replacement and score each draw from its inputs'
summed statistics (:func:`prompting.core.textmetrics.corpus_score`), as sacreBLEU's paired bootstrap does:
a corpus BLEU is not a mean of per-input scores. Draws come from one seed, so they are the same for every
run with as many test inputs; the paired test also draws the data seeds again, as the classification test
does.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from typing import Sequence

import numpy as np

from prompting.core.textmetrics import TEXT_METRICS, corpus_score
from prompting.experiment.results import ResultsStore
from prompting.reporting.aggregate import GROUP_KEYS, best_per_split, score, spread
from prompting.reporting.significance import two_sided_p

__all__ = ["GENERATION_KEYS", "is_generation_record", "dev_nll", "select_generation_runs", "generation_rows",
           "InputDraws"]

# a generation setting: a classification setting's keys and how it decodes
GENERATION_KEYS = GROUP_KEYS + ("decoding",)


def is_generation_record(record: dict) -> bool:
    return record.get("task_type") == "generation"


def dev_nll(record: dict) -> float:
    """A run's dev NLL of its targets; infinity for a run without one (a zero-shot or in-context prompt)."""
    value = (record.get("dev") or {}).get("nll")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.inf


def _setting(record: dict, keys: Sequence[str] = GENERATION_KEYS) -> tuple:
    return tuple(json.dumps(record.get(k), sort_keys=True) for k in keys)


def select_generation_runs(records: Sequence[dict]) -> set[str]:
    """Seed search: per setting and data seed, the run with the lowest dev NLL (see the module docstring)."""
    return best_per_split(records, GENERATION_KEYS, lambda r: -dev_nll(r))


def generation_rows(store: ResultsStore, records: Sequence[dict], draws: InputDraws | None = None) -> list[dict]:
    """One row per setting (best BLEU first, a row without scores last): its dev-selected runs' mean and
    spread of each metric over data seeds, and the BLEU interval of the test sample (None without saved
    per-input scores)."""
    selected = select_generation_runs(records)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[_setting(r)].append(r)
    draws = draws or InputDraws(store)
    rows = [_row(runs, [r for r in runs if r["run_id"] in selected]) for runs in groups.values()]
    for row in rows:
        row["bleu_interval"] = draws.interval(row["selected_run_ids"])
    rows.sort(key=lambda row: (math.isnan(row["metrics"]["bleu"]["mean"]), -row["metrics"]["bleu"]["mean"]))
    return rows


def _row(runs: list[dict], chosen: list[dict]) -> dict:
    first = runs[0]
    chosen = sorted(chosen, key=lambda r: r["data_seed"])
    nll = [dev_nll(r) for r in chosen]
    row = {k: first.get(k) for k in GENERATION_KEYS}
    row.update({
        "method": first["method"], "train": first.get("train"), "trainable_params": first.get("trainable_params"),
        "runs": len(runs), "data_seeds": len({r["data_seed"] for r in runs}),
        "selected_by_seed": {r["data_seed"]: r["run_id"] for r in chosen},
        "selected_run_ids": [r["run_id"] for r in chosen],
        "metrics": {m: spread([score(r, "test", m) for r in chosen]) for m in TEXT_METRICS},
        "dev_nll": statistics.fmean(nll) if all(math.isfinite(v) for v in nll) else math.nan,
        "n_test": next((r["n_test"] for r in runs if r.get("n_test") is not None), None),
        "n_references": next((r["n_references"] for r in runs if r.get("n_references") is not None), None),
        "empty_outputs": sum(r.get("empty_outputs") or 0 for r in chosen),
        "outputs": sum(r.get("n_test") or 0 for r in chosen),
        "seconds": sum(r.get("seconds", 0.0) for r in runs),
    })
    return row


class InputDraws:
    """The test inputs drawn again with replacement (``resamples`` draws from ``seed``) and each run's corpus
    score under every draw, computed once for every interval and paired test that uses the run."""

    def __init__(self, store: ResultsStore, resamples: int = 2000, seed: int = 0):
        self.store, self.resamples, self.seed = store, resamples, seed
        self._saved: dict[str, dict | None] = {}
        self._counts: dict[int, np.ndarray] = {}
        self._scores: dict[tuple, np.ndarray] = {}

    def saved(self, rid: str) -> dict | None:
        """A run's saved outputs and per-input scores; None when its predictions file is missing or holds no
        per-input scores (a file that is not JSON raises, as everywhere the report reads one)."""
        if rid not in self._saved:
            saved = self.store.load_predictions(rid)
            rows = saved.get("test_scores") if isinstance(saved, dict) else None
            whole = isinstance(rows, list) and rows and all(isinstance(row, dict) and set(TEXT_METRICS) <= set(row)
                                                            for row in rows)
            same = whole and all(len(saved.get(k) or ()) == len(rows) for k in ("test_inputs", "test_outputs"))
            self._saved[rid] = saved if same else None
        return self._saved[rid]

    def counts(self, size: int) -> np.ndarray:
        """[resamples, size]: how often each draw takes each of ``size`` test inputs."""
        if size not in self._counts:
            drawn = np.random.default_rng(self.seed).integers(0, size, (self.resamples, size))
            counts = np.zeros((self.resamples, size))
            np.add.at(counts, (np.arange(self.resamples)[:, None], drawn), 1)
            self._counts[size] = counts
        return self._counts[size]

    def scores(self, rid: str, metric: str = "bleu") -> np.ndarray | None:
        """The run's corpus ``metric`` under every draw; None without saved per-input scores."""
        if (rid, metric) not in self._scores:
            saved = self.saved(rid)
            if saved is None:
                return None
            values = np.asarray([row[metric] for row in saved["test_scores"]], dtype=float)
            totals = self.counts(len(values)) @ values
            if metric == "rouge_l":  # a mean of per-input scores, not summed statistics
                totals = totals[:, None] / len(values)
            self._scores[rid, metric] = np.array([corpus_score(metric, [t]) for t in totals])
        return self._scores[rid, metric]

    def interval(self, run_ids: Sequence[str], metric: str = "bleu", resamples: int = 1000,
                 level: float = 0.95) -> tuple[float, float] | None:
        """The percentile interval of the runs' mean corpus ``metric`` over the first ``resamples`` draws (the
        same inputs for every run); None when a run has no saved per-input scores or the runs' test sizes
        differ."""
        found = [self.scores(rid, metric) for rid in run_ids]
        sizes = {len(self.saved(rid)["test_scores"]) for rid, s in zip(run_ids, found) if s is not None}
        if not found or any(s is None for s in found) or len(sizes) != 1:
            return None
        values = np.mean([s[:resamples] for s in found], axis=0)
        tail = 100 * (1 - level) / 2
        return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))

    def paired(self, a: dict, b: dict, metric: str = "bleu", level: float = 0.95) -> dict | None:
        """Paired bootstrap of rows ``a`` − ``b``: the mean over data seeds of the difference of their
        dev-selected runs' corpus ``metric``, every draw taking data seeds and test inputs again (the same
        for both rows); ``{"difference", "low", "high", "p", "seeds", "examples"}`` in points, or None when
        the rows cannot be paired (see :meth:`pairing_problem`)."""
        if self.pairing_problem(a, b):
            return None
        seeds = _common_seeds(a, b)
        runs = [(a["selected_by_seed"][s], b["selected_by_seed"][s]) for s in seeds]
        differences = np.stack([self.scores(x, metric) - self.scores(y, metric) for x, y in runs])  # [S, R]
        picked = np.random.default_rng(self.seed + 1).integers(0, len(seeds), (self.resamples, len(seeds)))
        drawn = differences[picked, np.arange(self.resamples)[:, None]].mean(axis=1)
        observed = [corpus_score(metric, self._rows(x, metric)) - corpus_score(metric, self._rows(y, metric))
                    for x, y in runs]
        tail = 100 * (1 - level) / 2
        return {"difference": float(np.mean(observed)), "low": float(np.percentile(drawn, tail)),
                "high": float(np.percentile(drawn, 100 - tail)), "p": two_sided_p(drawn), "seeds": len(seeds),
                "examples": len(self.saved(runs[0][0])["test_scores"])}

    def pairing_problem(self, a: dict, b: dict) -> str | None:
        """Why rows ``a`` and ``b`` cannot be paired, in a few words; None when they can."""
        seeds = _common_seeds(a, b)
        if not seeds:
            return "no data seed in common"
        found = [(self.saved(a["selected_by_seed"][s]), self.saved(b["selected_by_seed"][s])) for s in seeds]
        if any(x is None or y is None for x, y in found):
            return "saved predictions missing"
        if any(x["test_inputs"] != y["test_inputs"] for x, y in found):
            return "other test inputs"
        return None

    def _rows(self, rid: str, metric: str) -> list:
        return [row[metric] for row in self.saved(rid)["test_scores"]]


def _common_seeds(a: dict, b: dict) -> list:
    return sorted(set(a["selected_by_seed"]) & set(b["selected_by_seed"]), key=str)

