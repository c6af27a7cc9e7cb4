"""Generation tasks: inputs whose answer is a text the model writes, each with one or more references.

A file of (input, reference) pairs is read with the same loader as classification data, the target
column taking the label's place; pairs that share every input field are one input with all their
references (E2E has about eight per meaning representation), which a test scores at once
(multi-reference BLEU, as the E2E challenge does). Training uses pairs: ``k`` of them, drawn with a
data seed; the dev pairs are drawn from other inputs than the training pairs', so dev measures how the
prompt does on inputs it did not see.

    >>> task = load_text_task("e2e", data_dir="data/e2e")            # doctest: +SKIP
    >>> train, dev = sample_pairs(task.train, k=100, seed=13)       # doctest: +SKIP
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from prompting.core.data import Column, DataError, Example, load_examples

__all__ = ["TextExample", "TextTask", "TEXT_TASKS", "load_text_examples", "group_references", "sample_pairs",
           "load_text_task"]


@dataclass(frozen=True)
class TextExample(Example):
    """An input (its fields) and the texts that answer it well: one for a training pair, all of them for a
    test input."""

    references: tuple[str, ...] = ()

    @property
    def target(self) -> str:
        """The text a training pair teaches (its first reference)."""
        return self.references[0]


@dataclass
class TextTask:
    """A generation task: its input fields, the training pool of pairs, an optional dev pool and the test
    inputs with all their references."""

    name: str
    text_fields: tuple[str, ...]
    train: list[TextExample]
    test: list[TextExample]
    dev: list[TextExample] | None = None
    description: str = ""
    fixed_split: bool = False  # ``protocol: fixed``: train and dev as given, not sampled
    target_column: str = "target"
    references_per_input: float = field(default=1.0, init=False)

    def __post_init__(self):
        if self.test:
            self.references_per_input = sum(len(e.references) for e in self.test) / len(self.test)


def load_text_examples(path: str | Path, fields: Mapping[str, Column] | None, target_column: Column,
                       format: str | None = None, header: bool = True) -> list[TextExample]:
    """(input, reference) pairs from a tsv / csv / jsonl file: ``fields`` maps template fields to columns,
    ``target_column`` holds the reference text. A row whose reference is empty is an error naming it."""
    rows = load_examples(path, fields, label_column=target_column, format=format, header=header)
    pairs = []
    for n, row in enumerate(rows):
        if not row.label:
            raise DataError(f"{path}: row {n} has no text in the target column {target_column!r}")
        pairs.append(TextExample(row.fields, None, row.idx, (row.label,)))
    return pairs


def group_references(pairs: Sequence[TextExample]) -> list[TextExample]:
    """One input per distinct set of fields, with the references of all its pairs (in file order)."""
    grouped: dict[tuple, list] = {}
    for pair in pairs:
        key = tuple(sorted(pair.fields.items()))
        grouped.setdefault(key, [pair, []])[1].extend(pair.references)
    return [TextExample(first.fields, None, i, tuple(refs)) for i, (first, refs) in enumerate(grouped.values())]


def _inputs(pairs: Sequence[TextExample]) -> dict[tuple, list[int]]:
    found: dict[tuple, list[int]] = {}
    for i, pair in enumerate(pairs):
        found.setdefault(tuple(sorted(pair.fields.items())), []).append(i)
    return found


def sample_pairs(pool: Sequence[TextExample], k: int, seed: int, with_dev: bool = True
                 ) -> tuple[list[TextExample], list[TextExample]]:
    """``k`` training pairs drawn at random (seeded) from the pool and, with ``with_dev``, ``k`` dev pairs
    drawn from the pairs of the other inputs."""
    if k < 1:
        raise DataError(f"k={k} is not valid; a generation task draws k >= 1 training examples")
    if len(pool) < k:
        raise DataError(f"the pool holds {len(pool)} (input, reference) pairs; k={k} needs at least {k}")
    rng = random.Random(seed)
    train_rows = rng.sample(range(len(pool)), k)
    if not with_dev:
        return [pool[i] for i in train_rows], []
    taken = {tuple(sorted(pool[i].fields.items())) for i in train_rows}
    rest = [i for key, rows in _inputs(pool).items() if key not in taken for i in rows]
    if len(rest) < k:
        raise DataError(f"after {k} training pairs, the pairs of the other inputs number {len(rest)}, fewer than "
                        f"the {k} dev pairs K = {k} needs; lower k (or give a dev file)")
    return [pool[i] for i in train_rows], [pool[i] for i in rng.sample(rest, k)]


def _e2e(data_dir=None, **_) -> TextTask:
    """E2E NLG (Novikova et al. 2017): ``mr`` (a meaning representation) -> ``ref`` (a description);
    ``dev.csv`` is the pool of training and dev pairs, ``test.csv`` the test inputs with all references."""
    if data_dir is None:
        raise DataError("task 'e2e' needs data_dir, the folder with dev.csv and test.csv")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"task 'e2e': data_dir {str(root)!r} is not a folder")
    fields = {"mr": "mr"}
    pool = load_text_examples(root / "dev.csv", fields, "ref")
    test = group_references(load_text_examples(root / "test.csv", fields, "ref"))
    return TextTask("e2e", ("mr",), pool, test, target_column="ref",
                    description=f"E2E NLG: {len(pool)} (mr, ref) pairs of the official dev set as the pool of "
                                f"training and dev pairs; the official test set's {len(test)} inputs, each with "
                                "all its references")


#: built-in generation tasks
TEXT_TASKS: dict[str, Callable[..., TextTask]] = {"e2e": _e2e}


def load_text_task(name: str, data_dir: str | Path | None = None) -> TextTask:
    """A built-in generation task by name."""
    if name not in TEXT_TASKS:
        raise DataError(f"generation task {name!r} is not built in; built in: {', '.join(TEXT_TASKS)} (or give "
                        "type: generation with train, test and target_column)")
    return TEXT_TASKS[name](data_dir=data_dir)
