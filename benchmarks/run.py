"""Run every speed benchmark of the project and write one summary table.

    python benchmarks/run.py                     # all of them (about 15 minutes on 2 CPU cores), then the table
    python benchmarks/run.py --only step_time    # some of them
    python benchmarks/run.py --summary-only      # only rebuild the table from benchmarks/results/*.json

Each benchmark is its own script, run here as a subprocess (one's memory does not leak into the next)
with one torch thread; ``--jobs`` of them run at a time (2 by default, one per core of a 2-core
machine: a one-thread benchmark's ratios hold steady beside another, where two threads sharing a busy
core do not). Every figure is a ratio against a baseline measured in the same process, in rounds
whose order is rotated, given as the median of the per-round ratios with their min-max:

- ``step_time.py``: train-step time of soft prompts, P-tuning and prefix-tuning against the bare
  model's forward+backward on the same tokens and against PEFT's implementation; peak memory
  against full fine-tuning;
- ``eval_overhead.py``: scoring time of each method against the bare forward over the same batches;
- ``autoprompt_scoring.py``: AutoPrompt's batched candidate scoring against one-by-one scoring;
- ``frozen_text.py``: what computing the frozen input once buys: suffix train step against the bare
  fwd+bwd, R runs scored against one, AutoPrompt candidates, padding.

The long learning checks (``learning_check.py``, ``autoprompt_search_sst2.py``, ``labelsearch_sst2.py``)
and ``probing_scoring.py`` are experiments or per-task checks, not run here. The table goes to
``benchmarks/results/summary.md``; each benchmark's log to ``benchmarks/results/logs/NAME.log``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import spread

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
#: name -> the script and its arguments (sized so that all of them take about 15 minutes with 2 jobs)
BENCHMARKS = {
    "frozen_text": ["frozen_text.py", "--threads", "1", "--test", "32"],
    "step_time": ["step_time.py", "--threads", "1", "--repeats", "6", "--piece-rounds", "10"],
    "eval_overhead": ["eval_overhead.py", "--threads", "1", "--examples", "64"],
    "autoprompt_scoring": ["autoprompt_scoring.py", "--threads", "1"],
}
# step_time variant -> (row label, eval_overhead method, PEFT variant)
ROWS = [
    ("full-ft", "PET few-shot (full fine-tuning)", "manual", None),
    ("soft", "soft prompt, 6 tokens", "soft", "peft-soft"),
    ("ptuning-64", "P-tuning, LSTM 64 + residual (configs)", "ptuning", "peft-ptuning-64"),
    ("ptuning", "P-tuning, LSTM as wide as the LM (paper)", None, "peft-ptuning"),
    ("prefix-64", "prefix-tuning, MLP 64, 10 positions (FewGLUE configs; SST-2 and mr use 2)", "prefix", "peft-prefix-64"),
    ("prefix", "prefix-tuning, MLP 512, 10 positions (paper)", None, "peft-prefix"),
]


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SystemExit(f"{path} is not valid JSON ({error}); run `python benchmarks/run.py --only {name}` again")


def _ratio(x) -> str:
    return spread.shown(x, 2)


def summary() -> str:
    step, evals, auto = _load("step_time"), _load("eval_overhead"), _load("autoprompt_scoring")
    lines = ["# Benchmarks: summary", "",
             "Every figure is a ratio against a baseline measured in the same process, one torch thread, "
             "the median of the per-round ratios with their min–max in brackets (see each benchmark's own table "
             "for the settings, the machine and its load). Made by `python benchmarks/run.py`.", ""]
    if step:
        variants = {v["name"]: v for v in step["variants"]}
        full = variants.get("full-ft", {}).get("memory", {}).get("peak_bytes")
        lines += ["| method | trainable params (% of LM) | train step / bare | train step / PEFT | peak memory MB "
                  "(/ full fine-tuning) | scoring / bare |", "|---|---:|---:|---:|---:|---:|"]
        ratios = step.get("ratios", {})
        eval_methods = (evals or {}).get("methods", {})
        for name, label, eval_name, peft in ROWS:
            v = variants.get(name)
            if v is None:
                continue
            r = ratios.get(name, {})
            peak = v.get("memory", {}).get("peak_bytes")
            memory = "–" if peak is None else f"{peak / 2**20:,.0f} ({peak / full:.2f})" if full else f"{peak / 2**20:,.0f}"
            trainable = f"{v['trainable']:,} ({100 * v['trainable'] / step['lm_parameters']:.3g}%)"
            scoring = eval_methods.get(eval_name, {}).get("ratio_vs_bare_last_logits") if eval_name else None
            lines.append(f"| {label} | {trainable} | {_ratio(r.get('time_vs_bare'))} | "
                         f"{_ratio(r.get('time_vs_peft')) if peft else '–'} | {memory} | {_ratio(scoring)} |")
        lines += ["", f"Train step: {step['settings'].get('batch_size')} SST-2 examples, "
                      f"{step['settings'].get('threads')} thread(s), {step['date']}; scoring / bare is against the "
                      "bare forward that keeps the last position's logits only.", ""]
    if auto:
        lines += ["| AutoPrompt candidate scoring | candidates / s, batched | one by one | batched / one by one |",
                  "|---|---:|---:|---:|"]
        for run in auto["runs"]:
            cps = run["candidates_per_second"]
            lines.append(f"| {run['examples']} examples per candidate | {cps['batched']:.2f} | "
                         f"{cps['one_by_one']:.2f} | {_ratio(run['speedup_batched_over_one_by_one'])} |")
        lines.append("")
    lines += frozen_lines(_load("frozen_text"))
    if not (step or auto or evals or _load("frozen_text")):
        lines.append("No results yet: run `python benchmarks/run.py`.")
    return "\n".join(lines) + "\n"


def frozen_lines(frozen: dict | None) -> list[str]:
    """The frozen-text benchmark's ratios, one line each."""
    if not frozen:
        return []
    lines = ["| frozen text computed once | ratio (min–max) |", "|---|---:|"]
    for tokens, train in frozen["train"].items():
        for name in ("soft", "ptuning"):
            lines.append(f"| {name}, {tokens} tokens after the review: train step / bare fwd+bwd | "
                         f"{_ratio(train[name]['cached_vs_bare'])} |")
    for task, runs in frozen["many_runs"].items():
        lines.append(f"| {runs['runs']} runs / one, {task} test ({runs['mean_tokens']:.0f} tokens per input; bound "
                     f"{runs['flop_bound']:.2f}) | {_ratio(runs['cached'])} |")
    auto = frozen["autoprompt"]
    lines.append(f"| AutoPrompt: {auto['candidates']} triggers judged, every row whole / cached | "
                 f"{_ratio(auto['whole_vs_cached'])} |")
    dev = frozen["padding"].get("whole input, dev")
    if dev:
        lines.append(f"| dev scoring, padded / real tokens | {dev['bucketed']:.2f} |")
    return lines + [""]


