"""Run records: an append-only JSON-lines store, resume by run id, and aggregation.

Every finished run is one line of ``results.jsonl``, written (and flushed to disk) as soon as
the run ends; a run whose id is already in the file is skipped when the experiment is started
again. Which run the seed search selects is derived from the records when they are read
(the best dev score of a data split), so the file never needs rewriting.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["ResultsFileError", "ResultsStore", "run_id", "dev_key", "select_runs", "aggregate", "bootstrap_interval",
           "GROUP_KEYS"]


class ResultsFileError(ValueError):
    """A results file with a line that is not a complete run record."""


REQUIRED = ("run_id", "task", "method", "label", "template", "verbalizer", "model", "k", "data_seed",
            "train_seed", "dev", "test")
# a "setting": one method with its parameters, training settings, template and verbalizer;
# its runs differ only by data and training seeds
GROUP_KEYS = ("task", "label", "method", "params", "train_config", "template", "verbalizer", "model", "k")


def run_id(settings: dict) -> str:
    """A stable id for a run's settings (anything that changes the result changes the id)."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class ResultsStore:
    """``results.jsonl`` in a directory, plus ``predictions/RUN_ID.json`` label scores."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.path = self.directory / "results.jsonl"

    def records(self) -> list[dict]:
        """Every run record, in file order. A run id recorded twice (two processes ran the same
        experiment into one directory at once) counts once: the first record is kept."""
        if not self.path.exists():
            return []
        out, seen = [], set()
        with open(self.path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ResultsFileError(
                        f"{self.path}: line {n} is not a complete JSON record ({err.msg} at column "
                        f"{err.colno}); it was probably cut off when a run was killed. Delete that line "
                        "to re-run that one run; every other line is kept") from None
                if not isinstance(record, dict) or any(k not in record for k in REQUIRED):
                    missing = [k for k in REQUIRED if not isinstance(record, dict) or k not in record]
                    raise ResultsFileError(
                        f"{self.path}: line {n} is not a run record (missing {', '.join(missing)}); "
                        f"each line needs {', '.join(REQUIRED)}")
                if record["run_id"] not in seen:
                    seen.add(record["run_id"])
                    out.append(record)
        return out

    def done(self) -> set[str]:
        return {r["run_id"] for r in self.records()}

    def append(self, record: dict) -> None:
        missing = [k for k in REQUIRED if k not in record]
        if missing:
            raise ValueError(f"run record lacks {', '.join(missing)}")
        self.directory.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, sort_keys=True, default=_jsonable) + "\n"
        # one write of the whole line, then fsync: a killed process leaves whole lines behind
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def save_predictions(self, rid: str, scores: dict[str, list]) -> None:
        folder = self.directory / "predictions"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{rid}.json.tmp"
        tmp.write_text(json.dumps(scores))
        tmp.replace(folder / f"{rid}.json")

    def load_predictions(self, rid: str) -> dict[str, list] | None:
        path = self.directory / "predictions" / f"{rid}.json"
        return json.loads(path.read_text()) if path.exists() else None


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def _key(record: dict, keys: Sequence[str]) -> tuple:
    return tuple(json.dumps(record.get(k), sort_keys=True) for k in keys)


def dev_key(dev: dict | None, dev_loss: float | None, metric: str = "accuracy") -> tuple[float, float]:
    """The one dev-selection rule, for training steps, AutoPrompt's search and the seed search: the dev
    metric, a tie going to the lower dev cross-entropy (32 dev examples move accuracy in steps of 3%,
    and a tie must not keep the untrained state just because it came first)."""
    return (dev.get(metric, -math.inf) if dev else -math.inf, -dev_loss if dev_loss is not None else 0.0)


def select_runs(records: Iterable[dict], metric: str = "accuracy") -> set[str]:
    """Seed search: per setting and data seed, the run with the best dev score. A tie goes to the lower
    dev cross-entropy (``dev_loss``, as the training loop breaks its ties: 32 dev examples move
    accuracy in steps of 3%), then to the first training seed."""
    splits: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        splits[_key(r, GROUP_KEYS + ("data_seed",))].append(r)
    chosen = set()
    for runs in splits.values():
        runs = sorted(runs, key=lambda r: (r["train_seed"] is None, r["train_seed"] or 0))
        best = max(runs, key=lambda r: dev_key(r["dev"], r.get("dev_loss"), metric))
        chosen.add(best["run_id"])
    return chosen


def bootstrap_interval(store: ResultsStore, run_ids: Sequence[str], metric: str = "accuracy",
                       resamples: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """How much of a test score is the luck of the test sample: the percentile interval of the runs'
    mean test ``metric`` (accuracy or macro_f1) when the test examples are drawn again with
    replacement, the same draw for every run (they share one test set). It gives a deterministic
    run (zero-shot on a fixed test set) a spread too. None when a run's saved predictions or gold
    labels are missing (runs recorded by older versions).

    >>> bootstrap_interval(ResultsStore("runs/quickstart"), ["4fc7070213a5f999"])  # doctest: +SKIP
    (0.66, 0.83)
    """
    import numpy as np

    if metric not in ("accuracy", "macro_f1") or not run_ids:
        return None
    runs = []
    for rid in run_ids:
        saved = store.load_predictions(rid)
        if not saved or "test_gold" not in saved or not saved["test"]:
            return None
        scores = np.asarray(saved["test"])
        runs.append((scores.argmax(1), np.asarray(saved["test_gold"]), scores.shape[1]))
    size = len(runs[0][1])
    if any(len(gold) != size for _, gold, _ in runs):
        return None
    draws = np.random.default_rng(seed).integers(0, size, (resamples, size))
    values = np.zeros(resamples)
    for predicted, gold, n_labels in runs:
        pred, true = predicted[draws], gold[draws]
        if metric == "accuracy":
            values += (pred == true).mean(1)
            continue
        f1 = np.zeros(resamples)
        for label in range(n_labels):  # as scikit-learn's macro-F1 with zero_division=0
            hits = ((pred == label) & (true == label)).sum(1)
            total = (pred == label).sum(1) + (true == label).sum(1)
            f1 += np.divide(2 * hits, total, out=np.zeros(resamples), where=total > 0)
        values += f1 / n_labels
    values /= len(runs)
    tail = 100 * (1 - level) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def aggregate(records: Sequence[dict], metric: str = "accuracy") -> list[dict]:
    """One row per setting: selected-by-dev test over data seeds, and the spread of all runs.

    ``std_data_seeds`` is the std of the selected runs across data splits; ``std_train_seeds``
    the mean, over data splits, of the std across training seeds.
    """
    selected = select_runs(records, metric)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[_key(r, GROUP_KEYS)].append(r)
    rows = []
    for runs in groups.values():
        first = runs[0]
        chosen = [r for r in runs if r["run_id"] in selected]
        test_sel = [r["test"][metric] for r in chosen]
        test_all = [r["test"][metric] for r in runs]
        by_split: dict[object, list[float]] = defaultdict(list)
        for r in runs:
            by_split[r["data_seed"]].append(r["test"][metric])
        within = [statistics.stdev(v) for v in by_split.values() if len(v) > 1]
        row = {k: first.get(k) for k in GROUP_KEYS}
        row.update({
            "method": first["method"],
            "trainable_params": first.get("trainable_params"),
            "runs": len(runs),
            "data_seeds": len(by_split),
            "dev_selected": statistics.fmean(r["dev"].get(metric, math.nan) for r in chosen),
            "selected_run_ids": sorted(r["run_id"] for r in chosen),
            "test_selected": _spread(test_sel),
            # every metric the selected runs carry, beside the selection metric (CB is read by both
            # accuracy and macro-F1; a run that predicts one class shows in macro-F1, not accuracy)
            "test_selected_metrics": {m: statistics.fmean(r["test"][m] for r in chosen)
                                      for m in chosen[0]["test"] if all(m in r["test"] for r in chosen)},
            "test_all": _spread(test_all),
            "std_data_seeds": _spread(test_sel)["std"],
            "std_train_seeds": statistics.fmean(within) if within else 0.0,
            "selection_gain": statistics.fmean(test_sel) - statistics.fmean(test_all),
            "collapsed": sum(bool(r.get("collapsed")) for r in runs),
            "seconds": sum(r.get("seconds", 0.0) for r in runs),
            "metric": metric,
        })
        rows.append(row)
    rows.sort(key=lambda row: -row["test_selected"]["mean"])
    return rows
