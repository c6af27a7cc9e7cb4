"""AutoPrompt's search on SST-2: does the found trigger move off its start and beat it on test?

Frozen SmolLM2-135M-Instruct, LM-BFF protocol (K=16 per class for training, another 16 per class
as dev, data seeds 13, 21, 42, 87, 100), test = the first ``--test-limit`` examples of the labelled
test set. Per seed: the starting trigger and the found trigger on the same test examples, the
search's training loss at the start and at the end (and at every iteration: a plot), the swaps and
the seconds per iteration. The template without its trigger slot (the manual prompt, e.g.
``{text_a} It was {mask}.``) is scored once as a reference. The found prompts are saved twice: each as
a saved prompt folder (``PromptMethod.save``) and all of them as one prompt file of templates with
the triggers written in, which ``prompting eval --task sst2 --templates FILE`` scores.

One torch thread (``torch.set_num_threads(1)``). Each finished seed is appended to
``<out>/autoprompt_search_sst2_<tag>.jsonl`` and skipped when re-run.

    OMP_NUM_THREADS=1 python benchmarks/autoprompt_search_sst2.py --tag nowords
    OMP_NUM_THREADS=1 python benchmarks/autoprompt_search_sst2.py --tag itwas \\
        --template "{text_a} It was {trigger:3} {mask}."
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from pathlib import Path

import torch
import yaml

from prompting import LanguageModel, Verbalizer, load_task, sample_kshot
from prompting.methods import AutoPrompt, PromptMethod
from prompting.training.loop import TrainConfig, evaluate, train
from sst2_search_args import append_record, sst2_search_parser

ROOT = Path(__file__).resolve().parent


def run_seed(lm, task, args, verbalizer, seed: int, test_examples, start_cache: dict) -> dict:
    train_examples, dev_examples = sample_kshot(task.train, args.k, seed, task.labels)
    method = AutoPrompt(lm, args.template, verbalizer, labels=task.labels, iterations=args.iterations,
                        num_candidates=args.candidates, init=args.init, score_examples=args.score_examples,
                        gradient_examples=args.gradient_examples, positions=args.positions,
                        vocabulary=args.vocabulary, select=args.select, max_candidates=args.max_candidates,
                        seed=seed)
    test_data = method.encode(test_examples)
    start_tokens = method.trigger_tokens()
    key = " ".join(start_tokens)
    if key not in start_cache:  # the start does not depend on the data seed unless it is random
        start_cache[key] = evaluate(method, test_data, 32, progress="test (start)")[0]
    started = time.perf_counter()
    result = train(method, method.encode(train_examples), method.encode(dev_examples),
                   TrainConfig(batch_size=args.batch_size, seed=seed), progress=True)
    search_seconds = time.perf_counter() - started
    found = evaluate(method, test_data, 32, progress="test (found)")[0]
    history = result.history
    last_tokens = history[-1]["trigger"] if history else start_tokens
    record = {"data_seed": seed, "start_trigger": start_tokens, "start_test": start_cache[key],
              "found_trigger": method.trigger_tokens(), "found_template": method.found_template().text,
              "found_dev": result.best_dev, "found_test": found, "best_iteration": result.best_step,
              "last_trigger": last_tokens, "iterations_run": len(history),
              "swaps": sum(r["swapped"] for r in history),
              "train_loss_start": -history[0]["current_score"] if history else None,
              "train_loss_by_iteration": [r["train_loss"] for r in history],
              "seconds_per_iteration": [r["seconds"] for r in history],
              "search_seconds": round(search_seconds, 1), "history": history}
    method.save(args.out / "prompts" / f"{args.tag}_seed{seed}")
    if last_tokens != record["found_trigger"]:  # dev kept an earlier trigger: score the last one as well
        found_ids = method.trigger_ids.clone()
        method.trigger_ids.copy_(torch.tensor(history[-1]["trigger_ids"]))
        record["last_test"] = evaluate(method, test_data, 32, progress="test (last)")[0]
        method.trigger_ids.copy_(found_ids)
    return record


def main() -> None:
    parser = sst2_search_parser(__doc__.splitlines()[0])
    parser.add_argument("--init", default="the")
    parser.add_argument("--max-candidates", type=int, default=None, help="widen to this HotFlip rank")
    parser.add_argument("--score-examples", type=int, default=32)
    parser.add_argument("--gradient-examples", type=int, default=32)
    parser.add_argument("--positions", default="cycle")
    parser.add_argument("--vocabulary", default="words")
    parser.add_argument("--select", default="dev")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per gradient pass")
    parser.add_argument("--tag", default="nowords")
    parser.add_argument("--reuse", default=None, help="take the no-trigger and start test scores of this tag's "
                                                     "records (same template, start and test examples)")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the tables from the .jsonl records (and the .json's no-trigger score)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    stem = f"autoprompt_search_sst2_{args.tag}"
    if args.render_only:
        rows = sorted(map(json.loads, (args.out / f"{stem}.jsonl").read_text().splitlines()), key=lambda r: r["data_seed"])
        for key in ("template", "init", "k", "iterations", "candidates", "max_candidates", "positions", "vocabulary",
                    "select", "score_examples", "gradient_examples", "test_limit"):
            setattr(args, key, rows[0]["settings"].get(key, getattr(args, key)))
        bare = re.sub(r"\s*\{trigger:\d+\}", "", args.template)
        no_trigger = json.loads((args.out / f"{stem}.json").read_text())["manual_test"]
        write_outputs(args, rows, bare, no_trigger, Verbalizer({0: ["negative"], 1: ["positive"]}), stem)
        return

    verbalizer = Verbalizer({0: ["negative"], 1: ["positive"]})
    lm = LanguageModel.load(args.model, device="cpu")
    task = load_task("sst2", data_dir=args.data_dir)
    test_examples = task.test[:args.test_limit]
    args.out.mkdir(parents=True, exist_ok=True)
    records_path = args.out / f"{stem}.jsonl"
    done = {}
    if records_path.exists():
        done = {r["data_seed"]: r for r in map(json.loads, records_path.read_text().splitlines())}
    start_cache = {" ".join(r["start_trigger"]): r["start_test"] for r in done.values()}
    bare = re.sub(r"\s*\{trigger:\d+\}", "", args.template)
    reused = reuse(args, bare)
    if reused:
        no_trigger = reused["manual_test"]
        start_cache.update({" ".join(r["start_trigger"]): r["start_test"] for r in reused["seeds"]})
    else:
        reference = PromptMethod(lm, bare, verbalizer, labels=task.labels)
        no_trigger = evaluate(reference, reference.encode(test_examples), 32, progress="test (no trigger)")[0]
    print(f"no trigger {bare!r}: test accuracy {no_trigger['accuracy']:.4f}", flush=True)

    for seed in [int(s) for s in args.seeds.split(",")]:
        if seed in done:
            continue
        record = run_seed(lm, task, args, verbalizer, seed, test_examples, start_cache)
        # paths relative to the repository, so that a record names no machine's folders
        record["settings"] = {k: (os.path.relpath(v, ROOT.parent) if isinstance(v, Path) else v)
                              for k, v in vars(args).items()}
        record["settings"]["torch_threads"] = torch.get_num_threads()
        append_record(records_path, record)
        done[seed] = record
        print(f"seed {seed}: {record['found_template']!r} test {record['found_test']['accuracy']:.3f} "
              f"(start {record['start_test']['accuracy']:.3f}); train loss {record['train_loss_start']:.3f} -> "
              f"{record['train_loss_by_iteration'][-1]:.3f}; {record['search_seconds']:.0f} s", flush=True)
    write_outputs(args, [done[s] for s in sorted(done)], bare, no_trigger, verbalizer, stem)


def reuse(args, bare: str) -> dict | None:
    """The other tag's summary when ``--reuse`` names one scored on the same template and test set."""
    if not args.reuse:
        return None
    summary = json.loads((args.out / f"autoprompt_search_sst2_{args.reuse}.json").read_text())
    settings = summary["seeds"][0]["settings"]
    if (summary["manual_template"], settings["test_limit"], settings["init"]) != (bare, args.test_limit, args.init):
        raise ValueError(f"--reuse {args.reuse}: its template, start or test examples differ from these")
    return summary


