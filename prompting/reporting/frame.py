"""Run records as a pandas data frame, for a notebook: one row a record, its settings and metrics as
columns, and on request each run's per-example predictions.

    runs = load_results("experiments/results/sst2_compare")
    runs[runs.selected].groupby(["label", "template"]).test_accuracy.agg(["mean", "std", "count"])
    runs, predictions = load_results("runs/quickstart", predictions=True)

Columns are the record's keys with nested values spread as ``runs.csv`` names them (``test_accuracy``,
``dev_macro_f1``, ``params_init``, ``train_config_lr``, ``train_config_used_batch_size``; see
:func:`prompting.core.flat.flatten`), the verbalizer as its words (``negative / positive``), lists as
tuples, whole numbers as integers beside missing values (``pandas.NA``: a zero-shot run's ``train_seed``), and
``selected``: whether the seed search selected the run (the best dev score of its setting and
data split, by ``metric``; a generation run: the lowest dev NLL), the runs the report's "selected"
columns average.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from prompting.core.flat import flatten
from prompting.experiment.results import ResultsStore, gold_indices
from prompting.reporting.aggregate import predicted_columns, score_labels, select_runs
from prompting.reporting.generation import is_generation_record, select_generation_runs

__all__ = ["load_results", "FIRST_COLUMNS"]

# the columns a reader looks for first, in this order (those a folder's records have); the rest follow
FIRST_COLUMNS = ("run_id", "experiment", "task", "method", "label", "template", "verbalizer", "model", "k",
                 "data_seed", "train_seed", "train", "selected", "dev_accuracy", "dev_macro_f1", "test_accuracy",
                 "test_macro_f1")


def _pandas():
    if importlib.util.find_spec("pandas") is None:
        raise ImportError("load_results gives a pandas data frame, and pandas is not installed: pip install pandas "
                          "(or pip install 'prompting[pandas]')")
    import pandas

    return pandas


def _hashable(value):
    """Lists as tuples, so that a column can be grouped by and compared."""
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


def load_results(directory: str | Path, *, predictions: bool = False, metric: str = "accuracy"):
    """The records of ``directory/results.jsonl`` as a data frame, one row per record in file order (see
    the module docstring). ``predictions=True``: also a second frame of every run's per-example
    predictions, returned as ``(runs, predictions)``."""
    pd = _pandas()
    store = ResultsStore(directory)
    records = store.records()
    if not records:
        raise FileNotFoundError(f"no run records in {store.path}; run an experiment first")
    texts = [r for r in records if is_generation_record(r)]  # generation runs: chosen by dev NLL, as the report
    selected = select_runs([r for r in records if not is_generation_record(r)], metric) | select_generation_runs(texts)
    rows = [{**{k: _hashable(v) for k, v in flatten(r).items()}, "selected": r["run_id"] in selected}
            for r in records]
    # whole numbers stay integers beside a missing value (a zero-shot run's train_seed), yes / no stays boolean
    runs = pd.DataFrame(rows).convert_dtypes(convert_string=False, convert_floating=False)
    first = [c for c in FIRST_COLUMNS if c in runs.columns]
    rest = [c for c in runs.columns if c not in first and runs[c].notna().any()]  # not a key no record fills
    runs = runs[first + rest]
    return (runs, _predictions(pd, store, records)) if predictions else runs


def _fact_rows(run_id: str, split: str, saved: dict) -> list[dict]:
    """A fact-probing run's rows: the gold object's rank and, where the run saved them, the subject, the
    gold object and the model's first object (the best of its saved top objects)."""
    rows = []
    for i, rank in enumerate(saved[f"{split}_ranks"]):
        row = {"run_id": run_id, "split": split, "example": i, "rank": rank}
        if saved.get(f"{split}_top") is not None:
            top = saved[f"{split}_top"][i]
            row.update(subject=saved[f"{split}_subjects"][i], gold=saved[f"{split}_objects"][i],
                       predicted=top[0][0] if top else None, correct=rank == 1)
        rows.append(row)
    return rows


def _predictions(pd, store: ResultsStore, records: list[dict]):
    """One row per run, split and example: the gold label, the predicted one (the highest score) and each
    label's score (``score_<label>``), or with ``answer: generate`` the written ``answer`` and the label it named
    (None: none, and not correct); a fact-probing run's gold object's ``rank`` instead (with its subject, gold
    and predicted object where the run saved its top objects)."""
    rows = []
    for record in records:
        saved = store.load_predictions(record["run_id"]) or {}
        labels = score_labels(saved, record)
        for split in ("dev", "test"):
            if saved.get(f"{split}_ranks") is not None:
                rows += _fact_rows(record["run_id"], split, saved)
            predicted = predicted_columns(saved, split, labels) if labels is not None else None
            if not predicted:
                continue
            gold, answers = gold_indices(saved, split), saved.get(f"{split}_answers")
            for i, best in enumerate(predicted):
                truth = labels[gold[i]] if i < len(gold) and 0 <= gold[i] < len(labels) else None
                named = labels[best] if best >= 0 else None
                shown = {"answer": answers[i]} if answers is not None else \
                    {f"score_{label}": score for label, score in zip(labels, saved[split][i])}
                rows.append({"run_id": record["run_id"], "split": split, "example": i, "gold": truth,
                             "predicted": named, "correct": truth == named if truth is not None else None, **shown})
    return pd.DataFrame(rows)
