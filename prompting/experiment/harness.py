"""The few-shot protocol: data seeds x training seeds, seed search, pattern ensembles.

    exp = Experiment(lm, task, [MethodSpec("manual", train=False), MethodSpec("manual", train=True)],
                     prompts=[("Review: {text_a}\\nSentiment: {mask}", {0: ["negative"], 1: ["positive"]})],
                     protocol=Protocol(k=16, data_seeds=(13, 21, 42), train_seeds=(1, 2)),
                     output_dir="runs/demo")
    records = exp.run()

LM-BFF protocol (default): K per class from train, a disjoint K per class as dev, the task's test
set as test. FewGLUE protocol (tasks with fixed files): train and dev32 as given; data seeds then
only name repetitions. The harness never knows which method or which kind of task it runs: the task
type (:mod:`prompting.tasks`) plans the runs, fits and scores them; one run is done by
:class:`prompting.experiment.executor.RunExecutor`; calibrated and ensemble records come from saved
scores (:mod:`prompting.experiment.derived`).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Sequence

from prompting.config.experiment import ConfigError, ProbeConfig, load_task_spec
from prompting.core.data import DataError, Example, Task
from prompting.core.settings import ENSEMBLES, MethodSpec, Protocol
from prompting.experiment.derived import DerivedRecords, calibrated_id
from prompting.experiment.executor import RunExecutor
from prompting.experiment.results import ResultsStore
from prompting.experiment.tracking import Tracker, open_tracker
from prompting.lm.loading import model_kind
from prompting.lm.model import LanguageModel
from prompting.tasks.answers import check_lm, check_model
from prompting.tasks.base import PlannedRun, TaskType, describe_run
from prompting.tasks.classification import Classification, jsonable_verbalizer
from prompting.tasks.lama import load_relation
from prompting.tasks.generation import Generation
from prompting.tasks.probing import FactProbing
from prompting.tasks.textspec import decoding_of, is_generation, load_generation_task
from prompting.methods.targets import Decoding

__all__ = ["MethodSpec", "Protocol", "Experiment", "PlannedRun", "build_experiment", "build_experiments", "ENSEMBLES",
           "config_tracker"]


def build_experiment(cfg, output_dir, lm: LanguageModel | None = None, methods: Sequence[MethodSpec] | None = None,
                     templates: Sequence[str] = (), allow_download: bool = False) -> "Experiment":
    """The experiment a parsed config describes (see :mod:`prompting.config.experiment`): its task loaded and its
    prompts checked first, so that a wrong template fails before the model loads; then the model,
    unless ``lm`` is given. ``methods`` replaces the config's methods (a sweep runs one at a time)."""
    task = task_type_of(cfg)
    methods = list(cfg.methods if methods is None else methods)
    task.check(methods, cfg.prompts, templates, protocol=cfg.protocol)
    if lm is None and any(spec.answer != "score" or spec.chat for spec in methods):
        check_model(methods, model_kind(cfg.model), cfg.model)  # a masked LM writes no answer: say so now
    check_splits(task, cfg.protocol)
    tracker = config_tracker(cfg)
    lm = lm or load_model(cfg, allow_download)
    return Experiment(lm, task, methods, cfg.prompts, cfg.protocol, output_dir=output_dir, name=cfg.name,
                      max_length=cfg.max_length, tracker=tracker)


def build_experiments(cfg, output_dir, lm: LanguageModel | None = None, allow_download: bool = False) -> list["Experiment"]:
    """The experiments of one parsed config: one, or for fact probing one per relation (all on one LM);
    every task is loaded and checked before the model loads."""
    if not isinstance(cfg, ProbeConfig):
        return [build_experiment(cfg, output_dir, lm, allow_download=allow_download)]

    tasks = [FactProbing(load_relation(cfg.data_dir, r, template=cfg.template), cfg.limits, cfg.protocols,
                         cfg.template, experiment=cfg.name) for r in cfg.relations]
    for task in tasks:
        task.check(cfg.methods, [])
    tracker = config_tracker(cfg)
    lm = lm or load_model(cfg, allow_download)
    # every fact is its own split: one data seed, and a trained prompt's seed 1
    protocol = Protocol(k=0, data_seeds=(0,), train_seeds=(1,))
    return [Experiment(lm, task, cfg.methods, [], protocol, output_dir=output_dir, name=cfg.name,
                       max_length=cfg.max_length, tracker=tracker) for task in tasks]


