"""The ``prompting`` command line.

    prompting eval --task mr                               # zero-shot: every pattern x verbalizer
    prompting run experiments/quickstart.yaml --output-dir runs/quickstart
    prompting report runs/quickstart
    prompting search-labels --task sst2 --data-dir ../shared/data/sst2 --k 16 --write my_sst2.yaml
    prompting sweep experiments/sst2_sweep.yaml --n-trials 10 --export-best runs/sst2_best.yaml
    prompting models
    prompting methods                                     # every method's settings, as a table
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path

__all__ = ["main", "build_parser"]


def _print_summary(records, directory: Path, metric: str = "accuracy") -> None:
    from prompting.reporting.report import summary_rows, summary_table, write_report
    from prompting.experiment.results import ResultsStore

    by_task = {}
    for r in records:
        by_task.setdefault(r["task"], []).append(r)
    for task, recs in by_task.items():
        print(f"\n## {task}\n")
        print(summary_table(summary_rows(ResultsStore(directory), recs, metric)))
    paths = write_report(directory, metric)
    print(f"\nreport: {paths['report']}\nsummary: {paths['summary']}")
    plots = [str(p) for k, p in paths.items() if k not in ("report", "summary", "runs")]
    if plots:
        print("plots: " + ", ".join(plots))


def check_count(option: str, value: int | None, what: str) -> None:
    """Refuse an integer option below 1 (``--test-limit 0`` would score nothing, -5 fail later)."""
    if value is not None and value < 1:
        raise ValueError(f"{option} {value} is not valid; give an integer >= 1, the number of {what}")


def check_config_file(path) -> Path:
    """Check a YAML file given on the command line before anything else is done with it."""
    from prompting.core.paths import check_text_file

    return check_text_file(path, "config file")


def task_source(args) -> tuple[dict, Path | None, list | None]:
    """The task a command runs on: ``--task`` (with ``--data-dir``), the task section of ``--config``
    (its first document) or of ``--task-file`` (a YAML file with a ``task:`` section, or the section
    itself). Returns the checked section, the folder its paths are relative to, and the config's
    prompts (pattern, verbalizer pairs; None without ``--config``)."""
    from prompting.config.experiment import ConfigError, _load_yaml, check_task, load_configs
    from prompting.core.paths import check_text_file

    given = [o for o, v in (("--task", args.task), ("--config", args.config), ("--task-file", args.task_file)) if v]
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)}: give the task one way: --task NAME (with --data-dir), "
                         "--config FILE (its task section) or --task-file FILE")
    if args.data_dir and given and given[0] != "--task":
        raise ValueError(f"--data-dir goes with --task; the task section of {given[0]} names its own files")
    if args.config:
        cfg = load_configs(check_config_file(args.config))[0]
        return cfg.task, cfg.base, cfg.prompts
    if args.task_file:
        path = check_text_file(args.task_file, "--task-file")
        documents = _load_yaml(path.read_text(encoding="utf-8"))
        data = documents[0] if documents else None
        section = data["task"] if isinstance(data, dict) and "task" in data else data
        try:
            return check_task(section), path.parent, None
        except ConfigError as err:
            raise ConfigError(f"--task-file {str(path)!r}: {err}") from None
    from prompting.core.data import TASKS

    if args.task is not None and args.task not in TASKS:
        raise ValueError(f"--task {args.task!r} is not a built-in task; choose one of {', '.join(TASKS)}, or give "
                         "your own data's task section with --config FILE or --task-file FILE")
    return check_task({"name": args.task or "mr", **({"data_dir": args.data_dir} if args.data_dir else {})}), None, None


def _prompts_of(args, task: dict, base, prompts) -> tuple[list[str], list[dict]]:
    """Patterns and verbalizers: --templates, else the config's, else the built-in file of the task."""
    from prompting.config.experiment import ConfigError, load_prompt_file
    from prompting.core.paths import check_text_file
    from prompting.tasks.spec import default_choice_verbalizer

    default = default_choice_verbalizer(task)
    if args.templates:
        check_text_file(args.templates, "--templates")
        return load_prompt_file(args.templates, default_verbalizer=default)
    if prompts:
        verbalizers = {repr(sorted(v.items())): v for _, v in prompts}
        return list(dict.fromkeys(t for t, _ in prompts)), list(verbalizers.values())
    try:
        return load_prompt_file(task["name"], base, default_verbalizer=default)
    except ConfigError as err:
        raise ConfigError(f"{err}; give --templates FILE with patterns and verbalizers for task "
                          f"{task['name']!r}") from None


