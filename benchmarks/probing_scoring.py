"""Fact-probing candidate scoring: shared work (query keys/values once, a trie of candidate prefixes)
against scoring each candidate separately, on LAMA relations with SmolLM2-135M-Instruct (frozen).

Three ways to rank every candidate object of a relation for the same test facts, in one process,
one thread (``torch.set_num_threads(1)``), the order rotated every round:

- ``per_candidate``: :meth:`LanguageModel.word_logprobs` as every method uses it for a few label
  words: one forward pass over query + candidate per multi-token candidate (a batch of queries each);
- ``trie``: :func:`prompting.lm.trie.shared_word_logprobs`: the query once, every distinct candidate
  prefix once, all scores;
- ``trie_ranks``: :func:`prompting.tasks.lama.candidate_ranks`: the gold object's exact rank only, skipping
  subtrees whose prefix already scores below it (what the LAMA experiment runs).

Checks: the trie's scores against the per-candidate scores (largest difference), also with the model
in float64 on the first ``--float64-facts`` facts (where the two computations differ only by float32's
rounding, they agree there to the float32 rounding of the returned scores); the pruned ranks equal the
ranks of the per-candidate scores. Reports facts/s per way and per round, and the speed-up of each round
(ratios of times measured in the same round). Writes ``benchmarks/results/probing_scoring.json``/``.md``.

    OMP_NUM_THREADS=1 python benchmarks/probing_scoring.py [--relations P103 P176] [--facts 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from prompting import LanguageModel, Verbalizer
from prompting.tasks.lama import candidate_ranks, load_relation, ranks, whole_prompts
from prompting.methods import build_method
from prompting.lm.trie import CandidateWords

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parents[1] / "shared" / "data" / "lama"
WAYS = ("per_candidate", "trie", "trie_ranks")


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


@torch.no_grad()
def float64_difference(lm, method, data, plain_words, trie_words, n: int, batch_size: int) -> float | None:
    """Largest |trie - per-candidate| score with the model in float64, on the first ``n`` facts."""
    if n <= 0:
        return None
    first = type(data)({k: v[:n] for k, v in data.encodings.items()}, data.labels[:n])
    lm.model.double()
    try:
        a, b = (torch.cat([lm.word_logprobs(p, w, hooks=method).double() for p in whole_prompts(method, first, batch_size)])
                for w in (plain_words, trie_words))
    finally:
        lm.model.float()
    return (a - b).abs().max().item()


def one_relation(lm, relation: str, n_facts: int, rounds: int, batch_size: int, float64_facts: int = 4) -> dict:
    rel = load_relation(DATA, relation)
    facts = rel.test[:n_facts]
    method = build_method("manual", lm, rel.template, Verbalizer({c: [c] for c in rel.candidates}),
                          labels=rel.candidates)
    plain_words = method.words
    trie_words = CandidateWords.of(plain_words)
    data = method.encode(facts)
    gold = torch.tensor([rel.candidates.index(f.label) for f in facts])

    @torch.no_grad()
    def scores(words):  # every call computes (the method's own scoring keeps scores it computed before)
        return torch.cat([lm.word_logprobs(prompts, words, hooks=method).float().cpu()
                          for prompts in whole_prompts(method, data, batch_size)])

    def per_candidate():
        return scores(plain_words)

    def trie():
        return scores(trie_words)

    def trie_ranks():
        method.words = trie_words
        return candidate_ranks(method, facts)

    runs = {"per_candidate": per_candidate, "trie": trie, "trie_ranks": trie_ranks}
    seconds = {w: [] for w in WAYS}
    outputs = {}
    for r in range(rounds):
        order = WAYS[r % 3:] + WAYS[:r % 3]
        for way in order:
            outputs[way], dt = timed(runs[way])
            seconds[way].append(round(dt, 3))
    diff = (outputs["trie"] - outputs["per_candidate"]).abs().max().item()
    diff64 = float64_difference(lm, method, data, plain_words, trie_words, float64_facts, batch_size)
    method.words = plain_words
    same_ranks = outputs["trie_ranks"].tolist() == ranks(outputs["per_candidate"], gold).tolist()
    speedups = {w: [round(a / b, 2) for a, b in zip(seconds["per_candidate"], seconds[w])] for w in WAYS[1:]}
    lengths = [len(w) for w in plain_words.word_ids]
    return {
        "relation": relation, "facts": len(facts), "candidates": len(rel.candidates),
        "multi_token_candidates": sum(n > 1 for n in lengths), "max_tokens": max(lengths),
        "trie_nodes": trie_words.trie.n_nodes, "tokens_after_query_per_candidate": sum(n - 1 for n in lengths),
        "seconds": seconds,
        "facts_per_s": {w: [round(len(facts) / s, 3) for s in seconds[w]] for w in WAYS},
        "speedup_vs_per_candidate": speedups,
        "speedup_median": {w: statistics.median(v) for w, v in speedups.items()},
        "max_abs_score_diff_trie": diff, "scores_equal_1e-5": diff <= 1e-5, "ranks_equal": same_ranks,
        "float64_facts": min(float64_facts, len(facts)), "max_abs_score_diff_trie_float64": diff64,
        "p_at_1_check": float((ranks(outputs["per_candidate"], gold) == 1).double().mean()),
    }


def fmt64(x) -> str:
    return "–" if x is None else f"{x:.1e}"


def markdown(results: list[dict], meta: dict) -> str:
    lines = ["# Fact-probing candidate scoring: shared work vs per candidate", "",
             f"{meta['model']}, {meta['threads']} thread, batch {meta['batch_size']} facts, {meta['rounds']} rounds "
             "(order rotated), manual LAMA template, test facts from the start of each relation's test file. "
             "Produced by `benchmarks/probing_scoring.py`.", "",
             "| relation | candidates (multi-token) | trie nodes | per-candidate facts/s | trie facts/s | "
             "trie ranks facts/s | trie speed-up (min-max) | trie-ranks speed-up (min-max) | max score diff | "
             "max score diff, float64 model | ranks equal |",
             "|---|---|---:|---:|---:|---:|---|---|---:|---:|---|"]
    for r in results:
        fps = {w: statistics.median(v) for w, v in r["facts_per_s"].items()}
        sp = r["speedup_vs_per_candidate"]
        lines.append(
            f"| {r['relation']} | {r['candidates']} ({r['multi_token_candidates']}) | {r['trie_nodes']} | "
            f"{fps['per_candidate']:.2f} | {fps['trie']:.2f} | {fps['trie_ranks']:.2f} | "
            f"{r['speedup_median']['trie']:.1f}x ({min(sp['trie']):.1f}-{max(sp['trie']):.1f}) | "
            f"{r['speedup_median']['trie_ranks']:.1f}x ({min(sp['trie_ranks']):.1f}-{max(sp['trie_ranks']):.1f}) | "
            f"{r['max_abs_score_diff_trie']:.1e} | {fmt64(r.get('max_abs_score_diff_trie_float64'))} | {r['ranks_equal']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relations", nargs="+", default=["P103", "P176"])
    parser.add_argument("--facts", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--float64-facts", type=int, default=4, help="facts scored again with the model in float64")
    parser.add_argument("--out", default=str(ROOT / "results" / "probing_scoring"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    lm = LanguageModel.load("smollm2-135m", device="cpu")
    results = []
    for relation in args.relations:
        results.append(one_relation(lm, relation, args.facts, args.rounds, args.batch_size, args.float64_facts))
        print(json.dumps(results[-1]), flush=True)
    meta = {"model": "smollm2-135m (SmolLM2-135M-Instruct)", "threads": torch.get_num_threads(),
            "batch_size": args.batch_size, "rounds": args.rounds, "facts": args.facts,
            "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine()}
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    Path(args.out + ".md").write_text(markdown(results, meta))
    print(markdown(results, meta))


if __name__ == "__main__":
    main()
