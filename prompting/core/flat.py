"""A run's record (or its settings) as one level of named values: the columns of a data frame, the
hyper-parameters TensorBoard and MLflow compare runs by.

Nested mappings become names joined by ``_``, as ``runs.csv`` names them (``test: {accuracy: ...}`` is
``test_accuracy``, ``train_config: {lr: ...}`` is ``train_config_lr``); a verbalizer is its words as the
report shows them (``negative / positive``); empty mappings give no name.

>>> flatten({"test": {"accuracy": 0.8}, "params": {}, "verbalizer": {"0": ["bad"], "1": ["good", "fine"]}})
{'test_accuracy': 0.8, 'verbalizer': 'bad / good,fine'}
"""

from __future__ import annotations

from typing import Mapping

__all__ = ["flatten", "verbalizer_words", "SEPARATOR"]

SEPARATOR = "_"


def verbalizer_words(verbalizer) -> str:
    """A verbalizer's words, label by label as recorded (``negative / positive``); text as it is."""
    if isinstance(verbalizer, Mapping):
        return " / ".join(",".join(words) if isinstance(words, (list, tuple)) else str(words)
                          for words in verbalizer.values())
    return str(verbalizer)


def flatten(record: Mapping, prefix: str = "") -> dict:
    """``record`` with its nested mappings spread into names joined by ``_`` (see the module docstring)."""
    out = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if key == "verbalizer" and value is not None:
            out[name] = verbalizer_words(value)
        elif isinstance(value, Mapping):
            out.update(flatten(value, f"{name}{SEPARATOR}"))
        else:
            out[name] = value
    return out