def config_tracker(cfg) -> Tracker | None:
    """Where a config's runs write live curves (``tensorboard:``, ``mlflow:``, or the command line's
    ``--tensorboard`` / ``--mlflow``), checked before the model loads; None: nowhere."""
    return open_tracker(cfg.tensorboard, cfg.mlflow, cfg.name)


def task_type_of(cfg) -> TaskType:
    """The task type a parsed config's ``task:`` section describes, its files read: a generation task, or a
    classification task (built in or your own files)."""
    if is_generation(cfg.task):
        return Generation(load_generation_task(cfg.task, cfg.base, ConfigError), Decoding(**decoding_of(cfg.task)))
    return Classification(load_task_spec(cfg.task, cfg.base))


def check_splits(task_type: TaskType, protocol: Protocol) -> None:
    """Draw every data seed's split, as the runs will (sampling is cheap and seeded): a K larger than the
    data holds is refused before the model loads, not after."""
    for data_seed in dict.fromkeys(protocol.data_seeds):
        try:
            task_type.split(protocol, data_seed)
        except DataError as err:
            raise DataError(f"task {task_type.name!r}, K = {protocol.k} (fewshot: k), data seed {data_seed}: {err}; "
                            "lower fewshot: k") from None


def load_model(cfg, allow_download: bool = False) -> LanguageModel:
    """The LM a config names, as it asks for it (device, precision, placement, length, cache)."""
    return LanguageModel.load(cfg.model, device=cfg.device, max_length=cfg.max_length or 512,
                              allow_download=allow_download, dtype=cfg.dtype, device_map=cfg.device_map,
                              kv_cache_mb=cfg.kv_cache_mb)


