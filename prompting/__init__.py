"""prompting: which way of prompting a language model works best with a handful of examples.

    from prompting import Experiment, LanguageModel, MethodSpec, Protocol, load_task

    lm = LanguageModel.load("smollm2-135m")
    experiment = Experiment(lm, load_task("mr"), [MethodSpec("manual", train=False)],
                            [("Review: {text_a}\\nSentiment: {mask}", {"0": ["negative"], "1": ["positive"]})],
                            Protocol(k=16, data_seeds=(13, 21)), output_dir="runs/mr")
    records = experiment.run()

The names below load on first use, so that ``prompting --help`` or a config check does not wait
for torch and transformers to import.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    # models and data
    "LanguageModel": "lm.model", "ModelNotAvailableError": "lm.model", "Example": "core.data", "Task": "core.data",
    "DataError": "core.data", "load_task": "core.data", "load_examples": "core.data", "sample_kshot": "core.data",
    "compute_metrics": "core.data",
    # prompts
    "Template": "core.template", "TemplateError": "core.template", "Verbalizer": "core.verbalizer",
    "VerbalizerError": "core.verbalizer", "PromptMethod": "methods", "build_method": "methods",
    "TrainConfig": "core.settings",
    # experiments
    "Experiment": "experiment.harness", "MethodSpec": "core.settings", "Protocol": "core.settings",
    "load_config": "config.experiment", "load_configs": "config.experiment", "ConfigError": "config.experiment",
    "build_experiments": "experiment.harness", "write_report": "reporting.report", "load_results": "reporting.frame",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