def cmd_eval(args) -> int:
    from prompting.config.experiment import parse_config
    from prompting.experiment.harness import build_experiment
    from prompting.core.paths import check_output_dir, slug
    from prompting.reporting.report import zero_shot_table

    check_count("--limit", args.limit, "test examples to score (leave it out for the whole test set)")
    if args.task == "lama" or args.relation:
        return cmd_probe_eval(args)
    task, base, prompts = task_source(args)
    patterns, verbalizers = _prompts_of(args, task, base, prompts)
    name = task["name"]
    data = {"name": f"{name}-zero-shot", "model": args.model, "device": args.device, "task": task,
            "fewshot": {"k": args.k, "data_seeds": [args.data_seed], "test_limit": args.limit,
                        "eval_batch_size": args.batch_size},
            "templates": {"patterns": patterns, "verbalizers": verbalizers},
            "methods": [{"name": "manual", "train": False}]}
    if args.max_length:
        data["max_length"] = args.max_length
    cfg = parse_config(data, base=base)
    output = check_output_dir(args.output_dir or Path("runs") / f"{slug(name)}-zero-shot")
    started = time.perf_counter()
    records = build_experiment(cfg, output, allow_download=args.allow_download).run(progress=not args.quiet)
    n = records[0]["n_test"] if records else 0
    print(f"\nzero-shot on {name} ({n} test examples, model {args.model}), "
          f"{time.perf_counter() - started:.0f} s\n")
    print(zero_shot_table(records))
    print(f"\nrecords: {output / 'results.jsonl'}")
    return 0


def cmd_run(args) -> int:
    from prompting.config.experiment import load_configs
    from prompting.core.paths import check_output_dir, slug
    from prompting.experiment.workers import check_worker_options, run_workers, share_runs, study_name

    check_count("--test-limit", args.test_limit, "test examples to score (leave it out for the whole test set)")
    if _probe_config(check_config_file(args.config)) is not None:
        return cmd_probe(args)
    configs = load_configs(check_config_file(args.config))
    output = check_output_dir(args.output_dir or Path("runs") / slug(Path(args.config).stem))
    check_worker_options(args, output)
    started = time.perf_counter()
    if args.workers is not None:
        if run_workers(args, output):
            return 1
        from prompting.experiment.results import ResultsStore

        names = {cfg.name for cfg in configs}
        records = [r for r in ResultsStore(output).records() if r.get("experiment") in names]
    else:
        from prompting.experiment.harness import build_experiment

        records, lm = [], None
        for cfg in configs:
            if args.test_limit is not None:
                cfg.protocol.test_limit = args.test_limit
            if args.device is not None:
                cfg.device = args.device
            same = lm is not None and (lm.name, str(lm.dtype)) == (cfg.model, f"torch.{cfg.dtype}")
            experiment = build_experiment(cfg, output, lm if same else None, allow_download=args.allow_download)
            lm = experiment.lm
            if args.storage is not None:
                _quiet_optuna(args)
                share_runs(experiment.store, args.storage, study_name(cfg.name), args.heartbeat_interval,
                           args.grace_period)
            records += experiment.run(progress=not args.quiet)
    print(f"\n{args.config}: {len(records)} runs in {output / 'results.jsonl'} "
          f"({time.perf_counter() - started:.0f} s this time)")
    if not args.no_summary:
        _print_summary(records, output, configs[0].protocol.select_metric)
    return 0


