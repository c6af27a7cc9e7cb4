"""What computing the frozen text once buys: train steps, scoring many runs, AutoPrompt candidates, padding.

    OMP_NUM_THREADS=1 python benchmarks/frozen_text.py [--threads 1] [--rounds 3] [--test 64]

One process, one frozen SmolLM2-135M-Instruct (``smollm2-135m``), SST-2 (K=16 split of data seed 13 for
training and dev, the first ``--test`` test sentences), ``--threads`` torch threads (1 by default: the
ratios, not the absolute times, are the result, and one thread keeps them steady on a shared machine).
Every figure is a ratio of two ways of doing the same work in the same process; each round runs every
variant once, in an order rotated by one each round, and the table gives the median of the per-round
ratios with their min-max over ``--rounds`` rounds (the first round is a warm-up and is dropped).

- **train step**: one optimiser step (forward, cross-entropy, backward, clipping, AdamW) of a soft prompt
  and of P-tuning (LSTM 64, residual) whose ``--prompt-tokens`` tokens (4 and 6 by default) follow the input
  (``Review: {text_a} {soft:N} {mask}``: the review's keys and values come from the cache, computed
  before the timing as after the first step of a run) on ``--batch-size`` training examples, against
  the bare model's forward + backward over the whole sequence (the same ids, last-position logits, the
  gradient taken w.r.t. the input embeddings, no optimiser). The same method on the plain path (cache
  off) is shown too, and the losses of the two paths are compared.
- **R runs scored**: ``--runs`` soft prompts (different random starts, as trained runs are; the fewest
  prompt tokens) scored on the test sentences, against one of them, the cache emptied before each: the
  reviews' keys and values are computed once for all runs. On the first ``--test`` test sentences of each
  of ``--runs-tasks`` (SST-2, mr and 16 of BoolQ's passages by default: the ratio falls as the input
  grows against the tokens after it), beside the bound that the tokens run give and the plain path's ratio.
- **AutoPrompt candidates**: the same ``--candidates`` one-token swaps of a 3-token trigger after the review
  judged on all 32 training examples (``AutoPrompt._judge``): every row whole (``score_triggers``, as
  before the search shared anything), the text before the trigger computed once per judging call,
  and from the cache (computed once per example for the whole search).
- **padding**: padded tokens / real tokens of the dev and test scoring batches (the default token budget
  and row cap), with and without frozen text, and of the fixed batches of 32 rows in input order that
  scoring used before.

Writes benchmarks/results/frozen_text.{json,md} (``--out`` names another folder).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import spread
from prompting import LanguageModel, Verbalizer, load_task, sample_kshot
from prompting.methods import AutoPrompt, ManualPrompt, PTuning, SoftPrompt
from prompting.training.loop import TrainConfig, _optimiser, _step

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parents[1] / "shared" / "data" / "sst2"
VERBALIZER = Verbalizer({"0": "negative", "1": "positive"})
#: the R-runs section's tasks: template (the prompt tokens after the input), verbalizer, data folder, and
#: the most test inputs scored (BoolQ's passages are about 170 tokens: 16 of them hold as many as 64 reviews)
RUNS_TASKS = {
    "sst2": ("Review: {text_a} {soft:%d} {mask}", VERBALIZER, DATA, None),
    "mr": ("Review: {text_a} {soft:%d} {mask}", VERBALIZER, None, None),
    "boolq": ("{passage}\nQuestion: {question}? {soft:%d} {mask}", Verbalizer({"false": "No", "true": "Yes"}),
              ROOT.parents[1] / "shared" / "data" / "fewglue" / "BoolQ", 16),
}


def timed_rounds(variants: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds of each variant per round, the order rotated by one each round; round 0 dropped."""
    times = {n: [] for n in variants}
    for r in range(rounds + 1):
        for name in spread.rotated(list(variants), r):
            started = time.perf_counter()
            variants[name]()
            if r:
                times[name].append(time.perf_counter() - started)
    return times


