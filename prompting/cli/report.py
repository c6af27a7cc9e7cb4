"""``prompting report``: tables and plots from a results folder."""

from __future__ import annotations

import sys
from pathlib import Path

from prompting.core.data import METRICS

__all__ = ['add_report_parser', 'cmd_report']


def cmd_report(args) -> int:
    from prompting.core.paths import check_output_dir
    from prompting.reporting.report import write_report

    if Path(args.directory, "results.jsonl").is_file():  # else write_report says there is nothing to report
        check_output_dir(args.directory, "report folder")
    if args.storage is not None:
        from prompting.experiment.workers import gather

        new, unfinished = gather(args.directory, args.storage, args.study)
        print(f"gathered {new} run{'s' if new != 1 else ''} from {_shown_url(args.storage)}")
        if unfinished:
            states = ", ".join(f"{n} {state}" for state, n in sorted(unfinished.items()))
            print(f"warning: {sum(unfinished.values())} planned runs are not recorded in the storage ({states}); "
                  "the report leaves them out. Start the workers again (after the grace period a dead worker's "
                  "runs are run again, or completed from a record it left)", file=sys.stderr)
    paths = write_report(args.directory, args.metric, plots=not args.no_plots)
    print(Path(paths["report"]).read_text())
    print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    return 0


def _shown_url(url: str) -> str:
    from prompting.experiment.storage import shown_url

    return shown_url(url)


def add_report_parser(sub) -> None:
    p = sub.add_parser("report", help="tables and plots from a results directory")
    p.add_argument("directory")
    p.add_argument("--metric", default="accuracy", choices=list(METRICS))
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--storage", help="first copy in the runs that `prompting run --storage URL` workers recorded there")
    p.add_argument("--study", help="with --storage: only this study of runs (default: every one, CONFIG_NAME-runs)")
    p.set_defaults(func=cmd_report)
