"""A config's ``task:`` section as typed sections: a built-in task by name, a task of your own files, or
LAMA fact probing (see :mod:`prompting.tasks.spec` for what each key means).

    task: sst2                                        # a built-in task by name
    task: {name: sst2, data_dir: ../shared/data/sst2}
    task: {name: trec, train: trec.tsv, test: test.tsv, header: false, label_column: 0, text_columns: [1],
           labels: {0: ABBR, 1: DESC}}
    task: {name: sst2, hf: nyu-mll/glue, subset: sst2, test: validation, fields: {text_a: sentence},
           labels: {0: negative, 1: positive}}           # a dataset in the local Hugging Face cache
    task: {name: lama, data_dir: ../shared/data/lama, relations: [P101, P103]}

Types and the rules across keys are checked here, before any file is read; errors keep the words
of the checks they replace. Imports no torch.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import ConfigDict, Discriminator, Field, Tag, model_validator

from prompting.core.data import DATASETS_FORMATS, TASKS, TEXT_FORMATS
from prompting.core.schema import Problem, Says, Section, Where
from prompting.tasks.textspec import GenerationTask, is_generation

__all__ = ["TaskSection", "BuiltinTask", "CustomTask", "LamaTask", "TASK_KEYS", "PROTOCOLS", "CHOICE_SCORES",
           "LAMA_PROTOCOLS", "n_choices"]

PROTOCOLS = ("kshot", "fixed")
CHOICE_SCORES = ("sum", "mean")
LAMA_PROTOCOLS = ("candidates", "vocab")  # rank a relation's candidate objects, or the whole vocabulary

_COLUMN = ("{path}: {value!r} is not a column; give a column name (JSON: a.b for a nested field) or a position in "
           "a csv / tsv row, 0 first")
Column = Annotated[Union[Annotated[str, Field(min_length=1)], Annotated[int, Field(ge=0)]], Says(_COLUMN)]
Label = Union[str, int, bool]


def _is_column(value) -> bool:
    return (isinstance(value, str) and bool(value)) or (type(value) is int and value >= 0)


def _fields_message(section: Where, here: Where, key, value, error) -> str:
    """What is wrong with ``fields``, as its checks have always said it."""
    if not isinstance(value, dict) or not value:
        return (f"{here.path}: {value!r} is not valid; map template fields to columns, e.g. {{text_a: sentence}} "
                "or {premise: 1}")
    for name, source in value.items():
        if not isinstance(name, str) or not name.isidentifier():
            return f"{here.path}: {name!r} is not a field name; use letters, digits and _"
        if isinstance(source, dict):
            if set(source) != {"column", "map"} or not isinstance(source["map"], dict):
                return f"{here.path}.{name}: {source!r} is not valid; give a column, or {{column: C, map: {{value: words}}}}"
            source, name = source["column"], f"{name}.column"
        if not _is_column(source):
            return _COLUMN.replace("{path}", f"{here.path}.{name}").replace("{value!r}", repr(source))
    return f"{here.path}: {value!r} is not valid"


def _labels_message(section: Where, here: Where, key, value, error) -> str:
    return f"{here.path}: {value!r} is not valid; give a list of names or a map {{id: name}}"


def _split_message(section: Where, here: Where, key, value, error) -> str:
    if not isinstance(value, dict) or "test" not in value or set(value) - {"test", "seed"}:
        return (f"{here.path}: {value!r} is not valid; give {{test: 0.2, seed: 0}} (test: a share between 0 and 1, "
                "or a number of examples)")
    if "seed" in error["loc"]:
        return f"{here.path}.seed: {value['seed']!r} is not valid; give an integer"
    return (f"{here.path}.test: {value['test']!r} is not valid; give a share between 0 and 1 (0.2) or a number of "
            "examples >= 1")


def _choices_message(section: Where, here: Where, key, value, error) -> str:
    if isinstance(value, dict):
        if set(value) != {"column", "count"} or type(value["count"]) is not int or value["count"] < 2:
            return (f"{here.path}: {value!r} is not valid; give {{column: C, count: N}} with N >= 2 for a column "
                    "that holds a list")
        return _COLUMN.replace("{path}", f"{here.path}.column").replace("{value!r}", repr(value["column"]))
    if isinstance(value, list) and len(value) >= 2:
        bad = next(i for i, c in enumerate(value + [None]) if not _is_column(c))
        if bad < len(value):
            return _COLUMN.replace("{path}", f"{here.path}[{bad}]").replace("{value!r}", repr(value[bad]))
    return (f"{here.path}: {value!r} is not valid; give the choice columns, e.g. [choice1, choice2], or "
            "{column: endings, count: 4}")


class FieldMap(Section):
    """A field whose text is a column's value mapped to words: ``{column: C, map: {value: words}}``."""

    column: Column
    map: dict[Label, Any]


