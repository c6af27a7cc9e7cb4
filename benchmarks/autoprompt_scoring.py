"""AutoPrompt candidate scoring: several candidate triggers per forward pass vs one per forward.

Same process, same model (SmolLM2-135M-Instruct, frozen), same candidates and examples, ``--threads``
torch threads (1 by default); each round runs both modes, in an order rotated every round, and the
speed-up is the median of the per-round ratios with their min-max. Writes
``benchmarks/results/autoprompt_scoring.json`` and ``.md``.

    python benchmarks/autoprompt_scoring.py [--examples 2,4,16] [--candidates 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import spread
from prompting import LanguageModel, Verbalizer, load_task, sample_kshot
from prompting.core.data import Example
from prompting.methods import AutoPrompt

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parents[1] / "shared" / "data" / "sst2"  # beside the checkout; fixed sentences otherwise
FALLBACK = ["a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate clichés .",
            "an utterly charming and hilarious film that reminded me of the best comedies .",
            "it 's a bad sign when you 're rooting for the film to end ."]


def examples(n: int) -> list[Example]:
    if DATA.is_dir():
        task = load_task("sst2", data_dir=DATA)
        train, _ = sample_kshot(task.train, n // 2, seed=13, labels=task.labels)
        return train
    return [Example({"text_a": FALLBACK[i % 4]}, str(i % 2)) for i in range(n)]


def measure(method: AutoPrompt, data, candidates: torch.Tensor, rows: int, rounds: int) -> dict:
    modes = {"batched": rows, "one_by_one": len(data)}  # one_by_one: one candidate per forward
    method.score_triggers(candidates[:2], data, rows_per_forward=rows)  # warm-up
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    scores = {}
    for r in range(rounds):  # rotate the modes so load changes on the machine hit both alike
        for mode in spread.rotated(list(modes), r):
            start = time.perf_counter()
            scores[mode] = method.score_triggers(candidates, data, rows_per_forward=modes[mode])
            seconds[mode].append(round(time.perf_counter() - start, 4))
    median = {mode: statistics.median(s) for mode, s in seconds.items()}
    rate = {mode: len(candidates) / median[mode] for mode in modes}
    return {"examples": len(data), "candidates": len(candidates),
            "candidates_per_forward_batched": max(1, rows // len(data)),
            "seconds": seconds, "median_seconds": median, "candidates_per_second": rate,
            "speedup_batched_over_one_by_one": spread.per_round(seconds["one_by_one"], seconds["batched"]),
            "max_abs_score_difference": (scores["batched"] - scores["one_by_one"]).abs().max().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--examples", default="2,4,16", help="examples each candidate is scored on (comma list)")
    parser.add_argument("--candidates", type=int, default=10, help="candidate triggers besides the current one")
    parser.add_argument("--rows", type=int, default=256, help="rows per forward in batched mode")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lm = LanguageModel.load(args.model, device="cpu")
    method = AutoPrompt(lm, "{text_a} {trigger:5} {mask}", Verbalizer({0: ["negative"], 1: ["positive"]}),
                        labels=["0", "1"])
    pool = method.allowed.nonzero().squeeze(1)
    candidates = pool[torch.randint(len(pool), (args.candidates + 1, 5), generator=torch.Generator().manual_seed(0))]
    sizes = [int(n) for n in args.examples.split(",")]
    every = examples(max(sizes))
    runs = []
    for n in sizes:
        runs.append(measure(method, method.encode(every[:n]), candidates, args.rows, args.rounds))
        print(json.dumps(runs[-1]))
    result = {"model": args.model, "trigger_tokens": 5, "rows_per_forward_batched": args.rows,
              "rounds": args.rounds, "runs": runs, "torch_threads": torch.get_num_threads(),
              "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
              "device": str(lm.device)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "autoprompt_scoring.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# AutoPrompt candidate scoring: batched vs one candidate per forward",
        "",
        f"{args.model}, SST-2 examples, {len(candidates)} candidate triggers of 5 tokens, "
        f"{torch.get_num_threads()} torch thread(s) on {result['device']}, {args.rounds} rounds (order rotated): "
        "candidates/s from the median seconds; speed-up: median of the per-round ratios (min–max).",
        "",
        "| examples per candidate | candidates per forward (batched) | batched cand/s | one-by-one cand/s | speed-up |",
        "|---|---|---|---|---|",
    ]
    for run in runs:
        rate = run["candidates_per_second"]
        md.append(f"| {run['examples']} | {run['candidates_per_forward_batched']} | {rate['batched']:.2f} | "
                  f"{rate['one_by_one']:.2f} | {spread.shown(run['speedup_batched_over_one_by_one'])} |")
    md += ["", "Largest difference between the two modes' scores: "
           f"{max(run['max_abs_score_difference'] for run in runs):.2e}.", ""]
    (args.out / "autoprompt_scoring.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