def run_all(names: list[str], jobs: int) -> None:
    """Run the benchmarks ``jobs`` at a time, each with one torch thread, its log in results/logs."""
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    waiting, running = list(names), {}
    while waiting or running:
        while waiting and len(running) < jobs:
            name = waiting.pop(0)
            script, *options = BENCHMARKS[name]
            log = open(logs / f"{name}.log", "w")
            command = [sys.executable, str(ROOT / script), *options, "--out", str(RESULTS)]
            running[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env),
                             time.perf_counter(), log)
            print(f"== {name}: started ({' '.join(options)})", flush=True)
        time.sleep(1)
        for name, (process, started, log) in list(running.items()):
            if process.poll() is None:
                continue
            log.close()
            del running[name]
            state = "done" if process.returncode == 0 else f"FAILED (exit {process.returncode}, see {log.name})"
            print(f"== {name}: {state} in {time.perf_counter() - started:.0f} s", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--jobs", type=int, default=2, help="benchmarks run at a time (one thread each)")
    parser.add_argument("--summary-only", action="store_true", help="only rebuild the table from the JSON files")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: give 1 or more")
    if not args.summary_only:
        started = time.perf_counter()
        run_all(args.only, args.jobs)
        print(f"== all: {time.perf_counter() - started:.0f} s", flush=True)
    text = summary()
    (RESULTS / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