class Split(Section):
    """A test set carved out of train: a share (0.2) or a number of examples, stratified, seeded."""

    test: Union[Annotated[int, Field(ge=1)], Annotated[float, Field(gt=0, lt=1)]]
    seed: int = 0


class ChoiceColumn(Section):
    """Choices held as a list in one column."""

    column: Column
    count: Annotated[int, Field(ge=2)]


_CHOICE = "{path}: {value!r} is not valid; choose one of "
#: a task's unlabelled examples (PET's distillation and iPET): a number drawn from train, or a file
Unlabeled = Annotated[Optional[Union[Annotated[int, Field(ge=1)], Annotated[str, Field(min_length=1)]]],
                      Says("{path}: {value!r} is not valid; give a number of examples >= 1 (drawn from the training "
                           "file) or a file of unlabelled examples")]


class CustomTask(Section):
    """A task from files of your own (or a saved or cached dataset's splits): columns, labels, split and protocol."""

    # for editors: files (train) or a dataset's splits (hf, dataset), which a built-in task's section has not
    model_config = ConfigDict(**Section.model_config, json_schema_extra={
        "anyOf": [{"required": ["train"]}, {"required": ["hf"]}, {"required": ["dataset"]}]})

    name: Annotated[str, Says("{path}: {value!r} is not valid; give the task a name")]
    """the task's name in results"""
    data_dir: Annotated[Optional[str], Says("{path}: {value!r} is not valid; give a folder")] = None
    """a folder (not used by a task of your own files)"""
    train: Annotated[Optional[str], Says("{path}: {value!r} is not valid; give a file")] = None
    """the training file: tsv, csv or jsonl (parquet, arrow, a folder saved with save_to_disk: with the datasets package); paths relative to the config. With hf or dataset: a split's name (default train)"""
    dev: Annotated[Optional[str], Says("{path}: {value!r} is not valid; give a file")] = None
    """the pool dev examples are drawn from (K per class), or the dev set as given with protocol: fixed"""
    test: Annotated[Optional[str], Says("{path}: {value!r} is not valid; give a file")] = None
    """the test file (or split: to carve one out of train)"""
    hf: Annotated[Optional[str], Field(min_length=1), Says("{path}: {value!r} is not valid; give a dataset's id, "
                                                            "e.g. nyu-mll/glue")] = None
    """a dataset in the local Hugging Face cache, by its id (as datasets.load_dataset takes it); train, dev and test name its splits; read offline, never downloaded"""
    subset: Annotated[Optional[str], Field(min_length=1), Says("{path}: {value!r} is not valid; give the name of the "
                                                                "dataset's subset, e.g. sst2")] = None
    """the hf dataset's subset (its configuration), e.g. sst2"""
    dataset: Annotated[Optional[str], Says("{path}: {value!r} is not valid; give a folder")] = None
    """a folder saved with datasets' save_to_disk (a DatasetDict); train, dev and test name its splits"""
    fields: Annotated[Optional[dict[Annotated[str, Field(pattern=r"^[A-Za-z_]\w*$")], Union[Column, FieldMap]]],
                      Field(min_length=1), Says(_fields_message)] = None
    """template field -> column (a name; a.b in JSON; a position without a header), or {column, map}"""
    text_columns: Annotated[Optional[list[Column]], Field(min_length=1),
                            Says("{path}: {value!r} is not valid; give a list of columns, e.g. [1]", deep=False)] = None
    """the columns of {text_a}, {text_b}, ... (instead of fields)"""
    label_column: Column = "label"
    """the column of the label"""
    labels: Annotated[Optional[Union[list[Label], dict[Label, Label]]], Says(_labels_message)] = None
    """the labels the file holds, or a map {value in the file: label}"""
    label_map: Annotated[Optional[dict[Label, Label]],
                         Says("{path}: {value!r} is not valid; give a map {value in the file: label}")] = None
    """the file's values -> labels (with labels given as a list)"""
    format: Annotated[Optional[Literal[TEXT_FORMATS + DATASETS_FORMATS]],
                      Says(_CHOICE + ", ".join(TEXT_FORMATS + DATASETS_FORMATS))] = None
    """the files' format (default: from the file name)"""
    header: Annotated[bool, Says("{path}: {value!r} is not valid; use true or false")] = True
    """false: no header row (columns are positions, 0 first)"""
    split: Annotated[Optional[Split], Says(_split_message)] = None
    """no test file: a stratified, seeded test set carved out of train ({test: 0.2, seed: 0})"""
    protocol: Annotated[Literal[PROTOCOLS], Says(_CHOICE + ", ".join(PROTOCOLS))] = PROTOCOLS[0]
    """kshot: K per class sampled per data seed; fixed: the train and dev files as given"""
    choices: Annotated[Optional[Union[Annotated[list[Column], Field(min_length=2)], ChoiceColumn]],
                       Says(_choices_message)] = None
    """multiple choice: the choice columns, or {column, count} for a column holding a list"""
    choice_score: Annotated[Literal[CHOICE_SCORES], Says(_CHOICE + ", ".join(CHOICE_SCORES))] = CHOICE_SCORES[0]
    """a choice's score: the sum of its tokens' log-probabilities, or their mean"""
    unlabeled: Unlabeled = None
    """unlabelled examples for distill and ipet: N drawn (per data seed) from train without the K-shot split and its dev, or a file with the task's columns and no label"""

    @model_validator(mode="after")
    def _fits(self):
        given = self.model_fields_set
        self._source_fits()
        if self.protocol == "fixed" and self.dev is None:
            raise Problem("task.protocol: fixed uses the train and dev files as given; give a dev file (or leave "
                          "protocol out for K-shot sampling)", at=None)
        if self.fields is not None and self.text_columns is not None:
            raise Problem("task: give fields or text_columns, not both (text_columns: [1, 2] is fields: "
                          "{text_a: 1, text_b: 2})", at=None)
        self._labels_fit()
        if self.split is None and self.test is None:
            raise Problem(f"task {self.name!r}: a custom task needs 'test' (a file), or split: {{test: 0.2, seed: 0}} "
                          "to carve a test set out of train", at=None)
        if self.split is not None and self.test is not None:
            raise Problem("task: give a test file or split, not both", at=None)
        if self.choices is None and "choice_score" in given:
            raise Problem("task.choice_score is for a multiple-choice task; give choices too", at=None)
        if self.labels is not None and self.choices is not None and len(self.labels) != n_choices(self.choices):
            raise Problem(f"task.labels: {len(self.labels)} labels for {n_choices(self.choices)} choices; a "
                          "multiple-choice task's labels name its choices in order", at=None)
        if not self.header and "label_column" not in given:
            raise Problem("task: header: false needs label_column, the position of the label (e.g. 0)", at=None)
        if not self.header and self.fields is None and self.text_columns is None:
            raise Problem("task: header: false needs text_columns (e.g. [1]) or fields (e.g. {text_a: 1})", at=None)
        return self

    def _source_fits(self) -> None:
        """Files, or the splits of one dataset (``hf``, or ``dataset``: a saved DatasetDict)."""
        if self.hf is not None and self.dataset is not None:
            raise Problem("task: give hf (a dataset in the Hugging Face cache) or dataset (a folder saved with "
                          "save_to_disk), not both", at=None)
        if self.subset is not None and self.hf is None:
            raise Problem("task.subset names a subset of an hf dataset; give hf too (e.g. hf: nyu-mll/glue, "
                          "subset: sst2)", at=None)
        source = "hf" if self.hf is not None else "dataset" if self.dataset is not None else None
        if source is None and self.train is None:
            raise Problem(f"task {self.name!r}: a custom task needs 'train' (a file), or hf / dataset with its "
                          "splits", at=None)
        for key in ("format", "header"):
            if source is not None and key in self.model_fields_set:
                raise Problem(f"task.{key} is for files; the splits of task.{source} are read as they are", at=None)

    def split_name(self, key: str) -> str | None:
        """What ``train`` / ``dev`` / ``test`` name: a file, or with hf / dataset a split (train: ``train``
        when not given)."""
        value = getattr(self, key)
        from_dataset = self.hf is not None or self.dataset is not None
        return "train" if value is None and key == "train" and from_dataset else value

    def _labels_fit(self) -> None:
        if self.labels is None:
            if self.choices is None:
                raise Problem(f"task {self.name!r}: a custom task needs 'labels' (a list of the labels the file "
                              "holds, or a map {id in the file: name})", at=None)
            return
        if isinstance(self.labels, dict) and self.label_map is not None:
            raise Problem("task: labels given as a map already map the file's values; drop label_map", at=None)
        names = [str(v).lower() if isinstance(v, bool) else str(v)
                 for v in (self.labels.values() if isinstance(self.labels, dict) else self.labels)]
        if len(names) < 2 or len(set(names)) != len(names):
            raise Problem(f"task.labels: {self.labels!r} is not valid; give at least two labels, each once", at=None)