def _probe_config(path: Path) -> dict | None:
    """The YAML of a fact-probing config (``task: {name: lama, ...}``), else None."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError:
        return None  # load_configs says what is wrong with it
    task = data.get("task") if isinstance(data, dict) else None
    return data if isinstance(task, dict) and task.get("name") == "lama" else None


def cmd_probe(args) -> int:
    """``prompting run`` of a LAMA config: every relation x method x protocol (see prompting.experiment.probing)."""
    from prompting.core.paths import check_output_dir, slug
    from prompting.experiment.probing import parse_probe_config, run_probe
    from prompting.reporting.probing import probe_table

    cfg = parse_probe_config(_probe_config(args.config), base=Path(args.config).parent)
    if args.test_limit is not None:
        cfg.limits["test"] = args.test_limit
    output = check_output_dir(args.output_dir or Path("runs") / slug(Path(args.config).stem))
    started = time.perf_counter()
    run_probe(cfg, output, progress=not args.quiet)
    print(f"\n{args.config}: {output / 'results.jsonl'} ({time.perf_counter() - started:.0f} s this time)\n")
    from prompting.experiment.results import ResultsStore

    print(probe_table(ResultsStore(output).records()))
    return 0


def cmd_probe_eval(args) -> int:
    """``prompting eval --task lama --relation P103``: the relation's manual template, zero-shot, both
    protocols (or --protocol), over --limit test facts (default all)."""
    from prompting.core.paths import check_output_dir, slug
    from prompting.reporting.probing import probe_table
    from prompting.experiment.probing import parse_probe_config, run_probe

    if args.task != "lama" or not args.relation or not args.data_dir:
        raise ValueError("fact probing: give --task lama, --relation (e.g. P103) and --data-dir (the folder "
                         "with relations.tsv and one folder per relation)")
    data = {"name": f"lama-{args.relation}-zero-shot", "model": args.model, "device": args.device,
            "task": {"name": "lama", "data_dir": args.data_dir, "relations": [args.relation],
                     **({"template": args.template} if args.template else {})},
            "limits": {"test": args.limit, "vocab_test": args.limit},
            "protocols": [args.protocol] if args.protocol else ["candidates", "vocab"],
            "methods": [{"name": "manual", "train": False}]}
    cfg = parse_probe_config(data)
    output = check_output_dir(args.output_dir or Path("runs") / slug(f"lama-{args.relation}-zero-shot"))
    started = time.perf_counter()
    records = run_probe(cfg, output, progress=not args.quiet)
    from prompting.experiment.results import ResultsStore

    records = records or ResultsStore(output).records()
    print(f"\nzero-shot fact probing, relation {args.relation} (model {args.model}), "
          f"{time.perf_counter() - started:.0f} s\n")
    for metric in ("p_at_1", "p_at_10", "mrr"):
        print(f"{metric}:\n{probe_table(records, metric)}\n")
    print(f"records: {output / 'results.jsonl'}")
    return 0


def cmd_report(args) -> int:
    from prompting.core.paths import check_output_dir
    from prompting.reporting.report import write_report

    if Path(args.directory, "results.jsonl").is_file():  # else write_report says there is nothing to report
        check_output_dir(args.directory, "report folder")
    if args.storage is not None:
        from prompting.experiment.workers import gather

        new = gather(args.directory, args.storage, args.study)
        print(f"gathered {new} run{'s' if new != 1 else ''} from {_shown_url(args.storage)}")
    paths = write_report(args.directory, args.metric, plots=not args.no_plots)
    print(Path(paths["report"]).read_text())
    print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    return 0


def _quiet_optuna(args) -> None:
    import optuna

    if not args.verbose:
        optuna.logging.set_verbosity(logging.WARNING)


def _shown_url(url: str) -> str:
    from prompting.sweeps.sweep import shown_url

    return shown_url(url)


def _search_template(args, task: dict, base, prompts) -> str:
    """The template to search label words for: --template, else pattern --pattern of --templates (or
    of the config's templates, or of the task's built-in prompt file)."""
    from prompting.config.experiment import ConfigError

    if args.template is not None:
        if args.templates is not None or args.pattern is not None:
            raise ValueError("--template is a template of its own; give it without --templates / --pattern")
        return args.template
    source = args.templates or (args.config if prompts else task["name"])
    try:
        patterns, _ = _prompts_of(args, task, base, prompts)
    except ConfigError as err:
        raise ConfigError(f"--templates {source!r}: {err}") from None
    index = 0 if args.pattern is None else args.pattern
    if not 0 <= index < len(patterns):
        raise ValueError(f"--pattern {index} is out of range; {source} has {len(patterns)} patterns "
                         f"(0 to {len(patterns) - 1})")
    return patterns[index]


def _search_examples(args, task) -> tuple[list, str]:
    """The labelled examples to rank words on, and a few words saying which."""
    import random

    from prompting.core.data import sample_kshot

    if args.k is not None:
        train, _ = sample_kshot(task.train, args.k, args.data_seed, task.labels)  # the harness's train split
        return train, f"K = {args.k} per class, data seed {args.data_seed}"
    if args.limit is not None and args.limit < len(task.train):
        return (random.Random(args.data_seed).sample(list(task.train), args.limit),
                f"random {args.limit} of {len(task.train)}, data seed {args.data_seed}")
    return list(task.train), "all of train"


def search_labels_table(result, labels, n: int) -> str:
    """Per label, one block: its ``n`` best words with their scores, best first."""
    blocks = []
    width = max([4] + [len(w) for ranked in result.words.values() for w, _ in ranked[:n]])
    for label in labels:
        ranked = result.words[str(label)][:n]
        lines = [f"label {label}:", f"  {'rank':>4}  {'word':<{width}}  score"]
        lines += [f"  {i:>4}  {word:<{width}}  {score:.4f}" for i, (word, score) in enumerate(ranked, 1)]
        if len(ranked) < n:
            lines.append(f"  (only {len(ranked)} words pass the filters)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _check_search_options(args, task: dict) -> None:
    """Every option of search-labels that can be checked before any data or model is loaded."""
    from prompting.training.labelsearch import RANKINGS

    if task.get("choices") is not None:
        raise ValueError(f"task {task['name']!r} is a multiple-choice task: its label words are each example's "
                         "choices, there are no words to search")
    if args.method not in RANKINGS:
        raise ValueError(f"--method {args.method!r} is not valid; choose one of {', '.join(RANKINGS)}")
    for option, value in (("--k", args.k), ("--limit", args.limit), ("--top", args.top),
                          ("--words-per-label", args.words_per_label), ("--pattern", args.pattern)):
        low = 0 if option == "--pattern" else 1
        if value is not None and value < low:
            raise ValueError(f"{option} {value} is not valid; give an integer >= {low}")
    if args.k is not None and args.limit is not None:
        raise ValueError(f"--limit {args.limit} is not valid together with --k {args.k}; give one of them "
                         "(--k: K per class as the harness samples it; --limit: a random subset of train)")
    if args.write:  # a file the result cannot be added to is refused now, not after the search
        from prompting.training.labelsearch import read_templates_file
        from prompting.core.paths import check_output_dir

        try:
            read_templates_file(args.write, task["name"])
        except ValueError as err:
            raise ValueError(f"--write: {err}") from None
        check_output_dir(Path(args.write).parent, "--write folder")


def _plain_template(text: str):
    """The template label search reads: one {mask}, no trigger or soft slots."""
    from prompting.core.template import Template, TemplateError

    try:
        template = Template(text)
    except TemplateError as err:
        raise TemplateError(f"--template: {err}") from None
    if template.n_trigger or template.has_soft:
        raise ValueError(f"--template {text!r} has trigger or soft slots; label search reads a plain template "
                         "with one {mask} (write AutoPrompt's found trigger words in first)")
    return template


def cmd_search_labels(args) -> int:
    from prompting.lm.model import LanguageModel
    from prompting.config.experiment import load_task_spec
    from prompting.training.labelsearch import search_label_words, write_verbalizer

    spec, base, prompts = task_source(args)
    _check_search_options(args, spec)
    text = _search_template(args, spec, base, prompts)
    template = _plain_template(text)
    task = load_task_spec(spec, base)
    missing = [f for f in template.fields if f not in task.text_fields]
    if missing:
        raise ValueError(f"--template {text!r} uses the field {{{missing[0]}}}, which task {task.name!r} does "
                         f"not have; its fields: {', '.join('{' + f + '}' for f in task.text_fields)}")
    examples, which = _search_examples(args, task)

    started = time.perf_counter()
    lm = LanguageModel.load(args.model, device=args.device, max_length=args.max_length or 512,
                            allow_download=args.allow_download)
    result = search_label_words(lm, template, examples, task.labels, ranking=args.method,
                                k=max(args.top, args.words_per_label), batch_size=args.batch_size,
                                seed=args.data_seed, progress=not args.quiet)
    print(f"label words for {task.name} by {args.method} ranking, model {args.model}: "
          f"{len(examples)} train examples ({which}), {time.perf_counter() - started:.0f} s")
    print(f"template: {text.replace(chr(10), '⏎')}")
    print("score: " + ("cosine of the word's output embedding with the class's logistic-regression weights"
                       if args.method == "classifier" else
                       "mean log-likelihood of the training labels with the word standing for its class"))
    print()
    print(search_labels_table(result, task.labels, args.top))
    verbalizer = result.verbalizer(args.words_per_label)
    print(f"\nverbalizer ({args.words_per_label} per label): {verbalizer.describe()}")
    if args.write:
        path = write_verbalizer(args.write, verbalizer, task=task.name, pattern=text)
        print(f"written to: {path}")
    return 0


def cmd_models(args) -> int:
    import importlib.util

    from prompting.lm.aliases import ALIASES

    print(f"{'alias':<14} {'installed':<44} description")
    for alias, entry in ALIASES.items():
        ok = "yes" if importlib.util.find_spec(entry.module) else f"no: {entry.install}"
        print(f"{alias:<14} {ok:<44} {entry.description}")
    print("\nAny Hugging Face masked or causal LM in the local cache, or a local checkpoint folder, also works.")
    return 0


def cmd_methods(args) -> int:
    from prompting.methods import METHODS
    from prompting.core.settings import settings_table

    print(settings_table([METHODS.config(name) for name in METHODS]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prompting", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is loaded and cached")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_eval(sub)
    _add_run(sub)
    _add_report(sub)
    _add_search_labels(sub)

    from prompting.sweeps.sweep import add_sweep_parser

    add_sweep_parser(sub)

    p = sub.add_parser("models", help="list the models that work offline")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("methods", help="every method's settings: defaults, allowed values, sweep ranges")
    p.set_defaults(func=cmd_methods)
    return parser


def _task_and_model(p) -> None:
    """The options every command that loads a task and a model shares."""
    from prompting.lm.aliases import DEFAULT_MODEL

    p.add_argument("--task", help="built-in task (mr, sst2, cb, rte, boolq) or lama (fact probing); default mr")
    p.add_argument("--data-dir", help="folder with the task's files (not needed for mr)")
    p.add_argument("--config", help="an experiment config: its task section (any task: your files, columns, labels), "
                                    "and its templates unless --templates is given")
    p.add_argument("--task-file", help="a YAML file with a task section (task: {name, train, test, ...}), "
                                       "as a config's")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"alias, hub id or local path; default {DEFAULT_MODEL}")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="zero-shot: score every pattern x verbalizer of a task")
    _task_and_model(p)
    p.add_argument("--templates", help="prompt file (default: the built-in one for the task)")
    p.add_argument("--relation", help="fact probing (--task lama): the relation to probe, e.g. P103")
    p.add_argument("--protocol", choices=["candidates", "vocab"],
                   help="fact probing: rank the relation's objects or the whole vocabulary (default both)")
    p.add_argument("--template", help="fact probing: a template of your own ([X] subject, [Y] object)")
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


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run an experiment config (resumes: finished runs are skipped)")
    p.add_argument("config", help="YAML experiment config")
    p.add_argument("--output-dir", help="default runs/CONFIG_NAME")
    p.add_argument("--test-limit", type=int, help="override fewshot.test_limit")
    p.add_argument("--allow-download", action="store_true", help="let a hub id be downloaded (off by default)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    from prompting.experiment.workers import add_worker_options

    add_worker_options(p)
    p.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)  # workers: the parent reports
    p.set_defaults(func=cmd_run)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="tables and plots from a results directory")
    p.add_argument("directory")
    p.add_argument("--metric", default="accuracy", choices=["accuracy", "macro_f1"])
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--storage", help="first copy in the runs that `prompting run --storage URL` workers recorded there")
    p.add_argument("--study", help="with --storage: only this study of runs (default: every one, CONFIG_NAME-runs)")
    p.set_defaults(func=cmd_report)


def _add_search_labels(sub) -> None:
    p = sub.add_parser("search-labels", help="find label words for a task's template from labelled examples")
    _task_and_model(p)
    p.add_argument("--template", help="template string with one {mask} (default: --pattern of --templates)")
    p.add_argument("--templates", help="prompt file to take the template from (default: the built-in one)")
    p.add_argument("--pattern", type=int, help="index of the pattern in --templates; default 0")
    p.add_argument("--k", type=int, help="rank on the K-per-class train split of --data-seed (as the harness "
                                         "samples it); default: all train examples")
    p.add_argument("--limit", type=int, help="rank on a random subset of this many train examples (without --k)")
    p.add_argument("--data-seed", type=int, default=13)
    p.add_argument("--method", default="classifier",
                   help="classifier (AutoPrompt: logistic regression on the LM's features at {mask}) or "
                        "likelihood (LM-BFF: label likelihood of the words the LM finds likely); default classifier")
    p.add_argument("--top", type=int, default=10, help="words printed per label; default 10")
    p.add_argument("--words-per-label", type=int, default=1, help="words per label in the verbalizer written; default 1")
    p.add_argument("--write", metavar="FILE", help="add the verbalizer (and the template) to this templates YAML file")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--allow-download", action="store_true", help="let a hub id be downloaded (off by default)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_search_labels)


def _quiet_transformers() -> None:
    """Only errors from transformers, and no download bars. Set through the environment when it is
    not imported yet: importing it takes seconds that a config error or --help should not wait for."""
    warnings.filterwarnings("ignore", module="transformers")
    if "transformers" not in sys.modules:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        return
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


INTERRUPTED = "interrupted: finished runs are in results.jsonl; run the same command again to resume"


def main(argv=None) -> int:
    """Run the command line; returns the exit status (0, 2 for a clear error, 130 when interrupted)."""
    command = None
    try:
        # Ctrl-C can come at any moment, the imports included (torch and transformers take seconds)
        parser = build_parser()
        args = parser.parse_args(argv)
        command = args.command
        return _main(args)
    except KeyboardInterrupt:
        print(f"\n{INTERRUPTED}" if command in ("run", "eval", "sweep") else "\ninterrupted", file=sys.stderr)
        return 130


def _main(args) -> int:
    from prompting.lm.aliases import ModelNotAvailableError
    from prompting.config.experiment import ConfigError
    from prompting.core.data import DataError
    from prompting.core.paths import os_error_message
    from prompting.experiment.results import ResultsFileError
    from prompting.sweeps.sweep import SweepError
    from prompting.core.template import TemplateError
    from prompting.core.settings import TrainingError
    from prompting.core.verbalizer import VerbalizerError

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        _quiet_transformers()
    try:
        return args.func(args)
    except (ConfigError, DataError, TemplateError, VerbalizerError, ModelNotAvailableError,
            ResultsFileError, TrainingError, SweepError, FileNotFoundError, ValueError) as err:
        print(f"prompting {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # a file-system failure the checks before the work could not foresee
        print(f"prompting {args.command}: error: {os_error_message(err)}", file=sys.stderr)
        return 2


def _one_line(err: Exception) -> str:
    """An error's message; a file that is not UTF-8 is named (Python's own message leaves it out)."""
    if isinstance(err, UnicodeDecodeError):
        return (f"a file this command reads is not UTF-8 text ({err.reason} byte "
                f"{err.object[err.start:err.start + 1]!r}); save the config, templates and data files as UTF-8")
    if isinstance(err, FileNotFoundError) and err.filename is not None:
        from prompting.core.paths import os_error_message

        return os_error_message(err)
    return str(err)

