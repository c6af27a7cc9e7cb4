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
import importlib.util
import math
import os
import random
import socket
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

from prompting.config.experiment import ConfigError, ExperimentConfig, method_space, parse_config, select_method
from prompting.core.paths import check_output_dir, slug
from prompting.reporting.report import fmt
from prompting.config.searchspace import SLOT_PARAMS, apply_params, resize_slots
from prompting.core.settings import MethodSpec, TrainingError

__all__ = ["SweepError", "Sweep", "open_storage", "default_storage", "add_sweep_parser"]

SEED_PARAM = "train_seed"
SCHEMA_ATTEMPTS = 8  # workers started together race to create a new storage's tables
MAX_FAILS_IN_A_ROW = 5


class SweepError(RuntimeError):
    """A storage that cannot be used, or a study that does not fit this command."""


# ------------------------------------------------------------------------------------ storage
def shown_url(url: str) -> str:
    """A storage URL without its password (``***`` in its place), also when it does not parse."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        if "@" not in (parsed.host or ""):  # an "@" left in the host: the password had one, unescaped
            return parsed.render_as_string(hide_password=True)
    except Exception:
        pass
    # whatever stands before the last "@" may hold a password: never print it
    text = str(url)
    if "@" not in text:
        return text
    scheme, sep, rest = text.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}" if sep else f"***@{text.rpartition('@')[2]}"


def default_storage(output_dir: str | Path) -> str:
    return "sqlite:///" + str((Path(output_dir) / "sweep.db").resolve())


def open_storage(url: str, heartbeat_interval: int = 30, grace_period: int = 120, max_retry: int = 3):
    """An optuna RDB storage with heartbeats: a trial whose worker stops beating for ``grace_period``
    seconds is failed and its parameters are queued again (at most ``max_retry`` times)."""
    import optuna

    shown = shown_url(url)
    url, engine_kwargs = _engine_url(url)
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)  # optuna >= 4.9
    with warnings.catch_warnings():  # heartbeats are "experimental" in optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = {"heartbeat_stale_trial_callback": retry(max_retry=max_retry)} if retry else \
            {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=max_retry)}
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                     heartbeat_interval=heartbeat_interval,
                                                     grace_period=grace_period, **callback)
            if storage.engine.dialect.name == "sqlite":
                _immediate_transactions(storage.engine)
            return storage
        except Exception as err:  # sqlalchemy/driver errors: no server, wrong password, no such database...
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if attempt + 1 < SCHEMA_ATTEMPTS and _schema_race(first):
                time.sleep(random.uniform(0.05, 0.3) * (attempt + 1))
                continue
            raise SweepError(f"cannot open storage {shown!r}: {first}") from None


def _immediate_transactions(engine) -> None:
    """Make every SQLite transaction take the write lock when it begins.

    Python's sqlite3 module starts a transaction only at the first write, so optuna's read-then-write
    steps (claim a WAITING trial, fail a stale one) are not atomic there: two workers both read
    WAITING and both move the trial to RUNNING (measured: 202 claims of 200 trials by 3 processes).
    ``BEGIN IMMEDIATE`` serialises those steps, as ``SELECT ... FOR UPDATE`` does on PostgreSQL.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, record):
        dbapi_connection.isolation_level = None  # SQLAlchemy says when a transaction begins, not sqlite3

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # the connections made while the tables were created had sqlite3's own habit


def _engine_url(url: str) -> tuple[str, dict[str, Any]]:
    """The URL SQLAlchemy is given (the driver spelled out) and the engine's settings, after checking
    that it names a database every worker can share."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    valid = "sqlite:///PATH/sweep.db (one machine) or postgresql://USER:PASSWORD@HOST:PORT/DATABASE (many)"
    if not isinstance(url, str) or "://" not in url:
        raise SweepError(f"storage {shown_url(url)!r} is not a database URL; use {valid}")
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as err:
        why = str(err).replace(url, shown_url(url))  # the parser's message may quote the URL, password and all
        raise SweepError(f"storage {shown_url(url)!r} is not a valid database URL ({why}); use {valid}") from None
    shown = shown_url(url)
    dialect = parsed.get_backend_name()
    if dialect == "postgres":
        raise SweepError(f"storage {shown!r}: write postgresql://, not postgres://")
    if dialect not in ("sqlite", "postgresql", "mysql"):
        raise SweepError(f"storage {shown!r}: {dialect!r} is not a supported database; use {valid}")
    if dialect == "sqlite" and _in_memory(parsed):
        # each connection (every worker, and each heartbeat thread) would get its own empty database,
        # and the study would vanish when the process ends
        raise SweepError(f"storage {shown!r} is an in-memory SQLite database, which no other worker or thread "
                         "can see and which is gone at exit; give a file: sqlite:///PATH/sweep.db "
                         "(or leave --storage out for OUTPUT_DIR/sweep.db)")
    engine_kwargs: dict[str, Any] = {}
    if dialect == "postgresql":
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; ours is psycopg2 (the postgres extra)
        chosen = [parsed.get_driver_name()] if "+" in parsed.drivername else ["psycopg2", "psycopg"]
        driver = next((d for d in chosen if importlib.util.find_spec(d) is not None), None)
        if driver is None:
            raise SweepError(f"storage {shown!r} needs the {chosen[0]} driver: pip install 'prompting[postgres]'")
        url = parsed.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)
        # long trials leave pooled connections idle: check them before use; fail fast on a dead host
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    if dialect == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return url, engine_kwargs


def _schema_race(message: str) -> bool:
    """Whether opening a storage failed because another worker was creating its tables at the same
    moment (optuna creates the schema on first use): then the next try finds them made."""
    return any(m in message for m in ("already exists", "UNIQUE constraint failed", "database is locked",
                                      "duplicate key value"))


def _in_memory(parsed) -> bool:
    database = parsed.database or ""
    return database in ("", ":memory:") or database.startswith("file::memory:") or \
        parsed.query.get("mode") == "memory"


def _retry(study, trial, max_retry: int) -> None:
    """Queue a failed trial's parameters again, as the heartbeat callback does for a dead worker."""
    import optuna

    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or \
        optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry(max_retry=max_retry)(study, trial)


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
        settings = self.cfg.sweep or _default_settings()
        self.settings = settings
        self.output_dir = Path(self.output_dir)
        self.index = select_method(self.cfg.methods, self.method or settings.method,
                                   "--method" if self.method else "sweep.method")
        self.base = self.cfg.methods[self.index]
        if not self.base.train and self.seed_sweep:
            raise ConfigError(f"--seed-sweep: method {self.base.label!r} is not trained (train: false); "
                              "training seeds change nothing")
        self.objective = self.objective or settings.objective
        if self.objective not in ("mean", "stable"):
            raise ConfigError(f"--objective: {self.objective!r} is not valid; choose mean or stable")
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
                _retry(study, trial, self.max_retry)
            raise
        return study

    @staticmethod
    def _frozen(study, number):
        if number is None:
            return None
        return next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)

    def _make_experiment(self, lm):
        from prompting.experiment.harness import build_experiment

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
        n_splits = 1 if experiment.task.fixed_split else len(protocol.data_seeds)
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
        from prompting.sweeps.report import write_sweep_report

        return write_sweep_report(study, self.output_dir, self.study_name, seed_param=SEED_PARAM)


