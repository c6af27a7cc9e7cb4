"""One run: build the method, fit it when it trains, and let the task type score it.

:class:`RunExecutor` is the seam between the harness (which plans, claims and records runs) and the
work of one run; a caller that wants to watch or alter runs passes its own executor to
:class:`prompting.experiment.harness.Experiment`. With a tracker (:mod:`prompting.experiment.tracking`),
each run's curves are opened before it starts and the training loop reports its steps to them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from prompting.core.data import Example
from prompting.core.settings import Protocol, TrainConfig
from prompting.lm.model import LanguageModel
from prompting.methods import PromptMethod, build_method
from prompting.methods.evaluation import TrainResult
from prompting.methods.saving import save_prompt
from prompting.experiment.tracking import Tracker
from prompting.tasks.base import Fitted, PlannedRun, RunRecord, TaskType
from prompting.training.curves import reporting_to

__all__ = ["RunExecutor", "Executed"]


@dataclass
class Executed:
    """A finished run: its record and its saved label scores (or ranks)."""

    record: RunRecord
    predictions: dict


class RunExecutor:
    """Runs planned runs of one experiment on one LM (see the module docstring)."""

    def __init__(self, lm: LanguageModel, task_type: TaskType, protocol: Protocol, name: str = "experiment",
                 max_length: int | None = None, tracker: Tracker | None = None):
        self.lm, self.task_type, self.protocol = lm, task_type, protocol
        self.name, self.max_length, self.tracker = name, max_length, tracker
        self._lm_snapshot: tuple[dict[str, torch.Tensor], int] | None = None
        #: where a run whose plan asks to keep its model (``context["save"]``) saves it, as models/RUN_ID
        self.models_dir: Path | None = None

    @property
    def test(self) -> list[Example]:
        return self.task_type.test_examples(self.protocol)

    def build(self, run: PlannedRun) -> PromptMethod:
        """The run's method, its parameters initialised from the run's training seed."""
        torch.manual_seed(run.train_seed or 0)
        return build_method(run.spec.name, self.lm, run.template, self.task_type.verbalizer(run),
                            labels=self.task_type.method_labels(), max_length=self.max_length, chat=run.spec.chat,
                            **run.spec.params)

    def execute(self, run: PlannedRun, train_examples: Sequence[Example], dev_examples: Sequence[Example],
                progress: bool = True) -> Executed:
        """Build, fit (when trained) and score the run; the LM is put back as it was whatever happens. With
        a tracker, the run's curves take its steps, then its record."""
        if self.tracker is None:
            return self._execute(run, train_examples, dev_examples, progress)
        curves = self.tracker.open(run, self.name)
        try:
            with reporting_to(curves):
                done = self._execute(run, train_examples, dev_examples, progress)
        except BaseException:
            curves.fail()
            raise
        curves.finish(done.record.to_dict())
        return done

    def _execute(self, run: PlannedRun, train_examples, dev_examples, progress: bool) -> Executed:
        started = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        if run.baseline:
            evaluated = self.task_type.baseline(run, Fitted(None, None, 0, list(train_examples), list(dev_examples),
                                                            started))
        else:
            evaluated = self._run_method(run, list(train_examples), list(dev_examples), started, progress)
        record = RunRecord(run.settings, run.run_id, self.name, evaluated.fields, tags=dict(run.spec.tags))
        return Executed(record, evaluated.predictions)

    def _run_method(self, run: PlannedRun, train_examples: list, dev_examples: list, started: float, progress: bool):
        method = self.build(run)
        method.set_demonstration_pool(train_examples, run.train_seed or 0)
        config = self.train_config(run, method) if run.spec.train else None
        if config is not None and config.tune_lm and self._lm_snapshot is None:
            self._lm_snapshot = self.lm.snapshot()  # the LM as every run starts from it
        try:
            result = self.fit(run, method, config, train_examples, dev_examples, progress) if config else None
            fitted = Fitted(result, config, self._trainable_params(method, config), train_examples, dev_examples,
                            started)
            evaluated = self.task_type.evaluate(run, method, fitted, self.protocol, progress)
            if run.context.get("save") and self.models_dir is not None:  # before the LM is put back
                save_prompt(method, self.models_dir / run.run_id, lm_weights=bool(config and config.tune_lm))
                evaluated.fields["saved_model"] = f"models/{run.run_id}"
            return evaluated
        finally:
            if config is not None and config.tune_lm:  # the next run starts from the same LM
                self.lm.restore(self._lm_snapshot)

    def train_config(self, run: PlannedRun, method: PromptMethod) -> TrainConfig:
        """The method's training defaults, updated by the config's settings and the run's seed."""
        return TrainConfig(**{**method.config_class.train_defaults, **run.spec.train_config, "seed": run.train_seed,
                              "select_metric": self.protocol.select_metric})

    def fit(self, run: PlannedRun, method: PromptMethod, config: TrainConfig, train_examples, dev_examples,
            progress: bool) -> TrainResult:
        """Train the method on the run's training examples, selecting on the dev examples (the task type
        says how)."""
        return self.task_type.fit(run, method, config, train_examples, dev_examples, progress)

    @staticmethod
    def _trainable_params(method: PromptMethod, config: TrainConfig | None) -> int:
        if config is None:
            return 0
        groups = method.parameter_groups(config.lr, tune_lm=config.tune_lm)
        return sum(p.numel() for g in groups for p in g["params"])