def n_choices(choices) -> int:
    """How many choices a ``choices:`` value (a list of columns, or ``{column, count}``) gives."""
    if isinstance(choices, ChoiceColumn):
        return choices.count
    return choices["count"] if isinstance(choices, dict) else len(choices)


TASK_KEYS = CustomTask.keys()
_NOT_BUILT_IN = ("{value!r} is not built in (built in: " + ", ".join(TASKS) + "); for your own data give train "
                 "and test files with fields and labels")


class BuiltinTask(Section):
    """A built-in task, from its data folder."""

    name: Annotated[Literal[tuple(TASKS)], Says("{place}: " + _NOT_BUILT_IN)]
    """a built-in task"""
    data_dir: Annotated[Optional[str], Says("{path}: {value!r} is not valid; give a folder")] = None
    """the folder of the task's files (not needed for mr)"""
    unlabeled: Unlabeled = None
    """unlabelled examples for distill and ipet: N drawn (per data seed) from train without the K-shot split and its dev, or a file with the columns of the task's files and no label"""

    @classmethod
    def unknown_key(cls, at: Where, key, data) -> str:
        if key in TASK_KEYS:
            return (f"{at.place}: {key!r} describes files of your own; the built-in task {data.get('name')!r} takes "
                    f"only {', '.join(cls.keys())} (or give train: FILE)")
        return f"{at.place}: unknown key {key!r}; allowed keys: {', '.join(TASK_KEYS)}"


