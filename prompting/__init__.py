"""prompting: which way of prompting a language model works best with a handful of examples.

The names below load on first use, so that ``prompting --help`` or a config check does not wait
for torch and transformers to import.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "LanguageModel": "backbone", "ModelNotAvailableError": "backbone", "Example": "data", "Task": "data",
    "DataError": "data", "load_task": "data", "load_examples": "data", "sample_kshot": "data",
    "compute_metrics": "data", "Template": "template", "TemplateError": "template", "Verbalizer": "verbalizer",
    "VerbalizerError": "verbalizer", "PromptMethod": "methods", "TrainConfig": "settings",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