def ratio(times: dict, num: str, den: str) -> dict:
    return spread.per_round(times[num], times[den])


def bare_step(lm: LanguageModel, batch, labels, word_ids):
    """The bare model's forward + backward over the whole sequence, last-position logits."""
    embeds = lm.embed(batch.input_ids).detach().requires_grad_(True)
    logits = lm.model(inputs_embeds=embeds, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                      logits_to_keep=torch.tensor([batch.input_ids.shape[1] - 1]), use_cache=False).logits
    loss = torch.nn.functional.cross_entropy(logits[:, -1].log_softmax(-1)[:, word_ids], labels)
    loss.backward()


def train_steps(lm, train, args) -> dict:
    """The train-step ratios for every ``--prompt-tokens`` count, keyed by the count."""
    return {str(n): train_step(lm, train, args, n) for n in args.prompt_tokens}


def train_step(lm, train, args, prompt_tokens: int) -> dict:
    template = "Review: {text_a} {soft:%d} {mask}" % prompt_tokens
    methods = {"soft": SoftPrompt(lm, template, VERBALIZER, init="vocab"),
               "ptuning": PTuning(lm, template, VERBALIZER, hidden_size=64, residual=True)}
    lm.model.requires_grad_(False)
    out, variants, checks = {}, {}, {}
    for name, method in methods.items():
        data = method.encode(train[:args.batch_size])
        config = TrainConfig(lr=1e-3, max_steps=10 ** 6)
        optimizer, schedule, params = _optimiser(method, config, 10 ** 6)
        fast = next(method.batches(data, args.batch_size))
        cap, lm.spans.cap = lm.spans.cap, 0
        slow = next(method.batches(data, args.batch_size))
        whole = slow.prompts[1]
        with torch.no_grad():
            slow_loss = torch.nn.functional.cross_entropy(method(slow), slow.labels).item()
        lm.spans.cap = cap
        with torch.no_grad():
            fast_loss = torch.nn.functional.cross_entropy(method(fast), fast.labels).item()
        checks[name] = abs(fast_loss - slow_loss)
        variants[f"{name}-cached"] = lambda m=method, b=fast, o=(optimizer, schedule, params): _step(m, b, *o, config, 0)

        def plain(m=method, b=slow, o=(optimizer, schedule, params)):
            cap, lm.spans.cap = lm.spans.cap, 0
            _step(m, b, *o, config, 0)
            lm.spans.cap = cap
        variants[f"{name}-plain"] = plain
    word_ids = [w[0] for w in methods["soft"].words.word_ids]
    variants["bare"] = lambda: bare_step(lm, whole, fast.labels, word_ids)
    times = timed_rounds(variants, args.rounds)
    for name in methods:
        out[name] = {"cached_vs_bare": ratio(times, f"{name}-cached", "bare"),
                     "plain_vs_bare": ratio(times, f"{name}-plain", "bare"),
                     "cached_vs_plain": ratio(times, f"{name}-cached", f"{name}-plain"),
                     "loss_difference": checks[name]}
    out["sequence"] = {"tokens_whole": int(whole.attention_mask.sum()), "tokens_after_span": int(fast.prompts[1].attention_mask.sum())}
    return out


def many_runs(lm, tests, args) -> dict:
    """R runs against one on each task's test sentences, keyed by the task."""
    return {name: runs_on(lm, test, args, *RUNS_TASKS[name][:2]) for name, test in tests.items()}


