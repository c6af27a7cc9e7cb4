"""``prompting sweep``: an optuna study of one method's hyper-parameters or training seeds."""

from __future__ import annotations

from pathlib import Path

from prompting.cli.common import check_config_file, check_count, curves

__all__ = ["add_sweep_parser", "cmd_sweep"]


def add_sweep_parser(sub) -> None:
    p = sub.add_parser("sweep", help="optuna sweep of one method's hyper-parameters (or training seeds)")
    p.add_argument("config", help="YAML experiment config (its sweep: section, if any, sets the defaults)")
    p.add_argument("--storage", help="database URL; default sqlite:///OUTPUT_DIR/sweep.db; "
                                     "postgresql://USER:PW@HOST:PORT/DB for many machines")
    p.add_argument("--n-trials", type=int, help="finished trials the study should have (all workers together)")
    p.add_argument("--study", help="study name (default CONFIG_NAME-METHOD-params|seeds)")
    p.add_argument("--method", help="name or label of the config's method to sweep")
    p.add_argument("--objective", help="mean (dev over data seeds) or stable (mean - λ·std)")
    p.add_argument("--stability-lambda", type=float, help="λ of the stable objective (default 1)")
    p.add_argument("--seed-sweep", action="store_true", help="sweep training seeds 1..N at fixed hyper-parameters")
    p.add_argument("--export-best", metavar="OUT.yaml", help="write the best trial as a config for `prompting run`")
    p.add_argument("--output-dir", help="results.jsonl, report and plots (default runs/CONFIG_STEM-sweep)")
    p.add_argument("--test-limit", type=int, help="override fewshot.test_limit")
    p.add_argument("--heartbeat-interval", type=int, default=30, help="seconds between a worker's heartbeats")
    p.add_argument("--grace-period", type=int, default=120, help="seconds without heartbeat before a trial fails")
    p.add_argument("--max-retry", type=int, default=3, help="how often a failed (dead worker's) trial is re-run")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--tensorboard", metavar="DIR", help="live training curves of every trial's runs for TensorBoard, "
                                                       "in DIR/RUN_ID (overrides the config's tensorboard:)")
    p.add_argument("--mlflow", metavar="URI", nargs="?", const=True,
                   help="live training curves in MLflow at this tracking URI; without one, MLflow's default store "
                        "(overrides the config's mlflow:)")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    import logging

    import optuna

    from prompting.config.experiment import ConfigError, ProbeConfig, load_configs
    from prompting.core.paths import check_output_dir
    from prompting.experiment.storage import shown_url
    from prompting.sweeps.sweep import Sweep

    check_count("--test-limit", args.test_limit, "test examples to score (leave it out for the whole test set)")
    configs = load_configs(check_config_file(args.config))
    if len(configs) != 1:
        raise ConfigError(f"{args.config}: holds {len(configs)} experiments; a sweep needs one")
    cfg = configs[0]
    if isinstance(cfg, ProbeConfig):
        raise ConfigError(f"{args.config} is a fact-probing (lama) config; a sweep runs a few-shot task's config")
    if args.test_limit is not None:
        cfg.protocol.test_limit = args.test_limit
    curves(args, configs)
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