class LamaTask(Section):
    """LAMA fact probing: relations of a T-REx folder, each with its own template unless one is given."""

    name: Literal["lama"]
    data_dir: Annotated[str, Says("{path}: {value!r} is not valid; give the folder with relations.tsv")]
    """the folder with relations.tsv and one folder per relation (relative to the config)"""
    relations: Annotated[list[str], Field(min_length=1),
                         Says("{place}: a lama task needs data_dir and relations (e.g. [P101, P103]); got "
                               "relations: {value!r}")]
    """the relations to probe, e.g. [P101, P103]"""
    template: Annotated[Optional[str], Says("{path}: {value!r} is not valid; give a template ([X] the subject, "
                                             "[Y] the object)")] = None
    """one template for every relation instead of each relation's own"""

    @classmethod
    def missing_key(cls, at: Where, key) -> str:
        return f"{at.place}: a lama task needs data_dir and relations (e.g. [P101, P103])"


def _task_kind(value) -> str | None:
    if isinstance(value, str):
        return "named"
    if isinstance(value, dict):
        if is_generation(value):
            return "generation"
        own = any(key in value for key in ("train", "hf", "dataset"))
        return "lama" if value.get("name") == "lama" else "custom" if own else "builtin"
    return None


#: a config's ``task:`` section (a built-in name alone is ``{name: ...}``)
TaskSection = Annotated[
    Union[Annotated[Literal[tuple(TASKS)], Tag("named"), Says("{path}: " + _NOT_BUILT_IN)],
          Annotated[BuiltinTask, Tag("builtin")], Annotated[CustomTask, Tag("custom")],
          Annotated[LamaTask, Tag("lama")], Annotated[GenerationTask, Tag("generation")]],
    Discriminator(_task_kind),
    Says(f"{{path}} must be a built-in name or a mapping with keys {', '.join(TASK_KEYS)}; got {{value!r}}", deep=False)]