def runs_on(lm, test, args, template: str, verbalizer: Verbalizer) -> dict:
    template = template % min(args.prompt_tokens)
    torch.manual_seed(0)
    runs = [SoftPrompt(lm, template, verbalizer, init="vocab") for _ in range(args.runs)]
    data = runs[0].encode(test)

    def score(methods, cache: bool):
        def go():
            cap = lm.spans.cap
            lm.spans.clear()
            lm.spans.cap = cap if cache else 0
            for m in methods:
                m.predict_scores(data, 32, cached=False)
            lm.spans.cap = cap
        return go
    times = timed_rounds({"one": score(runs[:1], True), "all": score(runs, True),
                     "one-plain": score(runs[:1], False), "all-plain": score(runs, False)}, args.rounds)
    tokens = [len(e.input_ids) for e in data.encodings[1]]
    after = [len(e.input_ids) - e.learned_start for e in data.encodings[1]]
    return {"runs": args.runs, "examples": len(test), "prompt_tokens": min(args.prompt_tokens),
            "mean_tokens": statistics.mean(tokens), "mean_tokens_after_span": statistics.mean(after),
            "flop_bound": (sum(tokens) + (args.runs - 1) * sum(after)) / sum(tokens),
            "cached": ratio(times, "all", "one"),
            "plain": ratio(times, "all-plain", "one-plain"), "all_cached_vs_plain": ratio(times, "all", "all-plain")}


def candidates(lm, train, args) -> dict:
    method = AutoPrompt(lm, "Review: {text_a} {trigger:3}\nSentiment: {mask}", VERBALIZER)
    data = method.encode(train)
    generator = torch.Generator().manual_seed(0)
    swaps = [method.trigger_ids.clone()]
    for i in range(args.candidates):
        row = method.trigger_ids.clone()
        row[i % 3] = int(torch.randint(1000, 20000, (1,), generator=generator))
        swaps.append(row)
    swaps = torch.stack(swaps)
    rows = list(range(len(data)))

    def judge(mode: str):
        def go():
            cap = lm.spans.cap
            lm.spans.cap = 0 if mode != "cached" else cap
            if mode == "whole":
                method.score_triggers(swaps, data)
            else:
                method._judge(swaps, data, rows)
            lm.spans.cap = cap
        return go
    with torch.no_grad():
        lm.spans.cap, cap = 0, lm.spans.cap
        whole, per_call = method.score_triggers(swaps, data), method._judge(swaps, data, rows)
        lm.spans.cap = cap
        cached = method._judge(swaps, data, rows)
        times = timed_rounds({"whole": judge("whole"), "per-call": judge("per-call"), "cached": judge("cached")}, args.rounds)
    return {"candidates": len(swaps), "examples": len(data),
            "whole_vs_cached": ratio(times, "whole", "cached"), "per_call_vs_cached": ratio(times, "per-call", "cached"),
            "max_score_difference": max((whole - cached).abs().max().item(), (per_call - cached).abs().max().item())}


def padding(lm, dev, test) -> dict:
    out = {}
    for label, method in [("frozen text", SoftPrompt(lm, "Review: {text_a} {soft:4} {mask}", VERBALIZER, init="vocab")),
                          ("whole input", ManualPrompt(lm, "Review: {text_a}\nSentiment: {mask}", VERBALIZER))]:
        for split, examples in [("dev", dev), ("test", test)]:
            data = method.encode(examples)
            encs = data.encodings[1]
            cut = method.frozen_text
            lengths = [len(e.input_ids) - (e.learned_start if cut else 0) for e in encs]
            batches = method.scoring_batches(data, 32)
            padded = sum(len(r) * max(lengths[i] for i in r) for r in batches)
            fixed = sum(len(r) * max(lengths[i] for i in r) for r in
                        [list(range(s, min(s + 32, len(encs)))) for s in range(0, len(encs), 32)])
            out[f"{label}, {split}"] = {"real": sum(lengths), "bucketed": padded / sum(lengths),
                                        "fixed_32": fixed / sum(lengths), "batches": len(batches)}
    return out


