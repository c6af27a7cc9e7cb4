"""prompting: which way of prompting a language model works best with a handful of examples.

The names below load on first use, so that ``prompting --help`` or a config check does not wait
for torch and transformers to import.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "LanguageModel": "lm.model", "ModelNotAvailableError": "lm.model", "Example": "core.data", "Task": "core.data",
    "DataError": "core.data", "load_task": "core.data", "load_examples": "core.data", "sample_kshot": "core.data",
    "compute_metrics": "core.data", "Template": "core.template", "TemplateError": "core.template",
    "Verbalizer": "core.verbalizer", "VerbalizerError": "core.verbalizer", "PromptMethod": "methods",
    "TrainConfig": "core.settings",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
