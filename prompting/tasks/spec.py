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

With the ``datasets`` package, a file may also be a folder saved with ``save_to_disk``; ``dataset:
FOLDER`` (a DatasetDict saved so) or ``hf: ID`` with ``subset:`` (a dataset in the local Hugging Face
cache, read offline) make ``train`` / ``dev`` / ``test`` name splits instead of files (train: ``train``
when not given). The columns, labels and choices are described as a file's.

A multiple-choice task names the columns of its choices (``choices: [choice1, choice2]``, or one
column holding a list: ``choices: {column: endings, count: 4}``); they become the fields ``choice1`` ...
``choiceN``, its labels name the choices in order (``0`` ... ``N-1`` unless ``labels`` says
otherwise), and each choice is scored by the LM's likelihood of its text at ``{mask}``
(``choice_score: sum``, or ``mean`` per token). Everything here is checked before a file is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from prompting.core.data import (BUILTIN_FIELDS, DataError, Example, HubSplit, Task, load_examples, load_task,
                                 saved_split)
from prompting.core.schema import Where, check
from prompting.tasks.schema import CHOICE_SCORES, PROTOCOLS, TASK_KEYS, CustomTask, TaskSection, n_choices

__all__ = ["TaskSpecError", "TASK_KEYS", "PROTOCOLS", "CHOICE_SCORES", "check_task_spec", "load_task_spec", "is_custom",
           "default_choice_verbalizer", "task_shape"]


class TaskSpecError(ValueError):
    """A ``task:`` section that does not fit the schema (a config reports it as a ConfigError)."""


def checked_task(task: Any):
    """A ``task:`` section validated (see :mod:`prompting.tasks.schema`): a built-in name, or its section."""
    return check(TaskSection, task, Where("task", "task"), TaskSpecError)


def check_task_spec(task: Any) -> dict:
    """A classification task's ``task:`` section, checked (a built-in name alone is ``{name: ...}``); no
    file is read. A lama section is fact probing, which this is not."""
    checked_task(task)
    spec = {"name": task} if isinstance(task, str) else dict(task)
    if spec["name"] == "lama" and not is_custom(spec):
        raise TaskSpecError("task: lama is fact probing, not a classification task: run it with a lama config "
                            "(prompting run) or prompting eval --task lama --relation ID")
    return spec


def is_custom(spec: Mapping) -> bool:
    """Whether a checked section describes data of your own (files, a saved dataset, a cached hub dataset)."""
    return any(key in spec for key in ("train", "hf", "dataset"))


