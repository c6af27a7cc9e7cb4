"""Run every benchmark of the project and write one summary table.

    python benchmarks/run.py                     # all benchmarks (about 15 minutes on 2 CPU cores), then the table
    python benchmarks/run.py --only step_time    # some of them
    python benchmarks/run.py --summary-only      # only rebuild the table from benchmarks/results/*.json

Each benchmark is its own script (run here as a subprocess, so one's memory does not leak into the
next) and measures ratios against a baseline in the same process:

- ``step_time.py``: train-step time of soft prompts, P-tuning and prefix-tuning against the bare
  model's forward+backward on the same tokens and against PEFT's implementation; peak memory
  against full fine-tuning;
- ``eval_overhead.py``: scoring time of each method against the bare forward over the same batches;
- ``autoprompt_scoring.py``: AutoPrompt's batched candidate scoring against one-by-one scoring.

The long learning checks (``learning_check.py``, ``autoprompt_sst2.py``, ``labelsearch_sst2.py``)
are experiments, not speed benchmarks, and are not run here. The table goes to
``benchmarks/results/summary.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
BENCHMARKS = {
    "step_time": ["step_time.py"],
    "eval_overhead": ["eval_overhead.py"],
    "autoprompt_scoring": ["autoprompt_scoring.py"],
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
    return "–" if x is None else f"{x:.3f}"


def summary() -> str:
    step, evals, auto = _load("step_time"), _load("eval_overhead"), _load("autoprompt_scoring")
    lines = ["# Benchmarks: summary", "",
             "Every figure is a ratio against a baseline measured in the same process (see each benchmark's "
             "own table for the settings, the machine and its load). Made by `python benchmarks/run.py`.", ""]
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
                         f"{cps['one_by_one']:.2f} | {run['speedup_batched_over_one_by_one']:.2f} |")
        lines.append("")
    if not (step or auto or evals):
        lines.append("No results yet: run `python benchmarks/run.py`.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--summary-only", action="store_true", help="only rebuild the table from the JSON files")
    args = parser.parse_args(argv)
    if not args.summary_only:
        for name in args.only:
            started = time.perf_counter()
            print(f"== {name}", flush=True)
            done = subprocess.run([sys.executable, str(ROOT / BENCHMARKS[name][0]), "--out", str(RESULTS)])
            if done.returncode != 0:
                print(f"benchmark {name} failed (exit {done.returncode}); the others still run", file=sys.stderr)
            print(f"== {name}: {time.perf_counter() - started:.0f} s", flush=True)
    text = summary()
    (RESULTS / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
