"""Why AutoPrompt's search stalls on SST-2: the one-swap landscape around the starting trigger.

Frozen SmolLM2-135M-Instruct, K=16 per class (data seed 13 unless ``--seed``), verbalizer
negative / positive, the starting trigger ``the the the the the``. Everything is scored exactly with
the public pieces :meth:`AutoPrompt.trigger_gradient`, :func:`hotflip_candidates`,
:meth:`AutoPrompt.score_triggers`; each candidate's gold-label log-likelihood is kept per example,
so the search's choices can be replayed offline:

1. the recorded searches (``autoprompt_sst2.jsonl``, the settings before this diagnosis): how much
   the current trigger's score moves from one 16-example batch to the next while the trigger stays
   the same, against the gain of the swaps that were accepted; how often dev kept the start;
2. one-token swaps at three trigger positions: the HotFlip top ``--hotflip`` from the gradient of
   the whole training set against as many random allowed tokens: how many lower the training loss,
   the HotFlip rank of those that do, how many candidates are printable whole words;
3. replay of one search step from the per-example scores: the best of the top-k candidates judged on
   ``E`` training examples (the old loop: 16), accepted when better there; what that choice does to
   the loss on the *other* training examples and on dev; E and k varied;
4. the trigger after the input (``{text_a} {trigger:5} {mask}``) against before it
   (``{trigger:5} {text_a} {mask}``): the best one-swap gain at the position next to the input;
5. the per-iteration cost: gradient and candidate scoring seconds.

One torch thread (``torch.set_num_threads(1)``); about 12 minutes on one core of a 2-core CPU.

    OMP_NUM_THREADS=1 python benchmarks/autoprompt_diagnosis.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from prompting import LanguageModel, Verbalizer, load_task, sample_kshot
from prompting.methods import AutoPrompt, hotflip_candidates

ROOT = Path(__file__).resolve().parent
AFTER, BEFORE = "{text_a} {trigger:5} {mask}", "{trigger:5} {text_a} {mask}"


def per_example_scores(method: AutoPrompt, candidates: torch.Tensor, examples) -> torch.Tensor:
    """``[C, N]`` gold-label log-likelihood of each example under each candidate trigger."""
    columns = [method.score_triggers(candidates, method.encode([ex]), rows_per_forward=len(candidates))
               for ex in examples]
    return torch.stack(columns, 1)


def recorded_searches(path: Path) -> dict:
    """Part 1: what the recorded searches did (no model call)."""
    if not path.exists():
        return {}
    runs = [json.loads(line) for line in path.read_text().splitlines()]
    spread, gains, same_as_start, dev_kept_start = [], [], 0, 0
    for run in runs:
        history = run["history"]
        # the current trigger's score on successive batches while it did not change
        for before, after in zip(history, history[1:]):
            if not before["swapped"]:
                spread.append(abs(after["current_score"] - before["current_score"]))
        gains += [r["best_candidate_score"] - r["current_score"] for r in history if r["swapped"]]
        dev_kept_start += run["best_iteration"] == 0
        changed = sum(a != b for a, b in zip(run["found_trigger"], run["initial_trigger"]))
        same_as_start += changed <= 1
    return {"runs": len(runs), "iterations": len(runs[0]["history"]),
            "accepted_swaps": sum(r["swaps"] for r in runs),
            "proposals": sum(len(r["history"]) for r in runs),
            "median_gain_of_accepted_swap": statistics.median(gains),
            "median_batch_to_batch_change_of_unchanged_trigger": statistics.median(spread),
            "dev_kept_the_start": dev_kept_start, "found_within_one_word_of_start": same_as_start,
            "found_test_mean": statistics.mean(r["found_test"]["accuracy"] for r in runs),
            "start_test_mean": statistics.mean(r["initial_test"]["accuracy"] for r in runs)}


def printable_word(tokenizer, token_id: int) -> bool:
    """True when the token reads as an alphabetic word and round-trips through the tokenizer."""
    text = tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(token_id)]).strip()
    return text.isalpha() and tokenizer(" " + text, add_special_tokens=False)["input_ids"] == [token_id]


def swap_landscape(method: AutoPrompt, train, dev, positions, hotflip: int, random_count: int, seed: int):
    """Parts 2 and 3 for one template: per-example scores of HotFlip and random one-token swaps."""
    data = method.encode(train)
    batch = next(method.batches(data, len(data)))
    started = time.perf_counter()
    grad, loss = method.trigger_gradient(batch)
    grad_seconds = time.perf_counter() - started
    matrix = method.lm.embeddings.weight.detach()
    pool = method.allowed.nonzero().squeeze(1)
    generator = torch.Generator().manual_seed(seed)
    rows, kinds = [method.trigger_ids.clone()], [("current", -1, -1)]
    for position in positions:
        top = hotflip_candidates(grad[position], matrix, hotflip, allowed=method.allowed)
        drawn = pool[torch.randperm(len(pool), generator=generator)[:random_count]]
        for kind, tokens in (("hotflip", top), ("random", drawn)):
            for rank, token in enumerate(tokens.tolist()):
                row = method.trigger_ids.clone()
                row[position] = token
                rows.append(row)
                kinds.append((kind, position, rank))
    candidates = torch.stack(rows)
    started = time.perf_counter()
    train_scores = per_example_scores(method, candidates, train)  # [C, 32]
    score_seconds = time.perf_counter() - started
    return {"grad": grad, "grad_seconds": grad_seconds, "loss": loss, "candidates": candidates, "kinds": kinds,
            "train_scores": train_scores, "score_seconds": score_seconds,
            "forwards_per_second": candidates.numel() / len(method.trigger_ids) * len(train) / score_seconds}


def summarise_swaps(method: AutoPrompt, landscape: dict, positions) -> dict:
    tokenizer = method.lm.tokenizer
    scores, kinds, candidates = landscape["train_scores"], landscape["kinds"], landscape["candidates"]
    mean = scores.mean(1)
    gain = (mean - mean[0]).tolist()  # > 0: the swap lowers the training loss
    out = {"start_train_loglik": round(mean[0].item(), 4), "by_position": {}}
    for position in positions:
        entry = {}
        for kind in ("hotflip", "random"):
            picked = [i for i, (k, p, _) in enumerate(kinds) if k == kind and p == position]
            gains = [gain[i] for i in picked]
            better = [kinds[i][2] + 1 for i in picked if gain[i] > 0]  # 1-based HotFlip rank
            tokens = [candidates[i, position].item() for i in picked]
            entry[kind] = {"count": len(picked), "improving": len(better), "best_gain": round(max(gains), 4),
                           "median_gain": round(statistics.median(gains), 4),
                           "improving_ranks": better if kind == "hotflip" else None,
                           "printable_words": sum(printable_word(tokenizer, t) for t in tokens),
                           "best_token": tokenizer.convert_ids_to_tokens(tokens[max(range(len(gains)), key=gains.__getitem__)])}
            if kind == "hotflip":
                entry[kind]["first_10"] = [s.strip() for s in
                                           (tokenizer.convert_tokens_to_string([t]) for t in
                                            tokenizer.convert_ids_to_tokens(tokens[:10]))]
                entry[kind]["best_gain_in_top"] = {k: round(max(gains[:k]), 4) for k in (5, 10, 20, len(gains))}
        out["by_position"][str(position)] = entry
    return out


def replay_steps(landscape: dict, dev_scores: torch.Tensor, dev_rows: list[int], position: int,
                 sizes, tops, draws: int, seed: int) -> list[dict]:
    """Part 3: one search step judged on E examples, replayed ``draws`` times.

    The candidates at ``position`` are the HotFlip top-k; the step accepts the best of them on E
    random training examples when it beats the current trigger there. Its real effect is its
    change of the mean log-likelihood on the other training examples and on dev.
    """
    scores, kinds = landscape["train_scores"], landscape["kinds"]
    hot = [i for i, (k, p, _) in enumerate(kinds) if k == "hotflip" and p == position]
    n = scores.shape[1]
    generator = torch.Generator().manual_seed(seed)
    dev_index = {row: j for j, row in enumerate(dev_rows)}
    out = []
    for top in tops:
        for size in sizes:
            accepted = worse_elsewhere = 0
            held_gain, dev_gain, judged_gain = [], [], []
            for _ in range(draws):
                order = torch.randperm(n, generator=generator).tolist()
                judged, others = order[:size], order[size:] or order
                pool = hot[:top]
                means = scores[pool][:, judged].mean(1)
                best = pool[int(means.argmax())]
                gain = (scores[best, judged].mean() - scores[0, judged].mean()).item()
                if gain <= 0:
                    continue
                accepted += 1
                judged_gain.append(gain)
                held = (scores[best, others].mean() - scores[0, others].mean()).item()
                held_gain.append(held)
                worse_elsewhere += held < 0
                if best in dev_index:
                    dev_gain.append((dev_scores[dev_index[best]] - dev_scores[0]).mean().item())
            out.append({"top_k": top, "examples": size, "draws": draws, "accepted": accepted,
                        "median_gain_on_judged": round(statistics.median(judged_gain), 4) if judged_gain else None,
                        "median_gain_on_others": round(statistics.median(held_gain), 4) if held_gain else None,
                        "accepted_but_worse_on_others": worse_elsewhere,
                        "median_dev_gain": round(statistics.median(dev_gain), 4) if dev_gain else None})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parents[1] / "shared" / "data" / "sst2")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--hotflip", type=int, default=20, help="HotFlip candidates per position")
    parser.add_argument("--random", type=int, default=10, help="random allowed tokens per position")
    parser.add_argument("--draws", type=int, default=200, help="replays of one search step")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--render-only", action="store_true", help="rewrite the .md from the saved .json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.render_only:
        result = json.loads((args.out / "autoprompt_diagnosis.json").read_text())
        (args.out / "autoprompt_diagnosis.md").write_text(render(result, args))
        return

    verbalizer = Verbalizer({0: ["negative"], 1: ["positive"]})
    lm = LanguageModel.load(args.model, device="cpu")
    task = load_task("sst2", data_dir=args.data_dir)
    train, dev = sample_kshot(task.train, args.k, args.seed, task.labels)
    result = {"model": args.model, "data_seed": args.seed, "k": args.k, "torch_threads": torch.get_num_threads(),
              "recorded": recorded_searches(args.out / "autoprompt_sst2.jsonl")}
    print(json.dumps(result["recorded"]), flush=True)

    # parts 2 and 3: the trigger after the input, positions first / middle / last
    # vocabulary="tokens": the candidates of the recorded searches (any token that starts a word)
    method = AutoPrompt(lm, AFTER, verbalizer, labels=task.labels, vocabulary="tokens")
    positions = [0, 2, 4]
    after = swap_landscape(method, train, dev, positions, args.hotflip, args.random, args.seed)
    result["after"] = summarise_swaps(method, after, positions)
    print(json.dumps(result["after"]), flush=True)
    # dev scores for the current trigger and the HotFlip candidates at the last position
    last = [0] + [i for i, (k, p, _) in enumerate(after["kinds"]) if k == "hotflip" and p == 4]
    dev_scores = per_example_scores(method, after["candidates"][last], dev)
    train_gain = (after["train_scores"][last].mean(1) - after["train_scores"][0].mean()).tolist()
    dev_gain = (dev_scores.mean(1) - dev_scores[0].mean()).tolist()
    result["train_vs_dev_last_position"] = {
        "train_gain": [round(g, 4) for g in train_gain[1:]], "dev_gain": [round(g, 4) for g in dev_gain[1:]],
        "improve_train": sum(g > 0 for g in train_gain[1:]),
        "improve_train_and_dev": sum(t > 0 and d > 0 for t, d in zip(train_gain[1:], dev_gain[1:]))}
    result["replay_last_position"] = replay_steps(after, dev_scores, last, 4, sizes=[4, 8, 16, 32],
                                                  tops=[5, 10, 20], draws=args.draws, seed=args.seed)
    for row in result["replay_last_position"]:
        print(json.dumps(row), flush=True)
    result["cost"] = {"gradient_seconds_32_examples": round(after["grad_seconds"], 2),
                      "scoring_forwards_per_second": round(after["forwards_per_second"], 2)}

    # part 4: the trigger before the input; its last position is next to the input
    before_method = AutoPrompt(lm, BEFORE, verbalizer, labels=task.labels, vocabulary="tokens")
    before = swap_landscape(before_method, train, dev, [4], args.hotflip, args.random, args.seed)
    result["before"] = summarise_swaps(before_method, before, [4])
    print(json.dumps(result["before"]), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "autoprompt_diagnosis.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "autoprompt_diagnosis.md").write_text(render(result, args))
    print(render(result, args))


def swap_rows(part: dict) -> list[str]:
    rows = []
    for position, entry in part["by_position"].items():
        for kind, e in entry.items():
            ranks = ", ".join(map(str, e["improving_ranks"])) if e["improving_ranks"] else ""
            rows.append(f"| {position} | {kind} | {e['improving']}/{e['count']} | {e['best_gain']:+.3f} | "
                        f"{e['median_gain']:+.3f} | {ranks} | {e['printable_words']}/{e['count']} | `{e['best_token']}` |")
    return rows


def render(result: dict, args) -> str:
    rec = result.get("recorded") or {}
    md = ["# Why AutoPrompt's search stalls (SST-2, SmolLM2-135M-Instruct, frozen)", "",
          f"Data seed {result['data_seed']}, K={result['k']} per class (32 training, 32 dev examples), "
          f"verbalizer negative / positive, start `the the the the the`, {result['torch_threads']} torch thread. "
          "Log-likelihood = mean gold-label log-probability (normalised over the two labels); gain = "
          "its change from the start (> 0 is better). Script: `benchmarks/autoprompt_diagnosis.py`.", ""]
    if rec:
        md += ["## 1. The recorded searches (before this diagnosis)", "",
               f"{rec['runs']} runs of {rec['iterations']} iterations (1 position, 10 candidates, judged on 16 "
               "training examples, a new batch each iteration, best-on-dev kept):", "",
               f"- swaps accepted: {rec['accepted_swaps']} of {rec['proposals']} proposals;",
               f"- median gain of an accepted swap on its 16 examples: {rec['median_gain_of_accepted_swap']:.3f};",
               f"- median change of the *unchanged* trigger's score from one batch to the next: "
               f"{rec['median_batch_to_batch_change_of_unchanged_trigger']:.3f} (the batch noise is as large as the gains);",
               f"- dev kept the start (iteration 0) in {rec['dev_kept_the_start']} of {rec['runs']} runs; the found trigger "
               f"is within one word of the start in {rec['found_within_one_word_of_start']} of {rec['runs']};",
               f"- test: found {rec['found_test_mean']:.3f}, start {rec['start_test_mean']:.3f}.", ""]
    after, before = result["after"]["by_position"], result["before"]["by_position"]
    share = (lambda kind: sum(e[kind]["improving"] for e in after.values()) / sum(e[kind]["count"] for e in after.values()))
    replay = {(r["top_k"], r["examples"]): r for r in result["replay_last_position"]}
    md += ["## Findings", "",
           f"- **The old search judged swaps on noise.** One batch of 16 decides: the unchanged trigger's score moves by "
           f"{rec.get('median_batch_to_batch_change_of_unchanged_trigger', float('nan')):.3f} from one batch to the next, "
           f"more than the median gain of an accepted swap ({rec.get('median_gain_of_accepted_swap', float('nan')):.3f}). "
           f"Replayed from exact per-example scores (section 3), the best of the HotFlip top 10 judged on 16 examples is "
           f"worse on the other 16 in {replay[(10, 16)]['accepted_but_worse_on_others']} of "
           f"{replay[(10, 16)]['accepted']} accepted steps and lowers the dev log-likelihood (median "
           f"{replay[(10, 16)]['median_dev_gain']:+.3f}); judged on all 32 it is never worse on them and raises dev "
           f"({replay[(10, 32)]['median_dev_gain']:+.3f}).",
           f"- **HotFlip's list is useful but flat.** From the whole training set's gradient, {share('hotflip'):.0%} of "
           f"the top 30 swaps lower the training loss against {share('random'):.0%} of random tokens, but the improving "
           "ones are spread over ranks 2-30, not at the top: the best gain grows with the candidates per position "
           "(top 5 / 10 / 20 / 30 in section 2), so more candidates judged exactly beat a sharper first-order guess.",
           "- **There is room to move.** Every position has one-token swaps that lower the exact training loss "
           f"(best gains {', '.join(format(e['hotflip']['best_gain'], '+.3f') for e in after.values())} in log-likelihood "
           f"from {result['after']['start_train_loglik']:.3f}); a search that judges exactly can walk downhill.",
           "- **Before the input the landscape is flat.** With the trigger in front of the sentence "
           f"(`{{trigger:5}} {{text_a}} {{mask}}`), {before['4']['hotflip']['improving']} of "
           f"{before['4']['hotflip']['count']} HotFlip swaps next to the sentence improve (best "
           f"{before['4']['hotflip']['best_gain']:+.3f}): a causal LM reads a leading trigger only through attention "
           "from the far end of the sentence. After the input it sits next to the prediction.",
           f"- **Some candidates are not words.** Of the top 30 per position, "
           f"{', '.join(str(e['hotflip']['printable_words']) for e in after.values())} are alphabetic words that "
           "tokenise back to themselves; the rest are code and punctuation (`'+`, `:=`, `(`, `=`). Alphabetic "
           "code words (`noqa`, `torchvision` in the recorded seed 13) pass that test: it keeps the found "
           "template readable and exact, not English.", ""]
    md += ["## 2. One-token swaps from the start (`{text_a} {trigger:5} {mask}`), judged on all 32 training examples", "",
           f"Start log-likelihood {result['after']['start_train_loglik']}. HotFlip: top {args.hotflip} from the "
           f"gradient over all 32 examples; random: {args.random} allowed tokens.", "",
           "| position | kind | improving | best gain | median gain | HotFlip ranks that improve | printable words | best token |",
           "|---|---|---|---|---|---|---|---|"]
    md += swap_rows(result["after"])
    md += ["", "HotFlip's first 10 candidates per position (after the input; any token that starts a word, as the "
           "recorded searches drew them): "]
    for position, entry in result["after"]["by_position"].items():
        md.append(f"- {position}: {' '.join(entry['hotflip']['first_10'])}; best gain within the top 5/10/20: "
                  + " / ".join(f"{v:+.3f}" for v in list(entry['hotflip']['best_gain_in_top'].values())[:3]))
    tvd = result["train_vs_dev_last_position"]
    md += ["", f"Last position, HotFlip top {args.hotflip}: {tvd['improve_train']} lower the training loss, "
           f"{tvd['improve_train_and_dev']} of them also the dev loss.", "",
           "## 3. One search step replayed: best of the HotFlip top-k judged on E training examples", "",
           f"{args.draws} random draws of the E examples; accepted when the best candidate beats the current trigger "
           "on those E. Real effect: the gain on the other 32-E training examples (E=32: on the same 32) and on dev.", "",
           "| top-k | E | accepted | median gain on the E | median gain on the others | accepted but worse on the others | median dev gain |",
           "|---|---|---|---|---|---|---|"]
    fmt = (lambda v: "" if v is None else f"{v:+.3f}")
    for row in result["replay_last_position"]:
        md.append(f"| {row['top_k']} | {row['examples']} | {row['accepted']}/{row['draws']} | {fmt(row['median_gain_on_judged'])} | "
                  f"{fmt(row['median_gain_on_others'])} | {row['accepted_but_worse_on_others']} | {fmt(row['median_dev_gain'])} |")
    md += ["", "## 4. The trigger before the input (`{trigger:5} {text_a} {mask}`), its last position (next to the sentence)",
           "", f"Start log-likelihood {result['before']['start_train_loglik']}.", "",
           "| position | kind | improving | best gain | median gain | HotFlip ranks that improve | printable words | best token |",
           "|---|---|---|---|---|---|---|---|"] + swap_rows(result["before"])
    cost = result["cost"]
    md += ["", "## 5. Cost", "",
           f"Gradient over 32 examples: {cost['gradient_seconds_32_examples']} s; candidate scoring: "
           f"{cost['scoring_forwards_per_second']} example-forwards per second (one thread). An iteration that judges "
           "C candidates on E examples costs about C x E / that rate.", ""]
    return "\n".join(md)


if __name__ == "__main__":
    main()
