"""The few-shot protocol: data seeds x training seeds, seed search, pattern ensembles.

    exp = Experiment(lm, task, [MethodSpec("manual", train=False), MethodSpec("manual", train=True)],
                     prompts=[("Review: {text_a}\\nSentiment: {mask}", {0: ["negative"], 1: ["positive"]})],
                     protocol=Protocol(k=16, data_seeds=(13, 21, 42), train_seeds=(1, 2)),
                     output_dir="runs/demo")
    records = exp.run()

LM-BFF protocol (default): K per class from train, a disjoint K per class as dev, the task's test
set as test. FewGLUE protocol (tasks with fixed files): train and dev32 as given; data seeds then
only name repetitions. The harness never knows which method it runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import resource
import sys
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from prompting.lm.model import LanguageModel
from prompting.training.calibration import calibrate, content_free_scores
from prompting.methods.choices import ChoiceVerbalizer, choice_fields, make_verbalizer
from prompting.core.data import Example, Task, class_results, compute_metrics, sample_kshot
from prompting.methods import PromptMethod, build_method
from prompting.experiment.results import ResultsStore, gold_indices, run_id
from prompting.core.settings import ENSEMBLES, MethodSpec, Protocol, TrainConfig
from prompting.core.template import Template
from prompting.training.loop import TrainResult, gold_cross_entropy, train
from prompting.core.verbalizer import Verbalizer, VerbalizerError

__all__ = ["MethodSpec", "Protocol", "Experiment", "PlannedRun", "ScoreCache", "build_experiment", "ENSEMBLES"]

@dataclass
class PlannedRun:
    spec: MethodSpec
    template: str
    verbalizer: dict
    data_seed: int
    train_seed: int | None
    settings: dict
    run_id: str


def _jsonable_verbalizer(verbalizer: dict) -> dict:
    return {str(k): ([v] if isinstance(v, str) else list(v)) for k, v in verbalizer.items()}


def prompts_for(spec: MethodSpec, prompts: Sequence[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The prompts a method runs on: every prompt of the experiment, unless it brings its own template
    (then with each distinct verbalizer) or verbalizer (then with each distinct template)."""
    if spec.template and spec.verbalizer:
        return [(spec.template, _jsonable_verbalizer(spec.verbalizer))]
    if spec.template:
        verbalizers = {json.dumps(v, sort_keys=True): v for _, v in prompts}
        return [(spec.template, v) for v in verbalizers.values()]
    if spec.verbalizer:
        return [(t, _jsonable_verbalizer(spec.verbalizer)) for t in dict.fromkeys(t for t, _ in prompts)]
    return list(prompts)


def check_prompts(task: Task, methods: Sequence[MethodSpec], prompts: Sequence[tuple[str, dict]],
                  templates: Sequence[str] = ()) -> None:
    """Every template a run will use has only fields the task has, and every verbalizer words for
    exactly the task's labels; checked before any model loads. ``templates``: more to check (a
    sweep's template choices)."""
    prompts = [(t, _jsonable_verbalizer(v)) for t, v in prompts]
    for spec, (template, verbalizer) in [(spec, p) for spec in methods for p in prompts_for(spec, prompts)]:
        Template(template).check_fields(task.text_fields)
        verbalizer = make_verbalizer(verbalizer, task.choice_score)
        verbalizer.check_labels(task.labels)
        if isinstance(verbalizer, ChoiceVerbalizer):
            verbalizer.check_fields(task.text_fields)
            _check_choice_method(spec)
    for template in templates:
        Template(template).check_fields(task.text_fields)


def _check_choice_method(spec: MethodSpec) -> None:
    """Calibration and demonstrations need label words shared by every input; a multiple-choice
    verbalizer's words are each example's own choices."""
    wanted = [f"calibration={list(spec.calibration)!r}"] if spec.calibration else []
    if spec.name == "icl" or spec.params.get("demonstrations") is not None:
        wanted.append("demonstrations" if spec.name != "icl" else "the icl method")
    if wanted:
        raise VerbalizerError(f"method {spec.label!r}: {' and '.join(wanted)} is not valid with a multiple-choice "
                              "verbalizer (its words are each example's own choices); leave it out for this task")


