"""Fact probing's cost against the bare model's on the same tokens, on LAMA relations with
SmolLM2-135M-Instruct (frozen), one thread (``torch.set_num_threads(1)``), in one process:

- **ranking**: :func:`prompting.tasks.lama.candidate_ranking` (what ``prompting run`` uses; manual template,
  exact rank and 10 best objects) of ``--facts`` test facts, against one plain forward pass of the model
  (the LM head included) over as many tokens as the ranking fed: the facts' query tokens plus every trie
  node it computed, in rows of 64 tokens. The ratio says how far the ranking is from the model's own cost
  per token; what is left is the number of nodes an exact rank needs.
- **training**: steps of a soft prompt (5 vectors, started from the template's words) on first-token
  labels through the library's training loop (no dev), against a plain forward and backward of the frozen
  model on batches of the same shape (embeddings that need a gradient, a cross-entropy on the last position).

The two ways of each are timed alternately, ``--rounds`` times; ratios are of times measured in the same
round (median and min-max). Then, per relation, the cost of ranking its whole test split: nodes per fact
measured here x test facts x the bare model's seconds per token, the least that exact ranking costs on this
machine while every node needs a forward pass. Writes ``benchmarks/results/probing_cost.json``/``.md``.

    OMP_NUM_THREADS=1 python benchmarks/probing_cost.py [--relations P19 P138] [--facts 24] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from prompting import LanguageModel, Verbalizer
from prompting.core.data import Example
from prompting.core.settings import TrainConfig
from prompting.methods import build_method
from prompting.tasks.lama import candidate_ranking, load_relation
from prompting.tasks.probing import cap, first_token_method, first_tokens
from prompting.training.loop import train

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parents[1] / "shared" / "data" / "lama"
ROW = 64


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


@torch.no_grad()
def bare_forward(lm, tokens: int) -> None:
    """One plain forward pass over ``tokens`` tokens, in rows of ``ROW``, logits of every position."""
    rows = max(1, round(tokens / ROW))
    ids = torch.randint(100, 10000, (rows, ROW), generator=torch.Generator().manual_seed(0))
    lm.model(input_ids=ids)


def bare_steps(lm, batch: int, length: int, steps: int) -> None:
    """``steps`` forward and backward passes of the frozen model on [batch, length] embeddings."""
    lm.model.requires_grad_(False)
    ids = torch.randint(100, 10000, (batch, length), generator=torch.Generator().manual_seed(0))
    target = torch.randint(100, 10000, (batch,), generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        embeds = lm.model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = lm.model(inputs_embeds=embeds).logits[:, -1]
        torch.nn.functional.cross_entropy(logits, target).backward()


def ranking_cost(lm, relation: str, n_facts: int, rounds: int) -> dict:
    rel = load_relation(DATA, relation)
    facts = cap(rel.test, n_facts)  # the seeded sample a config's limits.test takes
    method = build_method("manual", lm, rel.template, Verbalizer({c: [c] for c in rel.candidates}),
                          labels=rel.candidates)
    encoded = method.encode(facts)
    query_tokens = sum(len(e.input_ids) for e in encoded.encodings[min(encoded.encodings)])
    ranking = candidate_ranking(method, facts)  # warm-up, and the nodes it feeds (the same every round)
    tokens = query_tokens + ranking.nodes
    seconds = {"ranking": [], "bare": []}
    for r in range(rounds):
        ways = {"ranking": lambda: candidate_ranking(method, facts), "bare": lambda: bare_forward(lm, tokens)}
        for way in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
            seconds[way].append(round(timed(ways[way])[1], 3))
    ratios = [round(a / b, 2) for a, b in zip(seconds["ranking"], seconds["bare"])]
    bare_per_token = statistics.median(seconds["bare"]) / tokens
    nodes_per_fact = ranking.nodes / len(facts)
    return {"relation": relation, "facts": len(facts), "test_facts": len(rel.test),
            "candidates": len(rel.candidates), "query_tokens": query_tokens, "nodes": ranking.nodes,
            "nodes_per_fact": round(nodes_per_fact, 1), "seconds": seconds, "ratio": ratios,
            "ratio_median": statistics.median(ratios), "bare_ms_per_token": round(1000 * bare_per_token, 2),
            "whole_test_bare_seconds": round(len(rel.test) * (nodes_per_fact + query_tokens / len(facts))
                                             * bare_per_token, 1),
            "whole_test_ranking_seconds": round(len(rel.test) * statistics.median(seconds["ranking"]) / len(facts), 1)}


def training_cost(lm, relation: str, steps: int, batch: int, rounds: int) -> dict:
    rel = load_relation(DATA, relation)
    ids, owner = first_tokens(rel.candidates, lm.tokenizer, True)
    facts = [Example(ex.fields, owner[ex.label], ex.idx) for ex in cap(rel.train, steps * batch)]

    def build(words, labels):
        return build_method("soft", lm, rel.template, Verbalizer(words), labels=labels, prompt_tokens=5, init="text")

    config = TrainConfig(lr=0.03, max_steps=steps, batch_size=batch, select_untrained=False)
    learner = first_token_method(build, ids, rel.candidates, owner)
    data = learner.encode(facts)
    length = round(sum(len(e.input_ids) for e in data.encodings[min(data.encodings)]) / len(facts)) + 5
    seconds = {"training": [], "bare": []}
    for r in range(rounds):
        ways = {"training": lambda: train(first_token_method(build, ids, rel.candidates, owner), data, None, config,
                                          progress=False),
                "bare": lambda: bare_steps(lm, batch, length, steps)}
        for way in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
            seconds[way].append(round(timed(ways[way])[1], 3))
    ratios = [round(a / b, 2) for a, b in zip(seconds["training"], seconds["bare"])]
    return {"relation": relation, "steps": steps, "batch": batch, "tokens_per_example": length,
            "seconds": seconds, "ratio": ratios, "ratio_median": statistics.median(ratios),
            "step_seconds": round(statistics.median(seconds["training"]) / steps, 3)}


def markdown(ranking: list[dict], training: list[dict], meta: dict) -> str:
    lines = ["# Fact probing's cost against the bare model's on the same tokens", "",
             f"{meta['model']}, {meta['threads']} thread, {meta['rounds']} rounds (order alternated), ratios of times "
             f"measured in the same round. Machine: {meta['cpus']} CPU cores shared with other work, load average "
             f"{meta['load_before']} before and {meta['load_after']} after. Produced by `benchmarks/probing_cost.py`.",
             "", "## Ranking (manual template, exact rank and the 10 best objects)", "",
             "| relation | facts | candidates | trie nodes a fact | ranking / bare forward, same tokens: median "
             "(min-max) | bare ms a token | whole test split: facts | ranking it (s) | its tokens, bare model (s) |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in ranking:
        lines.append(f"| {r['relation']} | {r['facts']} | {r['candidates']} | {r['nodes_per_fact']} | "
                     f"{r['ratio_median']:.2f}x ({min(r['ratio']):.2f}-{max(r['ratio']):.2f}) | {r['bare_ms_per_token']} | "
                     f"{r['test_facts']} | {r['whole_test_ranking_seconds']:.0f} | {r['whole_test_bare_seconds']:.0f} |")
    lines += ["", "## Training a soft prompt on first-token labels", "",
              "| relation | steps x batch | tokens an example | training / bare forward+backward: median (min-max) | "
              "seconds a step |", "|---|---|---:|---|---:|"]
    for t in training:
        lines.append(f"| {t['relation']} | {t['steps']} x {t['batch']} | {t['tokens_per_example']} | "
                     f"{t['ratio_median']:.2f}x ({min(t['ratio']):.2f}-{max(t['ratio']):.2f}) | {t['step_seconds']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relations", nargs="+", default=["P19", "P138"])
    parser.add_argument("--facts", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "results" / "probing_cost"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    lm = LanguageModel.load("smollm2-135m", device="cpu")
    load_before = [round(x, 1) for x in os.getloadavg()]
    ranking, training = [], []
    for relation in args.relations:
        ranking.append(ranking_cost(lm, relation, args.facts, args.rounds))
        print(json.dumps(ranking[-1]), flush=True)
    for relation in args.relations:
        training.append(training_cost(lm, relation, args.steps, args.batch, args.rounds))
        print(json.dumps(training[-1]), flush=True)
    meta = {"model": "smollm2-135m (SmolLM2-135M-Instruct)", "threads": torch.get_num_threads(),
            "rounds": args.rounds, "cpus": os.cpu_count(), "load_before": load_before,
            "load_after": [round(x, 1) for x in os.getloadavg()], "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine()}
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "ranking": ranking, "training": training},
                                                   indent=1) + "\n")
    Path(args.out + ".md").write_text(markdown(ranking, training, meta))
    print(markdown(ranking, training, meta))


if __name__ == "__main__":
    main()
