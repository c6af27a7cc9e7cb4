"""Fact-probing ranks: many facts ranked in one pass against one fact at a time, on LAMA relations with
SmolLM2-135M-Instruct (frozen), manual template.

Two ways to rank the same test facts exactly over every candidate object, in one process, one thread
(``torch.set_num_threads(1)``), the order alternated every round:

- ``one_by_one``: :func:`prompting.tasks.lama.candidate_ranks_one_by_one`: per fact, the query, then the
  trie nodes that can rank before the gold object, level by level (how facts were ranked before);
- ``batched``: :func:`prompting.tasks.lama.candidate_ranking` (what ``prompting run`` uses): the facts'
  queries in one batch, their tries expanded together in rounds of packed rows; it also finds every
  fact's 10 best candidates, which needs the nodes above the 10th best score as well.

Checks that both give the same rank on every fact of every round. Reports facts/s per way (median over
rounds), the speed-up of each round (ratio of the two times measured in the same round; median and
min-max), the trie nodes each way computed, and the machine's load average around the run. Writes
``benchmarks/results/probing_ranking.json``/``.md``.

    OMP_NUM_THREADS=1 python benchmarks/probing_ranking.py [--relations P19 P101 P138] [--facts 24] [--rounds 3]
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
from prompting.lm import trie as trie_module
from prompting.methods import build_method
from prompting.tasks.lama import candidate_ranking, candidate_ranks_one_by_one, load_relation
from prompting.tasks.probing import cap

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parents[1] / "shared" / "data" / "lama"
WAYS = ("one_by_one", "batched")


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def counting_one_by_one(method, facts) -> tuple[torch.Tensor, int]:
    """The one-by-one ranks, and how many trie nodes they fed."""
    fed, feed = [0], trie_module._feed

    def counted(lm, trie, state, level, *args):
        fed[0] += len(level)
        return feed(lm, trie, state, level, *args)

    trie_module._feed = counted
    try:
        return candidate_ranks_one_by_one(method, facts), fed[0]
    finally:
        trie_module._feed = feed


def one_relation(lm, relation: str, n_facts: int, rounds: int) -> dict:
    rel = load_relation(DATA, relation)
    facts = cap(rel.test, n_facts)  # the seeded sample a config's limits.test takes
    method = build_method("manual", lm, rel.template, Verbalizer({c: [c] for c in rel.candidates}),
                          labels=rel.candidates)
    runs = {"one_by_one": lambda: counting_one_by_one(method, facts), "batched": lambda: candidate_ranking(method, facts)}
    seconds = {w: [] for w in WAYS}
    same, nodes = [], {}
    for r in range(rounds):
        found = {}
        for way in (WAYS if r % 2 == 0 else WAYS[::-1]):
            found[way], dt = timed(runs[way])
            seconds[way].append(round(dt, 3))
        same.append(found["one_by_one"][0].tolist() == found["batched"].ranks.tolist())
        nodes = {"one_by_one": found["one_by_one"][1], "batched": found["batched"].nodes}
        fact_ranks = found["batched"].ranks.tolist()
    speedups = [round(a / b, 2) for a, b in zip(seconds["one_by_one"], seconds["batched"])]
    lengths = [len(w) for w in method.words.word_ids]
    return {
        "relation": relation, "facts": len(facts), "candidates": len(rel.candidates),
        "multi_token_candidates": sum(n > 1 for n in lengths), "trie_nodes": method.words.trie.n_nodes,
        "nodes_fed": nodes, "seconds": seconds,
        "facts_per_s": {w: [round(len(facts) / s, 3) for s in seconds[w]] for w in WAYS},
        "speedup": speedups, "speedup_median": statistics.median(speedups),
        "ranks_equal_every_round": all(same), "rank_median": statistics.median(fact_ranks),
        "p_at_1": sum(r == 1 for r in fact_ranks) / len(fact_ranks),
    }


def markdown(results: list[dict], meta: dict) -> str:
    lines = ["# Fact-probing ranks: many facts in one pass vs one fact at a time", "",
             f"{meta['model']}, {meta['threads']} thread, {meta['facts']} test facts per relation (the seeded sample "
             f"a config's `limits.test` takes), {meta['rounds']} rounds (order alternated), manual LAMA template, "
             f"all facts of a relation one batch. Machine: {meta['cpus']} CPU cores shared with other work, load "
             f"average {meta['load_before']} before and {meta['load_after']} after the run (timings 2-4x slower "
             "than an idle machine; the ratios are of times measured in the same round). Produced by "
             "`benchmarks/probing_ranking.py`.", "",
             "| relation | candidates (multi-token) | trie nodes | median gold rank | nodes fed, one by one / batched | "
             "one-by-one facts/s | batched facts/s | speed-up median (min-max) | ranks equal, every fact and round |",
             "|---|---|---:|---:|---|---:|---:|---|---|"]
    for r in results:
        fps = {w: statistics.median(v) for w, v in r["facts_per_s"].items()}
        lines.append(
            f"| {r['relation']} | {r['candidates']} ({r['multi_token_candidates']}) | {r['trie_nodes']} | "
            f"{r['rank_median']:g} | {r['nodes_fed']['one_by_one']} / {r['nodes_fed']['batched']} | "
            f"{fps['one_by_one']:.2f} | {fps['batched']:.2f} | "
            f"{r['speedup_median']:.2f}x ({min(r['speedup']):.2f}-{max(r['speedup']):.2f}) | {r['ranks_equal_every_round']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relations", nargs="+", default=["P19", "P101", "P138"])
    parser.add_argument("--facts", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "results" / "probing_ranking"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    lm = LanguageModel.load("smollm2-135m", device="cpu")
    load_before = [round(x, 1) for x in os.getloadavg()]
    results = []
    for relation in args.relations:
        results.append(one_relation(lm, relation, args.facts, args.rounds))
        print(json.dumps(results[-1]), flush=True)
        assert results[-1]["ranks_equal_every_round"], f"{relation}: the two ways gave different ranks"
    meta = {"model": "smollm2-135m (SmolLM2-135M-Instruct)", "threads": torch.get_num_threads(),
            "rounds": args.rounds, "facts": args.facts, "cpus": os.cpu_count(), "load_before": load_before,
            "load_after": [round(x, 1) for x in os.getloadavg()],
            "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine()}
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    Path(args.out + ".md").write_text(markdown(results, meta))
    print(markdown(results, meta))


if __name__ == "__main__":
    main()
