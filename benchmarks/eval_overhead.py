"""Zero-shot scoring cost against the bare model's forward over the same padded batches.

    python benchmarks/eval_overhead.py --data-dir ../shared/data/sst2 [--examples 512] [--rounds 3]

Both sides see exactly the same batches (same examples, same length-sorted order, same padding).
"bare" is ``model(input_ids, attention_mask)`` as a user would call it; "bare, last logits" also
asks the model for the last position's logits only, which is what scoring needs. The ratio is
ours / bare; the rounds alternate the two so that machine load hits both alike.
Writes benchmarks/results/eval_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from prompting import LanguageModel, Verbalizer, load_task
from prompting.methods import PromptMethod


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"))
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    lm = LanguageModel.load(args.model)
    task = load_task("sst2", data_dir=args.data_dir)
    examples = task.test[: args.examples]
    method = PromptMethod(lm, "Review: {text_a}\nSentiment: {mask}",
                          Verbalizer({0: ["negative"], 1: ["positive"]}), labels=task.labels)
    data = method.encode(examples)
    lengths = [len(e.input_ids) for e in data.encodings[1]]
    order = sorted(range(len(data)), key=lambda i: lengths[i])
    batches = list(method.batches(data, args.batch_size, order=order))

    @torch.no_grad()
    def ours():
        method.predict_scores(data, args.batch_size)

    @torch.no_grad()
    def bare(last_only: bool):
        for b in batches:
            p = b.prompts[1]
            kwargs = {"logits_to_keep": 1} if last_only else {}
            lm.model(input_ids=p.input_ids, attention_mask=p.attention_mask, **kwargs)

    runs = {"ours": ours, "bare": lambda: bare(False), "bare_last_logits": lambda: bare(True)}
    for fn in runs.values():  # warm-up
        fn()
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(v) for name, v in times.items()}
    result = {
        "model": args.model, "examples": len(examples), "batch_size": args.batch_size, "threads": args.threads,
        "rounds": args.rounds, "seconds": times, "median_seconds": median,
        "ratio_vs_bare": median["ours"] / median["bare"],
        "ratio_vs_bare_last_logits": median["ours"] / median["bare_last_logits"],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval_overhead.json").write_text(json.dumps(result, indent=2))
    md = [f"# Zero-shot scoring vs the bare model's forward ({args.model})", "",
          f"{len(examples)} SST-2 test examples, batch {args.batch_size}, the same length-sorted padded batches, "
          f"{args.threads} torch thread(s), median of {args.rounds} alternating rounds.", "",
          "| what | median s | ours / this |", "|---|---:|---:|"]
    for name in runs:
        md.append(f"| {name} | {median[name]:.2f} | {median['ours'] / median[name]:.3f} |")
    (out / "eval_overhead.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
