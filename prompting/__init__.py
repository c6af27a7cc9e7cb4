"""prompting: which way of prompting a language model works best with a handful of examples."""

import importlib

__version__ = "0.1.0"

# Names are imported on first use: ``import prompting.cli`` (the command line's entry point) then
# loads no torch, so the command can answer Ctrl-C, and --help, before the heavy imports start.
_EXPORTS = {
    "LanguageModel": "backbone", "ModelNotAvailableError": "backbone",
    "DataError": "data", "Example": "data", "Task": "data", "compute_metrics": "data",
    "load_examples": "data", "load_task": "data", "sample_kshot": "data",
    "PromptMethod": "methods",
    "Template": "template", "TemplateError": "template",
    "Verbalizer": "verbalizer", "VerbalizerError": "verbalizer",
}

__all__ = [
    "LanguageModel", "ModelNotAvailableError", "Example", "Task", "DataError", "load_task",
    "load_examples", "sample_kshot", "compute_metrics", "Template", "TemplateError", "Verbalizer",
    "VerbalizerError", "PromptMethod",
]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'prompting' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
