"""Which PET state does dev pick, and what would test have said? SST-2, K=16, embedded model, CPU.

PET (pattern 0 of ``templates/sst2.yaml``, the settings of ``experiments/sst2_pet.yaml``: lr 1e-5,
batch 4, 64 steps, dev every 8) is trained on the K-shot split of each data seed given, for
training seeds 1 and 2. At every dev evaluation, the state before training included, the script
also scores the first 200 of the harness's 500 test sentences, so the dev curve can be read against
test: does the zero-shot state win dev and lose test? does the dev cross-entropy pick better than
dev accuracy? Test is never used for selection anywhere in the library; this is a diagnostic.

    OMP_NUM_THREADS=1 python benchmarks/pet_selection.py --seeds 21,100

Writes ``benchmarks/results/pet_selection.jsonl`` (one line per run, kept as runs end) and a
markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import prompting.training.loop as train_module
from prompting.cli import _experiment
from prompting.config.experiment import load_config
from prompting.methods import build_method
from prompting.training.loop import TrainConfig, train
from prompting.core.verbalizer import Verbalizer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def run(seeds: list[int], out: Path, test_size: int = 200) -> None:
    cfg = load_config(ROOT / "experiments" / "sst2_pet.yaml")
    experiment = _experiment(cfg, None)
    test = experiment._test[:test_size]
    spec = next(m for m in cfg.methods if m.train)
    template, verbalizer = cfg.prompts[0]
    done = {(r["data_seed"], r["train_seed"]) for r in _read(out)}
    for data_seed in seeds:
        train_examples, dev_examples = experiment.split(data_seed)
        for train_seed in (1, 2):
            if (data_seed, train_seed) in done:
                continue
            torch.manual_seed(train_seed)
            method = build_method("manual", experiment.lm, template, Verbalizer(verbalizer),
                                  labels=experiment.task.labels)
            test_data = method.encode(test)
            curve, dev_score = [], train_module.dev_score

            def scored(method, data, batch_size, metric):  # dev as train.py scores it, plus test
                result = dev_score(method, data, batch_size, metric)
                scores = method.predict_scores(test_data, 16)
                accuracy = (scores.argmax(1) == test_data.labels).float().mean().item()
                curve.append({"dev_acc": result[0]["accuracy"], "dev_ce": result[1], "test_acc": accuracy})
                return result

            snapshot = {k: v.detach().clone() for k, v in experiment.lm.model.state_dict().items()}
            config = TrainConfig(**{**method.config_class.train_defaults, **spec.train_config, "seed": train_seed,
                                    "select_untrained": True})  # score the start too
            train_module.dev_score = scored
            try:
                result = train(method, method.encode(train_examples), method.encode(dev_examples), config,
                               progress=False)
            finally:
                train_module.dev_score = dev_score
                experiment.lm.model.load_state_dict(snapshot)
            with out.open("a") as f:
                f.write(json.dumps({"data_seed": data_seed, "train_seed": train_seed,
                                    "best_step": result.best_step, "curve": curve}) + "\n")
    _table(out)


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open()] if path.exists() else []


def _table(out: Path) -> None:
    lines = ["# PET: dev curve against test (SST-2, K=16, pattern 0, first 200 test sentences)", "",
             "Per evaluation (step 0 = before training): dev accuracy / dev cross-entropy / test accuracy.", "",
             "| data seed | train seed | " + " | ".join(f"step {8 * i}" for i in range(9)) + " |",
             "|---:|---:|" + "---|" * 9]
    for r in _read(out):
        cells = [f"{c['dev_acc']:.3f} / {c['dev_ce']:.3f} / {c['test_acc']:.3f}" for c in r["curve"]]
        lines.append(f"| {r['data_seed']} | {r['train_seed']} | " + " | ".join(cells) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="21,100", help="data seeds, comma-separated")
    parser.add_argument("--out", type=Path, default=RESULTS / "pet_selection.jsonl")
    args = parser.parse_args()
    run([int(s) for s in args.seeds.split(",")], args.out)