class Experiment:
    """Plans and runs every (method, prompt, data seed, train seed); resumes from ``output_dir``.

    ``task`` is a :class:`prompting.core.data.Task` (classification) or any task type
    (:class:`prompting.tasks.base.TaskType`). ``executor`` does each run (default: a
    :class:`RunExecutor` on this experiment's LM and task); pass one of your own to watch or change what
    a run does. ``tracker``: where runs write live training curves
    (:mod:`prompting.experiment.tracking`: TensorBoard, MLflow).
    """

    def __init__(self, lm: LanguageModel, task: Task | TaskType, methods: Sequence[MethodSpec],
                 prompts: Sequence[tuple[str, dict]], protocol: Protocol | None = None,
                 output_dir=None, name: str = "experiment", max_length: int | None = None,
                 executor: RunExecutor | None = None, tracker: Tracker | None = None):
        self.task_type = task if isinstance(task, TaskType) else Classification(task)
        self.lm, self.methods = lm, list(methods)
        self.prompts = [(t, jsonable_verbalizer(v)) for t, v in prompts]
        self._protocol = protocol or Protocol()
        self.store = ResultsStore(output_dir) if output_dir is not None else None
        self.name = name
        self.max_length = max_length
        self.task_type.check(self.methods, self.prompts, protocol=self._protocol)
        check_lm(self.methods, lm)
        self.executor = executor or RunExecutor(lm, self.task_type, self._protocol, name=name, max_length=max_length)
        if self.store is not None:  # where runs that ask to keep their model save it
            self.executor.models_dir = self.store.directory / "models"
        if tracker is not None:
            self.executor.tracker = tracker

    @property
    def protocol(self) -> Protocol:
        return self._protocol

    @protocol.setter
    def protocol(self, protocol: Protocol) -> None:
        """A new protocol (a sweep's trial, a seed sweep's seed) also reaches the executor."""
        self._protocol = self.executor.protocol = protocol

    @property
    def task(self) -> Task | None:
        """The classification task (None for another task type)."""
        return getattr(self.task_type, "task", None)

    def split(self, data_seed: int) -> tuple[list[Example], list[Example]]:
        """The (train, dev) examples of one data split."""
        return self.task_type.split(self.protocol, data_seed)

    def plan(self) -> list[PlannedRun]:
        """Every run of the experiment, in the order it runs them."""
        return self.task_type.plan(self.methods, self.prompts, self.protocol, self.lm.name, self.lm.dtype,
                                   self.max_length)

    def data_seeds(self) -> list[int]:
        """The data splits the plan runs, in order."""
        return list(dict.fromkeys(run.data_seed for run in self.plan()))

    def execute(self, run: PlannedRun, train_examples, dev_examples, progress: bool = True) -> dict:
        """Do one run with the executor and record it (with its label scores); returns the record. A run that
        learns from other runs gets their records and saved scores (:attr:`PlannedRun.inputs`)."""
        if run.needs:
            run.inputs = {rid: {"record": self.store.record(rid), "predictions": self.store.load_predictions(rid)}
                          for rid in run.needs}
        done = self.executor.execute(run, train_examples, dev_examples, progress=progress)
        record = done.record.to_dict()
        if self.store:
            self.store.save_predictions(run.run_id, done.predictions)
            self.store.append(record, once=True)  # a worker whose claim lapsed may have recorded it meanwhile
        return record

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
        if self.store is None and any(r.needs for r in planned):
            raise ValueError("distilled models and iPET generations learn from the saved scores of earlier runs; "
                             "give the experiment an output folder (output_dir)")
        print(self.task_type.describe(self.protocol), file=sys.stderr, flush=True)
        # two method entries that differ only in how they are ensembled plan the same runs: run each once
        unique = list({r.run_id: r for r in planned}.values())
        done = self.store.done() if self.store else set()
        if self.store:  # a study of runs shared by workers queues the plan (once for all of them)
            self.store.claims.expect({r.run_id: describe_run(r) for r in unique}, skip=done)
        todo = [r for r in unique if r.run_id not in done]
        bar = tqdm(total=len(unique), initial=len(unique) - len(todo), desc=self.name, disable=not progress)
        by_id = {r["run_id"]: r for r in self.store.records()} if self.store and on_split_done else {}
        last_of_split = {r.data_seed: r.run_id for r in unique}
        attempt = _Attempt(self, progress)
        elsewhere: list[PlannedRun] = []  # claimed by other processes when this one came to them
        for run in unique:
            if run.run_id not in done:
                bar.set_postfix_str(describe_run(run))
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
        """Calibrated and ensemble records added (one process at a time: each then sees what the others
        recorded and adds nothing twice); this experiment's records and the ensembles of them, not those
        of another experiment sharing the folder."""
        if self.task_type.derives_records:
            derived = DerivedRecords(self.store, self.task, self.protocol, self.executor.test, self.name,
                                     self.executor.build, self.split)
            with self.store.claims.hold("ensembles"):
                derived.add(planned, self.methods)
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
                who = sorted({f"pid {h['pid']} on {h['host']}" for h in holders if h and h.get("pid") is not None})
                print(f"{self.name}: waiting for {len(pending)} run{'s' if len(pending) > 1 else ''} that "
                      f"{'another process is' if len(who) < 2 else 'other processes are'} running "
                      f"({', '.join(who) or 'finishing'}): {', '.join(describe_run(r) for r in pending[:3])}"
                      f"{', …' if len(pending) > 3 else ''}", file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(2 * delay, 5.0)


class _Attempt:
    """Runs a planned run in this process under its claim; keeps the current data split and what ran."""

    def __init__(self, experiment: "Experiment", progress: bool):
        self.experiment, self.progress = experiment, progress
        self.splits: dict[int, tuple] = {}
        self.fresh: list[dict] = []

    def __call__(self, run: PlannedRun) -> dict | None:
        """The run's record, run here; None while another live process has claimed it, or while a run it
        learns from is not recorded yet."""
        store = self.experiment.store
        if store is None:
            return self.execute(run)
        if any(store.record(rid) is None for rid in run.needs):
            return None
        if not store.claims.claim(run.run_id, what=describe_run(run)):
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
        record = self.experiment.execute(run, *self.splits[run.data_seed], progress=self.progress)
        self.fresh.append(record)
        return record
