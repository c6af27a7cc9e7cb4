"""Run records: an append-only JSON-lines store, resume by run id, and aggregation.

Every finished run is one line of ``results.jsonl``, written (and flushed to disk) as soon as
the run ends; a run whose id is already in the file is skipped when the experiment is started
again, and a run that another process is running is left to it (see :class:`prompting.experiment.claims.Claims`). Which run the seed search selects is derived from the records when they are read
(the best dev score of a data split), so the file never needs rewriting.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Sequence

from prompting.core.data import BUILTIN_LABELS, METRICS, class_results, dev_key
from prompting.core.paths import atomic_write, naming, slug
from prompting.experiment.claims import Claims

try:  # POSIX; elsewhere appends rely on O_APPEND alone
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = ["ResultsFileError", "ResultsStore", "dev_key", "select_runs", "aggregate", "bootstrap_interval",
           "score", "gold_indices", "run_classes", "GROUP_KEYS"]


class ResultsFileError(ValueError):
    """A results file with a line that is not a complete run record."""


REQUIRED = ("run_id", "task", "method", "label", "template", "verbalizer", "model", "k", "data_seed",
            "train_seed", "dev", "test")
# a "setting": one method with its parameters, training settings, template and verbalizer;
# its runs differ only by data and training seeds
GROUP_KEYS = ("task", "label", "method", "params", "train_config", "template", "verbalizer", "model", "k",
              "choice_score")


def score(record: dict, split: str, metric: str) -> float:
    """A record's ``split`` (dev or test) ``metric``, NaN when the record has none (a run scored on no
    test examples records ``"test": {}``); tables show NaN as "–"."""
    scores = record.get(split)
    value = scores.get(metric) if isinstance(scores, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


class ResultsStore:
    """``results.jsonl`` in a directory, plus ``predictions/RUN_ID.json`` label scores.

    Several processes may share one directory: appends and reads take an ``flock`` on the file (a
    reader never sees half a line being written), predictions are written under a unique temporary
    name and renamed into place, and :attr:`claims` lets each run be run by one process at a time.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.path = self.directory / "results.jsonl"
        self._claims = None
        self._shared = None

    @property
    def claims(self):
        """Per-run claims shared by every process using this directory: files (``.claims/RUN_ID.claim``),
        or the runs of a study that every worker shares (see :meth:`share`)."""
        if self._claims is None:
            self._claims = Claims(self.directory / ".claims")
        return self._claims

    def share(self, claims) -> None:
        """Claim runs with ``claims`` (:class:`prompting.experiment.workers.StudyClaims`), which also hold the runs
        that other workers recorded: :meth:`record` copies those into this directory when asked for."""
        self._claims = self._shared = claims

    def _lines(self) -> tuple[list[bytes], bool]:
        """The file's lines (without their newlines) and whether its last line ends with one."""
        if not self.path.exists():
            return [], True
        with open(self.path, "rb") as f:
            with _locked(f, shared=True):
                data = f.read()
        return data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"), data.endswith(b"\n")

    def records(self) -> list[dict]:
        """Every run record, in file order. A run id recorded twice (two processes ran the same
        experiment into one directory at once) counts once: the first record is kept."""
        lines, terminated = self._lines()
        out, seen = [], set()
        for n, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            record = self._parse(raw, n, last=n == len(lines) and not terminated)
            if record["run_id"] not in seen:
                seen.add(record["run_id"])
                out.append(record)
        return out

    def _parse(self, raw: bytes, n: int, last: bool) -> dict:
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            why = (f"{err.msg} at column {err.colno}" if isinstance(err, json.JSONDecodeError)
                   else f"not UTF-8 text at byte {err.start}")
            if last:  # only the end of the file can be a write that a killed process left unfinished
                raise ResultsFileError(
                    f"{self.path}: line {n} is not a complete JSON record ({why}); it is the last line and "
                    "does not end the file with a newline, so it was probably cut off when a run was killed. Delete that line to re-run that one run; every other "
                    "line is kept") from None
            raise ResultsFileError(
                f"{self.path}: line {n} is not a JSON record ({why}); the file was damaged or edited by hand "
                "(a killed run only ever cuts the last line). Restore that line from a copy, or delete it "
                "to re-run that one run") from None
        if not isinstance(record, dict) or any(k not in record for k in REQUIRED):
            missing = [k for k in REQUIRED if not isinstance(record, dict) or k not in record]
            raise ResultsFileError(
                f"{self.path}: line {n} is not a run record (missing {', '.join(missing)}); "
                f"each line needs {', '.join(REQUIRED)}")
        return record

    def done(self) -> set[str]:
        """The ids of the recorded runs."""
        return {r["run_id"] for r in self.records()}

    def record(self, rid: str) -> dict | None:
        """The record of run ``rid`` (its first), or None if it is not recorded. Only the lines that
        mention the id are parsed, so asking after every run stays cheap in a long file. A run that
        another worker of a shared study recorded is copied in from the study."""
        found = self._find(rid)
        if found is None and self._shared is not None:
            stored = self._shared.stored(rid)
            if stored is not None:
                record, predictions = stored
                if predictions is not None:
                    self.save_predictions(rid, predictions)
                self.append(record, once=True)
                found = record
        return found

    def _find(self, rid: str) -> dict | None:
        needle = json.dumps(rid).encode()
        lines, terminated = self._lines()
        for n, raw in enumerate(lines, 1):
            if needle in raw:
                record = self._parse(raw, n, last=n == len(lines) and not terminated)
                if record["run_id"] == rid:
                    return record
        return None

    def append(self, record: dict, once: bool = False) -> None:
        """Add one record as one line, flushed to disk; with ``once``, only if its run id is not
        recorded yet (checked under the same lock as the write)."""
        missing = [k for k in REQUIRED if k not in record]
        if missing:
            raise ValueError(f"run record lacks {', '.join(missing)}")
        self.directory.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, sort_keys=True, default=json_default) + "\n"
        # one write of the whole line, then fsync: a killed process leaves whole lines behind
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            with naming(self.path), _locked(fd):
                size = os.fstat(fd).st_size
                if once and size and self._holds(os.pread(fd, size, 0), record["run_id"]):
                    return
                # a file that does not end with a newline (a record cut after its closing brace, or an
                # edit) would have this record joined onto its last line: start a line of our own
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = "\n" + line
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _holds(data: bytes, rid: str) -> bool:
        """Whether the file's bytes ``data`` hold a record of run ``rid``."""
        needle = json.dumps(rid).encode()
        for raw in data.split(b"\n"):
            if needle in raw:
                try:
                    if json.loads(raw).get("run_id") == rid:
                        return True
                except (ValueError, AttributeError):
                    continue  # a damaged line: records() reports it
        return False

    def _predictions_path(self, rid: str) -> Path:
        if not isinstance(rid, str) or slug(rid) != rid:  # run ids are hex digests; never a path
            raise ValueError(f"run id {rid!r} is not valid; a run id is letters, digits, '_', '.' and '-'")
        return self.directory / "predictions" / f"{rid}.json"

    def save_predictions(self, rid: str, scores: dict[str, list]) -> None:
        """Write a run's label scores (a unique temporary file renamed into place: two processes
        saving at once, or a reader, never meet a half-written file)."""
        path = self._predictions_path(rid)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(scores))

    def load_predictions(self, rid: str) -> dict[str, list] | None:
        """A run's saved label scores, or None if there are none."""
        try:
            path = self._predictions_path(rid)
        except ValueError:
            return None
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            why = (f"{err.msg} at line {err.lineno} column {err.colno}" if isinstance(err, json.JSONDecodeError)
                   else f"not UTF-8 text at byte {err.start}")
            raise ResultsFileError(
                f"{path} is not complete JSON ({why}): it was cut off or damaged. Delete it: the run's record in "
                f"{self.path} stays (without the label scores that calibration, ensembles and the report's "
                "intervals use); or delete it and the run's line in results.jsonl to run it again") from None


