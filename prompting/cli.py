"""The ``prompting`` command line.

    prompting eval --task mr                               # zero-shot: every pattern x verbalizer
    prompting run experiments/quickstart.yaml --output-dir runs/quickstart
    prompting report runs/quickstart
    prompting sweep experiments/sst2_sweep.yaml --n-trials 10 --export-best runs/sst2_best.yaml
    prompting models
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

__all__ = ["main", "build_parser"]


def _experiment(cfg, output_dir, lm=None, allow_download: bool = False):
    from .backbone import LanguageModel
    from .config import load_task_spec
    from .harness import Experiment

    task = load_task_spec(cfg.task, cfg.base)
    lm = lm or LanguageModel.load(cfg.model, device=cfg.device, max_length=cfg.max_length or 512,
                                  allow_download=allow_download)
    return Experiment(lm, task, cfg.methods, cfg.prompts, cfg.protocol, output_dir=output_dir,
                      name=cfg.name, max_length=cfg.max_length)


def _print_summary(records, directory: Path, metric: str = "accuracy") -> None:
    from .report import summary_table, write_report
    from .results import aggregate

    by_task = {}
    for r in records:
        by_task.setdefault(r["task"], []).append(r)
    for task, recs in by_task.items():
        print(f"\n## {task}\n")
        print(summary_table(aggregate(recs, metric)))
    paths = write_report(directory, metric)
    print(f"\nreport: {paths['report']}\nsummary: {paths['summary']}")
    plots = [str(p) for k, p in paths.items() if k not in ("report", "summary", "runs")]
    if plots:
        print("plots: " + ", ".join(plots))


def cmd_eval(args) -> int:
    from .config import load_prompt_file, parse_config
    from .report import zero_shot_table

    patterns, verbalizers = load_prompt_file(args.templates or args.task)
    data = {"name": f"{args.task}-zero-shot", "model": args.model, "device": args.device,
            "task": {"name": args.task, **({"data_dir": args.data_dir} if args.data_dir else {})},
            "fewshot": {"k": args.k, "data_seeds": [args.data_seed], "test_limit": args.limit,
                        "eval_batch_size": args.batch_size},
            "templates": {"patterns": patterns, "verbalizers": verbalizers},
            "methods": [{"name": "manual", "train": False}]}
    if args.max_length:
        data["max_length"] = args.max_length
    cfg = parse_config(data)
    output = Path(args.output_dir or f"runs/{args.task}-zero-shot")
    started = time.perf_counter()
    records = _experiment(cfg, output, allow_download=args.allow_download).run(progress=not args.quiet)
    n = records[0]["n_test"] if records else 0
    print(f"\nzero-shot on {args.task} ({n} test examples, model {args.model}), "
          f"{time.perf_counter() - started:.0f} s\n")
    print(zero_shot_table(records))
    print(f"\nrecords: {output / 'results.jsonl'}")
    return 0


def cmd_run(args) -> int:
    from .config import load_configs

    configs = load_configs(args.config)
    output = Path(args.output_dir or Path("runs") / Path(args.config).stem)
    started = time.perf_counter()
    records, lm = [], None
    for cfg in configs:
        if args.test_limit is not None:
            cfg.protocol.test_limit = args.test_limit
        experiment = _experiment(cfg, output, lm if lm is not None and lm.name == cfg.model else None,
                                 allow_download=args.allow_download)
        lm = experiment.lm
        records += experiment.run(progress=not args.quiet)
    print(f"\n{args.config}: {len(records)} runs in {output / 'results.jsonl'} "
          f"({time.perf_counter() - started:.0f} s this time)")
    _print_summary(records, output, configs[0].protocol.select_metric)
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    paths = write_report(args.directory, args.metric, plots=not args.no_plots)
    print(Path(paths["report"]).read_text())
    print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    return 0


def cmd_models(args) -> int:
    import importlib.util

    from .backbone import ALIASES

    print(f"{'alias':<14} {'installed':<44} description")
    for alias, entry in ALIASES.items():
        ok = "yes" if importlib.util.find_spec(entry.module) else f"no: {entry.install}"
        print(f"{alias:<14} {ok:<44} {entry.description}")
    print("\nAny Hugging Face masked or causal LM in the local cache, or a local checkpoint folder, also works.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .backbone import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="prompting", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is loaded and cached")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("eval", help="zero-shot: score every pattern x verbalizer of a task")
    p.add_argument("--task", default="mr", help="built-in task (mr, sst2, cb, rte, boolq); default mr")
    p.add_argument("--data-dir", help="folder with the task's files (not needed for mr)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"alias, hub id or local path; default {DEFAULT_MODEL}")
    p.add_argument("--templates", help="prompt file (default: the built-in one for the task)")
    p.add_argument("--limit", type=int, help="score a fixed random subset of this many test examples")
    p.add_argument("--k", type=int, default=16, help="K per class of the dev set drawn from train")
    p.add_argument("--data-seed", type=int, default=13)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--output-dir", help="where results.jsonl goes (default runs/TASK-zero-shot)")
    p.add_argument("--allow-download", action="store_true", help="let a hub id be downloaded (off by default)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("run", help="run an experiment config (resumes: finished runs are skipped)")
    p.add_argument("config", help="YAML experiment config")
    p.add_argument("--output-dir", help="default runs/CONFIG_NAME")
    p.add_argument("--test-limit", type=int, help="override fewshot.test_limit")
    p.add_argument("--allow-download", action="store_true", help="let a hub id be downloaded (off by default)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="tables and plots from a results directory")
    p.add_argument("directory")
    p.add_argument("--metric", default="accuracy", choices=["accuracy", "macro_f1"])
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=cmd_report)

    from .sweep import add_sweep_parser

    add_sweep_parser(sub)

    p = sub.add_parser("models", help="list the models that work offline")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv=None) -> int:
    from .backbone import ModelNotAvailableError
    from .config import ConfigError
    from .data import DataError
    from .results import ResultsFileError
    from .sweep import SweepError
    from .template import TemplateError
    from .train import TrainingError
    from .verbalizer import VerbalizerError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        warnings.filterwarnings("ignore", module="transformers")
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        return args.func(args)
    except (ConfigError, DataError, TemplateError, VerbalizerError, ModelNotAvailableError,
            ResultsFileError, TrainingError, SweepError, FileNotFoundError, ValueError) as err:
        print(f"prompting {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished runs are in results.jsonl; run the same command again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