def _label_name(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _labels(spec: dict) -> tuple[tuple[str, ...], dict | None]:
    """The task's label names, and the map from the file's values to them (None: the file has the names)."""
    labels = spec.get("labels")
    if labels is None:  # a multiple-choice task: its choices by position
        return tuple(str(i) for i in range(n_choices(spec["choices"]))), spec.get("label_map")
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
    if not is_custom(spec):
        raise TaskSpecError(f"task {spec['name']!r} is built in; its shape comes from its files")
    names, _ = _labels(spec)
    fields = tuple(_fields(spec))
    choices = tuple(f"choice{i}" for i in range(1, n_choices(spec["choices"]) + 1)) if spec.get("choices") else ()
    return names, fields + tuple(f for f in choices if f not in fields)


def default_choice_verbalizer(spec: Mapping) -> dict[str, list[str]] | None:
    """A multiple-choice task's verbalizer: label i is the text of field ``choice{i+1}``; None for others."""
    if not isinstance(spec, Mapping) or spec.get("choices") is None:
        return None
    names, _ = _labels(dict(spec))
    return {name: [f"{{choice{i}}}"] for i, name in enumerate(names, 1)}


def _carve(examples: list[Example], test, seed: int, where: str, shown) -> tuple[list[Example], list[Example]]:
    """A stratified, seeded test set out of one file's examples (scikit-learn's train_test_split)."""
    from sklearn.model_selection import train_test_split

    labels = [e.label for e in examples]
    try:
        train, held = train_test_split(examples, test_size=test, random_state=seed, shuffle=True, stratify=labels)
    except ValueError as err:
        raise DataError(f"{where}: split {shown!r} cannot carve a stratified test set from {len(examples)} "
                        f"examples ({err})") from None
    return list(train), list(held)


def _path(value, base: Path | None) -> Path:
    p = Path(str(value)).expanduser()
    return p if p.exists() or base is None or not (base / str(value)).exists() else base / str(value)


def _unlabeled(spec: dict, base: Path | None, load) -> int | list[Example] | None:
    """The section's ``unlabeled``: a number (drawn per data seed from train), or the examples of its file
    (read by ``load``, as the task's files are, without a label column)."""
    value = spec.get("unlabeled")
    if value is None or isinstance(value, int):
        return value
    try:
        return [Example(e.fields, None, e.idx) for e in load(_path(value, base))]
    except DataError as err:
        raise DataError(f"task.unlabeled: {value!r}: {err}; give a file of unlabelled examples with the task's "
                        "columns, or a number of examples to draw from the training file") from None


def load_task_spec(spec: Any, base: Path | None = None) -> Task:
    """A built-in task, or a custom one from its files (paths relative to ``base`` when not found as given)."""
    spec = check_task_spec(spec)
    if not is_custom(spec):
        data_dir = spec.get("data_dir")
        task = load_task(spec["name"], data_dir=_path(data_dir, base) if data_dir else None)
        task.unlabeled = _unlabeled(spec, base, lambda path: load_examples(path, BUILTIN_FIELDS[spec["name"]], None))
        return task
    section: CustomTask = checked_task(spec)  # its defaults: label column, header, protocol, choice score
    names, label_map = _labels(spec)
    fields, choices = _fields(spec), spec.get("choices")
    column = choices["column"] if isinstance(choices, dict) else choices
    count = n_choices(choices) if choices is not None else None

    def load(key: str) -> list[Example]:
        return load_examples(_source(section, key, base), fields, section.label_column, label_map, section.format,
                             header=section.header, labels=names, choices=column, n_choices=count)

    train = load("train")
    dev = load("dev") if spec.get("dev") else None
    split = section.split
    shown = section.split_name("train")
    train, test = _carve(train, split.test, split.seed, shown, spec["split"]) if split else (train, load("test"))
    choice_fields = tuple(f"choice{i}" for i in range(1, (count or 0) + 1))
    unlabeled = _unlabeled(spec, base, lambda path: load_examples(path, fields, None, header=section.header,
                                                                  choices=column, n_choices=count))
    return Task(spec["name"], names, task_shape(spec)[1], train,
                test, dev=dev, fixed_split=section.protocol == "fixed", choices=choice_fields,
                choice_score=section.choice_score, unlabeled=unlabeled,
                description=_described(section, spec))


def _source(section: CustomTask, key: str, base: Path | None):
    """Where ``train`` / ``dev`` / ``test`` come from: a file (or saved dataset folder), a split of a saved
    DatasetDict, or a split of a dataset in the local Hugging Face cache."""
    name = section.split_name(key)
    if section.hf is not None:
        return HubSplit(section.hf, name, section.subset)
    if section.dataset is not None:
        return saved_split(_path(section.dataset, base), name)
    return _path(name, base)


def _described(section: CustomTask, spec: dict) -> str:
    split = f"test carved from train ({spec.get('split')})"
    if section.hf is None and section.dataset is None:
        return (f"your files: train {spec['train']}" + (f", dev {spec['dev']}" if section.dev else "")
                + (f", test {spec['test']}" if "test" in spec else f", {split}"))
    source = f"hf {section.hf}" + (f" ({section.subset})" if section.subset else "") if section.hf else \
        f"dataset {section.dataset}"
    splits = [f"{key} split {section.split_name(key)!r}" for key in ("train", "dev", "test") if section.split_name(key)]
    return f"{source}: " + ", ".join(splits) + ("" if section.test else f", {split}")
