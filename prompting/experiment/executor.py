"""One run: build the method, fit it when it trains, score dev and test, and say what came of it.

:class:`RunExecutor` is the seam between the harness (which plans, claims and records runs) and the
work of one run; a caller that wants to watch or alter runs passes its own executor to
:class:`prompting.experiment.harness.Experiment`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch

from prompting.core.data import Example, Task
from prompting.core.settings import Protocol, TrainConfig
from prompting.core.verbalizer import Verbalizer
from prompting.experiment.plan import PlannedRun, prompts_for, protocol_name
from prompting.experiment.records import Outcome, Predictions, RunRecord, peak_memory_mb
from prompting.lm.model import LanguageModel
from prompting.methods import PromptMethod, build_method
from prompting.methods.choices import choice_fields, make_verbalizer
from prompting.methods.scores import SCORES, score_key
from prompting.training.calibration import content_free_scores
from prompting.training.loop import TrainResult, train

__all__ = ["RunExecutor", "Executed"]


@dataclass
class Executed:
    """A finished run: its record and its saved label scores."""

    record: RunRecord
    predictions: Predictions


class RunExecutor:
    """Runs planned runs of one experiment on one LM (see the module docstring)."""

    def __init__(self, lm: LanguageModel, task: Task, protocol: Protocol, test: Sequence[Example],
                 prompts: Sequence[tuple[str, dict]], name: str = "experiment", max_length: int | None = None):
        self.lm, self.task, self.protocol, self.test = lm, task, protocol, list(test)
        self.prompts, self.name, self.max_length = list(prompts), name, max_length
        self._lm_snapshot: tuple[dict[str, torch.Tensor], int] | None = None

    def build(self, run: PlannedRun) -> PromptMethod:
        """The run's method, its parameters initialised from the run's training seed."""
        torch.manual_seed(run.train_seed or 0)
        return build_method(run.spec.name, self.lm, run.template, make_verbalizer(run.verbalizer, self.task.choice_score),
                            labels=self.task.labels, max_length=self.max_length, **run.spec.params)

    def execute(self, run: PlannedRun, train_examples: Sequence[Example], dev_examples: Sequence[Example],
                progress: bool = True) -> Executed:
        """Build, fit (when trained), score dev, test and the content-free inputs; the LM is put back
        as it was whatever happens."""
        started = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        method = self.build(run)
        method.set_demonstration_pool(train_examples, run.train_seed or 0)
        dev = method.encode(dev_examples)
        config = self.train_config(run, method) if run.spec.train else None
        if config is not None and config.tune_lm and self._lm_snapshot is None:
            self._lm_snapshot = self.lm.snapshot()  # the LM as every run starts from it
        try:
            result = self.fit(method, config, train_examples, dev, progress) if config else None
            dev_scores = self._dev_scores(method, dev, result, config)
            test_scores = self._test_scores(run, method, config, progress)
            free = content_free_scores(method, self.protocol.eval_batch_size)
        finally:
            if config is not None and config.tune_lm:  # the next run starts from the same LM
                self.lm.restore(self._lm_snapshot)
        labels = list(self.task.labels)
        outcome = Outcome.of(labels, [e.label for e in dev_examples], dev_scores, [e.label for e in self.test],
                             test_scores, dev.labels)
        trainable = self._trainable_params(method, config)
        record = RunRecord(
            run.settings, run.run_id, self.name, outcome, protocol=protocol_name(self.task),
            describe=method.describe(), tags=dict(run.spec.tags),
            training=RunRecord.training_fields(result, config, trainable, self.lm.num_parameters(),
                                               self.protocol.select_metric),
            cost={"seconds": round(time.perf_counter() - started, 3), "peak_memory_mb": peak_memory_mb(),
                  "n_train": len(train_examples), "n_dev": len(dev_examples), "n_test": len(self.test)})
        return Executed(record, Predictions.of(labels, dev_examples, self.test, dev_scores, test_scores, free))

    def train_config(self, run: PlannedRun, method: PromptMethod) -> TrainConfig:
        """The method's training defaults, updated by the config's settings and the run's seed."""
        return TrainConfig(**{**method.config_class.train_defaults, **run.spec.train_config, "seed": run.train_seed,
                              "select_metric": self.protocol.select_metric})

    def fit(self, method: PromptMethod, config: TrainConfig, train_examples, dev, progress: bool) -> TrainResult:
        """Train the method on the run's training examples, selecting on ``dev``."""
        return train(method, method.encode(train_examples), dev, config, progress=progress)

    def _dev_scores(self, method: PromptMethod, dev, result: TrainResult | None, config) -> torch.Tensor:
        if result is not None and result.dev_scores is not None and \
                config.eval_batch_size == self.protocol.eval_batch_size:
            return result.dev_scores  # training scored dev under the state it kept: the same numbers
        return method.predict_scores(dev, self.protocol.eval_batch_size)

    def _test_scores(self, run: PlannedRun, method: PromptMethod, config, progress: bool) -> torch.Tensor:
        """Test scores; a prompt state already scored on the test set (a zero-shot prompt for every data
        seed, a learned prompt that kept its start) is not scored again (:mod:`prompting.methods.scores`)."""
        if config is None and not method.demonstrations:
            self._share_untrained_pass(run, method, progress)
        return method.predict_scores(method.encode(self.test), self.protocol.eval_batch_size,
                                     progress="test" if progress else False)

    def _share_untrained_pass(self, run: PlannedRun, method: PromptMethod, progress: bool) -> None:
        """The verbalizers that share an untrained prompt's template, scored in one pass (one verbalizer
        over all their words gives every label word's log-probability at once), each one's scores kept."""
        siblings = [v for t, v in prompts_for(run.spec, self.prompts) if t == run.template]
        if not type(method).verbalizers_share_a_pass or len(siblings) < 2 or choice_fields(run.verbalizer):
            return
        data = method.encode(self.test)
        if score_key(method, data) in SCORES:
            return
        joint = {f"{i}\x1f{label}": words for i, v in enumerate(siblings) for label, words in v.items()}
        combined = build_method(run.spec.name, self.lm, run.template, Verbalizer(joint), max_length=self.max_length)
        scores = combined.predict_scores(combined.encode(self.test), self.protocol.eval_batch_size,
                                         progress="test" if progress else False)
        for i, verbalizer in enumerate(siblings):
            sibling = build_method(run.spec.name, self.lm, run.template, make_verbalizer(verbalizer),
                                   labels=self.task.labels, max_length=self.max_length, **run.spec.params)
            columns = [list(joint).index(f"{i}\x1f{label}") for label in self.task.labels]
            SCORES.put(score_key(sibling, sibling.encode(self.test)), scores[:, columns])

    @staticmethod
    def _trainable_params(method: PromptMethod, config: TrainConfig | None) -> int:
        if config is None:
            return 0
        groups = method.parameter_groups(config.lr, tune_lm=config.tune_lm)
        return sum(p.numel() for g in groups for p in g["params"])
