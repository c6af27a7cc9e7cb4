"""Classification (labels worded by a verbalizer, or each example's own choices): the few-shot protocol
(K per class from train, a disjoint K per class as dev; or fixed train and dev files), accuracy and
macro-F1 of the label scores on dev and test, and the scores saved for calibration and ensembles; or, for a
method entry with ``answer: generate``, of the labels its written answers name (:mod:`prompting.tasks.answers`)."""

from __future__ import annotations

import functools
import json
import random
import sys
import time
from dataclasses import asdict
from typing import Sequence

import torch

from prompting.core.data import DataError, Example, Task, sample_kshot, shared_texts
from prompting.core.settings import MethodSpec, Protocol, TrainConfig
from prompting.core.template import Template, TemplateError
from prompting.core.verbalizer import Verbalizer, VerbalizerError
from prompting.core.ids import run_id
from prompting.methods import METHODS, PromptMethod, build_method
from prompting.methods.choices import ChoiceVerbalizer, choice_fields, make_verbalizer
from prompting.methods.evaluation import TrainResult
from prompting.methods.scores import SCORES, score_key
from prompting.tasks.answers import ANSWER_DECODING, answer_outcome, answer_predictions, check_answer_entry, written_answers
from prompting.tasks.base import Evaluated, Fitted, PlannedRun, TaskType
from prompting.tasks.outcome import Outcome, Predictions, peak_memory_mb, training_fields
from prompting.tasks.pet import check_recipe, draw_pool, is_ipet, recipe_runs, record_fields, score_pool, training_data
from prompting.training.calibration import content_free_scores
from prompting.training.loop import train

__all__ = ["Classification", "prompts_for", "jsonable_verbalizer", "protocol_name"]


def jsonable_verbalizer(verbalizer: dict) -> dict:
    return {str(k): ([v] if isinstance(v, str) else list(v)) for k, v in verbalizer.items()}