def write_outputs(args, rows, bare, no_trigger, verbalizer, stem) -> None:
    spread = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)
    found = [r["found_test"]["accuracy"] for r in rows]
    start = [r["start_test"]["accuracy"] for r in rows]
    beats = sum(f > s for f, s in zip(found, start))
    # the search's last trigger (lowest training loss): where dev kept an earlier one, it was scored too
    last = [r.get("last_test", r["found_test"])["accuracy"] for r in rows]
    last_beats = sum(a > s for a, s in zip(last, start))
    falls = sum(r["train_loss_by_iteration"][-1] < r["train_loss_start"] for r in rows)
    per_iteration = [s for r in rows for s in r["seconds_per_iteration"]]
    summary = {"template": args.template, "manual_template": bare, "manual_test": no_trigger,
               "found_mean": statistics.mean(found), "found_std": spread(found),
               "start_mean": statistics.mean(start), "start_std": spread(start),
               "last_mean": statistics.mean(last), "last_std": spread(last), "last_beats_start": last_beats,
               "found_beats_start": beats, "train_loss_fell": falls, "runs": len(rows),
               "seconds_per_iteration_median": statistics.median(per_iteration),
               "seconds_per_iteration_range": [min(per_iteration), max(per_iteration)],
               "seeds": [{k: v for k, v in r.items() if k != "history"} for r in rows]}
    (args.out / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    prompt_file = args.out / f"{stem}_found.yaml"
    prompt_file.write_text(yaml.safe_dump({"task": "sst2", "patterns": [r["found_template"] for r in rows],
                                           "verbalizers": [verbalizer.to_dict()]}, sort_keys=False))
    plot(rows, args.out / f"{stem}_train_loss.png", args.template)
    s = rows[0]["settings"]
    md = [f"# AutoPrompt search on SST-2 (`{args.tag}`): start vs found trigger (SmolLM2-135M-Instruct, frozen)", "",
          f"Template `{args.template}`, trigger start `{args.init}`, verbalizer negative / positive; K={s['k']} per "
          f"class (train) + {s['k']} per class (dev); up to {s['iterations']} iterations, {s['candidates']} HotFlip "
          f"candidates per position (widened down to rank {s.get('max_candidates') or s['candidates']} when a pass "
          f"finds no better swap), positions `{s['positions']}`, vocabulary `{s['vocabulary']}`, gradient over "
          f"{s['gradient_examples']} and candidates judged on {s['score_examples']} training examples (all 32 when "
          f">= 32), kept trigger: `{s['select']}`; test = first {s['test_limit']} SST-2 test sentences; "
          f"{s['torch_threads']} torch thread. Script: `benchmarks/autoprompt_search_sst2.py`.", "",
          "| data seed | found trigger | dev acc | test: start | test: found | test: last | train loss start → end | swaps / iterations | search s |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        last = f"{r['last_test']['accuracy']:.3f}" if "last_test" in r else "(= found)"
        md.append(f"| {r['data_seed']} | {' '.join(r['found_trigger'])} | {r['found_dev'].get('accuracy', float('nan')):.3f} | "
                  f"{r['start_test']['accuracy']:.3f} | {r['found_test']['accuracy']:.3f} | {last} | "
                  f"{r['train_loss_start']:.3f} → {r['train_loss_by_iteration'][-1]:.3f} | "
                  f"{r['swaps']} / {r['iterations_run']} | {r['search_seconds']:.0f} |")
    md += [f"| **mean ± std** | | | {summary['start_mean']:.3f} ± {summary['start_std']:.3f} | "
           f"**{summary['found_mean']:.3f} ± {summary['found_std']:.3f}** | "
           f"**{summary['last_mean']:.3f} ± {summary['last_std']:.3f}** | | | |", "",
           f"Found (kept by `select: {s['select']}`) beats start on test in {beats} of {len(rows)} seeds; the search's "
           f"last trigger (its lowest training loss; the same as found where the column says so) in {last_beats} of "
           f"{len(rows)}. The training loss fell in {falls} of {len(rows)} runs "
           f"(judged on every training example, it cannot rise). The manual prompt without the trigger slot "
           f"(`{bare}`): test accuracy {no_trigger['accuracy']:.3f}. Seconds per iteration: median "
           f"{summary['seconds_per_iteration_median']:.1f}, range {min(per_iteration):.1f}–{max(per_iteration):.1f} "
           "(an iteration after a swap also computes the gradient).", "",
           f"Found prompts: `{prompt_file.name}` (`prompting eval --task sst2 --data-dir ... --templates {prompt_file.name}`) "
           f"and saved prompt folders `prompts/{args.tag}_seed*`. Training loss by iteration: `{stem}_train_loss.png`.", ""]
    (args.out / f"{stem}.md").write_text("\n".join(md))
    print("\n".join(md))


def plot(rows, path: Path, template: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for r in rows:
        losses = [r["train_loss_start"]] + r["train_loss_by_iteration"]
        ax.plot(range(len(losses)), losses, marker="o", markersize=3, label=f"seed {r['data_seed']}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss (32 examples)")
    ax.set_title(f"AutoPrompt search, {template}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
