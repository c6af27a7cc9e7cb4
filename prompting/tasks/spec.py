"""A task described in a config's ``task:`` section: its files, columns, labels, split and protocol.

```yaml
task:
  name: trec
  train: data/trec_train.tsv      # tsv / csv / jsonl; parquet / arrow where `datasets` is installed
  header: false                   # no header row: columns are positions, 0 first
  label_column: 0
  text_columns: [1]               # -> {text_a} (then {text_b} ...); or fields: {question: 1}
  labels: {0: ABBR, 1: DESC, 2: ENTY, 3: HUM, 4: LOC, 5: NUM}   # ids in the file -> names
  split: {test: 0.2, seed: 0}     # no test file: carve a stratified test set out of train
  dev: data/trec_dev.tsv          # the pool the K-shot dev set is drawn from ...
  protocol: kshot                 # ... unless `protocol: fixed` (train and dev files used as given)
```

A multiple-choice task names the columns of its choices (``choices: [choice1, choice2]``, or one
column holding a list: ``choices: {column: endings, count: 4}``); they become the fields ``choice1`` ...
``choiceN``, its labels name the choices in order (``0`` ... ``N-1`` unless ``labels`` says
otherwise), and each choice is scored by the LM's likelihood of its text at ``{mask}``
(``choice_score: sum``, or ``mean`` per token). Everything here is checked before a file is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from prompting.core.data import DATASETS_FORMATS, TASKS, TEXT_FORMATS, DataError, Example, Task, load_examples, load_task

__all__ = ["TaskSpecError", "TASK_KEYS", "PROTOCOLS", "CHOICE_SCORES", "check_task_spec", "load_task_spec",
           "default_choice_verbalizer", "task_shape"]

TASK_KEYS = ("name", "data_dir", "train", "dev", "test", "fields", "text_columns", "label_column", "labels",
             "label_map", "format", "header", "split", "protocol", "choices", "choice_score")
BUILTIN_KEYS = ("name", "data_dir")
PROTOCOLS = ("kshot", "fixed")
CHOICE_SCORES = ("sum", "mean")
SPLIT_KEYS = ("test", "seed")


class TaskSpecError(ValueError):
    """A ``task:`` section that does not fit the schema (a config reports it as a ConfigError)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_column(where: str, value: Any) -> None:
    if not (isinstance(value, str) and value) and not (_is_int(value) and value >= 0):
        raise TaskSpecError(f"{where}: {value!r} is not a column; give a column name (JSON: a.b for a nested "
                            "field) or a position in a csv / tsv row, 0 first")


def _check_fields(spec: dict) -> None:
    if "fields" in spec and "text_columns" in spec:
        raise TaskSpecError("task: give fields or text_columns, not both (text_columns: [1, 2] is "
                            "fields: {text_a: 1, text_b: 2})")
    fields = spec.get("fields")
    if fields is not None:
        if not isinstance(fields, dict) or not fields:
            raise TaskSpecError(f"task.fields: {fields!r} is not valid; map template fields to columns, "
                                "e.g. {text_a: sentence} or {premise: 1}")
        for name, source in fields.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise TaskSpecError(f"task.fields: {name!r} is not a field name; use letters, digits and _")
            if isinstance(source, dict):
                if set(source) != {"column", "map"} or not isinstance(source["map"], dict):
                    raise TaskSpecError(f"task.fields.{name}: {source!r} is not valid; give a column, or "
                                        "{column: C, map: {value: words}}")
                _check_column(f"task.fields.{name}.column", source["column"])
            else:
                _check_column(f"task.fields.{name}", source)
    columns = spec.get("text_columns")
    if columns is not None:
        if not isinstance(columns, list) or not columns:
            raise TaskSpecError(f"task.text_columns: {columns!r} is not valid; give a list of columns, e.g. [1]")
        for i, column in enumerate(columns):
            _check_column(f"task.text_columns[{i}]", column)


def _check_labels(spec: dict) -> None:
    labels = spec.get("labels")
    if labels is None:
        if "choices" not in spec:
            raise TaskSpecError(f"task {spec['name']!r}: a custom task needs 'labels' (a list of the labels "
                                "the file holds, or a map {id in the file: name})")
        return
    if isinstance(labels, dict):
        if "label_map" in spec:
            raise TaskSpecError("task: labels given as a map already map the file's values; drop label_map")
        names = [str(v).lower() if isinstance(v, bool) else str(v) for v in labels.values()]
    elif isinstance(labels, list):
        names = [str(v).lower() if isinstance(v, bool) else str(v) for v in labels]
    else:
        raise TaskSpecError(f"task.labels: {labels!r} is not valid; give a list of names or a map {{id: name}}")
    if len(names) < 2 or len(set(names)) != len(names):
        raise TaskSpecError(f"task.labels: {labels!r} is not valid; give at least two labels, each once")


