"""The ``prompting`` command line.

    prompting eval --task mr                               # zero-shot: every pattern x verbalizer
    prompting run experiments/quickstart.yaml --output-dir runs/quickstart
    prompting report runs/quickstart
    prompting search-labels --task sst2 --data-dir ../shared/data/sst2 --k 16 --write my_sst2.yaml
    prompting sweep experiments/sst2_sweep.yaml --n-trials 10 --export-best runs/sst2_best.yaml
    prompting models
    prompting methods                                     # every method's settings, as a table
    prompting schema --output prompting.schema.json       # the JSON Schema of a config, for editors
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prompting", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is loaded and cached")
    sub = parser.add_subparsers(dest="command", required=True)
    # the commands' modules import no torch: --help and a config error answer at once
    from prompting.cli.evaluate import add_eval_parser
    from prompting.cli.info import cmd_methods, cmd_models
    from prompting.cli.labels import add_search_labels_parser
    from prompting.cli.report import add_report_parser
    from prompting.cli.run import add_run_parser
    from prompting.cli.schema import add_schema_parser
    from prompting.cli.sweep import add_sweep_parser

    add_eval_parser(sub)
    add_run_parser(sub)
    add_report_parser(sub)
    add_search_labels_parser(sub)
    add_sweep_parser(sub)

    p = sub.add_parser("models", help="list the models that work offline")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("methods", help="every method's settings: defaults, allowed values, sweep ranges")
    p.set_defaults(func=cmd_methods)
    add_schema_parser(sub)
    return parser


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
    from prompting.experiment.storage import StorageError
    from prompting.core.template import TemplateError
    from prompting.core.settings import TrainingError
    from prompting.core.verbalizer import VerbalizerError

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        _quiet_transformers()
    try:
        return args.func(args)
    except (ConfigError, DataError, TemplateError, VerbalizerError, ModelNotAvailableError,
            ResultsFileError, TrainingError, StorageError, FileNotFoundError, ValueError) as err:
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

