"""From run records to a report's rows: the seed search's selection (the best dev score of each
setting and data split), one row per setting with the spread of its runs, per-class results and the
part of a test score that is the luck of the test sample."""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter, defaultdict
from typing import Any, Callable, Iterable, Sequence

from prompting.core.data import BUILTIN_LABELS, METRICS, class_results, dev_key
from prompting.experiment.results import ResultsStore, gold_indices
from prompting.tasks.answers import UNMATCHED, answer_confusion

__all__ = ["GROUP_KEYS", "score", "select_runs", "best_per_split", "aggregate", "bootstrap_interval", "run_classes",
           "pooled_confusion", "test_sample", "score_labels", "spread", "predicted_columns", "UNMATCHED_COLUMN"]


# a "setting": one method with its parameters, training settings, template and verbalizer;
# its runs differ only by data and training seeds
GROUP_KEYS = ("task", "label", "method", "params", "train_config", "template", "verbalizer", "model", "k",
              "choice_score", "test_limit", "answer", "chat")  # runs scored on other test examples never share a row
#: the predicted column of a written answer that named no label (prompting.tasks.answers): no column, no gold (-1)
UNMATCHED_COLUMN = -2


def score(record: dict, split: str, metric: str) -> float:
    """A record's ``split`` (dev or test) ``metric``, NaN when the record has none (a run scored on no
    test examples records ``"test": {}``); tables show NaN as "–"."""
    scores = record.get(split)
    value = scores.get(metric) if isinstance(scores, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _key(record: dict, keys: Sequence[str]) -> tuple:
    return tuple(json.dumps(record.get(k), sort_keys=True) for k in keys)


def select_runs(records: Iterable[dict], metric: str = "accuracy") -> set[str]:
    """Seed search: per setting and data seed, the run with the best dev score. A tie goes to the lower
    dev cross-entropy (``dev_loss``, as the training loop breaks its ties: 32 dev examples move
    accuracy in steps of 3%), then to the first training seed."""
    return best_per_split(records, GROUP_KEYS, lambda r: dev_key(r["dev"], r.get("dev_loss"), metric))


def best_per_split(records: Iterable[dict], keys: Sequence[str], better: Callable[[dict], Any]) -> set[str]:
    """Per setting (``keys``) and data seed, the run id whose ``better`` is largest; of equals, the one of the
    first training seed."""
    splits: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        splits[_key(r, tuple(keys) + ("data_seed",))].append(r)
    chosen = set()
    for runs in splits.values():
        runs = sorted(runs, key=lambda r: (r["train_seed"] is None, r["train_seed"] or 0))
        chosen.add(max(runs, key=better)["run_id"])  # max keeps the first of equals
    return chosen


def score_labels(saved: dict, record: dict) -> list[str] | None:
    """The label of each column of a predictions file's scores: saved beside them, else (files written
    before that) the built-in task's order, else the record's verbalizer's; None when none fits. A file of
    written answers (``answer: generate``) has no scores: its labels are the columns its answers name."""
    if saved.get("test_predicted") is not None or saved.get("dev_predicted") is not None:
        return [str(x) for x in saved["labels"]] if saved.get("labels") else None
    rows = saved.get("test") or saved.get("dev")
    if not rows or not isinstance(rows[0], list):
        return None
    known = [x for x in (saved.get("labels"), BUILTIN_LABELS.get(record.get("task")),
                         list(record.get("verbalizer") or {}) if isinstance(record.get("verbalizer"), dict) else None)
             if x and len(x) == len(rows[0])]
    return [str(x) for x in known[0]] if known else None


def predicted_columns(saved: dict, split: str, labels: Sequence[str]) -> list[int] | None:
    """Each example's predicted column of ``labels``: the label its written answer named (``answer: generate``;
    :data:`UNMATCHED_COLUMN` where it named none), else its best score (the first on a tie, as argmax).
    None when the file has no predictions of ``split``."""
    named = saved.get(f"{split}_predicted")
    if named is not None:
        index = {str(label): i for i, label in enumerate(labels)}
        return [UNMATCHED_COLUMN if p is None else index.get(str(p), UNMATCHED_COLUMN) for p in named]
    rows = saved.get(split)
    return [max(range(len(row)), key=row.__getitem__) for row in rows] if rows else None


def run_classes(store: ResultsStore, record: dict) -> dict | None:
    """A run's per-class results (see :func:`prompting.core.data.class_results`) from its saved test
    predictions; None when it has none. Files written before the label order was saved beside the
    scores (their gold labels are column indices) take the built-in task's order, else the record's
    verbalizer's, and are used only where that order gives the record's own test accuracy."""
    saved = store.load_predictions(record["run_id"])
    if not saved or "test_gold" not in saved:
        return None
    labels = score_labels(saved, record)
    predicted = predicted_columns(saved, "test", labels) if labels is not None else None
    if not predicted:
        return None
    gold = gold_indices({**saved, "labels": saved.get("labels")}, "test")
    pairs = [(labels[g], labels[p] if p >= 0 else None) for g, p in zip(gold, predicted) if 0 <= g < len(labels)]
    found = class_results([g for g, _ in pairs], [UNMATCHED if p is None else p for _, p in pairs], labels) \
        if pairs else None
    if found is not None and saved.get("test_predicted") is not None:  # a last column of the unmatched answers
        found["confusion"] = answer_confusion([g for g, _ in pairs], [p for _, p in pairs], labels)
    accuracy = score(record, "test", "accuracy")
    if found is None or (not saved.get("labels") and not math.isnan(accuracy) and
                         abs(sum(g == p for g, p in pairs) / len(pairs) - accuracy) > 1e-9):
        return None
    return found


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

    if metric not in METRICS or not run_ids:
        return None
    runs = []
    for rid in run_ids:
        saved = store.load_predictions(rid)
        predicted = predicted_columns(saved, "test", saved.get("labels") or []) if saved else None
        if not predicted or "test_gold" not in saved:
            return None
        n_labels = len(saved["test"][0]) if saved.get("test") else len(saved["labels"])
        runs.append((np.asarray(predicted), np.asarray(gold_indices(saved, "test")), n_labels))
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


def spread(values: list[float]) -> dict[str, float]:
    """Mean, std (0 for one value), min, max and count of ``values``; all NaN when one is NaN."""
    if any(math.isnan(v) for v in values):  # a run without this score: no statistic pretends otherwise
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": len(values)}
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
    rows = [_row(runs, [r for r in runs if r["run_id"] in selected], metric) for runs in groups.values()]
    # best first; a setting without test scores (NaN) last
    rows.sort(key=lambda row: (math.isnan(row["test_selected"]["mean"]), -row["test_selected"]["mean"]))
    return rows


def _row(runs: list[dict], chosen: list[dict], metric: str) -> dict:
    """One setting's row from its runs and the ones the seed search selected."""
    first = runs[0]
    test_sel = [score(r, "test", metric) for r in chosen]
    test_all = [score(r, "test", metric) for r in runs]
    by_split: dict[object, list[float]] = defaultdict(list)
    for r in runs:
        by_split[r["data_seed"]].append(score(r, "test", metric))
    within = [statistics.stdev(v) for v in by_split.values() if len(v) > 1]
    row = {k: first.get(k) for k in GROUP_KEYS}
    row.update({
        "method": first["method"],
        "n_test": next((r["n_test"] for r in runs if r.get("n_test") is not None), None),
        "trainable_params": first.get("trainable_params"),
        "runs": len(runs),
        "data_seeds": len(by_split),
        "dev_selected": statistics.fmean(score(r, "dev", metric) for r in chosen),
        "selected_run_ids": sorted(r["run_id"] for r in chosen),
        "test_selected": spread(test_sel),
        # every metric the selected runs carry, beside the selection metric (CB is read by both
        # accuracy and macro-F1; a run that predicts one class shows in macro-F1, not accuracy)
        "test_selected_metrics": {m: statistics.fmean(score(r, "test", m) for r in chosen)
                                  for m in (chosen[0]["test"] or {})
                                  if all(m in (r["test"] or {}) for r in chosen)},
        "test_all": spread(test_all),
        "std_data_seeds": spread(test_sel)["std"],
        "std_train_seeds": statistics.fmean(within) if within else 0.0,
        "selection_gain": statistics.fmean(test_sel) - statistics.fmean(test_all),
        "collapsed": sum(bool(r.get("collapsed")) for r in runs),
        "seconds": sum(r.get("seconds", 0.0) for r in runs),
        "metric": metric,
        # what kind of row: a zero-shot prompt, a calibrated copy, an ensemble (the report's tests ask)
        "train": first.get("train"), "calibration": first.get("calibration"),
        "ensemble": bool(first.get("ensemble_of")),
        "stage": first.get("stage"),  # PET's recipe: a distilled model or an iPET generation
        "selected_by_seed": {r["data_seed"]: r["run_id"] for r in chosen},
    })
    return row


def pooled_confusion(row: dict, classes: dict) -> tuple[list[str], list[list[int]]] | None:
    """The labels and the summed confusion matrix (rows: gold, columns: predicted) of a setting's
    dev-selected runs; None when a run's predictions are missing."""
    found = [classes.get(rid) for rid in row["selected_run_ids"]]
    if not found or any(f is None or f["labels"] != found[0]["labels"] for f in found):
        return None
    size, width = len(found[0]["labels"]), {len(row) for f in found for row in f["confusion"]}
    if len(width) != 1:  # written answers' matrices (a column of the unmatched) beside label scores' ones
        return None
    columns = width.pop()
    matrix = [[sum(f["confusion"][i][j] for f in found) for j in range(columns)] for i in range(size)]
    return found[0]["labels"], matrix


def test_sample(store: ResultsStore, runs: Sequence[dict]) -> dict | None:
    """What the saved predictions of ``runs`` (one setting's dev-selected runs) say about their test
    sample (see :func:`run_classes`): the labels in the task's order, the class that is most of the gold
    labels and its share (what always answering it scores), and the class the runs predict most with
    its share of their predictions. None when a run's predictions are missing."""
    gold, predicted, labels = Counter(), Counter(), None
    for record in runs:
        found = run_classes(store, record)
        if found is None:
            return None
        labels = found["labels"]
        for label, counts in found["per_class"].items():
            gold[label] += counts["support"]
            predicted[label] += counts["predicted"]
    if not labels or not sum(gold.values()):
        return None
    # ties go to the label listed first, as argmax breaks them
    top_gold = max(labels, key=lambda label: (gold[label], -labels.index(label)))
    top_predicted = max(labels, key=lambda label: (predicted[label], -labels.index(label)))
    # a share of every prediction: written answers that named no label are some of them
    most = [top_predicted, predicted[top_predicted] / sum(gold.values())] if sum(predicted.values()) else None
    return {"labels": labels, "majority": [top_gold, gold[top_gold] / sum(gold.values())], "predicted_most": most}
