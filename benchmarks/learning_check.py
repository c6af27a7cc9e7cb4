"""The learning check: does each learned prompt still learn what it learned? SST-2, K=16, SmolLM2-135M, CPU.

Every check is a config in ``benchmarks/learning_check/``, run through the harness as a user runs
it (``prompting.build_experiments`` and ``Experiment.run``; ``prompting run
benchmarks/learning_check/soft-text.yaml --output-dir DIR`` runs one check the same way), with the
library's defaults for everything but what defines the method's start:

- ``zero-shot``: the manual template ``Review: {text_a}\\nSentiment: {mask}`` (verbalizer
  negative/positive), not trained;
- ``soft-random`` / ``soft-text``: a soft prompt from random vectors (``init: uniform``,
  ``{soft:2} {text_a}{soft:4} {mask}``: as many vectors as the manual template has tokens) or from
  the manual template's words (``{soft:"Review:"} {text_a}{soft:"\\nSentiment:"} {mask}``, ``init:
  text``: step 0 is the manual prompt);
- ``ptuning-random`` / ``ptuning-text``: P-tuning on the same two templates (its encoder's inputs
  random, or the words' embeddings; the default encoder's output does not keep them);
- ``prefix-random`` / ``prefix-text``: prefix-tuning from random keys and values before ``{text_a}
  {mask}`` (``init: random``), or on the manual template with its leading word ``Review:`` moved into
  the prefix as the LM's own keys and values (``init: text``);
- ``continuous``: P-tuning with four soft tokens either side of the input,
  ``{soft:4} {text_a} {soft:4} {mask}`` (the config a user reported).

Each trained check trains on the K-shot train split of data seed 13 (32 examples), training seed 1,
the library's training defaults (8 epochs of batches of 8: 32 steps, dev scored every epoch, the
best state on the K-shot dev split kept, step 0 included), and is scored on ``test_limit: 500``: a
fixed random 500 of the 1,821 SST-2 test sentences (seed 0). One data seed keeps the whole check
near 25 minutes on one thread.

Runs use one torch thread (``--threads 1``, the default, and ``OMP_NUM_THREADS=1``): the figures
depend on the thread count, and one thread makes CPU runs repeat exactly.

    python benchmarks/learning_check.py                # run the check into a fresh folder, compare
    python benchmarks/learning_check.py --checks soft-text prefix-text    # some checks only
    python benchmarks/learning_check.py --record       # run it into benchmarks/results/learning_check/
    python benchmarks/learning_check.py --report       # rewrite the table from the committed records

The comparison prints, per check, the committed and the new test accuracy, their difference and its
95% interval from a paired bootstrap of per-example correctness (the new run's and the committed
run's right/wrong on the same 500 test examples, resampled together over data seeds and examples,
2,000 draws: :func:`prompting.reporting.significance.paired_bootstrap`), and flags ``DROP`` where
that interval lies entirely below 0; the exit status is 1 when any check drops. It also gives each
check's training time new / committed (its whole run time where it trains nothing), for information,
and says whether the new label scores are bit-identical to the committed ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]  # the repository: the configs' data_dir is relative to it
CONFIGS = ROOT / "benchmarks" / "learning_check"
RECORDED = ROOT / "benchmarks" / "results" / "learning_check"
TABLE = ROOT / "benchmarks" / "results" / "learning_check.md"
CHECKS = ("zero-shot", "soft-random", "soft-text", "ptuning-random", "ptuning-text", "prefix-random",
          "prefix-text", "continuous")
ABOUT = "about.json"  # beside the records: threads, versions, time
os.environ.setdefault("OMP_NUM_THREADS", "1")  # torch is imported when the checks run, after this
os.environ.setdefault("MKL_NUM_THREADS", "1")


# ------------------------------------------------------------------------------------------ running
def run_checks(names, output_dir: Path, threads: int, progress: bool = False) -> dict:
    """Run the checks' configs into ``output_dir`` (one LM for all of them; runs already recorded
    there are kept, as the harness resumes); returns what ``about.json`` says of the run."""
    import torch

    import prompting

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", message="template .* causal LM predicts")
    output_dir.mkdir(parents=True, exist_ok=True)
    lm, seconds, training, started = None, {}, {}, time.perf_counter()
    for name in names:
        cfg = prompting.load_config(CONFIGS / f"{name}.yaml")
        began = time.perf_counter()
        for experiment in prompting.build_experiments(cfg, output_dir, lm):
            lm = experiment.lm
            _time_training(experiment.executor, training.setdefault(name, {}))
            records = experiment.run(progress=progress)
        seconds[name] = round(time.perf_counter() - began, 1)
        for r in records:
            print(f"{name}: data seed {r['data_seed']}: test accuracy {r['test']['accuracy']:.3f}, dev "
                  f"{r['dev']['accuracy']:.3f} (step {r['best_step']} of {r['steps']}), {r['seconds']:.0f} s",
                  flush=True)
    about = {"threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
             "cpu": platform.processor() or platform.machine(), "checks": list(names), "check_seconds": seconds,
             "train_seconds": {name: runs for name, runs in training.items() if runs},
             "total_seconds": round(time.perf_counter() - started, 1)}
    (output_dir / ABOUT).write_text(json.dumps(about, indent=1) + "\n")
    shutil.rmtree(output_dir / ".claims", ignore_errors=True)  # the harness's run claims, all released
    return about


def _time_training(executor, into: dict) -> None:
    """Keep each run's training time (the training loop's own clock), by ``data seed/training seed``;
    the records give a run's whole time, scoring included."""
    fit = executor.fit

    def timed(run, *args, **kwargs):
        result = fit(run, *args, **kwargs)
        into[_run_key(run.data_seed, run.train_seed)] = round(result.seconds, 1)
        return result

    executor.fit = timed


