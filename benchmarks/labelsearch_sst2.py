"""Automatic label-word search on SST-2 with SmolLM2: top words per class, K=16 and a larger subset.

    OMP_NUM_THREADS=1 python benchmarks/labelsearch_sst2.py [--data-dir ../shared/data/sst2]

Writes ``benchmarks/results/labelsearch_sst2.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from prompting import LanguageModel, load_task, sample_kshot
from prompting.training.labelsearch import mask_outputs, search_label_words

ROOT = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parents[1] / "shared" / "data" / "sst2")
    parser.add_argument("--templates", nargs="+", default=["{text_a} It was {mask}", "Review: {text_a}\nSentiment: {mask}"])
    parser.add_argument("--k-shot", type=int, default=16)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--large", type=int, default=1000, help="size of the larger, balanced training subset")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()

    lm = LanguageModel.load(args.model, device="cpu")
    task = load_task("sst2", data_dir=args.data_dir)
    kshot, _ = sample_kshot(task.train, args.k_shot, args.seed, task.labels)
    large, _ = sample_kshot(task.train, args.large // 2, args.seed, task.labels)
    subsets = {f"K={args.k_shot} per class (seed {args.seed})": kshot,
               f"{len(large)} examples (balanced, seed {args.seed})": large}
    runs = []
    for template in args.templates:
        for name, examples in subsets.items():
            started = time.perf_counter()
            outputs = mask_outputs(lm, template, examples)  # one forward pass over the examples for both
            forward_seconds = time.perf_counter() - started
            for ranking in ("classifier", "likelihood"):
                started = time.perf_counter()
                result = search_label_words(lm, template, examples, task.labels, ranking=ranking, k=args.top,
                                            outputs=outputs)
                runs.append({"template": template, "subset": name, "n_examples": len(examples),
                             "ranking": ranking, "forward_seconds": round(forward_seconds, 1),
                             "seconds": round(time.perf_counter() - started, 1), **result.to_dict()})
                print(json.dumps({k: runs[-1][k] for k in ("template", "subset", "ranking", "seconds")}),
                      result.top(args.top), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "labelsearch_sst2.json").write_text(json.dumps({"model": args.model, "runs": runs}, indent=2) + "\n")
    md = ["# Label-word search on SST-2 (SmolLM2-135M-Instruct, frozen)", "",
          "Label 0 = negative, 1 = positive. Single tokens that read as whole alphabetic words in the "
          "`{mask}` slot; best first. `classifier`: AutoPrompt's logistic regression (C=1e-3) on the hidden "
          "state the LM head reads, words ranked by cosine of their output embedding with the class "
          "weights; `likelihood`: LM-BFF pruning (top 100 "
          "per class) then the mean log-likelihood of the training labels with the word standing for its "
          "class.", ""]
    for run in runs:
        md += [f"## `{json.dumps(run['template'])[1:-1]}` — {run['subset']} — {run['ranking']}", ""]
        for label, ranked in run["words"].items():
            md.append(f"- **{label}**: " + ", ".join(w for w, _ in ranked[:args.top]))
        md.append("")
    (args.out / "labelsearch_sst2.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
