"""PET's labelling pass (a pattern model scoring the unlabelled examples) against a plain scoring pass.

    python benchmarks/pet_labelling.py [--unlabeled 64] [--patterns 0,3] [--rounds 3]

The unlabelled examples are those an experiment with ``unlabeled: N`` draws (SST-2, K = 16, data seed 13:
N training sentences outside the K-shot split and its dev). For each pattern (the `sst2` prompt file's,
verbalizer 0), three ways of scoring the same sentences with the same model:

- ``labelling``: the recipe's pass as a run does it (:func:`prompting.tasks.pet.score_pool`): draw the
  pool, encode it, score it in length-sorted batches under the token budget, and keep the scores and the
  digest of the texts for the predictions file;
- ``plain``: the scoring pass every run makes of its test set, ``predict_scores(encode(sentences),
  cached=False)``, on the pool already drawn;
- ``unsorted``: the same scoring on batches of the pool in its drawn order (no length sorting), what
  bucketing saves.

Each round runs every variant once, in an order rotated by one each round, so that machine load hits all
alike; a ratio is the median of the per-round ratios with their min–max. One torch thread by default
(``--threads``). Writes benchmarks/results/pet_labelling.{json,md}.
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
from prompting import LanguageModel, Verbalizer
from prompting.config.experiment import load_prompt_file
from prompting.core.settings import MethodSpec, Protocol
from prompting.methods import build_method
from prompting.tasks.base import PlannedRun
from prompting.tasks.classification import Classification
from prompting.tasks.pet import draw_pool, score_pool
from prompting.tasks.spec import load_task_spec

VARIANTS = ("labelling", "plain", "unsorted")


def timed_variants(method, task, run, train, dev, pool, batch_size: int) -> dict:
    """The three passes of one pattern, as functions of no argument."""
    data = method.encode(pool)
    unsorted = [list(range(i, min(i + batch_size, len(pool)))) for i in range(0, len(pool), batch_size)]

    @torch.no_grad()
    def unsorted_pass():
        method.eval()
        for batch in method.batches(data, batch_size, rows=unsorted):
            method(batch)

    return {"labelling": lambda: score_pool(task, run, method, train, dev, batch_size, progress=False),
            "plain": lambda: method.predict_scores(method.encode(pool), batch_size, cached=False),
            "unsorted": unsorted_pass}


def measure(passes: dict, rounds: int) -> dict[str, list[float]]:
    passes["plain"]()  # warm-up: the same model and scoring code as the others
    times = {variant: [] for variant in passes}
    for r in range(rounds):
        for variant in spread.rotated(list(passes), r):
            start = time.perf_counter()
            passes[variant]()
            times[variant].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"))
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--unlabeled", type=int, default=64)
    parser.add_argument("--patterns", default="0,3", help="comma list of the sst2 prompt file's patterns")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    task = load_task_spec({"name": "sst2", "data_dir": args.data_dir, "unlabeled": args.unlabeled})
    protocol = Protocol(k=16, data_seeds=(13,), train_seeds=(1,))
    train, dev = Classification(task).split(protocol, 13)
    pool = draw_pool(task, train, dev, 13)
    patterns, verbalizers = load_prompt_file("sst2")
    lm = LanguageModel.load(args.model)
    lm.model.requires_grad_(False)
    md = [f"# PET's labelling pass against a plain scoring pass ({args.model})", "",
          f"{len(pool)} unlabelled SST-2 training sentences (K = 16, data seed 13), batch {args.batch_size}, "
          f"{args.threads} torch thread(s), {args.rounds} rounds (order rotated): sentences per second (median "
          "over the rounds, min–max), and the median of the per-round ratios (min–max).", "",
          "| pattern | labelling sent/s | plain sent/s | unsorted sent/s | labelling / plain time | "
          "unsorted / plain time |", "|---|---:|---:|---:|---:|---:|"]
    results = {}
    for index in [int(p) for p in args.patterns.split(",")]:
        template, verbalizer = patterns[index], verbalizers[0]
        method = build_method("manual", lm, template, Verbalizer(verbalizer), labels=task.labels)
        run = PlannedRun(MethodSpec("manual", train=True), template, verbalizer, 13, 1, {}, "benchmark",
                         context={"pool": True})
        times = measure(timed_variants(method, task, run, train, dev, pool, args.batch_size), args.rounds)
        rates = {v: [len(pool) / s for s in t] for v, t in times.items()}
        results[index] = {"template": template, "seconds": times, "sentences_per_second": rates,
                          "labelling_vs_plain": spread.per_round(times["labelling"], times["plain"]),
                          "unsorted_vs_plain": spread.per_round(times["unsorted"], times["plain"])}
        cell = lambda v: f"{statistics.median(rates[v]):.1f} ({min(rates[v]):.1f}–{max(rates[v]):.1f})"  # noqa: E731
        md.append(f"| {index}: `{template!r}` | {cell('labelling')} | {cell('plain')} | {cell('unsorted')} | "
                  f"{spread.shown(results[index]['labelling_vs_plain'], 3)} | "
                  f"{spread.shown(results[index]['unsorted_vs_plain'], 3)} |")
        print(md[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"model": args.model, "unlabeled": len(pool), "batch_size": args.batch_size, "threads": args.threads,
              "rounds": args.rounds, "load_average": list(os.getloadavg()), "patterns": results}
    (out / "pet_labelling.json").write_text(json.dumps(result, indent=2))
    md += ["", f"Load average at the end: {os.getloadavg()[0]:.2f} (other work shares the machine)."]
    (out / "pet_labelling.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