@contextmanager
def _locked(file, shared: bool = False):
    """An advisory ``flock`` on an open file (object or descriptor) for the block; none without fcntl."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = file if isinstance(file, int) else file.fileno()
    fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def json_default(value):
    """How a record's values that JSON has no type for are written (tensors' items, sets as lists)."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def _key(record: dict, keys: Sequence[str]) -> tuple:
    return tuple(json.dumps(record.get(k), sort_keys=True) for k in keys)


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


def gold_indices(saved: dict, split: str = "test") -> list[int]:
    """A predictions file's gold labels of ``split`` as column indices of its scores (-1: unknown).
    Files store them by name beside ``labels``, the scores' column order; files written before that
    store the indices themselves."""
    gold = saved.get(f"{split}_gold") or []
    labels = saved.get("labels")
    if labels is None:
        return [int(g) for g in gold]
    index = {label: i for i, label in enumerate(labels)}
    return [index.get(g, -1) for g in gold]


def run_classes(store: ResultsStore, record: dict) -> dict | None:
    """A run's per-class results (see :func:`prompting.core.data.class_results`) from its saved test
    predictions; None when it has none. Files written before the label order was saved beside the
    scores (their gold labels are column indices) take the built-in task's order, else the record's
    verbalizer's, and are used only where that order gives the record's own test accuracy."""
    saved = store.load_predictions(record["run_id"])
    if not saved or not saved.get("test") or "test_gold" not in saved:
        return None
    width = len(saved["test"][0])
    known = [x for x in (saved.get("labels"), BUILTIN_LABELS.get(record.get("task")),
                         list(record.get("verbalizer") or {})) if x and len(x) == width]
    labels = [str(x) for x in (known[0] if known else [])]
    if len(labels) != len(saved["test"][0]):
        return None
    gold = gold_indices({**saved, "labels": saved.get("labels")}, "test")
    pairs = [(labels[g], labels[max(range(len(row)), key=row.__getitem__)])
             for g, row in zip(gold, saved["test"]) if 0 <= g < len(labels)]
    found = class_results([g for g, _ in pairs], [p for _, p in pairs], labels) if pairs else None
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
        if not saved or "test_gold" not in saved or not saved["test"]:
            return None
        scores = np.asarray(saved["test"])
        runs.append((scores.argmax(1), np.asarray(gold_indices(saved, "test")), scores.shape[1]))
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
    rows = []
    for runs in groups.values():
        first = runs[0]
        chosen = [r for r in runs if r["run_id"] in selected]
        test_sel = [score(r, "test", metric) for r in chosen]
        test_all = [score(r, "test", metric) for r in runs]
        by_split: dict[object, list[float]] = defaultdict(list)
        for r in runs:
            by_split[r["data_seed"]].append(score(r, "test", metric))
        within = [statistics.stdev(v) for v in by_split.values() if len(v) > 1]
        row = {k: first.get(k) for k in GROUP_KEYS}
        row.update({
            "method": first["method"],
            "trainable_params": first.get("trainable_params"),
            "runs": len(runs),
            "data_seeds": len(by_split),
            "dev_selected": statistics.fmean(score(r, "dev", metric) for r in chosen),
            "selected_run_ids": sorted(r["run_id"] for r in chosen),
            "test_selected": _spread(test_sel),
            # every metric the selected runs carry, beside the selection metric (CB is read by both
            # accuracy and macro-F1; a run that predicts one class shows in macro-F1, not accuracy)
            "test_selected_metrics": {m: statistics.fmean(score(r, "test", m) for r in chosen)
                                      for m in (chosen[0]["test"] or {})
                                      if all(m in (r["test"] or {}) for r in chosen)},
            "test_all": _spread(test_all),
            "std_data_seeds": _spread(test_sel)["std"],
            "std_train_seeds": statistics.fmean(within) if within else 0.0,
            "selection_gain": statistics.fmean(test_sel) - statistics.fmean(test_all),
            "collapsed": sum(bool(r.get("collapsed")) for r in runs),
            "seconds": sum(r.get("seconds", 0.0) for r in runs),
            "metric": metric,
            # what kind of row: a zero-shot prompt, a calibrated copy, an ensemble (the report's tests ask)
            "train": first.get("train"), "calibration": first.get("calibration"),
            "ensemble": bool(first.get("ensemble_of")),
            "selected_by_seed": {r["data_seed"]: r["run_id"] for r in chosen},
        })
        rows.append(row)
    # best first; a setting without test scores (NaN) last
    rows.sort(key=lambda row: (math.isnan(row["test_selected"]["mean"]), -row["test_selected"]["mean"]))
    return rows
