"""Hyper-parameter and seed sweeps with optuna, on one machine (SQLite) or many (PostgreSQL).

    prompting sweep experiments/sst2_sweep.yaml --n-trials 20                      # SQLite in the output dir
    prompting sweep CONFIG --storage postgresql://user:pw@db:5432/sweeps --n-trials 100   # on each machine
    prompting sweep CONFIG --seed-sweep --n-trials 10                          # how much is luck?
    prompting sweep CONFIG --n-trials 0 --export-best best.yaml                # report and export only

A trial runs the few-shot harness for ONE method of the config with sampled hyper-parameters (the
method's ``search_space``, see :mod:`prompting.config.searchspace`, updated by the config's ``sweep.params``).
Its value is the mean dev metric over the data seeds (``stable``: mean - lambda * std over them); the
test set never enters it. After each data seed the trial reports its value so far, and the pruner
(median by default) stops trials that fall behind. Every run is a record in ``results.jsonl`` as
usual, tagged with ``sweep: {study, trial, params}``; a retried trial reuses the runs already recorded.

The same command started again, or on other machines with the same ``--storage``, joins the study:
workers go on until the study has ``n_trials`` finished (complete or pruned) trials and no queued
retry, so it may end with up to one extra trial per worker. Workers send heartbeats; when one dies,
the next trial that another worker starts after the grace period marks the dead one's trial failed
and re-runs its parameters first. If the others finished the study before that, the same command
started again (after the grace period) re-runs it. A study
remembers the method it was created for, and refuses a command that would mix in another.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import socket
import statistics
import warnings
from pathlib import Path
from typing import Any

import yaml

from prompting.config.experiment import (
    ConfigError,
    ExperimentConfig,
    method_space,
    parse_config,
    select_method,
)
from prompting.config.schema import OBJECTIVES, SweepConfig
from prompting.config.searchspace import SLOT_PARAMS, apply_params, resize_slots
from prompting.core.paths import slug
from prompting.core.schema import choices_text
from prompting.core.settings import MethodSpec, TrainingError
from prompting.experiment.harness import build_experiment
from prompting.experiment.storage import (
    StorageError,
    default_storage,
    open_storage,
    retry_trial,
    shown_url,
)
from prompting.reporting.tables import fmt
from prompting.sweeps.report import write_sweep_report

__all__ = ["SweepError", "Sweep", "objective_value"]

SEED_PARAM = "train_seed"
MAX_FAILS_IN_A_ROW = 5


class SweepError(StorageError):
    """A study that does not fit this command, or a sweep that cannot go on."""


# ------------------------------------------------------------------------------------ the sweep
def objective_value(per_seed: list[float], objective: str = "mean", stability_lambda: float = 1.0) -> float:
    """Mean over data seeds, or (``stable``) mean - lambda * std (sample std; 0 for one seed)."""
    mean = statistics.fmean(per_seed)
    if objective == "stable":
        return mean - stability_lambda * (statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0)
    return mean


@dataclasses.dataclass
class Sweep:
    """One method of a config x an optuna study. ``run`` adds trials; ``export_best`` and
    ``write_report`` read the study (which may be shared with other workers)."""

    cfg: ExperimentConfig
    output_dir: Path
    storage: str | None = None
    study_name: str | None = None
    method: str | None = None
    objective: str | None = None
    stability_lambda: float | None = None
    seed_sweep: bool = False
    n_trials: int = 0  # finished trials the study should have; a seed sweep tries seeds 1..n_trials
    heartbeat_interval: int = 30
    grace_period: int = 120
    max_retry: int = 3

    def __post_init__(self):
        settings = self.cfg.sweep or SweepConfig()
        self.settings = settings
        self.output_dir = Path(self.output_dir)
        self.index = select_method(self.cfg.methods, self.method or settings.method,
                                   "--method" if self.method else "sweep.method")
        self.base = self.cfg.methods[self.index]
        if not self.base.train and self.seed_sweep:
            raise ConfigError(f"--seed-sweep: method {self.base.label!r} is not trained (train: false); "
                              "training seeds change nothing")
        self.objective = self.objective or settings.objective
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"--objective: {self.objective!r} is not valid; choose {choices_text(OBJECTIVES, ' or ')}")
        self.stability_lambda = settings.stability_lambda if self.stability_lambda is None else self.stability_lambda
        self.space = {} if self.seed_sweep else method_space(self.base, self.cfg.prompts, settings.params)
        if not self.seed_sweep and not self.space:
            raise ConfigError(f"sweep: nothing to sample for {self.base.label!r}; its entry fixes every parameter "
                              "of its search space; give sweep.params")
        self.templates = [self.base.template] if self.base.template else list(dict.fromkeys(t for t, _ in self.cfg.prompts))
        mode = "seeds" if self.seed_sweep else "params"
        # the method's name, or its label where several entries share the name
        same = sum(m.name == self.base.name for m in self.cfg.methods) > 1
        self.study_name = self.study_name or f"{slug(f'{self.cfg.name}-{self.base.label if same else self.base.name}')}-{mode}"
        self.storage = self.storage or default_storage(self.output_dir)
        self.mode = mode
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._experiment = None  # the harness's Experiment, built when the first trial runs
        self._current: int | None = None

    # -------------------------------------------------------------------------- study
    def study(self):
        """Create the study, or join it after checking that it sweeps the same thing."""
        import optuna

        storage = open_storage(self.storage, self.heartbeat_interval, self.grace_period, self.max_retry)
        try:
            existing = storage.get_n_trials(storage.get_study_id_from_name(self.study_name))
        except KeyError:
            existing = 0
        # a worker joining a study that has trials draws another random stream than the first did
        seed = None if self.settings.seed is None else self.settings.seed + existing
        if self.seed_sweep:
            with warnings.catch_warnings():  # "experimental" in optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                sampler = optuna.samplers.BruteForceSampler(seed=seed)
            pruner = optuna.pruners.NopPruner()
        else:
            startup = self.settings.startup_trials
            sampler = optuna.samplers.TPESampler(n_startup_trials=startup, seed=seed)
            pruner = optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0) \
                if self.settings.pruner == "median" else optuna.pruners.NopPruner()
        study = optuna.create_study(study_name=self.study_name, storage=storage, direction="maximize",
                                    sampler=sampler, pruner=pruner, load_if_exists=True)
        mine = {"method": self.base.name, "label": self.base.label, "mode": self.mode, "objective": self.objective,
                "stability_lambda": self.stability_lambda, "config": self.cfg.name,
                "space": {k: p.to_dict() for k, p in self.space.items()}}
        if self.seed_sweep:
            mine["n_seeds"] = self.n_trials
        theirs = study.user_attrs
        if "method" not in theirs:
            # "method" last: a worker that joins meanwhile and sees it finds every other attribute set
            for key in sorted(mine, key=lambda k: k == "method"):
                study.set_user_attr(key, mine[key])
            self.n_seeds = self.n_trials
            return study
        for key, what in (("method", "method"), ("label", "method entry"), ("mode", "kind of sweep"),
                          ("objective", "objective"), ("stability_lambda", "stability lambda")):
            if theirs.get(key) != mine[key]:
                raise SweepError(
                    f"study {self.study_name!r} in {shown_url(self.storage)} was created for {what} "
                    f"{theirs.get(key)!r}; this command sweeps {what} {mine[key]!r}. "
                    "Give another --study name, or the command that created it")
        self.n_seeds = theirs.get("n_seeds") or 0
        if self.seed_sweep and self.n_trials > self.n_seeds:
            raise SweepError(f"study {self.study_name!r} sweeps training seeds 1..{self.n_seeds}; it cannot have "
                             f"{self.n_trials} trials. Give another --study name for more seeds")
        if theirs.get("space") != mine["space"]:
            warnings.warn(f"study {self.study_name!r} was created with another search space; its trials mix both")
        return study

    def run(self, lm=None, progress: bool = False, log=print):
        """Add trials until the study has ``n_trials`` finished ones; returns the study."""
        import optuna

        study, n_trials = self.study(), self.n_trials
        states = optuna.trial.TrialState
        finished = lambda: len(study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED)))
        # queued trials: retries of failed ones, which run even when the study has n_trials finished
        waiting = lambda: len(study.get_trials(deepcopy=False, states=(states.WAITING,)))
        # a dead worker's trial is failed (and queued again) when a trial starts after the grace
        # period; the others may have finished the study before that, so a new worker looks first
        with warnings.catch_warnings():  # "experimental" in optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        if finished() >= n_trials and not waiting():
            return study
        self._experiment = self._make_experiment(lm)
        fails = 0
        try:
            while finished() < n_trials or waiting():
                self._current = None
                study.optimize(lambda t: self._objective(t, progress), n_trials=1, catch=(TrainingError,),
                               callbacks=[lambda s, t: log(self._line(t))], gc_after_trial=False)
                last = self._frozen(study, self._current)
                fails = fails + 1 if last is not None and last.state == optuna.trial.TrialState.FAIL else 0
                if fails >= MAX_FAILS_IN_A_ROW:
                    raise SweepError(f"{fails} trials in a row failed (last: {last.user_attrs.get('error')}); "
                                     "narrow the search space (e.g. a lower lr range)")
        except KeyboardInterrupt:
            # optuna failed the interrupted trial: queue its parameters, as for a dead worker, so that
            # the next start re-runs it first and reuses the runs it had finished
            trial = self._frozen(study, self._current)
            if trial is not None and trial.state == optuna.trial.TrialState.FAIL:
                retry_trial(study, trial, self.max_retry)
            raise
        return study

    @staticmethod
    def _frozen(study, number):
        if number is None:
            return None
        return next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)

    def _make_experiment(self, lm):

        # one experiment per worker: its test set and LM snapshot serve every trial
        choices = self.space["template"].choices if "template" in self.space else ()
        return build_experiment(self.cfg, self.output_dir, lm, methods=[self.base], templates=choices)

    def _trial_spec(self, trial) -> tuple[MethodSpec, Any]:
        protocol = self.cfg.protocol
        if self.seed_sweep:
            seed = trial.suggest_int(SEED_PARAM, 1, max(1, self.n_seeds))
            return (dataclasses.replace(self.base, ensemble=None, train_seeds=None),
                    dataclasses.replace(protocol, train_seeds=[seed]))
        values = {name: param.suggest(trial) for name, param in self.space.items()}
        shown = ", ".join(f"{k}={fmt(v)}" for k, v in values.items() if k != "template" and k not in SLOT_PARAMS)
        label = f"{self.base.label} [{shown}]" if shown else self.base.label
        return apply_params(self.base, values, self.templates, label), protocol

    def _objective(self, trial, progress: bool) -> float:
        import optuna

        self._current = trial.number
        trial.set_user_attr("worker", self.worker)
        spec, protocol = self._trial_spec(trial)
        spec.tags = {"sweep": {"study": self.study_name, "trial": trial.number, "params": dict(trial.params)}}
        experiment = self._experiment
        experiment.methods, experiment.protocol = [spec], protocol
        metric = protocol.select_metric
        n_splits = len(experiment.data_seeds())
        per_seed: dict[int, float] = {}
        run_ids: list[str] = []

        def on_split_done(data_seed, records):
            per_seed[data_seed] = statistics.fmean(r["dev"].get(metric, math.nan) for r in records)
            run_ids.extend(r["run_id"] for r in records)
            trial.set_user_attr("dev_by_seed", {str(k): v for k, v in per_seed.items()})
            trial.set_user_attr("run_ids", list(run_ids))
            value = objective_value(list(per_seed.values()), self.objective, self.stability_lambda)
            trial.report(value, step=len(per_seed) - 1)
            # after the last split there is nothing left to save: the trial completes
            if not self.seed_sweep and len(per_seed) < n_splits and trial.should_prune():
                raise optuna.TrialPruned(f"after data seed {data_seed}: {value:.4f}")

        try:
            records = experiment.run(progress=progress, on_split_done=on_split_done)
        except TrainingError as err:
            trial.set_user_attr("error", str(err))
            raise
        tests = [r["test"][metric] for r in records if r["run_id"] in set(run_ids) and r.get("test")]
        if tests:
            trial.set_user_attr("test_mean", statistics.fmean(tests))
        return objective_value(list(per_seed.values()), self.objective, self.stability_lambda)

    @staticmethod
    def _line(trial) -> str:
        params = ", ".join(f"{k}={fmt(v)}" for k, v in trial.params.items() if k != "template")
        value = f"{trial.value:.4f}" if trial.value is not None else "–"
        retry = trial.system_attrs.get("failed_trial")
        again = f" (retry of trial {retry})" if retry is not None else ""
        return f"trial {trial.number}{again}: {trial.state.name.lower()} {value}  {params}"

    # -------------------------------------------------------------------------- results
    def export_best(self, study, path: str | Path) -> Path:
        """Write the best trial as an ordinary config (only this method, no ``sweep``) for ``prompting run``."""
        import optuna

        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not complete:
            raise SweepError(f"study {self.study_name!r} has no completed trial to export yet")
        best = study.best_trial
        data = copy.deepcopy(self.cfg.source)
        data.pop("sweep", None)
        entry = dict(data["methods"][self.index])
        for name, value in best.params.items():
            if name == SEED_PARAM:
                data["seeds"] = {**(data.get("seeds") or {}), "train_seeds": [value]}
            elif name in SLOT_PARAMS:
                template = entry.get("template") or self.templates[0]
                entry["template"] = resize_slots(template, name, value)
            else:
                entry[name] = value
        entry["label"] = f"{self.base.label} (best of sweep {self.study_name}, trial {best.number})"
        entry.pop("ensemble", None)
        data["methods"] = [entry]
        data["name"] = f"{self.cfg.name}-best"
        parse_config(data, base=self.cfg.base)  # what we write must load
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = (f"# Best trial {best.number} of sweep {self.study_name!r}: dev {self.objective} objective "
                  f"{best.value:.4f}\n# params: {best.params}\n#   prompting run {path}\n")
        path.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110))
        return path

    def write_report(self, study) -> dict[str, Path]:

        return write_sweep_report(study, self.output_dir, self.study_name, seed_param=SEED_PARAM)