def _default_settings():
    from prompting.config.experiment import SweepConfig

    return SweepConfig()


# ------------------------------------------------------------------------------------ command line
def add_sweep_parser(sub) -> None:
    p = sub.add_parser("sweep", help="optuna sweep of one method's hyper-parameters (or training seeds)")
    p.add_argument("config", help="YAML experiment config (its sweep: section, if any, sets the defaults)")
    p.add_argument("--storage", help="database URL; default sqlite:///OUTPUT_DIR/sweep.db; "
                                     "postgresql://USER:PW@HOST:PORT/DB for many machines")
    p.add_argument("--n-trials", type=int, help="finished trials the study should have (all workers together)")
    p.add_argument("--study", help="study name (default CONFIG_NAME-METHOD-params|seeds)")
    p.add_argument("--method", help="name or label of the config's method to sweep")
    p.add_argument("--objective", choices=["mean", "stable"], help="mean dev over data seeds, or mean - λ·std")
    p.add_argument("--stability-lambda", type=float, help="λ of the stable objective (default 1)")
    p.add_argument("--seed-sweep", action="store_true", help="sweep training seeds 1..N at fixed hyper-parameters")
    p.add_argument("--export-best", metavar="OUT.yaml", help="write the best trial as a config for `prompting run`")
    p.add_argument("--output-dir", help="results.jsonl, report and plots (default runs/CONFIG_STEM-sweep)")
    p.add_argument("--test-limit", type=int, help="override fewshot.test_limit")
    p.add_argument("--heartbeat-interval", type=int, default=30, help="seconds between a worker's heartbeats")
    p.add_argument("--grace-period", type=int, default=120, help="seconds without heartbeat before a trial fails")
    p.add_argument("--max-retry", type=int, default=3, help="how often a failed (dead worker's) trial is re-run")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    import logging

    import optuna

    from prompting.config.experiment import load_configs

    from prompting.cli import check_config_file, check_count

    check_count("--test-limit", args.test_limit, "test examples to score (leave it out for the whole test set)")
    configs = load_configs(check_config_file(args.config))
    if len(configs) != 1:
        raise ConfigError(f"{args.config}: holds {len(configs)} experiments; a sweep needs one")
    cfg = configs[0]
    if args.test_limit is not None:
        cfg.protocol.test_limit = args.test_limit
    n_trials = args.n_trials if args.n_trials is not None else (cfg.sweep.n_trials if cfg.sweep else None)
    if n_trials is None or n_trials < 0:
        raise ConfigError(f"give --n-trials N (N >= 0) or sweep.n_trials in {args.config}")
    output = check_output_dir(args.output_dir or Path("runs") / f"{Path(args.config).stem}-sweep")
    if args.export_best:  # written after the sweep: a path it cannot be written to is refused now
        if Path(args.export_best).is_dir():
            raise ConfigError(f"--export-best {args.export_best!r} is a folder; give the path of a YAML file to write")
        check_output_dir(Path(args.export_best).parent, "--export-best folder")
    sweep = Sweep(cfg, output, storage=args.storage, study_name=args.study, method=args.method,
                  objective=args.objective, stability_lambda=args.stability_lambda, seed_sweep=args.seed_sweep,
                  n_trials=n_trials, heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period,
                  max_retry=args.max_retry)
    if not args.verbose:
        optuna.logging.set_verbosity(logging.WARNING)
    print(f"study {sweep.study_name!r} ({sweep.mode}) of {sweep.base.label!r}, worker {sweep.worker}, "
          f"storage {shown_url(sweep.storage)}")
    if not sweep.seed_sweep:
        print("search space: " + ", ".join(f"{k} {p.to_dict()}" for k, p in sweep.space.items()))
    study = sweep.run(progress=not args.quiet)
    paths = sweep.write_report(study)
    print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    complete = [t for t in study.trials if t.value is not None and t.state.name == "COMPLETE"]
    if complete:
        best = study.best_trial
        print(f"best: trial {best.number}, dev {sweep.objective} {best.value:.4f}, params {best.params}")
    if args.export_best:
        print(f"exported: {sweep.export_best(study, args.export_best)}")
    return 0