def _check_split(spec: dict) -> None:
    split = spec.get("split")
    if split is None:
        if "test" not in spec:
            raise TaskSpecError(f"task {spec['name']!r}: a custom task needs 'test' (a file), or "
                                "split: {test: 0.2, seed: 0} to carve a test set out of train")
        return
    if "test" in spec:
        raise TaskSpecError("task: give a test file or split, not both")
    if not isinstance(split, dict) or "test" not in split or any(k not in SPLIT_KEYS for k in split):
        raise TaskSpecError(f"task.split: {split!r} is not valid; give {{test: 0.2, seed: 0}} (test: a share "
                            "between 0 and 1, or a number of examples)")
    test = split["test"]
    if not ((isinstance(test, float) and 0 < test < 1) or (_is_int(test) and test >= 1)):
        raise TaskSpecError(f"task.split.test: {test!r} is not valid; give a share between 0 and 1 (0.2) "
                            "or a number of examples >= 1")
    if not _is_int(split.get("seed", 0)):
        raise TaskSpecError(f"task.split.seed: {split['seed']!r} is not valid; give an integer")


def _check_choices(spec: dict) -> None:
    choices = spec.get("choices")
    if choices is None:
        if "choice_score" in spec:
            raise TaskSpecError("task.choice_score is for a multiple-choice task; give choices too")
        return
    if isinstance(choices, dict):
        if set(choices) != {"column", "count"} or not _is_int(choices["count"]) or choices["count"] < 2:
            raise TaskSpecError(f"task.choices: {choices!r} is not valid; give {{column: C, count: N}} with "
                                "N >= 2 for a column that holds a list")
        _check_column("task.choices.column", choices["column"])
    elif isinstance(choices, list) and len(choices) >= 2:
        for i, column in enumerate(choices):
            _check_column(f"task.choices[{i}]", column)
    else:
        raise TaskSpecError(f"task.choices: {choices!r} is not valid; give the choice columns, e.g. "
                            "[choice1, choice2], or {column: endings, count: 4}")
    if spec.get("choice_score", "sum") not in CHOICE_SCORES:
        raise TaskSpecError(f"task.choice_score: {spec['choice_score']!r} is not valid; choose one of "
                            f"{', '.join(CHOICE_SCORES)}")
    labels = spec.get("labels")
    if labels is not None and len(labels) != _n_choices(choices):
        raise TaskSpecError(f"task.labels: {len(labels)} labels for {_n_choices(choices)} choices; a "
                            "multiple-choice task's labels name its choices in order")


def check_task_spec(task: Any) -> dict:
    """A ``task:`` section, checked (a built-in name alone is ``{name: ...}``); no file is read."""
    task = {"name": task} if isinstance(task, str) else task
    if not isinstance(task, dict):
        raise TaskSpecError(f"task must be a built-in name or a mapping with keys {', '.join(TASK_KEYS)}; got {task!r}")
    for key in task:
        if key not in TASK_KEYS:
            raise TaskSpecError(f"task: unknown key {key!r}; allowed keys: {', '.join(TASK_KEYS)}")
    if "name" not in task:
        raise TaskSpecError("task: missing key 'name'")
    if "train" not in task:
        if task["name"] not in TASKS:
            raise TaskSpecError(f"task: {task['name']!r} is not built in (built in: {', '.join(TASKS)}); "
                                "for your own data give train and test files with fields and labels")
        extra = [k for k in task if k not in BUILTIN_KEYS]
        if extra:
            raise TaskSpecError(f"task: {extra[0]!r} describes files of your own; the built-in task "
                                f"{task['name']!r} takes only {', '.join(BUILTIN_KEYS)} (or give train: FILE)")
        return task
    for key, allowed in (("format", TEXT_FORMATS + DATASETS_FORMATS), ("protocol", PROTOCOLS)):
        if key in task and task[key] not in allowed:
            raise TaskSpecError(f"task.{key}: {task[key]!r} is not valid; choose one of {', '.join(allowed)}")
    if not isinstance(task.get("header", True), bool):
        raise TaskSpecError(f"task.header: {task['header']!r} is not valid; use true or false")
    if task.get("protocol") == "fixed" and "dev" not in task:
        raise TaskSpecError("task.protocol: fixed uses the train and dev files as given; give a dev file "
                            "(or leave protocol out for K-shot sampling)")
    _check_fields(task)
    _check_labels(task)
    _check_split(task)
    _check_choices(task)
    if "label_column" in task:
        _check_column("task.label_column", task["label_column"])
    elif task.get("header") is False:
        raise TaskSpecError("task: header: false needs label_column, the position of the label (e.g. 0)")
    if task.get("header") is False and "fields" not in task and "text_columns" not in task:
        raise TaskSpecError("task: header: false needs text_columns (e.g. [1]) or fields (e.g. {text_a: 1})")
    return task


