"""Generation (text the model writes at ``{mask}``): ``k`` training pairs per data seed and as many dev pairs
on other inputs (or the files as given), training teacher-forced on the targets, dev selection by the
target's token negative log-likelihood, and test inputs decoded with transformers' ``generate`` and
scored against all their references: BLEU, chrF (sacreBLEU) and ROUGE-L (``rouge-score``), on a 0-100
scale. A run saves what it wrote and each input's statistics, from which a report draws intervals and
paired tests (:mod:`prompting.reporting.generation`).

Methods train as on labels (PET fine-tuning tunes the LM; soft prompts, P-tuning and prefix-tuning keep it
frozen); in-context learning shows ``k`` training pairs with their targets. AutoPrompt, which searches
trigger words for fixed label words, and calibration and ensembles, which combine label scores, do not
apply.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict
from typing import Sequence

import torch

from prompting.core.ids import run_id
from prompting.core.settings import MethodSpec, Protocol, TrainConfig
from prompting.core.template import Template, TemplateError
from prompting.core.texts import TextTask, sample_pairs
from prompting.methods import METHODS, PromptMethod
from prompting.methods.evaluation import TrainResult
from prompting.methods.targets import Decoding, encode_targets, write
from prompting.tasks.base import Evaluated, Fitted, PlannedRun, TaskType
from prompting.tasks.outcome import peak_memory_mb, training_fields
from prompting.training.loop import train

__all__ = ["Generation", "NOT_FOR_TEXT", "generation_templates"]

#: methods that search for label words, and cannot learn to write
NOT_FOR_TEXT = ("autoprompt",)


def generation_templates(spec: MethodSpec, prompts: Sequence[tuple[str, dict]]) -> list[str]:
    """The templates a method entry runs on: its own, or every pattern of the experiment."""
    return [spec.template] if spec.template else list(dict.fromkeys(t for t, _ in prompts))


class Generation(TaskType):
    """A :class:`prompting.core.texts.TextTask` as an experiment runs it (see the module docstring)."""

    def __init__(self, task: TextTask, decoding: Decoding = Decoding()):
        self.task, self.name, self.decoding = task, task.name, decoding

    # ------------------------------------------------------------------------------ before the model
    def check(self, methods: Sequence[MethodSpec], prompts: Sequence[tuple[str, dict]], templates: Sequence[str] = (),
              protocol: Protocol | None = None) -> None:
        """Every method entry can write text, and every template uses fields the task has."""
        for spec in methods:
            self._check_entry(spec, protocol)
            for template in generation_templates(spec, prompts):
                Template(template).check_fields(self.task.text_fields)
                try:
                    Template(template).check_slots(METHODS.config(spec.name).slots, spec.name)
                except TemplateError as err:
                    raise TemplateError(f"method {spec.label!r}: {err}") from None
        for template in templates:
            Template(template).check_fields(self.task.text_fields)

    def _check_entry(self, spec: MethodSpec, protocol: Protocol | None) -> None:
        where = f"method {spec.label!r}"
        if spec.name in NOT_FOR_TEXT:
            raise ValueError(f"{where}: {spec.name} searches trigger words for fixed label words; task "
                             f"{self.name!r} is a generation task (the model writes its answer): use manual, soft, "
                             "ptuning, prefix or icl")
        given = [key for key, value in (("verbalizer", spec.verbalizer), ("calibration", spec.calibration),
                                        ("ensemble", spec.ensemble), ("answer: generate", spec.answer == "generate"))
                 if value]
        if given:
            raise ValueError(f"{where}: {', '.join(given)} is for label scores; task {self.name!r} is a generation "
                             "task (the model writes its answer at {mask}): leave it out")
        wanted = METHODS.config(spec.name).from_mapping(spec.params).demonstration_settings()
        have = len(self.task.train) if self.task.fixed_split else (protocol.k if protocol else None)
        if wanted is not None and have is not None and wanted.k > have:
            raise ValueError(f"{where}: k={wanted.k} demonstrations, but a training split holds {have} pairs; "
                             f"give k <= {have}")

    def describe(self, protocol: Protocol) -> str:
        task = self.task
        how = (f"the train and dev files as given ({len(task.train)} and {len(task.dev or [])} pairs)"
               if task.fixed_split else f"k = {protocol.k} (input, reference) pairs from {len(task.train)}, dev "
               f"{protocol.k} pairs of other inputs")
        test = self.test_examples(protocol)
        return (f"task {task.name!r}: generation: {how}; test: {len(test)} inputs of {len(task.test)}, "
                f"{sum(len(e.references) for e in test)} references; decoding: {self.decoding.num_beams} beam(s), at "
                f"most {self.decoding.max_new_tokens} new tokens")

    def plan(self, methods, prompts, protocol: Protocol, model: str, dtype, max_length) -> list[PlannedRun]:
        """Every (data seed, method entry, template, training seed)."""
        runs = []
        data_seeds = [protocol.data_seeds[0]] if self.task.fixed_split else protocol.data_seeds
        for data_seed in data_seeds:
            for spec in methods:
                for template in generation_templates(spec, prompts):
                    for train_seed in ((spec.train_seeds or protocol.train_seeds) if spec.train else [None]):
                        settings = {
                            "task": self.name, "task_type": "generation", "model": model, "method": spec.name,
                            "label": spec.label, "train": spec.train, "params": spec.params,
                            "train_config": spec.train_config if spec.train else {}, "template": template,
                            "verbalizer": None, "k": None if self.task.fixed_split else protocol.k,
                            **({"dtype": str(dtype).replace("torch.", "")} if dtype != torch.float32 else {}),
                            "data_seed": data_seed, "train_seed": train_seed, "test_limit": protocol.test_limit,
                            "max_length": max_length, "decoding": asdict(self.decoding),
                            **({"chat": True} if spec.chat else {})}
                        runs.append(PlannedRun(spec, template, None, data_seed, train_seed, settings, run_id(settings)))
        return runs

    def split(self, protocol: Protocol, data_seed: int):
        task = self.task
        if task.fixed_split:
            return list(task.train), list(task.dev or [])
        if task.dev is not None:  # a dev file: k pairs from it
            return (sample_pairs(task.train, protocol.k, data_seed, with_dev=False)[0],
                    sample_pairs(task.dev, protocol.k, data_seed, with_dev=False)[0])
        return sample_pairs(task.train, protocol.k, data_seed)

    def test_examples(self, protocol: Protocol):
        """The test inputs (each with all its references), or a fixed random subset of them (seed 0)."""
        test = list(self.task.test)
        if protocol.test_limit is not None and protocol.test_limit < len(test):
            test = random.Random(0).sample(test, protocol.test_limit)
        return test

    def method_labels(self) -> Sequence[str]:
        return ()

    def verbalizer(self, run: PlannedRun):
        return None  # the method writes its answer

    # ------------------------------------------------------------------------------ fitting and scoring
    def fit(self, run: PlannedRun, method: PromptMethod, config: TrainConfig, train_examples, dev_examples,
            progress: bool) -> TrainResult:
        dev = encode_targets(method, dev_examples) if dev_examples else None
        return train(method, encode_targets(method, train_examples), dev, config, progress=progress)

    @staticmethod
    def _dev(method: PromptMethod, fitted: Fitted, protocol: Protocol) -> dict:
        """The dev targets' mean token NLL of a method that did not train (a zero-shot prompt, in-context
        demonstrations), so that dev selects among its runs as among trained ones."""
        if not fitted.dev:
            return {}
        return encode_targets(method, fitted.dev).dev_score(method, protocol.eval_batch_size, "nll")[0]

    def evaluate(self, run: PlannedRun, method: PromptMethod, fitted: Fitted, protocol: Protocol,
                 progress: bool) -> Evaluated:
        """The test inputs written and scored; the record's metrics, training and cost; the outputs and each
        input's statistics saved."""
        from prompting.core.textmetrics import text_scores

        test, result = self.test_examples(protocol), fitted.result
        began = time.perf_counter()
        outputs = write(method, test, self.decoding, protocol.eval_batch_size, progress="test" if progress else False)
        totals, per_input = text_scores(outputs, [e.references for e in test])
        trained = training_fields(result, fitted.config, fitted.trainable, method.lm.num_parameters(), "nll")
        dev = dict(result.best_dev) if result and result.best_dev else self._dev(method, fitted, protocol)
        fields = {"describe": method.describe(), "dev": dev, "dev_loss": dev.get("nll"),
                  "test": totals, **trained, "write_seconds": round(time.perf_counter() - began, 3),
                  "seconds": round(time.perf_counter() - fitted.started, 3), "peak_memory_mb": peak_memory_mb(),
                  "n_train": len(fitted.train), "n_dev": len(fitted.dev), "n_test": len(test),
                  "n_references": sum(len(e.references) for e in test),
                  "empty_outputs": sum(not text for text in outputs)}
        predictions = {"test_inputs": [dict(e.fields) for e in test], "test_outputs": outputs,
                       "test_first_reference": [e.references[0] for e in test], "test_scores": per_input}
        return Evaluated(fields, predictions)