def build_experiment(cfg, output_dir, lm: LanguageModel | None = None, methods: Sequence[MethodSpec] | None = None,
                     templates: Sequence[str] = (), allow_download: bool = False) -> "Experiment":
    """The experiment a parsed config describes (see :mod:`prompting.config.experiment`): its task loaded and its
    prompts checked first, so that a wrong template fails before the model loads; then the model,
    unless ``lm`` is given. ``methods`` replaces the config's methods (a sweep runs one at a time)."""
    from prompting.config.experiment import load_task_spec

    task = load_task_spec(cfg.task, cfg.base)
    methods = list(cfg.methods if methods is None else methods)
    check_prompts(task, methods, cfg.prompts, templates)
    lm = lm or LanguageModel.load(cfg.model, device=cfg.device, max_length=cfg.max_length or 512,
                                  allow_download=allow_download, dtype=cfg.dtype, device_map=cfg.device_map,
                                  kv_cache_mb=cfg.kv_cache_mb)
    return Experiment(lm, task, methods, cfg.prompts, cfg.protocol, output_dir=output_dir, name=cfg.name,
                      max_length=cfg.max_length)


def protocol_name(task: Task) -> str:
    """How a task's train and dev sets are made: ``kshot`` (K per class from train, a disjoint K per
    class as dev), ``kshot-dev-file`` (K per class from train, K per class from the dev file) or
    ``fixed`` (the train and dev files as given)."""
    if task.fixed_split:
        return "fixed"
    return "kshot-dev-file" if task.dev is not None else "kshot"


def describe_protocol(task: Task, protocol: Protocol) -> str:
    """One line saying how the task's runs get their train, dev and test examples."""
    name, k = protocol_name(task), protocol.k
    if name == "fixed":
        how = (f"the train and dev sets as given ({len(task.train)} and {len(task.dev or [])} examples); "
               "k is not used and the data seeds are one split")
    elif name == "kshot-dev-file":
        how = (f"K = {k} per class from train ({len(task.train)} examples), dev K = {k} per class from the "
               f"dev file ({len(task.dev)}; say protocol: fixed to use the files as given)")
    else:
        how = f"K = {k} per class from train ({len(task.train)} examples), a disjoint K per class from train as dev"
    return f"task {task.name!r}: protocol {name}: {how}; test: {len(task.test)} examples"


def _describe(run: PlannedRun) -> str:
    return f"{run.spec.label} seed {run.data_seed}/{run.train_seed}"


