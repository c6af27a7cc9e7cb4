"""Scoring cost of each method against the bare model's forward over the same padded batches.

    python benchmarks/eval_overhead.py [--methods manual,soft,ptuning,prefix] [--examples 512] [--rounds 3]

For every method, ``ours`` is the method's scoring pass (``predict_scores(..., cached=False)``: embedding hooks, prefix
cache, label-word scores; ``predict_scores`` itself would return the scores it keeps for an unchanged
state) and both bare variants see exactly the same batches (the method's own length-sorted batches
under the token budget, the same padding, the method's own input ids): "bare" is ``model(input_ids, attention_mask)`` as a user
would call it; "bare, last logits" also asks for the last position's logits only, which is what
scoring needs. Prefix-tuning's bare side has no prefix (its 10 extra key positions are part of the
cost being measured). The learned methods are scored untrained (the cost does not depend on the
values). Each round runs every variant once, in an order rotated by one each round, so that machine
load hits all alike; a ratio is the median of the per-round ratios with their min-max. One torch
thread by default (``--threads``).
Writes benchmarks/results/eval_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

import spread
from prompting import LanguageModel, Verbalizer, load_task
from prompting.methods import build_method

MANUAL = "Review: {text_a}\nSentiment: {mask}"
METHODS = {  # name: (template, parameters), as in experiments/sst2_compare.yaml
    "manual": (MANUAL, {}),
    "soft": ('{soft:"Review:"} {text_a}{soft:"\nSentiment:"} {mask}', {"init": "text"}),
    "ptuning": ('{soft:2} {text_a}{soft:"\nSentiment:"} {mask}', {"residual": True, "hidden_size": 64}),
    "prefix": (MANUAL, {"prefix_length": 10, "init": "text", "prefix_hidden_size": 64}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"))
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma list of " + ", ".join(METHODS))
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    lm = LanguageModel.load(args.model)
    lm.model.requires_grad_(False)  # as scoring runs in practice: frozen (train() leaves the LM frozen too)
    task = load_task("sst2", data_dir=args.data_dir)
    examples = task.test[: args.examples]
    verbalizer = Verbalizer({0: ["negative"], 1: ["positive"]})
    results, md = {}, [f"# Scoring vs the bare model's forward ({args.model})", "",
                       f"{len(examples)} SST-2 test examples, batch {args.batch_size}, the same length-sorted padded "
                       f"batches, {args.threads} torch thread(s), {args.rounds} rounds (order rotated): median seconds, and the "
                       "median of the per-round ratios (min–max).", "",
                       "| method | ours s | bare s | bare last-logits s | ours / bare | ours / bare last-logits |",
                       "|---|---:|---:|---:|---:|---:|"]
    for name in args.methods.split(","):
        template, params = METHODS[name]
        method = build_method(name, lm, template, verbalizer, labels=task.labels, **params)
        method.eval()
        data = method.encode(examples)
        # the batches the method's own scoring makes (length-sorted, under the token budget)
        batches = list(method.batches(data, args.batch_size, rows=method.scoring_batches(data, args.batch_size)))

        @torch.no_grad()
        def ours():  # the scoring itself: predict_scores would return the scores it keeps for this state
            method.predict_scores(data, args.batch_size, cached=False)

        @torch.no_grad()
        def bare(last_only: bool):
            for b in batches:
                p = b.prompts[1]
                # the last position as an index tensor: a contiguous LM-head input (an int 1 takes a
                # strided slice, which is several times slower when the weights are frozen)
                kwargs = {"logits_to_keep": torch.tensor([p.input_ids.shape[1] - 1])} if last_only else {}
                lm.model(input_ids=p.input_ids, attention_mask=p.attention_mask, **kwargs)

        runs = {"ours": ours, "bare": lambda: bare(False), "bare_last_logits": lambda: bare(True)}
        for fn in runs.values():  # warm-up
            fn()
        times = {variant: [] for variant in runs}
        for r in range(args.rounds):
            for variant in spread.rotated(list(runs), r):
                start = time.perf_counter()
                runs[variant]()
                times[variant].append(time.perf_counter() - start)
        median = {variant: statistics.median(v) for variant, v in times.items()}
        results[name] = {"template": template, "params": params, "seconds": times, "median_seconds": median,
                         "ratio_vs_bare": spread.per_round(times["ours"], times["bare"]),
                         "ratio_vs_bare_last_logits": spread.per_round(times["ours"], times["bare_last_logits"])}
        md.append(f"| {name} | {median['ours']:.2f} | {median['bare']:.2f} | {median['bare_last_logits']:.2f} | "
                  f"{spread.shown(results[name]['ratio_vs_bare'], 3)} | "
                  f"{spread.shown(results[name]['ratio_vs_bare_last_logits'], 3)} |")
        print(md[-1], flush=True)
    result = {"model": args.model, "examples": len(examples), "batch_size": args.batch_size, "threads": args.threads,
              "rounds": args.rounds, "load_average": list(os.getloadavg()), "methods": results}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval_overhead.json").write_text(json.dumps(result, indent=2))
    md += ["", f"Load average at the end: {os.getloadavg()[0]:.2f}."]
    (out / "eval_overhead.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
