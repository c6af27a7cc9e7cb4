"""``prompting run``: an experiment config, in this process or in many workers."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from prompting.cli.common import check_config_file, check_count, curves, quiet_optuna

__all__ = ['add_run_parser', 'cmd_run']


def _print_summary(records, directory: Path, metric: str = "accuracy") -> None:
    from prompting.experiment.results import ResultsStore
    from prompting.reporting.generation import generation_rows, is_generation_record
    from prompting.reporting.generation_report import generation_table
    from prompting.reporting.probing import is_probe_record, probe_table
    from prompting.reporting.report import summary_rows, write_report
    from prompting.reporting.tables import summary_table

    by_task, store = {}, ResultsStore(directory)
    for r in records:
        by_task.setdefault(r["task"], []).append(r)
    for task, recs in by_task.items():
        print(f"\n## {task}\n")
        probes = [r for r in recs if is_probe_record(r)]
        texts = [r for r in recs if is_generation_record(r)]
        print(probe_table(probes) if probes else generation_table(generation_rows(store, texts)) if texts
              else summary_table(summary_rows(store, recs, metric)))
    paths = write_report(directory, metric)
    print(f"\nreport: {paths['report']}\nsummary: {paths['summary']}")
    plots = [str(p) for k, p in paths.items() if k not in ("report", "summary", "runs")]
    if plots:
        print("plots: " + ", ".join(plots))


def cmd_run(args) -> int:
    from prompting.cli.workers import check_storage, check_worker_options, run_workers
    from prompting.config.experiment import load_configs
    from prompting.core.paths import check_output_dir, slug

    check_count("--test-limit", args.test_limit, "test examples to score (leave it out for the whole test set)")
    configs = load_configs(check_config_file(args.config))
    curves(args, configs)
    output = check_output_dir(args.output_dir or Path("runs") / slug(Path(args.config).stem))
    check_worker_options(args, output)
    if args.storage is not None:
        check_storage(args)
    started = time.perf_counter()
    if args.workers is not None:
        if run_workers(args, output):
            return 1
        from prompting.experiment.results import ResultsStore

        names = {cfg.name for cfg in configs}
        records = [r for r in ResultsStore(output).records() if r.get("experiment") in names]
    else:
        records = _run_here(args, configs, output)
    print(f"\n{args.config}: {len(records)} runs in {output / 'results.jsonl'} "
          f"({time.perf_counter() - started:.0f} s this time)")
    if not args.no_summary:
        _print_summary(records, output, configs[0].select_metric)
    return 0


def _run_here(args, configs, output: Path) -> list[dict]:
    """Every experiment of the file in this process, one LM for the configs that name the same model."""
    from prompting.experiment.harness import build_experiments
    from prompting.experiment.workers import share_runs, study_name

    records, lm = [], None
    for cfg in configs:
        if args.test_limit is not None:
            cfg.limit_test(args.test_limit)
        if args.device is not None:
            cfg.device = args.device
        same = lm is not None and (lm.name, str(lm.dtype)) == (cfg.model, f"torch.{cfg.dtype}")
        for experiment in build_experiments(cfg, output, lm if same else None, allow_download=args.allow_download):
            lm = experiment.lm
            if args.storage is not None:
                quiet_optuna(args)
                share_runs(experiment.store, args.storage, study_name(cfg.name), args.heartbeat_interval,
                           args.grace_period)
            records += experiment.run(progress=not args.quiet)
    return records


def add_run_parser(sub) -> None:
    p = sub.add_parser("run", help="run an experiment config (resumes: finished runs are skipped)")
    p.add_argument("config", help="YAML experiment config")
    p.add_argument("--output-dir", help="default runs/CONFIG_NAME")
    p.add_argument("--test-limit", type=int, help="override fewshot.test_limit")
    p.add_argument("--allow-download", action="store_true", help="let a hub id be downloaded (off by default)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--tensorboard", metavar="DIR",
                   help="live training curves for TensorBoard: each run's loss, learning rate, dev metric and "
                        "final metrics, its settings as hyper-parameters, in DIR/RUN_ID (overrides the config's "
                        "tensorboard:)")
    p.add_argument("--mlflow", metavar="URI", nargs="?", const=True,
                   help="live training curves in MLflow at this tracking URI, e.g. sqlite:///mlflow.db; without one, "
                        "MLflow's default store (overrides the config's mlflow:)")
    from prompting.cli.workers import add_worker_options

    add_worker_options(p)
    p.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)  # workers: the parent reports
    p.set_defaults(func=cmd_run)
