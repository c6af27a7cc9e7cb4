"""Do the learned prompts learn? SST-2, K=16 per class, frozen SmolLM2-135M-Instruct, CPU.

For each method (soft, ptuning, prefix) and each start:

- ``random``: no manual words anywhere, the learned prompt starts from random vectors
  (soft / ptuning: ``{soft:2} {text_a}{soft:4} {mask}``, as many soft tokens as the manual
  template has words; prefix: 10 random key/value positions before ``{text_a} {mask}``);
- ``text``: the manual template's words are the starting point. Soft / ptuning: the soft slots take
  the words' places and start from their embeddings, ``{soft:"Review:"} {text_a}{soft:"\\nSentiment:"}
  {mask}`` (a soft prompt then starts as exactly the manual prompt; so does P-tuning, whose residual
  encoder starts as its inputs, the words). Prefix: the manual template whose leading word
  ``Review:`` is moved into the prefix, as the LM's own keys/values for it (2 positions): step 0 is
  exactly the manual prompt;
- ``vocab`` (prefix only): 10 prefix positions made of the LM's own keys/values for random common
  tokens, before ``{text_a} {mask}``: a random start without manual words, but activations of the
  kind the layers expect.

Each run trains on the K-shot train split of one data seed, selects the best step on the K-shot dev
split (train.py does, step 0 included), and is scored on the first 500 test examples. The baseline is
the manual template ``Review: {text_a}\\nSentiment: {mask}`` zero-shot on the same 500.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/learning_check.py                 # everything
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/learning_check.py --runs soft/random --seeds 13 \\
        --lr 0.03 --no-test --out /tmp/tune.json                                     # tuning on dev

Finished runs are kept in ``--out`` (JSON) as they end; running again skips them. A markdown
table is written beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch

from prompting import LanguageModel, Verbalizer, load_task, sample_kshot
from prompting.methods import build_method
from prompting.training.loop import TrainConfig, evaluate, train

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parents[1] / "shared" / "data" / "sst2"  # beside the checkout
OUT = ROOT / "results" / "learning_check.json"

MANUAL = "Review: {text_a}\nSentiment: {mask}"
VERBALIZER = {"0": ["negative"], "1": ["positive"]}
NO_WORDS = "{text_a} {mask}"  # the random prefixes' template: what the LM does with no prompt at all
SLOTS_RANDOM = "{soft:2} {text_a}{soft:4} {mask}"  # "Review:" is 2 tokens, "\nSentiment:" 4
SLOTS_TEXT = '{soft:"Review:"} {text_a}{soft:"\nSentiment:"} {mask}'
RUNS = {
    "soft/random": ("soft", SLOTS_RANDOM, {"init": "uniform"}),
    "soft/text": ("soft", SLOTS_TEXT, {"init": "text"}),
    # P-tuning's encoder and the prefix MLP are sized so that what trains stays under 1% of the model
    # (the papers' sizes, the embedding width and 512, train 11% and 4.6% of it); P-tuning adds its
    # head to its inputs (``residual``) so a text start is kept (see ``superseded`` in the JSON).
    # Its input vectors are then the prompt itself and train at a soft prompt's rate (input_lr).
    "ptuning/random": ("ptuning", SLOTS_RANDOM, {"encoder": "lstm", "hidden_size": 64, "residual": True,
                                                 "input_lr": 3e-2}),
    "ptuning/text": ("ptuning", SLOTS_TEXT, {"encoder": "lstm", "hidden_size": 64, "residual": True,
                                             "input_lr": 3e-2}),
    "prefix/random": ("prefix", NO_WORDS, {"prefix_length": 10, "init": "random",
                                                     "prefix_hidden_size": 64}),
    "prefix/vocab": ("prefix", NO_WORDS, {"prefix_length": 10, "init": "vocab",
                                                    "prefix_hidden_size": 64}),
    "prefix/text": ("prefix", MANUAL, {"init": "text", "prefix_hidden_size": 64}),
}
LR = {"soft": 3e-2, "ptuning": 1e-3, "prefix": 1e-4}  # tuned on dev accuracy, data seed 13 only
SEEDS = (13, 21, 42, 87, 100)


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"runs": [], "baseline": None}


def save_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")


def run_one(lm, task, key: str, seed: int, lr: float, steps: int, eval_every: int, test, do_test: bool,
            overrides: dict) -> dict:
    name, template, params = RUNS[key]
    params = {**params, **overrides}
    train_examples, dev_examples = sample_kshot(task.train, 16, seed, task.labels)
    torch.manual_seed(1)  # one training seed: the prompt's random init and the batch order
    method = build_method(name, lm, template, Verbalizer(VERBALIZER), labels=task.labels, **params)
    trainable = sum(p.numel() for p in method.parameters() if p.requires_grad)
    saved = sum(t.numel() for t in method.prompt_state().values())
    dev = method.encode(dev_examples)
    start_dev, _ = evaluate(method, dev)
    config = TrainConfig(lr=lr, max_steps=steps, batch_size=8, eval_every=eval_every, seed=1)
    result = train(method, method.encode(train_examples), dev, config, progress=False)
    record = {
        "run": key, "method": name, "init": key.split("/")[1], "settings": RUNS[key][2],
        "template": method.template.text,
        "params": method.config.saved(), "data_seed": seed, "lr": lr, "steps": steps, "eval_every": eval_every,
        "trainable_params": trainable, "saved_params": saved,
        "trainable_pct_of_model": round(100 * trainable / lm.num_parameters(), 4),
        "dev_accuracy_step0": start_dev["accuracy"], "dev_accuracy_best": result.best_dev.get("accuracy"),
        "best_step": result.best_step, "train_seconds": round(result.seconds, 1),
        "losses": [h["loss"] for h in result.history],
        "dev_curve": [(h["step"], h["dev"]["accuracy"]) for h in result.history if "dev" in h],
    }
    if do_test:
        metrics, _ = evaluate(method, method.encode(test))
        record.update(test_accuracy=metrics["accuracy"], test_macro_f1=metrics["macro_f1"])
    return record


def markdown(results: dict, tuning: dict | None = None) -> str:
    base = results.get("baseline") or {}
    lines = ["# Learning check: SST-2, K=16, frozen SmolLM2-135M-Instruct", "",
             f"Test = first {base.get('test_size', 500)} SST-2 test examples; mean ± std (sample) over the "
             "data seeds; one training seed; the best step is chosen on the K-shot dev set (step 0 included).",
             "Made by `benchmarks/learning_check.py` (see its docstring for the exact setup).", ""]
    if base:
        lines += [f"Baseline: the manual template `{MANUAL!r}` zero-shot, verbalizer {VERBALIZER}: "
                  f"**{base['test_accuracy']:.3f}** test accuracy.", ""]
    plain = results.get("baseline_no_words")
    if plain:
        lines += [f"No prompt words at all, `{NO_WORDS!r}` zero-shot (the random prefixes' template): "
                  f"**{plain['test_accuracy']:.3f}**.", ""]
    lines += ["| method | init | test acc (mean ± std) | test macro-F1 | per data seed | dev acc step 0 → best "
              "| trainable params (% of model) | saved params | lr, steps |", "|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for record in results["runs"]:
        if "test_accuracy" in record:
            setting = (record["run"], record["lr"], record["steps"], json.dumps(record.get("overrides", {})))
            groups.setdefault(setting, []).append(record)
    for setting in sorted(groups, key=lambda s: (list(RUNS).index(s[0]), s[1:])):
        records = sorted(groups[setting], key=lambda r: r["data_seed"])
        accs = [r["test_accuracy"] for r in records]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        per_seed = ", ".join(f"{r['data_seed']}: {r['test_accuracy']:.3f}" for r in records)
        dev0 = statistics.mean(r["dev_accuracy_step0"] for r in records)
        dev1 = statistics.mean(r["dev_accuracy_best"] for r in records)
        f1 = statistics.mean(r["test_macro_f1"] for r in records)
        r0 = records[0]
        extra = f" {r0['overrides']}" if r0.get("overrides") else ""
        lines.append(f"| {r0['method']} | {r0['init']}{extra} | {statistics.mean(accs):.3f} ± {std:.3f} | {f1:.3f} "
                     f"| {per_seed} | {dev0:.3f} → {dev1:.3f} | {r0['trainable_params']:,} "
                     f"({r0['trainable_pct_of_model']:.3g}%) | {r0['saved_params']:,} | {r0['lr']}, {r0['steps']} |")
    lines += ["", "Settings:", ""] + [f"- {k}: template `{RUNS[k][1]!r}`, {RUNS[k][2]}" for k in RUNS]
    lines += ["", "Trainable params are those updated while training (P-tuning's LSTM + MLP, prefix-tuning's "
              "MLP); saved params are what a saved prompt holds (the encoder's output only)."]
    superseded = results.get("superseded") or []
    for group in [superseded] if isinstance(superseded, dict) else superseded:
        lines += ["", "## Earlier settings (superseded)", "", group["why"], "",
                  "| run | settings | test acc (mean ± std) | per data seed | dev acc step 0 → best | trainable |",
                  "|---|---|---|---|---|---|"]
        old: dict[str, list[dict]] = {}
        for record in group["runs"]:
            if "test_accuracy" in record:
                old.setdefault(record["run"], []).append(record)
        for key, records in old.items():
            accs = [r["test_accuracy"] for r in records]
            std = statistics.stdev(accs) if len(accs) > 1 else 0.0
            lines.append(f"| {key} | {records[0]['settings']} | {statistics.mean(accs):.3f} ± {std:.3f} | "
                         + ", ".join(f"{r['data_seed']}: {r['test_accuracy']:.3f}" for r in records)
                         + f" | {statistics.mean(r['dev_accuracy_step0'] for r in records):.3f} → "
                         f"{statistics.mean(r['dev_accuracy_best'] for r in records):.3f} | "
                         f"{records[0]['trainable_params']:,} ({records[0]['trainable_pct_of_model']:.3g}%) |")
    if tuning and tuning.get("runs"):
        lines += ["", "## Learning-rate tuning (data seed 13, dev accuracy only, 64 steps)", "",
                  "| run | lr | overrides | dev acc step 0 → best (step) | first → last batch loss |",
                  "|---|---|---|---|---|"]
        for r in tuning["runs"]:
            lines.append(f"| {r['run']} | {r['lr']} | {r.get('overrides') or ''} | {r['dev_accuracy_step0']:.3f} → "
                         f"{r['dev_accuracy_best']:.3f} ({r['best_step']}) | {r['losses'][0]:.3f} → "
                         f"{r['losses'][-1]:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--lr", type=float, default=None, help="override the method's learning rate")
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--eval-every", type=int, default=8)
    parser.add_argument("--test-size", type=int, default=500)
    parser.add_argument("--no-test", action="store_true", help="dev only (for tuning)")
    parser.add_argument("--set", nargs="*", default=[], metavar="PARAM=JSON",
                        help="override a method parameter, e.g. prefix_projection=false")
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: other work can share the CPU)")
    parser.add_argument("--report", action="store_true", help="only rewrite the markdown from --out")
    args = parser.parse_args(argv)
    tuning_file = args.out.with_name(args.out.stem + "_tuning.json")
    tuning = load_results(tuning_file) if tuning_file.exists() else None
    if args.report:
        args.out.with_suffix(".md").write_text(markdown(load_results(args.out), tuning))
        return

    warnings.filterwarnings("ignore", message="template .* causal LM predicts")
    torch.set_num_threads(args.threads)
    lm = LanguageModel.load("smollm2-135m", device="cpu")
    task = load_task("sst2", data_dir=args.data_dir)
    test = task.test[:args.test_size]
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    results = load_results(args.out)
    results["machine"] = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "model": lm.name, "model_params": lm.num_parameters()}
    for name, template in (("baseline", MANUAL), ("baseline_no_words", NO_WORDS)):
        if args.no_test or results.get(name) is not None:
            continue
        manual = build_method("manual", lm, template, Verbalizer(VERBALIZER), labels=task.labels)
        metrics, _ = evaluate(manual, manual.encode(test))
        results[name] = {"template": template, "verbalizer": VERBALIZER, "test_size": len(test),
                         "test_accuracy": metrics["accuracy"], "test_macro_f1": metrics["macro_f1"]}
        save_results(args.out, results)
        print(f"{template!r} zero-shot: {metrics['accuracy']:.3f}", flush=True)
    for key in args.runs:
        lr = args.lr if args.lr is not None else LR[RUNS[key][0]]
        for seed in args.seeds:
            done = [r for r in results["runs"] if (r["run"], r["data_seed"], r["lr"], r["steps"]) ==
                    (key, seed, lr, args.steps) and r.get("overrides", {}) == overrides
                    and r.get("settings", RUNS[key][2]) == RUNS[key][2]
                    and ("test_accuracy" in r or args.no_test)]
            if done:
                continue
            started = time.perf_counter()
            record = run_one(lm, task, key, seed, lr, args.steps, args.eval_every, test, not args.no_test,
                             overrides)
            record["overrides"] = overrides
            record["wall_seconds"] = round(time.perf_counter() - started, 1)
            results["runs"].append(record)
            save_results(args.out, results)
            print(f"{key} seed {seed} lr {lr}: dev {record['dev_accuracy_step0']:.3f} -> "
                  f"{record['dev_accuracy_best']:.3f} (step {record['best_step']}), "
                  f"test {record.get('test_accuracy', float('nan')):.3f}, loss {record['losses'][0]:.3f} -> "
                  f"{record['losses'][-1]:.3f}, {record['wall_seconds']:.0f} s", flush=True)
    if not args.no_test:
        args.out.with_suffix(".md").write_text(markdown(results, tuning))


if __name__ == "__main__":
    main()