class Experiment:
    """Plans and runs every (method, prompt, data seed, train seed); resumes from ``output_dir``."""

    def __init__(self, lm: LanguageModel, task: Task, methods: Sequence[MethodSpec],
                 prompts: Sequence[tuple[str, dict]], protocol: Protocol | None = None,
                 output_dir=None, name: str = "experiment", max_length: int | None = None):
        self.lm, self.task, self.methods = lm, task, list(methods)
        self.prompts = [(t, _jsonable_verbalizer(v)) for t, v in prompts]
        self.protocol = protocol or Protocol()
        self.store = ResultsStore(output_dir) if output_dir is not None else None
        self.name = name
        self.max_length = max_length
        self._test = self._test_examples()
        self._cache = ScoreCache()
        self._lm_snapshot: tuple[dict[str, torch.Tensor], int] | None = None
        check_prompts(task, self.methods, self.prompts)

    def _prompts_for(self, spec: MethodSpec) -> list[tuple[str, dict]]:
        return prompts_for(spec, self.prompts)

    def _test_examples(self) -> list[Example]:
        test = list(self.task.test)
        limit = self.protocol.test_limit
        if limit is not None and limit < len(test):
            test = random.Random(0).sample(test, limit)
        return test

    def split(self, data_seed: int) -> tuple[list[Example], list[Example]]:
        """The (train, dev) examples of one data split."""
        if self.task.fixed_split:
            return list(self.task.train), list(self.task.dev or [])
        if self.task.dev is not None:  # a dev file: the dev set is drawn from it, K per class
            k, labels = self.protocol.k, self.task.labels
            return (sample_kshot(self.task.train, k, data_seed, labels, with_dev=False)[0],
                    sample_kshot(self.task.dev, k, data_seed, labels, with_dev=False)[0])
        return sample_kshot(self.task.train, self.protocol.k, data_seed, self.task.labels)

    # ------------------------------------------------------------------------------ planning
    def plan(self) -> list[PlannedRun]:
        runs = []
        # fixed train/dev files (FewGLUE) are one data split: the spread comes from training seeds
        data_seeds = [self.protocol.data_seeds[0]] if self.task.fixed_split else self.protocol.data_seeds
        for data_seed in data_seeds:
            for spec in self.methods:
                for template, verbalizer in self._prompts_for(spec):
                    for train_seed in ((spec.train_seeds or self.protocol.train_seeds) if spec.train else [None]):
                        settings = {
                            "task": self.task.name, "model": self.lm.name, "method": spec.name,
                            "label": spec.label, "train": spec.train, "params": spec.params,
                            "train_config": spec.train_config if spec.train else {},
                            "template": template, "verbalizer": verbalizer,
                            "k": None if self.task.fixed_split else self.protocol.k,
                            # low precision changes the numbers: its runs are others than float32's
                            **({"dtype": str(self.lm.dtype).replace("torch.", "")}
                               if self.lm.dtype != torch.float32 else {}),
                            "data_seed": data_seed, "train_seed": train_seed,
                            "test_limit": self.protocol.test_limit, "max_length": self.max_length,
                        }
                        if self.task.choices:  # how choices are scored changes the result
                            settings["choice_score"] = self.task.choice_score
                        runs.append(PlannedRun(spec, template, verbalizer, data_seed, train_seed,
                                               settings, run_id(settings)))
        return runs

    # ------------------------------------------------------------------------------ running
    def run(self, progress: bool = True, on_split_done=None) -> list[dict]:
        """Run every planned run not already recorded; returns all records of this experiment.

        ``on_split_done(data_seed, records)``, if given, is called as each data split's runs are all
        recorded (finished now or before), in plan order; an exception it raises (a sweep pruning a
        hopeless trial) stops the experiment there.

        Several processes may run experiments into one ``output_dir`` at once: each run is claimed
        before it starts, a run another live process has claimed is left to it, and this process
        then waits (saying so) until that run is recorded, taking it over if its process died.
        Every run is thus computed and recorded once.
        """
        from tqdm.auto import tqdm

        planned = self.plan()
        print(describe_protocol(self.task, self.protocol), file=sys.stderr, flush=True)
        # two method entries that differ only in how they are ensembled plan the same runs: run each once
        unique = list({r.run_id: r for r in planned}.values())
        done = self.store.done() if self.store else set()
        expect = getattr(self.store.claims, "expect", None) if self.store else None
        if expect is not None:  # a study of runs shared by workers: queue the plan (once for all of them)
            expect({r.run_id: _describe(r) for r in unique}, skip=done)
        todo = [r for r in unique if r.run_id not in done]
        bar = tqdm(total=len(unique), initial=len(unique) - len(todo), desc=self.name, disable=not progress)
        by_id = {r["run_id"]: r for r in self.store.records()} if self.store and on_split_done else {}
        last_of_split = {r.data_seed: r.run_id for r in unique}
        attempt = _Attempt(self, progress)
        elsewhere: list[PlannedRun] = []  # claimed by other processes when this one came to them
        for run in unique:
            if run.run_id not in done:
                bar.set_postfix_str(_describe(run))
                record = attempt(run)
                if record is None:
                    elsewhere.append(run)
                else:
                    by_id[run.run_id] = record
                    bar.update(1)
            if on_split_done is not None and last_of_split[run.data_seed] == run.run_id:
                mine = [r for r in elsewhere if r.data_seed == run.data_seed]
                elsewhere = [r for r in elsewhere if r.data_seed != run.data_seed]
                self._await(mine, attempt, by_id, bar)
                on_split_done(run.data_seed, [by_id[r.run_id] for r in unique if r.data_seed == run.data_seed])
        self._await(elsewhere, attempt, by_id, bar)
        bar.close()
        return self._recorded(planned) if self.store else attempt.fresh

    def _recorded(self, planned: Sequence[PlannedRun]) -> list[dict]:
        """Ensembles added (one process at a time: each then sees the ensembles the others recorded and
        adds none twice); this experiment's records and the ensembles of them, not those of another
        experiment sharing the folder."""
        with self.store.claims.hold("ensembles"):
            self._calibrated(planned)
            self._ensembles(planned)
        ids = {r.run_id for r in planned} | {calibrated_id(r.run_id, how) for r in planned for how in r.spec.calibration}
        return [r for r in self.store.records()
                if r["run_id"] in ids or (r.get("ensemble_of") and set(r["ensemble_of"]) <= ids)]

    def _await(self, runs: list[PlannedRun], attempt, by_id: dict, bar, poll: float = 0.2) -> None:
        """Wait until other processes have recorded ``runs``; a run whose process died (or gave it
        up unrecorded) is run here. Says every minute what it waits for."""
        pending, told, delay = list(runs), -math.inf, poll
        while pending:
            for run in list(pending):
                record = self.store.record(run.run_id) or attempt(run)
                if record is not None:
                    by_id[run.run_id] = record
                    pending.remove(run)
                    bar.update(1)
                    delay = poll
            if not pending:
                return
            if time.monotonic() - told >= 60:
                told = time.monotonic()
                holders = [self.store.claims.holder(r.run_id) for r in pending]
                who = sorted({f"pid {h['pid']} on {h['host']}" for h in holders if h})
                print(f"{self.name}: waiting for {len(pending)} run{'s' if len(pending) > 1 else ''} that "
                      f"{'another process is' if len(who) < 2 else 'other processes are'} running "
                      f"({', '.join(who) or 'finishing'}): {', '.join(_describe(r) for r in pending[:3])}"
                      f"{', …' if len(pending) > 3 else ''}", file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(2 * delay, 5.0)

    # ------------------------------------------------------------------------------ one run
    def _execute(self, run: PlannedRun, train_examples, dev_examples, progress: bool) -> dict:
        """One run: build the method, fit it (when trained), score dev and test, record."""
        started = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        method = self._build(run)
        method.set_demonstration_pool(train_examples, run.train_seed or 0)
        dev = method.encode(dev_examples)
        config = self._train_config(run, method) if run.spec.train else None
        try:
            result = self._fit(method, config, train_examples, dev, progress) if config else None
            dev_scores = self._dev_scores(method, dev, result, config)
            test_scores = self._test_scores(run, method, config, progress)
            free = content_free_scores(method, self.protocol.eval_batch_size)
        finally:
            if config is not None and config.tune_lm:  # the next run starts from the same LM, whatever happened
                self.lm.restore(self._lm_snapshot)
        record = self._record(run, method, config, result, (dev_examples, dev, dev_scores), test_scores,
                              {"seconds": round(time.perf_counter() - started, 3), "n_train": len(train_examples)})
        if self.store:
            self.store.save_predictions(run.run_id, {"dev": dev_scores.tolist(), "test": test_scores.tolist(),
                                                     **self._gold(dev_examples), **self._classes(test_scores),
                                                     **({"content_free": free} if free is not None else {})})
            self.store.append(record, once=True)  # a worker whose claim lapsed may have recorded it meanwhile
        return record

    def _build(self, run: PlannedRun) -> PromptMethod:
        torch.manual_seed(run.train_seed or 0)  # method parameters are initialised from the seed
        return build_method(run.spec.name, self.lm, run.template, make_verbalizer(run.verbalizer, self.task.choice_score),
                            labels=self.task.labels, max_length=self.max_length, **run.spec.params)

    def _train_config(self, run: PlannedRun, method: PromptMethod) -> TrainConfig:
        """The method's training defaults, updated by the config's settings and the run's seed."""
        return TrainConfig(**{**method.config_class.train_defaults, **run.spec.train_config, "seed": run.train_seed,
                              "select_metric": self.protocol.select_metric})

    def _fit(self, method: PromptMethod, config: TrainConfig, train_examples, dev, progress: bool) -> TrainResult:
        if config.tune_lm and self._lm_snapshot is None:
            self._lm_snapshot = self.lm.snapshot()
        return train(method, method.encode(train_examples), dev, config, progress=progress)

    def _dev_scores(self, method: PromptMethod, dev, result: TrainResult | None, config) -> torch.Tensor:
        if result is not None and result.dev_scores is not None and \
                config.eval_batch_size == self.protocol.eval_batch_size:
            return result.dev_scores  # training scored dev under the state it kept: the same numbers
        return method.predict_scores(dev, self.protocol.eval_batch_size)

    def _test_scores(self, run: PlannedRun, method: PromptMethod, config, progress: bool) -> torch.Tensor:
        """Test scores, computed once per prompt state (see :class:`ScoreCache`). A tuned LM is not
        part of the key, so runs that tune it are always scored."""
        score = lambda: self._score(method, progress)
        if config is None:  # the same for every data seed, unless demonstrations come from its split
            return score() if method.demonstrations else self._untrained_test_scores(run, method, progress)
        if config.tune_lm:
            return score()
        return self._cache.get(ScoreCache.key(run.spec, run.template, run.verbalizer, method), score)

    def _score(self, method: PromptMethod, progress: bool) -> torch.Tensor:
        return method.predict_scores(method.encode(self._test), self.protocol.eval_batch_size,
                                     progress="test" if progress else False)

    def _untrained_test_scores(self, run: PlannedRun, method: PromptMethod, progress: bool) -> torch.Tensor:
        """Test scores of a prompt that is not trained: the same for every data seed, so computed once.

        A manual prompt's verbalizers that share its template are scored in one pass: one
        verbalizer over all their words gives every label word's log-probability at once.
        """
        key = lambda verbalizer: ScoreCache.key(run.spec, run.template, verbalizer)
        siblings = [v for t, v in self._prompts_for(run.spec) if t == run.template]
        if key(run.verbalizer) in self._cache or run.spec.name != "manual" or len(siblings) < 2 or \
                choice_fields(run.verbalizer):
            return self._cache.get(key(run.verbalizer), lambda: self._score(method, progress))
        joint = {f"{i}\x1f{label}": words for i, v in enumerate(siblings) for label, words in v.items()}
        combined = build_method("manual", self.lm, run.template, Verbalizer(joint), max_length=self.max_length)
        scores = self._score(combined, progress)
        for i, v in enumerate(siblings):
            self._cache.put(key(v), scores[:, [list(joint).index(f"{i}\x1f{label}") for label in self.task.labels]])
        return self._cache.get(key(run.verbalizer), None)

    def _record(self, run: PlannedRun, method: PromptMethod, config: TrainConfig | None,
                result: TrainResult | None, dev: tuple, test_scores: torch.Tensor, cost: dict) -> dict:
        """The run's record: its settings, what the method learned, dev and test metrics, and ``cost``
        (``seconds``, ``n_train``)."""
        dev_examples, dev_data, dev_scores = dev
        labels = list(self.task.labels)
        dev_pred = [labels[i] for i in dev_scores.argmax(1).tolist()]
        test_pred = [labels[i] for i in test_scores.argmax(1).tolist()]
        return {
            **run.settings, **run.spec.tags, "run_id": run.run_id, "experiment": self.name,
            "describe": method.describe(),
            "dev": compute_metrics([e.label for e in dev_examples], dev_pred, labels) if dev_examples else {},
            "dev_loss": _cross_entropy(dev_scores, dev_data.labels),
            "test": compute_metrics([e.label for e in self._test], test_pred, labels),
            **self._collapse(test_pred),
            "protocol": protocol_name(self.task),
            "trainable_params": _trainable_params(method, config),
            "model_params": self.lm.num_parameters(),
            "steps": result.steps if result else 0,
            "best_step": result.best_step if result else 0,
            # how dev went while training: [step, selection metric, dev cross-entropy or None (a search)]
            "dev_curve": [[h["step"], h["dev"].get(self.protocol.select_metric), h.get("dev_loss")]
                          for h in (result.history if result else []) if "dev" in h],
            "train_config_used": config.to_dict() if config else None,
            "seconds": cost["seconds"],
            "peak_memory_mb": _peak_memory_mb(),
            "n_train": cost["n_train"], "n_dev": len(dev_examples), "n_test": len(self._test),
        }

    def _gold(self, dev_examples) -> dict[str, list]:
        """The labels in the scores' column order, and the gold labels by name (None: unknown) beside
        the saved scores, so a report can resample them."""
        return {"labels": list(self.task.labels),
                **{f"{split}_gold": [e.label for e in examples]
                   for split, examples in (("dev", dev_examples), ("test", self._test))}}

    def _classes(self, test_scores: torch.Tensor) -> dict:
        """Per-class precision / recall and the confusion matrix of the test predictions (see
        :func:`prompting.core.data.class_results`), for the predictions file."""
        labels = list(self.task.labels)
        pred = [labels[i] for i in test_scores.argmax(1).tolist()] if len(test_scores) else []
        found = class_results([e.label for e in self._test], pred, labels)
        return {"test_per_class": found["per_class"], "test_confusion": found["confusion"]}

    def _collapse(self, test_pred: list[str]) -> dict:
        """The record's ``collapsed`` flag (one class >= 90% of the test predictions) and the class
        predicted most with its share."""
        found = class_results([e.label for e in self._test], test_pred, self.task.labels)
        return {"collapsed": found["collapsed"], "test_majority": found["majority"]}

    # ------------------------------------------------------------------------------ calibration
    def _calibrated(self, planned: Sequence[PlannedRun]) -> None:
        """A calibrated record beside each run whose method asks for calibration, computed from the
        run's saved label scores and content-free scores (no second training); runs recorded without
        content-free scores (by older versions) are named and left out."""
        by_run = {r["run_id"]: r for r in self.store.records()}
        for run in planned:
            for how in run.spec.calibration:
                rid, base = calibrated_id(run.run_id, how), by_run.get(run.run_id)
                if rid in by_run or base is None:
                    continue
                saved = self._with_content_free(run, self.store.load_predictions(run.run_id))
                if not saved or "content_free" not in saved:
                    print(f"{self.name}: run {run.run_id} ({_describe(run)}) was recorded without content-free "
                          f"scores, so it has no {how}-calibrated record; delete its record to run it again",
                          file=sys.stderr)
                    continue
                by_run[rid] = self._calibrated_record(base, saved, how, rid)
                self.store.append(by_run[rid], once=True)

    def _with_content_free(self, run: PlannedRun, saved: dict | None) -> dict | None:
        """A run's saved scores with its content-free scores; an untrained run recorded without them (by
        an older version) has them computed now, as nothing it depends on was learned, and saved."""
        if not saved or "content_free" in saved or run.spec.train:
            return saved
        method = self._build(run)
        method.set_demonstration_pool(self.split(run.data_seed)[0], run.train_seed or 0)
        free = content_free_scores(method, self.protocol.eval_batch_size)
        if free is not None:
            saved["content_free"] = free
            self.store.save_predictions(run.run_id, saved)
        return saved

    def _calibrated_record(self, base: dict, saved: dict, how: str, rid: str) -> dict:
        """The record of run ``base`` calibrated by ``how``, and its predictions file, from the run's saved
        scores; gold labels by name (or, in files written before that, as column indices)."""
        labels = [str(x) for x in (saved.get("labels") or self.task.labels)]
        scores = {split: calibrate(how, saved[split], saved["content_free"]) for split in ("dev", "test")}
        index = {split: gold_indices(saved, split) for split in ("dev", "test")}
        gold = {split: [labels[i] if i >= 0 else None for i in index[split]] for split in ("dev", "test")}
        predicted = {split: [labels[i] for i in scores[split].argmax(1).tolist()] if len(gold[split]) else []
                     for split in ("dev", "test")}
        found = class_results(gold["test"], predicted["test"], labels)
        self.store.save_predictions(rid, {"dev": scores["dev"].tolist(), "test": scores["test"].tolist(),
                                          "labels": labels, "dev_gold": gold["dev"], "test_gold": gold["test"],
                                          "test_per_class": found["per_class"], "test_confusion": found["confusion"]})
        metrics = {split: compute_metrics(gold[split], predicted[split], labels) if gold[split] else {}
                   for split in ("dev", "test")}
        dev_loss = (_cross_entropy(torch.tensor(scores["dev"]), torch.tensor(index["dev"], dtype=torch.long))
                    if index["dev"] else None)
        return {**base, "run_id": rid, "label": f"{base['label']} + {how} calibration", "calibration": how,
                "calibrated_from": base["run_id"], "dev": metrics["dev"], "dev_loss": dev_loss,
                "test": metrics["test"], "collapsed": found["collapsed"], "test_majority": found["majority"]}

    # ------------------------------------------------------------------------------ ensembles
    def _ensembles(self, planned: Sequence[PlannedRun]) -> None:
        """PET pattern ensembles: combine label distributions of a method's runs over patterns; with
        calibration, also the ensemble of the calibrated runs."""
        by_run = {r["run_id"]: r for r in self.store.records()}
        for spec in self.methods:
            if not spec.ensemble:
                continue
            groups: dict[tuple, list[PlannedRun]] = {}
            for run in planned:
                if run.spec is spec:
                    groups.setdefault((run.data_seed, run.train_seed), []).append(run)
            for members in groups.values():
                for how in ("none", *spec.calibration):
                    ids = [m.run_id if how == "none" else calibrated_id(m.run_id, how) for m in members]
                    self._ensemble(spec, members, ids, how, by_run)

    def _ensemble(self, spec: MethodSpec, members: list[PlannedRun], ids: list[str], how: str, by_run: dict) -> None:
        """Record the ensemble of the runs ``ids`` (``members``' runs, calibrated by ``how``) unless it is recorded
        or a member is missing."""
        records = [by_run.get(i) for i in ids]
        scores = [self.store.load_predictions(i) for i in ids]
        if len(members) < 2 or any(r is None for r in records) or any(s is None for s in scores):
            return
        rid = run_id({"ensemble_of": sorted(ids), "how": spec.ensemble})
        if rid in by_run:
            return
        weights = [r["dev"].get(self.protocol.select_metric, 0.0) if spec.ensemble == "wmean" else 1.0
                   for r in records]
        record = self._ensemble_record(spec, members, ids, records, scores, weights, rid)
        if how != "none":
            record.update(label=f"{record['label']} + {how} calibration", calibration=how)
        self.store.append(record)
        by_run[rid] = record

    def _ensemble_record(self, spec, members, ids, records, scores, weights, rid) -> dict:
        labels = list(self.task.labels)
        total = sum(weights) or 1.0
        out, combined = {}, {}
        for split in ("dev", "test"):
            probs = sum(w * torch.tensor(s[split]).softmax(-1) for w, s in zip(weights, scores)) / total
            out[split] = [labels[i] for i in probs.argmax(-1).tolist()]
            combined[split] = probs.log().tolist()
        dev_examples = self.split(members[0].data_seed)[1]
        gold = self._gold(dev_examples)
        self.store.save_predictions(rid, {**combined, **gold, **self._classes(torch.tensor(combined["test"]))})
        first = records[0]
        return {
            **{k: first[k] for k in ("task", "model", "method", "k", "data_seed", "train_seed", "test_limit",
                                     "choice_score") if k in first},
            "run_id": rid, "experiment": self.name, "label": f"{spec.label} ensemble ({spec.ensemble})",
            "template": f"ensemble of {len(members)} patterns", "verbalizer": first["verbalizer"],
            "ensemble_of": list(ids), "train": True,
            "dev": compute_metrics([e.label for e in dev_examples], out["dev"], labels),
            "dev_loss": _cross_entropy(torch.tensor(combined["dev"]).reshape(len(dev_examples), -1),
                                       torch.tensor([labels.index(e.label) if e.label in labels else -1
                                                     for e in dev_examples], dtype=torch.long)),
            "test": compute_metrics([e.label for e in self._test], out["test"], labels),
            **self._collapse(out["test"]), "protocol": protocol_name(self.task),
            "n_train": first.get("n_train"), "n_dev": len(dev_examples), "n_test": len(self._test),
            "trainable_params": sum(r.get("trainable_params", 0) for r in records),
            "seconds": sum(r.get("seconds", 0.0) for r in records),
            "peak_memory_mb": max(r.get("peak_memory_mb") or 0 for r in records),
        }


class _Attempt:
    """Runs a planned run in this process under its claim; keeps the current data split and what ran."""

    def __init__(self, experiment: "Experiment", progress: bool):
        self.experiment, self.progress = experiment, progress
        self.splits: dict[int, tuple] = {}
        self.fresh: list[dict] = []

    def __call__(self, run: PlannedRun) -> dict | None:
        """The run's record, run here; None while another live process has claimed it."""
        store = self.experiment.store
        if store is None:
            return self.execute(run)
        if not store.claims.claim(run.run_id, what=_describe(run)):
            return None
        record = None
        try:
            # another process may have recorded it since this one read the store
            record = store.record(run.run_id) or self.execute(run)
            return record
        finally:
            store.claims.release(run.run_id, record)

    def execute(self, run: PlannedRun) -> dict:
        if run.data_seed not in self.splits:
            self.splits = {run.data_seed: self.experiment.split(run.data_seed)}
        record = self.experiment._execute(run, *self.splits[run.data_seed], progress=self.progress)
        self.fresh.append(record)
        return record


class ScoreCache:
    """Label scores of a prompt state, computed once whichever runs reach it: a zero-shot prompt for
    every data seed; a learned prompt whose runs all kept its deterministic start.

    The key is the method, its settings, the template and verbalizer, and for a trained method a
    digest of everything it learned (its parameters and buffers, e.g. trigger ids).
    """

    def __init__(self):
        self._scores: dict[tuple, torch.Tensor] = {}

    @staticmethod
    def key(spec: MethodSpec, template: str, verbalizer: dict, method: PromptMethod | None = None) -> tuple:
        key = (spec.name, json.dumps(spec.params, sort_keys=True), template, json.dumps(verbalizer, sort_keys=True))
        return key if method is None else key + (_state_fingerprint(method),)

    def __contains__(self, key: tuple) -> bool:
        return key in self._scores

    def get(self, key: tuple, compute) -> torch.Tensor:
        """The scores under ``key``, computed with ``compute()`` the first time."""
        if key not in self._scores:
            self._scores[key] = compute()
        return self._scores[key]

    def put(self, key: tuple, scores: torch.Tensor) -> None:
        self._scores[key] = scores


def calibrated_id(rid: str, how: str) -> str:
    """The id of run ``rid``'s record calibrated by ``how``."""
    return run_id({"calibrated": rid, "how": how})


def _trainable_params(method: PromptMethod, config: TrainConfig | None) -> int:
    if config is None:
        return 0
    return sum(p.numel() for g in method.parameter_groups(config.lr, tune_lm=config.tune_lm) for p in g["params"])


def _cross_entropy(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    loss = gold_cross_entropy(scores, labels)
    return None if loss is None else round(loss, 6)


def _state_fingerprint(method) -> str:
    """A digest of everything a method has learned (its parameters and buffers, e.g. trigger ids)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(method.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    digest.update(method.demonstration_key().encode())
    return digest.hexdigest()


def _peak_memory_mb() -> float:
    """Peak memory: the GPU's allocator peak for this run, else the process's peak resident set."""
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)
