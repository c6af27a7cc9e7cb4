"""AutoPrompt on SST-2 with frozen SmolLM2: found triggers vs random triggers of the same length.

LM-BFF protocol: K=16 per class for training and another 16 per class as dev, data seeds
13, 21, 42, 87, 100; test accuracy on the first ``--test-limit`` examples of the labelled test set.
For each seed the found trigger and random allowed tokens (drawn with the data seed) are scored on
the same test examples; the template with no trigger at all is scored once as a reference.
Each finished seed is appended to ``<out>/autoprompt_sst2.jsonl`` and skipped when re-run.

    OMP_NUM_THREADS=1 python benchmarks/autoprompt_sst2.py --seeds 13 --iterations 10   # tune on one
    OMP_NUM_THREADS=1 python benchmarks/autoprompt_sst2.py                               # all five
"""

from __future__ import annotations

import json
import re
import statistics
import time
from pathlib import Path

import torch

from prompting import LanguageModel, Verbalizer, load_task, sample_kshot
from prompting.methods import AutoPrompt, PromptMethod
from prompting.training.loop import TrainConfig, evaluate, train
from sst2_search_args import append_record, sst2_search_parser

ROOT = Path(__file__).resolve().parent


def main() -> None:
    parser = sst2_search_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16, help="gradient batch; the other examples score")
    parser.add_argument("--score-examples", type=int, default=16)
    parser.add_argument("--tag", default="", help="suffix of the output files (tuning runs)")
    args = parser.parse_args()

    verbalizer = Verbalizer({0: ["negative"], 1: ["positive"]})
    lm = LanguageModel.load(args.model, device="cpu")
    task = load_task("sst2", data_dir=args.data_dir)
    test_examples = task.test[:args.test_limit]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "autoprompt_sst2" + (f"_{args.tag}" if args.tag else "")
    records_path = args.out / f"{stem}.jsonl"
    done = {}
    if records_path.exists():
        done = {r["data_seed"]: r for r in map(json.loads, records_path.read_text().splitlines())}

    # the template with the trigger slot removed: what the prompt does without any trigger
    bare = re.sub(r"\s*\{trigger:\d+\}", "", args.template)
    reference = PromptMethod(lm, bare, verbalizer, labels=task.labels)
    no_trigger, _ = evaluate(reference, reference.encode(test_examples), 32, progress="test (no trigger)")
    print(f"no trigger {bare!r}: test accuracy {no_trigger['accuracy']:.4f}", flush=True)

    for seed in [int(s) for s in args.seeds.split(",")]:
        if seed in done:
            print(f"seed {seed}: done already", flush=True)
            continue
        train_examples, dev_examples = sample_kshot(task.train, args.k, seed, task.labels)
        method = AutoPrompt(lm, args.template, verbalizer, labels=task.labels, iterations=args.iterations,
                            num_candidates=args.candidates, score_examples=args.score_examples, seed=seed)
        config = TrainConfig(batch_size=args.batch_size, seed=seed)
        test_data, dev_data = method.encode(test_examples), method.encode(dev_examples)
        init_tokens = method.trigger_tokens()
        init_test, _ = evaluate(method, test_data, 32, progress="test (initial trigger)")
        started = time.perf_counter()
        result = train(method, method.encode(train_examples), dev_data, config)
        search_seconds = time.perf_counter() - started
        found, _ = evaluate(method, test_data, 32, progress="test (found)")
        found_tokens, found_template = method.trigger_tokens(), method.found_template().text
        method.set_random_triggers(seed)
        random_dev, _ = evaluate(method, dev_data, 32)
        random_test, _ = evaluate(method, test_data, 32, progress="test (random)")
        record = {"data_seed": seed, "found_template": found_template, "found_trigger": found_tokens,
                  "found_dev": result.best_dev, "found_test": found, "best_iteration": result.best_step,
                  "swaps": sum(r["swapped"] for r in result.history),
                  "random_trigger": method.trigger_tokens(), "random_dev": random_dev, "random_test": random_test,
                  "initial_trigger": init_tokens, "initial_test": init_test,
                  "search_seconds": round(search_seconds, 1), "history": result.history,
                  "settings": {"template": args.template, "iterations": args.iterations, "k": args.k,
                               "candidates": args.candidates, "batch_size": args.batch_size,
                               "score_examples": args.score_examples, "test_limit": args.test_limit,
                               "model": args.model, "torch_threads": torch.get_num_threads()}}
        append_record(records_path, record)
        done[seed] = record
        print(f"seed {seed}: found {found_template!r} test {found['accuracy']:.4f} | random "
              f"{' '.join(record['random_trigger'])!r} test {random_test['accuracy']:.4f} | "
              f"{search_seconds:.0f}s", flush=True)

    rows = [done[s] for s in sorted(done)]
    found_acc = [r["found_test"]["accuracy"] for r in rows]
    random_acc = [r["random_test"]["accuracy"] for r in rows]
    init_acc = [r["initial_test"]["accuracy"] for r in rows if "initial_test" in r]
    spread = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)
    summary = {"template": args.template, "verbalizer": verbalizer.to_dict(), "model": args.model,
               "test_examples": len(test_examples), "no_trigger_template": bare, "no_trigger_test": no_trigger,
               "found_mean": statistics.mean(found_acc), "found_std": spread(found_acc),
               "random_mean": statistics.mean(random_acc), "random_std": spread(random_acc),
               "initial_mean": statistics.mean(init_acc) if init_acc else None,
               "seeds": [{k: r.get(k) for k in ("data_seed", "found_template", "found_trigger", "found_dev",
                                            "found_test", "random_trigger", "random_test", "initial_trigger",
                                            "initial_test", "best_iteration",
                                            "swaps", "search_seconds")} for r in rows]}
    (args.out / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    settings = rows[0]["settings"]
    md = ["# AutoPrompt on SST-2: found vs random triggers (SmolLM2-135M-Instruct, frozen)", "",
          f"Template `{args.template}`, verbalizer 0: negative / 1: positive; K={settings['k']} per class "
          f"(train) + {settings['k']} per class (dev), LM-BFF data seeds; {settings['iterations']} iterations, "
          f"{settings['candidates']} candidates per iteration, gradient batch {settings['batch_size']}, "
          f"candidates scored on {settings['score_examples']} other training examples; test = first "
          f"{len(test_examples)} SST-2 test examples. Random triggers: allowed tokens drawn with the data seed.",
          "", "| data seed | found trigger | dev acc | test acc | random trigger | test acc |", "|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['data_seed']} | {' '.join(r['found_trigger'])} | {r['found_dev'].get('accuracy', float('nan')):.3f} | "
                  f"{r['found_test']['accuracy']:.3f} | {' '.join(r['random_trigger'])} | {r['random_test']['accuracy']:.3f} |")
    md += [f"| **mean ± std** | | | **{summary['found_mean']:.3f} ± {summary['found_std']:.3f}** | | "
           f"**{summary['random_mean']:.3f} ± {summary['random_std']:.3f}** |", "",
           f"No trigger at all (`{bare}`): test accuracy {no_trigger['accuracy']:.3f}."]
    if init_acc:
        md.append(f"The starting trigger (`{' '.join(rows[0]['initial_trigger'])}`, before any search): mean test "
                  f"accuracy {statistics.mean(init_acc):.3f} over {len(init_acc)} seed(s).")
    md.append("")
    (args.out / f"{stem}.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