def prompts_for(spec: MethodSpec, prompts: Sequence[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The prompts a method runs on: every prompt of the experiment, unless it brings its own template
    (then with each distinct verbalizer) or verbalizer (then with each distinct template)."""
    if spec.template and spec.verbalizer:
        return [(spec.template, jsonable_verbalizer(spec.verbalizer))]
    if spec.template:
        verbalizers = {json.dumps(v, sort_keys=True): v for _, v in prompts}
        return [(spec.template, v) for v in verbalizers.values()]
    if spec.verbalizer:
        return [(t, jsonable_verbalizer(spec.verbalizer)) for t in dict.fromkeys(t for t, _ in prompts)]
    return list(prompts)


def protocol_name(task: Task) -> str:
    """How a task's train and dev sets are made: ``kshot`` (K per class from train, a disjoint K per
    class as dev), ``kshot-dev-file`` (K per class from train, K per class from the dev file) or
    ``fixed`` (the train and dev files as given)."""
    if task.fixed_split:
        return "fixed"
    return "kshot-dev-file" if task.dev is not None else "kshot"


class Classification(TaskType):
    """A :class:`prompting.core.data.Task` as an experiment runs it (see the module docstring)."""

    derives_records = True

    def __init__(self, task: Task):
        self.task, self.name = task, task.name
        self._noted: set[tuple] = set()  # the splits whose duplicate texts were noted

    # ------------------------------------------------------------------------------ before the model
    def check(self, methods: Sequence[MethodSpec], prompts: Sequence[tuple[str, dict]],
              templates: Sequence[str] = (), protocol: Protocol | None = None) -> None:
        """Every template a run will use has only fields the task has and slots its method learns, every
        verbalizer words for exactly the task's labels, and demonstrations no more per class than a
        training split holds. ``templates``: more to check (a sweep's template choices)."""
        if protocol is not None:
            for spec in methods:
                self._check_demonstrations(spec, protocol)
        task = self.task
        prompts = [(t, jsonable_verbalizer(v)) for t, v in prompts]
        for spec in methods:
            check_answer_entry(spec)
            check_recipe(task, spec, prompts_for(spec, prompts))
        if protocol is not None and any(spec.distill for spec in methods):
            self._check_pools(protocol)
        for spec, (template, verbalizer) in [(spec, p) for spec in methods for p in prompts_for(spec, prompts)]:
            Template(template).check_fields(task.text_fields)
            try:
                Template(template).check_slots(METHODS.config(spec.name).slots, spec.name)
            except TemplateError as err:
                raise TemplateError(f"method {spec.label!r}: {err}") from None
            verbalizer = make_verbalizer(verbalizer, task.choice_score)
            verbalizer.check_labels(task.labels)
            if isinstance(verbalizer, ChoiceVerbalizer):
                verbalizer.check_fields(task.text_fields)
                _check_choice_method(spec)
        for template in templates:
            Template(template).check_fields(task.text_fields)

    def _check_demonstrations(self, spec: MethodSpec, protocol: Protocol) -> None:
        config = METHODS.config(spec.name).from_mapping(spec.params)
        wanted = config.demonstration_settings()
        if wanted is None:
            return
        task = self.task
        if task.fixed_split:
            counts = {label: sum(e.label == label for e in task.train) for label in task.labels}
            fewest = min(counts, key=counts.get)
            have, where = counts[fewest], f"the training file holds {counts[fewest]} of label {fewest!r}"
        else:
            have, where = protocol.k, f"a training split holds K = {protocol.k} per class"
        if wanted.k > have:
            what = "k" if config.demonstrations_always else "demonstrations.k"
            raise ValueError(f"method {spec.label!r}: {what}={wanted.k} demonstrations per class, but {where}; "
                             f"give {what} <= {have}")

    def _check_pools(self, protocol: Protocol) -> None:
        """Every data seed's unlabelled examples can be drawn (a split that cannot is check_splits' to say)."""
        for data_seed in dict.fromkeys(protocol.data_seeds):
            try:
                train, dev = self._split(protocol, data_seed)
            except DataError:
                return
            draw_pool(self.task, train, dev, data_seed)

    def describe(self, protocol: Protocol) -> str:
        task, name, k = self.task, protocol_name(self.task), protocol.k
        if name == "fixed":
            how = (f"the train and dev sets as given ({len(task.train)} and {len(task.dev or [])} examples); "
                   "k is not used and the data seeds are one split")
        elif name == "kshot-dev-file":
            how = (f"K = {k} per class from train ({len(task.train)} examples), dev K = {k} per class from the "
                   f"dev file ({len(task.dev)}; say protocol: fixed to use the files as given)")
        else:
            how = f"K = {k} per class from train ({len(task.train)} examples), a disjoint K per class from train as dev"
        return f"task {task.name!r}: protocol {name}: {how}; test: {self._test_said(protocol)}"

    def _test_said(self, protocol: Protocol) -> str:
        """How many test examples are scored, out of how many, and where they come from."""
        task, scored = self.task, len(self.test_examples(protocol))
        said = (f"{scored} examples" if scored == len(task.test) else
                f"{scored} of {len(task.test)} examples (a fixed random sample, seed 0)")
        return said + (" carved out of the training file" if "test carved from train" in task.description else "")

    def plan(self, methods, prompts, protocol: Protocol, model: str, dtype, max_length) -> list[PlannedRun]:
        """Every (data seed, method entry, prompt, training seed), then the data seed's distilled models and
        iPET generations (:mod:`prompting.tasks.pet`); fixed train and dev files are one data split (the
        spread then comes from training seeds)."""
        task, runs, scoring = self.task, [], set()
        data_seeds = [protocol.data_seeds[0]] if task.fixed_split else protocol.data_seeds
        for data_seed in data_seeds:
            made = functools.partial(_planned, task, data_seed=data_seed, protocol=protocol, model=model,
                                     dtype=dtype, max_length=max_length, prompts=prompts)
            for spec in methods:
                if is_ipet(spec):  # its runs are the recipe's
                    continue
                for template, verbalizer in prompts_for(spec, prompts):
                    for train_seed in ((spec.train_seeds or protocol.train_seeds) if spec.train else [None]):
                        runs.append(made(spec, template, verbalizer, train_seed))
            added, wanted = recipe_runs(task, methods, lambda spec: prompts_for(spec, prompts), protocol, made)
            runs, scoring = runs + added, scoring | wanted
        for run in runs:  # a later stage learns from its scores on the unlabelled examples
            if run.run_id in scoring:
                run.context["pool"] = True
        return runs

    def split(self, protocol: Protocol, data_seed: int) -> tuple[list[Example], list[Example]]:
        """The (train, dev) examples of one data split; a split whose dev set holds texts that are also in
        its train set (the data holds them twice) is noted on stderr, once."""
        train, dev = self._split(protocol, data_seed)
        if (data_seed, protocol.k) not in self._noted:
            self._noted.add((data_seed, protocol.k))
            shared = shared_texts(train, dev)
            if shared:
                print(f"note: task {self.task.name!r}: data seed {data_seed}: {shared} of the {len(dev)} dev examples "
                      "have a text that is also in train (the data holds some texts more than once), so dev scores "
                      "are partly on training texts; de-duplicate the data file to keep them apart",
                      file=sys.stderr, flush=True)
        return train, dev

    def _split(self, protocol: Protocol, data_seed: int) -> tuple[list[Example], list[Example]]:
        task = self.task
        if task.fixed_split:
            return list(task.train), list(task.dev or [])
        if task.dev is not None:  # a dev file: the dev set is drawn from it, K per class
            return (sample_kshot(task.train, protocol.k, data_seed, task.labels, with_dev=False)[0],
                    sample_kshot(task.dev, protocol.k, data_seed, task.labels, with_dev=False)[0])
        return sample_kshot(task.train, protocol.k, data_seed, task.labels)

    def test_examples(self, protocol: Protocol) -> list[Example]:
        """The task's test set, or a fixed random subset of it (seed 0)."""
        test = list(self.task.test)
        if protocol.test_limit is not None and protocol.test_limit < len(test):
            test = random.Random(0).sample(test, protocol.test_limit)
        return test

    def method_labels(self) -> Sequence[str]:
        return self.task.labels

    def verbalizer(self, run: PlannedRun):
        return make_verbalizer(run.verbalizer, self.task.choice_score)

    # ------------------------------------------------------------------------------ fitting and scoring
    def fit(self, run: PlannedRun, method: PromptMethod, config: TrainConfig, train_examples, dev_examples,
            progress: bool) -> TrainResult:
        """Train on the K-shot examples, or on what a stage of PET's recipe learns from (:mod:`prompting.tasks.pet`)."""
        data = training_data(self.task, run, method, train_examples, dev_examples)
        data = method.encode(train_examples) if data is None else data
        return train(method, data, method.encode(dev_examples), config, progress=progress)

    def evaluate(self, run: PlannedRun, method: PromptMethod, fitted: Fitted, protocol: Protocol,
                 progress: bool) -> Evaluated:
        """Dev and test scores (training's own dev scores where it kept them), the content-free inputs'
        scores, and the record's metrics, training and cost; with ``answer: generate``, the labels that the
        answers written on dev and test name (:meth:`_evaluate_answers`)."""
        if run.spec.answer == "generate":
            return self._evaluate_answers(run, method, fitted, protocol, progress)
        test, batch = self.test_examples(protocol), protocol.eval_batch_size
        dev = method.encode(fitted.dev)
        result, config = fitted.result, fitted.config
        if result is not None and result.dev_scores is not None and config.eval_batch_size == batch:
            dev_scores = result.dev_scores  # training scored dev under the state it kept: the same numbers
        else:
            dev_scores = method.predict_scores(dev, batch)
        if config is None and not method.demonstrations:
            self._share_untrained_pass(run, method, test, batch, progress)
        test_scores = method.predict_scores(method.encode(test), batch, progress="test" if progress else False)
        free = content_free_scores(method, batch)
        labels = list(self.task.labels)
        outcome = Outcome.of(labels, [e.label for e in fitted.dev], dev_scores, [e.label for e in test],
                             test_scores, dev.labels)
        labelled, pool = score_pool(self.task, run, method, fitted.train, fitted.dev, batch, progress)
        fields = self._fields(run, method, fitted, protocol, outcome, len(test), labelled)
        predictions = Predictions.of(labels, fitted.dev, test, dev_scores, test_scores, free)
        return Evaluated(fields, {**predictions.to_dict(), **pool})

    def _evaluate_answers(self, run: PlannedRun, method: PromptMethod, fitted: Fitted, protocol: Protocol,
                          progress: bool) -> Evaluated:
        """``answer: generate``: the method writes an answer after each dev and test prompt; the labels they name
        give the metrics (an unmatched answer is wrong), and the predictions file keeps every answer."""
        test, batch, labels = self.test_examples(protocol), protocol.eval_batch_size, list(self.task.labels)
        dev_written = written_answers(method, fitted.dev, batch)
        test_written = written_answers(method, test, batch, progress="test" if progress else False)
        outcome = answer_outcome(labels, [e.label for e in fitted.dev], dev_written[1], [e.label for e in test],
                                 test_written[1])
        fields = self._fields(run, method, fitted, protocol, outcome, len(test))
        return Evaluated(fields, answer_predictions(labels, fitted.dev, test, dev_written, test_written))

    def _fields(self, run: PlannedRun, method: PromptMethod, fitted: Fitted, protocol: Protocol, outcome: Outcome,
                n_test: int, labelled: dict | None = None) -> dict:
        """A run's record after its settings: what it says of dev and test, its training and its cost."""
        seconds = time.perf_counter() - fitted.started
        return {"describe": method.describe(), **outcome.to_dict(), "protocol": protocol_name(self.task),
                **training_fields(fitted.result, fitted.config, fitted.trainable, method.lm.num_parameters(),
                                  protocol.select_metric),
                "seconds": round(seconds, 3), "peak_memory_mb": peak_memory_mb(), "n_train": len(fitted.train),
                "n_dev": len(fitted.dev), "n_test": n_test, **(labelled or {}), **record_fields(self.task, run, seconds)}

    def _share_untrained_pass(self, run: PlannedRun, method: PromptMethod, test, batch: int, progress: bool) -> None:
        """The verbalizers that share an untrained prompt's template, scored in one pass (one verbalizer
        over all their words gives every label word's log-probability at once), each one's scores kept."""
        siblings = run.context.get("siblings", [])
        if not type(method).verbalizers_share_a_pass or len(siblings) < 2 or choice_fields(run.verbalizer):
            return
        if score_key(method, method.encode(test)) in SCORES:
            return
        lm, max_length, chat = method.lm, run.settings.get("max_length"), run.spec.chat
        joint = {f"{i}\x1f{label}": words for i, v in enumerate(siblings) for label, words in v.items()}
        combined = build_method(run.spec.name, lm, run.template, Verbalizer(joint), max_length=max_length, chat=chat)
        scores = combined.predict_scores(combined.encode(test), batch, progress="test" if progress else False)
        for i, verbalizer in enumerate(siblings):
            sibling = build_method(run.spec.name, lm, run.template, make_verbalizer(verbalizer),
                                   labels=self.task.labels, max_length=max_length, chat=chat, **run.spec.params)
            columns = [list(joint).index(f"{i}\x1f{label}") for label in self.task.labels]
            SCORES.put(score_key(sibling, sibling.encode(test)), scores[:, columns])


def _planned(task: Task, spec: MethodSpec, template: str, verbalizer, train_seed: int | None, *, data_seed: int,
             protocol: Protocol, model: str, dtype, max_length: int | None, prompts) -> PlannedRun:
    """One run of the plan: its settings (what its result depends on) and its id."""
    settings = {
        "task": task.name, "model": model, "method": spec.name, "label": spec.label,
        "train": spec.train, "params": spec.params, "train_config": spec.train_config if spec.train else {},
        "template": template, "verbalizer": verbalizer, "k": None if task.fixed_split else protocol.k,
        # low precision changes the numbers: its runs are others than float32's
        **({"dtype": str(dtype).replace("torch.", "")} if dtype != torch.float32 else {}),
        "data_seed": data_seed, "train_seed": train_seed, "test_limit": protocol.test_limit, "max_length": max_length}
    if task.choices:  # how choices are scored changes the result
        settings["choice_score"] = task.choice_score
    if spec.chat:  # the options' settings only where given: the runs of configs without them keep their ids
        settings["chat"] = True
    if spec.answer == "generate":
        settings.update(answer=spec.answer, decoding=asdict(ANSWER_DECODING))
    siblings = [v for t, v in prompts_for(spec, prompts) if t == template]
    return PlannedRun(spec, template, verbalizer, data_seed, train_seed, settings, run_id(settings),
                      context={"siblings": siblings})


def _check_choice_method(spec: MethodSpec) -> None:
    """Calibration, demonstrations and written answers need label words shared by every input; a
    multiple-choice verbalizer's words are each example's own choices."""
    wanted = [f"calibration={list(spec.calibration)!r}"] if spec.calibration else []
    wanted += ["answer: generate"] * (spec.answer == "generate")
    config = METHODS.config(spec.name)
    if config.demonstrations_always or spec.params.get("demonstrations") is not None:
        wanted.append(f"the {spec.name} method" if config.demonstrations_always else "demonstrations")
    if wanted:
        raise VerbalizerError(f"method {spec.label!r}: {' and '.join(wanted)} is not valid with a multiple-choice "
                              "verbalizer (its words are each example's own choices); leave it out for this task")
