"""A generation task in a config's ``task:`` section: the built-in ``e2e``, or files of your own with
``type: generation`` and the column that holds the target text; and how its outputs are decoded.

```yaml
task: {name: e2e, data_dir: ../shared/data/e2e}
task:
  name: headlines
  type: generation
  train: data/train.jsonl       # (input, reference) pairs: tsv / csv / jsonl
  test: data/test.jsonl         # pairs that share an input are one test input with all its references
  fields: {text: article}       # template field -> column ({text_a} from text_columns: [..] likewise)
  target_column: headline
  decoding: {num_beams: 4, max_new_tokens: 32}
```

``k`` (``fewshot: k``) is the number of training pairs per data seed; dev is as many pairs of other
inputs, or drawn from a ``dev`` file; ``protocol: fixed`` uses the train and dev files as given.
Everything here is checked before a file is read. Imports no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional, Union

from pydantic import ConfigDict, Field, model_validator

from prompting.core.data import TEXT_FORMATS
from prompting.core.schema import Problem, Says, Section, Where, check
from prompting.core.texts import TEXT_TASKS, TextTask, group_references, load_text_examples, load_text_task

__all__ = ["Decode", "GenerationTask", "is_generation", "load_generation_task", "decoding_of"]

_COLUMN = ("{path}: {value!r} is not a column; give a column name (JSON: a.b for a nested field) or a position in "
           "a csv / tsv row, 0 first")
Column = Annotated[Union[Annotated[str, Field(min_length=1)], Annotated[int, Field(ge=0)]], Says(_COLUMN)]


class Decode(Section):
    """How test inputs are decoded (transformers' ``generate``); a row stops at end of text or a newline."""

    num_beams: Annotated[int, Field(ge=1), Says("{path}: {value!r} is not valid; give beams >= 1 (1: greedy)")] = 1
    """beams of beam search (1: greedy)"""
    max_new_tokens: Annotated[int, Field(ge=1), Says("{path}: {value!r} is not valid; give an integer >= 1")] = 64
    """the most tokens an output may have"""


def _either_built_in_or_typed(schema: dict) -> None:
    """In the JSON Schema, a generation task is a built-in one by name or says ``type: generation`` (as
    :func:`is_generation` decides), so that an editor does not take a classification task for one."""
    schema["anyOf"] = [{"required": ["type"]}, {"properties": {"name": {"enum": list(TEXT_TASKS)}}}]


class GenerationTask(Section):
    """A generation task: the model writes its answer at ``{mask}``; targets come from a column."""

    model_config = ConfigDict(**Section.model_config, json_schema_extra=_either_built_in_or_typed)

    name: Annotated[str, Says("{path}: {value!r} is not valid; give the task a name")]
    """the task's name in results (e2e: the built-in task)"""
    type: Annotated[Optional[Literal["generation"]],
                    Says("{path}: {value!r} is not valid; a task of your own files is type: generation, or "
                         "leave type out for a classification task")] = None
    """generation (needed for files of your own)"""
    data_dir: Annotated[Optional[str], Says("{path}: {value!r} is not valid; give a folder")] = None
    """the built-in task's folder (e2e: dev.csv and test.csv)"""
    train: Annotated[Optional[str], Says("{path}: {value!r} is not valid; give a file")] = None
    """the pool of training (input, reference) pairs: tsv, csv or jsonl"""
    dev: Annotated[Optional[str], Says("{path}: {value!r} is not valid; give a file")] = None
    """the pool dev pairs are drawn from (default: train's pairs of other inputs)"""
    test: Annotated[Optional[str], Says("{path}: {value!r} is not valid; give a file")] = None
    """the test pairs; pairs that share their input are one input with several references"""
    fields: Annotated[Optional[dict[Annotated[str, Field(pattern=r"^[A-Za-z_]\w*$")], Column]], Field(min_length=1),
                      Says("{path}: {value!r} is not valid; map template fields to columns, e.g. {mr: mr}")] = None
    """template field -> column"""
    text_columns: Annotated[Optional[list[Column]], Field(min_length=1),
                            Says("{path}: {value!r} is not valid; give a list of columns, e.g. [0]", deep=False)] = None
    """the columns of {text_a}, {text_b}, ... (instead of fields)"""
    target_column: Optional[Column] = None
    """the column of the target text"""
    format: Annotated[Optional[Literal[TEXT_FORMATS]], Says("{path}: {value!r} is not valid; choose one of "
                                                             + ", ".join(TEXT_FORMATS))] = None
    """the files' format (default: from the file name)"""
    header: Annotated[bool, Says("{path}: {value!r} is not valid; use true or false")] = True
    """false: no header row (columns are positions, 0 first)"""
    protocol: Annotated[Literal["kshot", "fixed"], Says("{path}: {value!r} is not valid; choose kshot or fixed")] \
        = "kshot"
    """kshot: k pairs sampled per data seed; fixed: the train and dev files as given"""
    decoding: Decode = Field(default_factory=Decode)
    """how test inputs are decoded: {num_beams: 1, max_new_tokens: 64}"""

    @model_validator(mode="after")
    def _fits(self):
        if self.train is None:  # built in
            if self.name not in TEXT_TASKS:
                raise Problem(f"task {self.name!r}: a generation task of your own files needs train, test and "
                              f"target_column (built in: {', '.join(TEXT_TASKS)})", at=None)
            extra = [k for k in ("dev", "test", "fields", "text_columns", "target_column")
                     if k in self.model_fields_set]
            if extra:
                raise Problem(f"task: {extra[0]!r} describes files of your own; the built-in task {self.name!r} "
                              "takes name, data_dir and decoding", at=None)
            return self
        missing = [k for k in ("test", "target_column") if getattr(self, k) is None]
        if missing:
            raise Problem(f"task {self.name!r}: a generation task of your own files needs {' and '.join(missing)}",
                          at=None)
        if self.fields is not None and self.text_columns is not None:
            raise Problem("task: give fields or text_columns, not both", at=None)
        if self.protocol == "fixed" and self.dev is None:
            raise Problem("task.protocol: fixed uses the train and dev files as given; give a dev file", at=None)
        return self


def is_generation(task) -> bool:
    """Whether a config's ``task:`` value is a generation task (``type: generation`` or a built-in one)."""
    return isinstance(task, dict) and (task.get("type") == "generation" or
                                       (task.get("name") in TEXT_TASKS and "train" not in task))


def _path(value, base: Path | None) -> Path:
    p = Path(str(value)).expanduser()
    return p if p.exists() or base is None or not (base / str(value)).exists() else base / str(value)


def decoding_of(task: dict):
    """The section's decoding settings as :class:`prompting.lm.generating.Decoding` arguments."""
    section = check(GenerationTask, task, Where("task", "task"), ValueError)
    return section.decoding.model_dump()


def load_generation_task(task: dict, base: Path | None = None, error=ValueError) -> TextTask:
    """The task a ``task:`` section describes (built in, or your files; paths relative to ``base``)."""
    section: GenerationTask = check(GenerationTask, task, Where("task", "task"), error)
    if section.train is None:
        return load_text_task(section.name, _path(section.data_dir, base) if section.data_dir else None)
    fields = ({f"text_{chr(ord('a') + i)}": c for i, c in enumerate(section.text_columns)} if section.text_columns
              else dict(section.fields or {"text_a": "text_a"}))

    def load(key: str):
        return load_text_examples(_path(getattr(section, key), base), fields, section.target_column, section.format,
                                  section.header)

    dev = load("dev") if section.dev else None
    return TextTask(section.name, tuple(fields), load("train"), group_references(load("test")), dev=dev,
                    fixed_split=section.protocol == "fixed", target_column=str(section.target_column),
                    description=f"your files: train {section.train}" + (f", dev {section.dev}" if dev else "")
                    + f", test {section.test}")