def table(result: dict) -> str:
    f = spread.shown
    s = result["settings"]
    lines = ["# Frozen text computed once", "",
             f"smollm2-135m, SST-2, {s['threads']} torch thread(s) on {s['machine']}, {s['rounds']} rounds "
             f"(order rotated, first dropped): median of the per-round ratios (min–max). {result['date']}.", "",
             f"## Train step ({s['batch_size']} training examples; the prompt tokens follow the review)", "",
             "| method | prompt tokens | tokens run / whole | cached / bare fwd+bwd | plain / bare | cached / plain | "
             "loss difference |", "|---|---:|---:|---:|---:|---:|---:|"]
    for tokens, train in result["train"].items():
        seq = train["sequence"]
        for name in ("soft", "ptuning"):
            r = train[name]
            lines.append(f"| {name} | {tokens} | {seq['tokens_after_span']} / {seq['tokens_whole']} | "
                         f"{f(r['cached_vs_bare'])} | {f(r['plain_vs_bare'])} | {f(r['cached_vs_plain'])} | "
                         f"{r['loss_difference']:.1e} |")
    runs = result["many_runs"]
    first = next(iter(runs.values()))
    lines += ["", f"## {first['runs']} runs scored on the same test sentences vs one ({first['prompt_tokens']} prompt "
              "tokens after the review)", "",
              "Bound: with the review's keys and values computed once, R runs run the whole input once and the "
              "tokens after it R times, (tokens + (R - 1) x tokens after) / tokens of one run.", "",
              "| test sentences | tokens per input (after the review) | cached: R runs / one | bound | plain: R runs / one "
              "| all R, cached / plain |", "|---|---:|---:|---:|---:|---:|"]
    for task, m in runs.items():
        lines.append(f"| {task}, first {m['examples']} | {m['mean_tokens']:.1f} ({m['mean_tokens_after_span']:.1f}) | "
                     f"{f(m['cached'])} | {m['flop_bound']:.2f} | {f(m['plain'])} | {f(m['all_cached_vs_plain'])} |")
    c = result["autoprompt"]
    lines += ["", f"## AutoPrompt: {c['candidates']} triggers judged on {c['examples']} training examples", "",
              "| baseline | baseline / cached |", "|---|---:|",
              f"| every row whole | {f(c['whole_vs_cached'])} |",
              f"| text before the trigger once per call | {f(c['per_call_vs_cached'])} |",
              "", f"Largest score difference between the paths: {c['max_score_difference']:.1e}."]
    lines += ["", "## Padding: padded / real tokens of the scoring batches", "",
              "| template, split | real tokens | token-budget buckets | batches | fixed 32 rows in input order |",
              "|---|---:|---:|---:|---:|"]
    for name, p in result["padding"].items():
        lines.append(f"| {name} | {p['real']:,} | {p['bucketed']:.3f} | {p['batches']} | {p['fixed_32']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=lambda s: [int(n) for n in s.split(",")], default=[4, 6],
                        help="comma-separated prompt lengths for the train step (the smallest for R runs)")
    parser.add_argument("--runs-tasks", default="sst2,mr,boolq",
                        help="tasks whose first --test test inputs the R-runs section scores (of sst2, mr, boolq)")
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--test", type=int, default=64)
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not DATA.is_dir():
        raise SystemExit(f"SST-2 not found at {DATA}: this benchmark reads ../shared/data/sst2 beside the checkout")
    task = load_task("sst2", data_dir=DATA)
    train, dev = sample_kshot(task.train, 16, 13, task.labels)
    test = list(task.test)[:args.test]
    tests = {name: list(load_task(name, data_dir=RUNS_TASKS[name][2]).test)[:min(args.test, RUNS_TASKS[name][3] or args.test)]
             for name in args.runs_tasks.split(",")}
    lm = LanguageModel.load("smollm2-135m", device="cpu")
    lm.model.requires_grad_(False)  # frozen, as every prompt method's training leaves it
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "settings": {**{k: v for k, v in vars(args).items() if k != "out"}, "machine": platform.machine()}}
    for name, part, data in [("padding", padding, None), ("train", train_steps, train),
                             ("many_runs", many_runs, tests), ("autoprompt", candidates, train)]:
        started = time.perf_counter()
        result[name] = padding(lm, dev, test) if data is None else part(lm, data, args)
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "frozen_text.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "frozen_text.md").write_text(table(result))
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