def _run_key(data_seed, train_seed) -> str:
    return f"{data_seed}/{train_seed}"


def _about(directory: Path) -> dict:
    path = directory / ABOUT
    return json.loads(path.read_text()) if path.exists() else {}


# ------------------------------------------------------------------------------------------ records
def check_records(directory: Path, name: str) -> dict[tuple, dict]:
    """The check's records in ``directory`` by (data seed, training seed)."""
    from prompting.experiment.results import ResultsStore

    records = ResultsStore(directory).records()
    return {(r["data_seed"], r["train_seed"]): r for r in records if r.get("experiment") == name}


def correctness(directory: Path, record: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A run's test gold labels, whether it got each right (1/0), and its label scores."""
    from prompting.experiment.results import ResultsStore, gold_indices

    saved = ResultsStore(directory).load_predictions(record["run_id"])
    if not saved or not saved.get("test"):
        raise SystemExit(f"{directory}: run {record['run_id']} ({record['experiment']}) has no saved test scores")
    scores, gold = np.asarray(saved["test"]), np.asarray(gold_indices(saved, "test"))
    return gold, (scores.argmax(1) == gold).astype(float), scores


# ------------------------------------------------------------------------------------------ comparing
def compare(committed: Path, new: Path, names) -> int:
    """Print the comparison table; return the number of checks that dropped."""
    from prompting.reporting.significance import paired_bootstrap

    old_about, new_about = _about(committed), _about(new)
    print(f"\ncommitted: {_shown(committed)} ({old_about.get('threads', '?')} thread(s), torch "
          f"{old_about.get('torch', '?')})\nnew:       {_shown(new)} ({new_about.get('threads', '?')} thread(s), "
          f"torch {new_about.get('torch', '?')})")
    if old_about.get("threads") != new_about.get("threads"):
        print("note: the thread counts differ, and the figures depend on them (use --threads "
              f"{old_about.get('threads')})")
    header = (f"{'check':<16} {'committed':>9} {'new':>7} {'new − committed':>15} {'95% interval':>17} "
              f"{'time new/committed':>18}  scores")
    print("\n" + header + "\n" + "-" * len(header))
    dropped, missing = [], []
    for name in names:
        old_runs, new_runs = check_records(committed, name), check_records(new, name)
        keys = sorted(set(old_runs) & set(new_runs), key=str)
        if not keys:
            missing.append(name)
            print(f"{name:<16} {'no committed record' if not old_runs else 'no new record'}")
            continue
        old_right, new_right, identical = [], [], True
        for key in keys:
            old_gold, old_ok, old_scores = correctness(committed, old_runs[key])
            new_gold, new_ok, new_scores = correctness(new, new_runs[key])
            if old_gold.shape != new_gold.shape or (old_gold != new_gold).any():
                raise SystemExit(f"{name}: the new run was scored on other test examples than the committed one")
            old_right.append(old_ok)
            new_right.append(new_ok)
            identical &= old_scores.shape == new_scores.shape and bool((old_scores == new_scores).all())
        test = paired_bootstrap(new_right, old_right)
        old_acc, new_acc = float(np.mean(old_right)), float(np.mean(new_right))
        ratio = _time_ratio(name, keys, old_runs, new_runs, old_about, new_about)
        drop = test["high"] < 0
        if drop:
            dropped.append(name)
        if identical:
            same = "bit-identical"
        else:
            moved = int(sum((a != b).sum() for a, b in zip(old_right, new_right)))
            same = f"differ ({moved} of {sum(len(a) for a in old_right)} answers changed)"
        print(f"{name:<16} {old_acc:>9.3f} {new_acc:>7.3f} {new_acc - old_acc:>+15.3f} "
              f"{'[' + format(test['low'], '+.3f') + ', ' + format(test['high'], '+.3f') + ']':>17} "
              f"{ratio:>18}  {same}{'  DROP' if drop else ''}")
    print("\nA check is flagged DROP when the 95% interval of (new − committed) test accuracy lies entirely below 0: "
          "a paired bootstrap\nof per-example correctness over the data seeds and the test examples (2,000 draws, "
          "prompting.reporting.significance.paired_bootstrap).\nTime is the training time new / committed (\"run\": "
          "the runs' whole time, scoring included, where nothing trains or a folder\nhas no training times); it is for "
          "information only.")
    if missing:
        print(f"not compared: {', '.join(missing)}")
    print(f"\n{len(dropped)} check(s) dropped: {', '.join(dropped)}" if dropped else "\nno check dropped")
    return len(dropped)


def _time_ratio(name, keys, old_runs, new_runs, old_about, new_about) -> str:
    """New / committed training time of a check's runs (``about.json``); a check that trains nothing,
    or a folder without training times, compares the runs' whole time (marked ``run``)."""
    old_train, new_train = (about.get("train_seconds", {}).get(name, {}) for about in (old_about, new_about))
    runs = [_run_key(*k) for k in keys]
    if all(r in old_train and r in new_train for r in runs):
        return f"{sum(new_train[r] for r in runs) / max(1e-9, sum(old_train[r] for r in runs)):.2f}"
    whole = sum(new_runs[k]["seconds"] for k in keys) / max(1e-9, sum(old_runs[k]["seconds"] for k in keys))
    return f"{whole:.2f} run"


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# ------------------------------------------------------------------------------------------ the table
def markdown(directory: Path) -> str:
    """The committed figures as a markdown table."""
    about = _about(directory)
    lines = ["# The learning check: SST-2, K=16, SmolLM2-135M", "",
             ("Made by `python benchmarks/learning_check.py --record` (see its docstring); the records "
              "(`results.jsonl`, and per-example label scores in `predictions/`) are in "
              "`benchmarks/results/learning_check/`, the configs in `benchmarks/learning_check/`. "
              "Training seed 1 and the library's defaults; test = `test_limit: 500`, a fixed random 500 of "
              "the 1,821 SST-2 test sentences (seed 0). "
              f"{about.get('threads', 1)} torch thread, torch {about.get('torch', '?')}, "
              f"{about.get('total_seconds', 0) / 60:.0f} min in all."), "",
             ("| check | method | template, start | data seed | test acc | test macro-F1 "
              "| dev acc (best step / steps) | trainable params | training / run time (s) |"),
             "|---|---|---|---:|---:|---:|---|---:|---:|"]
    for name in CHECKS:
        trained = about.get("train_seconds", {}).get(name, {})
        for (seed, train_seed), r in sorted(check_records(directory, name).items(), key=lambda kv: str(kv[0])):
            params = ", ".join(f"{k}: {v}" for k, v in r["params"].items())
            start = f"`{r['template']!r}`" + (f", {params}" if params else "")
            dev = f"{r['dev']['accuracy']:.3f} " + (f"({r['best_step']} / {r['steps']})" if r["train"]
                                                   else "(not trained)")
            lines.append(f"| {name} | {r['method']} | {start} | {seed} | {r['test']['accuracy']:.3f} | "
                         f"{r['test']['macro_f1']:.3f} | {dev} | {r['trainable_params']:,} | "
                         f"{_seconds(trained.get(_run_key(seed, train_seed)))} / {r['seconds']:.0f} |")
    lines += ["", ("Training time is the training loop's (dev scored every epoch included); run time is the run's "
                   "whole (building, training, scoring dev and the 500 test sentences); on a 2-core machine "
                   "shared with other work. `python benchmarks/learning_check.py` runs the check "
                   "again and compares it with these records (docs: Benchmarks and checks, \"The learning "
                   "check\").")]
    return "\n".join(lines) + "\n"


def _seconds(value) -> str:
    return "–" if value is None else f"{value:.0f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", nargs="+", default=list(CHECKS), choices=CHECKS, metavar="CHECK",
                        help=f"checks to run (default: all): {', '.join(CHECKS)}")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="where the new run goes (default: runs/learning-check-DATE-TIME; an existing "
                             "folder's finished runs are kept)")
    parser.add_argument("--against", type=Path, default=RECORDED, help="the records to compare with "
                        "(default: the committed ones)")
    parser.add_argument("--record", action="store_true", help="run every check into the committed folder "
                                                               "(replacing it) and rewrite the table")
    parser.add_argument("--report", action="store_true", help="only rewrite the table from the committed records")
    parser.add_argument("--no-run", action="store_true", help="compare --output-dir as it is, running nothing")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the committed run)")
    parser.add_argument("--progress", action="store_true", help="show the harness's progress bars")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # the configs name the data as ../shared/data/sst2, beside the repository

    if args.report:
        TABLE.write_text(markdown(RECORDED))
        print(f"wrote {_shown(TABLE)}")
        return 0
    if args.record:
        if args.checks != list(CHECKS):
            parser.error("--record records every check: leave --checks out")
        shutil.rmtree(RECORDED, ignore_errors=True)  # the harness would keep runs already recorded
        about = run_checks(CHECKS, RECORDED, args.threads, args.progress)
        TABLE.write_text(markdown(RECORDED))
        print(f"\nrecorded in {_shown(RECORDED)} ({about['total_seconds'] / 60:.1f} min); wrote {_shown(TABLE)}")
        return 0
    output = args.output_dir or ROOT / "runs" / time.strftime("learning-check-%Y%m%d-%H%M%S")
    if args.no_run:
        if args.output_dir is None:
            parser.error("--no-run needs --output-dir: the folder to compare")
    else:
        about = run_checks(args.checks, output, args.threads, args.progress)
        print(f"\nran {len(args.checks)} check(s) into {_shown(output)} in {about['total_seconds'] / 60:.1f} min")
    return 1 if compare(args.against, output, args.checks) else 0


if __name__ == "__main__":
    sys.exit(main())
