"""Why calibration moves the SST-2 zero-shot prompts as far as it does: from the committed records.

For each zero-shot prompt of experiments/results/sst2_compare (its test scores and content-free scores,
both saved by the run): the content-free inputs' label probabilities, the share of test sentences
predicted positive (gold: the share that is), accuracy raw and calibrated, and the best accuracy any
one threshold on the label log-odds reaches on these test sentences (chosen on test itself: an
upper bound for a two-label calibration, which only moves that threshold). Runs nothing.

    python benchmarks/calibration_check.py     # writes benchmarks/results/calibration_check.md
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prompting.training.calibration import calibrate
from prompting.experiment.results import ResultsStore, gold_indices

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "experiments" / "results" / "sst2_compare"
OUT = ROOT / "benchmarks" / "results" / "calibration_check.md"


def probabilities(scores) -> np.ndarray:
    p = np.exp(np.asarray(scores) - np.max(scores, axis=-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def check(store: ResultsStore, record: dict) -> list[str]:
    saved = store.load_predictions(record["run_id"])
    scores, gold, free = np.asarray(saved["test"]), np.asarray(gold_indices(saved, "test")), saved["content_free"]
    template = record["template"].replace("\n", "⏎")
    lines = [f"### `{template}`", "", "Content-free inputs, p(negative) / p(positive): " + "; ".join(
        f"`{text or '(empty)'}` {p[0]:.3f} / {p[1]:.3f}" for text, p in zip(free["inputs"], probabilities(free["scores"])))
        + f"; test sentences on average {probabilities(scores)[:, 0].mean():.3f} / "
          f"{probabilities(scores)[:, 1].mean():.3f}.", "",
        "| scores | predicted positive | accuracy |", "|---|---:|---:|"]
    for how in ("none", "contextual", "domain"):
        predicted = calibrate(how, scores, free).argmax(1)
        lines.append(f"| {how} | {100 * predicted.mean():.1f}% | {100 * (predicted == gold).mean():.1f} |")
    log_odds = scores[:, 1] - scores[:, 0]
    best = max(((log_odds > t) == gold).mean() for t in np.concatenate([[-np.inf], np.unique(log_odds)]))
    lines += ["", f"Gold positive: {100 * gold.mean():.1f}%. Best accuracy of any one threshold on the label "
                  f"log-odds, chosen on these test sentences: {100 * best:.1f}.", ""]
    return lines


def main() -> None:
    store = ResultsStore(RECORDS)
    zero = {r["template"]: r for r in store.records()
            if r["method"] == "manual" and r["train"] is False and not r.get("calibration")}
    lines = ["# Calibration of the SST-2 zero-shot prompts", "",
             f"From the records in `{RECORDS.relative_to(ROOT)}` (smollm2-135m, the fixed 500 test sentences; "
             "zero-shot runs score the same on every data seed). Written by `benchmarks/calibration_check.py`.", ""]
    for record in zero.values():
        lines += check(store, record)
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