def _n_choices(choices) -> int:
    return choices["count"] if isinstance(choices, dict) else len(choices)


def _label_name(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _labels(spec: dict) -> tuple[tuple[str, ...], dict | None]:
    """The task's label names, and the map from the file's values to them (None: the file has the names)."""
    labels = spec.get("labels")
    if labels is None:  # a multiple-choice task: its choices by position
        return tuple(str(i) for i in range(_n_choices(spec["choices"]))), spec.get("label_map")
    if isinstance(labels, dict):
        return tuple(_label_name(v) for v in labels.values()), {_label_name(k): _label_name(v) for k, v in labels.items()}
    return tuple(_label_name(v) for v in labels), spec.get("label_map")


def _fields(spec: dict) -> dict:
    if "text_columns" in spec:
        return {f"text_{chr(ord('a') + i)}": column for i, column in enumerate(spec["text_columns"])}
    return dict(spec.get("fields") or {"text_a": "text_a"})


def task_shape(spec: Mapping) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A custom task's labels and text fields, from its section alone (no file is read)."""
    spec = check_task_spec(dict(spec))
    if "train" not in spec:
        raise TaskSpecError(f"task {spec['name']!r} is built in; its shape comes from its files")
    names, _ = _labels(spec)
    fields = tuple(_fields(spec))
    choices = tuple(f"choice{i}" for i in range(1, _n_choices(spec["choices"]) + 1)) if spec.get("choices") else ()
    return names, fields + tuple(f for f in choices if f not in fields)


def default_choice_verbalizer(spec: Mapping) -> dict[str, list[str]] | None:
    """A multiple-choice task's verbalizer: label i is the text of field ``choice{i+1}``; None for others."""
    if not isinstance(spec, Mapping) or spec.get("choices") is None:
        return None
    names, _ = _labels(dict(spec))
    return {name: [f"{{choice{i}}}"] for i, name in enumerate(names, 1)}


def _carve(examples: list[Example], split: dict, where: str) -> tuple[list[Example], list[Example]]:
    """A stratified, seeded test set out of one file's examples (scikit-learn's train_test_split)."""
    from sklearn.model_selection import train_test_split

    test = split["test"]
    labels = [e.label for e in examples]
    try:
        train, held = train_test_split(examples, test_size=test, random_state=split.get("seed", 0),
                                       shuffle=True, stratify=labels)
    except ValueError as err:
        raise DataError(f"{where}: split {split!r} cannot carve a stratified test set from {len(examples)} "
                        f"examples ({err})") from None
    return list(train), list(held)


def _path(value, base: Path | None) -> Path:
    p = Path(str(value)).expanduser()
    return p if p.exists() or base is None or not (base / str(value)).exists() else base / str(value)


def load_task_spec(spec: Any, base: Path | None = None) -> Task:
    """A built-in task, or a custom one from its files (paths relative to ``base`` when not found as given)."""
    spec = check_task_spec(spec)
    if "train" not in spec:
        data_dir = spec.get("data_dir")
        return load_task(spec["name"], data_dir=_path(data_dir, base) if data_dir else None)
    names, label_map = _labels(spec)
    fields, choices = _fields(spec), spec.get("choices")
    column = choices["column"] if isinstance(choices, dict) else choices
    n_choices = _n_choices(choices) if choices is not None else None

    def load(key: str) -> list[Example]:
        return load_examples(_path(spec[key], base), fields, spec.get("label_column", "label"), label_map,
                             spec.get("format"), header=spec.get("header", True), labels=names,
                             choices=column, n_choices=n_choices)

    train = load("train")
    dev = load("dev") if spec.get("dev") else None
    train, test = _carve(train, spec["split"], str(spec["train"])) if "split" in spec else (train, load("test"))
    choice_fields = tuple(f"choice{i}" for i in range(1, (n_choices or 0) + 1))
    return Task(spec["name"], names, task_shape(spec)[1], train,
                test, dev=dev, fixed_split=spec.get("protocol") == "fixed", choices=choice_fields,
                choice_score=spec.get("choice_score", "sum"),
                description=f"your files: train {spec['train']}" + (f", dev {spec['dev']}" if dev else "")
                + (f", test {spec['test']}" if "test" in spec else f", test carved from train ({spec['split']})"))
