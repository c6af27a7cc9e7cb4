"""What several commands share: checks of counts and files, the task a command runs on, its prompts."""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ['check_count', 'check_config_file', 'task_source', 'prompts_of', 'quiet_optuna', 'add_task_and_model',
           'curves']


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
    from prompting.config.experiment import ConfigError, ProbeConfig, check_task, load_configs
    from prompting.core.yamlfile import load_yaml
    from prompting.core.paths import check_text_file

    given = [o for o, v in (("--task", args.task), ("--config", args.config), ("--task-file", args.task_file)) if v]
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)}: give the task one way: --task NAME (with --data-dir), "
                         "--config FILE (its task section) or --task-file FILE")
    if args.data_dir and given and given[0] != "--task":
        raise ValueError(f"--data-dir goes with --task; the task section of {given[0]} names its own files")
    if args.config:
        cfg = load_configs(check_config_file(args.config))[0]
        if isinstance(cfg, ProbeConfig):
            raise ConfigError(f"--config {args.config!r} is a fact-probing (lama) config; run it with prompting run, "
                              "or probe one relation with --task lama --relation ID")
        return cfg.task, cfg.base, cfg.prompts
    if args.task_file:
        path = check_text_file(args.task_file, "--task-file")
        documents = load_yaml(path.read_text(encoding="utf-8-sig"))
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


def prompts_of(args, task: dict, base, prompts) -> tuple[list[str], list[dict]]:
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


def curves(args, configs) -> None:
    """``--tensorboard`` / ``--mlflow`` in place of the configs' keys; their packages checked before anything
    runs (live training curves: :mod:`prompting.experiment.tracking`)."""
    from prompting.experiment.tracking import check_packages

    for cfg in configs:
        cfg.tensorboard = args.tensorboard or cfg.tensorboard
        cfg.mlflow = args.mlflow or cfg.mlflow
        check_packages(cfg.tensorboard, cfg.mlflow)


def quiet_optuna(args) -> None:
    import optuna

    if not args.verbose:
        optuna.logging.set_verbosity(logging.WARNING)


def add_task_and_model(p) -> None:
    """The options every command that loads a task and a model shares."""
    from prompting.lm.aliases import DEFAULT_MODEL

    p.add_argument("--task", help="built-in task (mr, sst2, cb, rte, boolq) or lama (fact probing); default mr")
    p.add_argument("--data-dir", help="folder with the task's files (not needed for mr)")
    p.add_argument("--config", help="an experiment config: its task section (any task: your files, columns, labels), "
                                    "and its templates unless --templates is given")
    p.add_argument("--task-file", help="a YAML file with a task section (task: {name, train, test, ...}), "
                                       "as a config's")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"alias, hub id or local path; default {DEFAULT_MODEL}")
