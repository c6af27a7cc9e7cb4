"""The few-shot harness on a tiny *randomly initialised* causal LM (see conftest) and a toy task:
protocols, resume, pattern ensembles, and a real kill-and-resume of the `prompting run` command."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import NEGATIVE, POSITIVE, SUBJECTS
from prompting.core.data import Example, Task, sample_kshot
from prompting.experiment.executor import RunExecutor
from prompting.experiment.harness import Experiment, MethodSpec, Protocol
from prompting.experiment.results import ResultsFileError, ResultsStore

PATTERNS = ["{text_a} It was {mask}.", "Review: {text_a} Sentiment: {mask}"]
VERBALIZER = {0: ["bad"], 1: ["good"]}
TRAIN = [Example({"text_a": f"{s} was {adjective}."}, label)
         for s in SUBJECTS for adjective, label in zip(POSITIVE[:3] + NEGATIVE[:3], "111000")]
TEST = [Example({"text_a": f"{s} {verb} {adjective}."}, label)
        for s, verb in zip(SUBJECTS[:5], ("is", "felt", "seemed", "looked", "is"))
        for adjective, label in ((POSITIVE[5], "1"), (NEGATIVE[5], "0"))]
TRAINED = dict(train_config={"lr": 1e-3, "max_steps": 2, "batch_size": 4})
VOLATILE = ("seconds", "peak_memory_mb")  # timing and memory differ from run to run


def toy_task(name="toy", **kwargs):
    return Task(name, ("0", "1"), ("text_a",), list(TRAIN), list(TEST), **kwargs)


@pytest.fixture
def captured_splits(monkeypatch):
    """The (train, dev) examples each executed run gets, by run id."""
    seen = {}
    original = RunExecutor.execute

    def execute(self, run, train_examples, dev_examples, progress=True):
        seen[run.run_id] = (run, list(train_examples), list(dev_examples))
        return original(self, run, train_examples, dev_examples, progress)

    monkeypatch.setattr(RunExecutor, "execute", execute)
    return seen


@pytest.fixture
def counted_builds(monkeypatch):
    """How many methods the harness builds (one per executed run)."""
    calls = []
    original = RunExecutor.build
    monkeypatch.setattr(RunExecutor, "build", lambda self, run: calls.append(run.spec.name) or original(self, run))
    return calls


def texts(examples):
    return [e["text_a"] for e in examples]


def strip(record):
    return {k: v for k, v in record.items() if k not in VOLATILE}


# ------------------------------------------------------------------------------------ protocols
def test_lmbff_protocol_trains_on_k_per_class_with_a_disjoint_dev_set(make_tiny_lm, captured_splits):
    task = toy_task()
    methods = [MethodSpec("manual", train=False), MethodSpec("manual", train=True, **TRAINED)]
    exp = Experiment(make_tiny_lm("llama"), task, methods, [(PATTERNS[0], VERBALIZER)],
                     Protocol(k=4, data_seeds=(13, 21), train_seeds=(1,)))
    records = exp.run(progress=False)
    assert len(records) == 4 and len(captured_splits) == 4
    by_seed = {}
    for run, train, dev in captured_splits.values():
        assert sorted(e.label for e in train) == sorted(e.label for e in dev) == ["0"] * 4 + ["1"] * 4
        assert not set(texts(train)) & set(texts(dev)) and set(texts(train + dev)) <= set(texts(TRAIN))
        expected_train, expected_dev = sample_kshot(task.train, 4, run.data_seed, task.labels)
        assert (train, dev) == (expected_train, expected_dev)
        by_seed.setdefault(run.data_seed, texts(train))
    assert set(by_seed[13]) != set(by_seed[21])
    for r in records:
        assert (r["k"], r["n_train"], r["n_dev"], r["n_test"]) == (4, 8, 8, len(TEST))
    zero = [r for r in records if not r["train"]]
    # an untrained prompt does not depend on the data split: the same test predictions each time
    assert zero[0]["test"] == zero[1]["test"] and zero[0]["trainable_params"] == 0
    trained = [r for r in records if r["train"]]
    assert all(r["steps"] == 2 and r["trainable_params"] == r["model_params"] for r in trained)


def test_fewglue_protocol_uses_the_fixed_train_and_dev_as_given(make_tiny_lm, captured_splits):
    fixed_train, fixed_dev = TRAIN[:10], TRAIN[-6:]
    task = Task("toy", ("0", "1"), ("text_a",), fixed_train, list(TEST), dev=fixed_dev, fixed_split=True)
    exp = Experiment(make_tiny_lm("llama"), task, [MethodSpec("manual", train=True, **TRAINED)],
                     [(PATTERNS[0], VERBALIZER)], Protocol(k=4, data_seeds=(13, 21), train_seeds=(1, 2)))
    records = exp.run(progress=False)
    assert captured_splits and all(train == fixed_train and dev == fixed_dev
                                   for _, train, dev in captured_splits.values())
    assert all(r["k"] is None and (r["n_train"], r["n_dev"]) == (10, 6) for r in records)
    # the fixed files are one data split: the repetitions are the training seeds
    assert sorted((r["data_seed"], r["train_seed"]) for r in records) == [(13, 1), (13, 2)]


def test_a_verbalizer_label_the_task_does_not_have_is_refused_when_the_experiment_is_built(tiny_causal_lm):
    from prompting.core.verbalizer import VerbalizerError

    with pytest.raises(VerbalizerError, match="label '2', which the task does not have; task labels: '0', '1'"):
        Experiment(tiny_causal_lm, toy_task(), [MethodSpec("manual", train=False)],
                   [(PATTERNS[0], {0: ["bad"], 1: ["good"], 2: ["fine"]})])


# --------------------------------------------------------------------------------------- resume
def test_running_again_skips_recorded_runs_and_redoes_a_missing_one_identically(make_tiny_lm, tmp_path, counted_builds):
    lm = make_tiny_lm("llama")

    def experiment():
        return Experiment(lm, toy_task(), [MethodSpec("manual", train=False), MethodSpec("manual", train=True, **TRAINED)],
                          [(PATTERNS[0], VERBALIZER)], Protocol(k=4, data_seeds=(13,), train_seeds=(1, 2)),
                          output_dir=tmp_path)

    first = experiment().run(progress=False)
    assert len(first) == 3 and len(counted_builds) == 3
    lines = (tmp_path / "results.jsonl").read_text().splitlines()

    again = experiment().run(progress=False)
    assert len(counted_builds) == 3  # nothing built, nothing run
    assert (tmp_path / "results.jsonl").read_text().splitlines() == lines and again == first

    removed = json.loads(lines[1])
    (tmp_path / "results.jsonl").write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    third = experiment().run(progress=False)
    assert len(counted_builds) == 4  # only the missing run
    redone = [r for r in third if r["run_id"] == removed["run_id"]]
    assert len(redone) == 1 and strip(redone[0]) == strip(removed)
    assert len({r["run_id"] for r in third}) == 3


def test_resume_refuses_a_results_file_with_a_cut_off_line(tiny_causal_lm, tmp_path):
    exp = Experiment(tiny_causal_lm, toy_task(), [MethodSpec("manual", train=False)], [(PATTERNS[0], VERBALIZER)],
                     Protocol(k=4, data_seeds=(13,)), output_dir=tmp_path)
    exp.run(progress=False)
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"run_id": "abc", "task": ')
    with pytest.raises(ResultsFileError, match="line 2"):
        exp.run(progress=False)


# ------------------------------------------------------------------------------------ ensembles
def test_pet_ensembles_equal_a_hand_computation_from_the_saved_predictions(make_tiny_lm, tmp_path):
    task = toy_task()
    # the same method twice, ensembled two ways: the member runs are shared, run once each
    methods = [MethodSpec("manual", train=True, ensemble="mean", **TRAINED),
               MethodSpec("manual", train=True, ensemble="wmean", **TRAINED)]
    exp = Experiment(make_tiny_lm("llama"), task, methods, [(p, VERBALIZER) for p in PATTERNS],
                     Protocol(k=4, data_seeds=(13,), train_seeds=(1,)), output_dir=tmp_path)
    records = exp.run(progress=False)
    members = [r for r in records if not r.get("ensemble_of")]
    ensembles = {r["label"]: r for r in records if r.get("ensemble_of")}
    assert len(members) == 2 and sorted(ensembles) == ["PET ensemble (mean)", "PET ensemble (wmean)"]
    assert len({r["run_id"] for r in records}) == len(records) == 4

    store = ResultsStore(tmp_path)
    gold = {"dev": [e.label for e in exp.split(13)[1]], "test": [e.label for e in TEST]}
    for how, weights in (("mean", [1.0, 1.0]), ("wmean", [m["dev"]["accuracy"] for m in members])):
        ensemble = ensembles[f"PET ensemble ({how})"]
        assert sorted(ensemble["ensemble_of"]) == sorted(m["run_id"] for m in members)
        for split in ("dev", "test"):
            probs = [torch.tensor(store.load_predictions(m["run_id"])[split]).softmax(-1) for m in members]
            combined = sum(w * p for w, p in zip(weights, probs)) / sum(weights)
            predicted = [task.labels[i] for i in combined.argmax(-1).tolist()]
            accuracy = sum(p == g for p, g in zip(predicted, gold[split])) / len(gold[split])
            assert ensemble[split]["accuracy"] == pytest.approx(accuracy), (how, split)
        # collapsed: one class >= 90% of the test predictions, while it is under 90% of the gold labels
        top = max(set(predicted), key=predicted.count)
        assert ensemble["test_majority"] == [top, pytest.approx(predicted.count(top) / len(predicted))]
        assert ensemble["collapsed"] == (predicted.count(top) >= 0.9 * len(predicted)
                                         and gold["test"].count(top) < 0.9 * len(predicted))
        assert ensemble["n_test"] == len(TEST) and ensemble["n_dev"] == len(gold["dev"])
        saved = store.load_predictions(ensemble["run_id"])
        assert saved["test_gold"] == gold["test"] and saved["labels"] == list(task.labels)
        assert sum(map(sum, saved["test_confusion"])) == len(TEST)
    # members' own records agree with their saved predictions
    for m in members:
        test_scores = torch.tensor(store.load_predictions(m["run_id"])["test"])
        predicted = [task.labels[i] for i in test_scores.argmax(-1).tolist()]
        assert m["test"]["accuracy"] == pytest.approx(sum(p == g for p, g in zip(predicted, gold["test"])) / len(TEST))
    # ensembles are not appended twice when the experiment runs again
    exp.run(progress=False)
    assert len(store.records()) == 4
    # a second experiment in the same folder (another task, as a multi-document config writes) hands
    # back its own runs and ensembles only, so the printed table counts each run once
    other = Experiment(exp.lm, toy_task(name="toy2"), methods, [(p, VERBALIZER) for p in PATTERNS],
                       Protocol(k=4, data_seeds=(13,), train_seeds=(1,)), output_dir=tmp_path)
    other_records = other.run(progress=False)
    assert len(store.records()) == 8 and len(other_records) == 4
    assert {r["task"] for r in other_records} == {"toy2"}
    assert {r["task"] for r in exp.run(progress=False)} == {"toy"}


def test_wmean_weights_patterns_by_dev_accuracy_unlike_mean(tiny_causal_lm, tmp_path):
    """Member runs recorded with crafted predictions: pattern A is right but unsure (p = 0.6) and has
    dev accuracy 0.9; pattern B is wrong and sure (p = 0.9) with dev accuracy 0.1. Averaged, B wins
    everywhere (accuracy 0); weighted 0.9 : 0.1, A wins everywhere (accuracy 1)."""
    import math

    methods = [MethodSpec("manual", train=True, ensemble="mean", **TRAINED),
               MethodSpec("manual", train=True, ensemble="wmean", **TRAINED)]
    exp = Experiment(tiny_causal_lm, toy_task(), methods, [(p, VERBALIZER) for p in PATTERNS],
                     Protocol(k=4, data_seeds=(13,), train_seeds=(1,)), output_dir=tmp_path)
    store = ResultsStore(tmp_path)
    gold = {"dev": [e.label for e in exp.split(13)[1]], "test": [e.label for e in TEST]}
    members = list({r.run_id: r for r in exp.plan()}.values())
    assert len(members) == 2
    for run, dev_accuracy, p_right in zip(members, (0.9, 0.1), (0.6, 0.1)):
        scores = {split: [[math.log(1 - p), math.log(p)] for p in
                          (p_right if label == "1" else 1 - p_right for label in labels)]
                  for split, labels in gold.items()}
        store.save_predictions(run.run_id, scores)
        store.append({**run.settings, "run_id": run.run_id, "dev": {"accuracy": dev_accuracy},
                      "test": {"accuracy": 0.5}, "seconds": 1.0})
    records = {r["label"]: r for r in exp.run(progress=False)}
    assert records["PET ensemble (mean)"]["dev"]["accuracy"] == 0.0
    assert records["PET ensemble (mean)"]["test"]["accuracy"] == 0.0
    assert records["PET ensemble (wmean)"]["dev"]["accuracy"] == 1.0
    assert records["PET ensemble (wmean)"]["test"]["accuracy"] == 1.0


# ------------------------------------------------------------------------------ kill and resume
KILL_AFTER_FIRST_RECORD = """
import sys, time
import prompting.experiment.results as results

append = results.ResultsStore.append


def append_then_wait(self, record, **options):
    append(self, record, **options)
    time.sleep(120)  # the test kills the process here, after the first record is on disk


results.ResultsStore.append = append_then_wait
from prompting.cli import main

sys.exit(main(sys.argv[1:]))
"""


def toy_config(tmp_path, model_dir):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{e['text_a']}\t{e.label}\n" for e in TRAIN))
    (tmp_path / "test.tsv").write_text("sentence\tlabel\n" + "".join(f"{e['text_a']}\t{e.label}\n" for e in TEST))
    config = tmp_path / "toy.yaml"
    config.write_text(f"""
name: toy-resume
model: {model_dir}
device: cpu
task: {{name: toy, train: train.tsv, test: test.tsv, fields: {{text_a: sentence}}, labels: [0, 1]}}
fewshot: {{k: 4, data_seeds: [13, 21]}}
templates: {{patterns: ["{{text_a}} It was {{mask}}."], verbalizers: [{{0: [bad], 1: [good]}}]}}
seeds: {{train_seeds: [1, 2]}}
methods:
  - {{name: manual, train: false}}
  - {{name: manual, train: true, lr: 1.0e-3, max_steps: 2, batch_size: 4}}
""")
    return config


def test_kill_and_resume_the_run_command(make_tiny_lm, tmp_path):
    """`prompting run` in a subprocess, SIGKILLed once its first record is on disk, then the same
    command again (in-process, through the CLI's main, to save a second ~5-10 s interpreter start):
    it finishes, keeps the first record, redoes nothing, and ends with the records of a run that was
    never interrupted."""
    from prompting.cli import main

    lm = make_tiny_lm("llama")
    model_dir = tmp_path / "tiny-model"
    lm.model.save_pretrained(model_dir)
    lm.tokenizer.save_pretrained(model_dir)
    config = toy_config(tmp_path, model_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    results = killed / "results.jsonl"

    hook = tmp_path / "kill_after_first_record.py"
    hook.write_text(KILL_AFTER_FIRST_RECORD)
    process = subprocess.Popen([sys.executable, str(hook), "run", str(config), "--output-dir", str(killed), "-q"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # while the subprocess starts: the uninterrupted run, for comparison
        assert main(["run", str(config), "--output-dir", str(whole), "-q"]) == 0
        deadline = time.monotonic() + 90
        while not (results.exists() and results.read_text().endswith("\n")):
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no record within 90 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    first_line = results.read_text()
    assert first_line.count("\n") == 1

    assert main(["run", str(config), "--output-dir", str(killed), "-q"]) == 0

    text = results.read_text()
    assert text.startswith(first_line)  # the first record is kept as it was, not redone
    after = [json.loads(line) for line in text.splitlines()]
    reference = [json.loads(line) for line in (whole / "results.jsonl").read_text().splitlines()]
    assert len(after) == len(reference) == 6  # 2 data seeds x (zero-shot + 2 trained)
    assert len({r["run_id"] for r in after}) == 6
    assert {r["run_id"]: strip(r) for r in after} == {r["run_id"]: strip(r) for r in reference}
    assert (killed / "report.md").exists()


def test_a_trained_record_keeps_its_dev_curve(make_tiny_lm, tmp_path):
    """Each dev evaluation while training is in the record ([step, accuracy, cross-entropy]), so a
    reader can see why a run kept the step it kept."""
    lm = make_tiny_lm("llama")
    spec = MethodSpec("manual", train=True, train_config={"lr": 1e-3, "max_steps": 4, "batch_size": 4, "eval_every": 2})
    records = Experiment(lm, toy_task(), [MethodSpec("manual", train=False), spec], [(PATTERNS[0], VERBALIZER)],
                         Protocol(k=4, data_seeds=(13,), train_seeds=(1,)), output_dir=tmp_path).run(progress=False)
    zero_shot, trained = sorted(records, key=lambda r: r["train"])
    assert zero_shot["dev_curve"] == []
    assert [step for step, _, _ in trained["dev_curve"]] == [2, 4]
    assert all(0 <= acc <= 1 and loss > 0 for _, acc, loss in trained["dev_curve"])
    best = max(trained["dev_curve"], key=lambda point: (point[1], -point[2]))
    # the kept step is the best evaluation, unless the untrained start (step 0) was at least as good
    assert trained["best_step"] in (0, best[0])
    if trained["best_step"] == best[0]:
        assert trained["dev"]["accuracy"] == best[1]
    # gold labels beside the saved scores: what a report's test-sample interval resamples
    saved = ResultsStore(tmp_path).load_predictions(trained["run_id"])
    assert saved["test_gold"] == [e.label for e in TEST] and len(saved["dev_gold"]) == trained["n_dev"]
    assert saved["labels"] == ["0", "1"]
    # per class: recall and precision from the confusion matrix (rows gold, columns predicted)
    predicted = [saved["labels"][i] for i in torch.tensor(saved["test"]).argmax(1).tolist()]
    matrix = saved["test_confusion"]
    for i, label in enumerate(saved["labels"]):
        assert matrix[i][i] == sum(p == g == label for p, g in zip(predicted, saved["test_gold"]))
        support = sum(g == label for g in saved["test_gold"])
        assert saved["test_per_class"][label]["support"] == support == sum(matrix[i])
        assert saved["test_per_class"][label]["recall"] == pytest.approx(matrix[i][i] / support)
    assert zero_shot["dev_loss"] > 0 and trained["dev_loss"] > 0  # what breaks a dev tie between seeds


def test_a_search_method_records_its_dev_curve_without_a_dev_loss(make_tiny_lm, tmp_path):
    """AutoPrompt brings its own loop: its evaluations have no cross-entropy, and the record still
    gets written (the quickstart's AutoPrompt run once failed here)."""
    lm = make_tiny_lm("llama")
    spec = MethodSpec("autoprompt", template="{text_a} {trigger:1} {mask}",
                      params={"iterations": 2, "num_candidates": 2, "score_examples": 2},
                      train_config={"batch_size": 4, "eval_every": 1})
    records = Experiment(lm, toy_task(), [spec], [(PATTERNS[0], VERBALIZER)],
                         Protocol(k=4, data_seeds=(13,), train_seeds=(1,)), output_dir=tmp_path).run(progress=False)
    assert len(records) == 1 and all(len(point) == 3 for point in records[0]["dev_curve"])
    assert ResultsStore(tmp_path).records()[0]["run_id"] == records[0]["run_id"]


def test_a_learned_state_is_scored_on_test_once_however_many_runs_keep_it(make_tiny_lm, tmp_path, monkeypatch):
    """AutoPrompt with no iterations keeps its start in every run: one test pass serves all four.
    Runs that tune the LM are scored each (the LM's weights are part of the key)."""
    from prompting.core.verbalizer import Verbalizer
    from prompting.methods import build_method
    from prompting.methods.scores import SCORES

    lm = make_tiny_lm("llama")
    test_passes = []
    original = SCORES.put

    def counting(key, scores):  # scores are kept once computed: count what was computed on test
        if len(scores) == len(TEST):
            test_passes.append(key[0])
        return original(key, scores)

    monkeypatch.setattr(SCORES, "put", counting)
    start = "{trigger:2} {text_a} It was {mask}."
    experiment = Experiment(lm, toy_task(), [MethodSpec("autoprompt", train=True, template=start, params={"iterations": 0}),
                                             MethodSpec("manual", train=True, **TRAINED)],
                            [(PATTERNS[0], VERBALIZER)], Protocol(k=4, data_seeds=(13, 21), train_seeds=(1, 2)),
                            output_dir=tmp_path)
    records = experiment.run(progress=False)
    assert test_passes.count("AutoPrompt") == 1 and test_passes.count("ManualPrompt") == 4
    store = ResultsStore(tmp_path)
    saved = [store.load_predictions(r["run_id"])["test"] for r in records if r["method"] == "autoprompt"]
    assert len(saved) == 4 and all(s == saved[0] for s in saved)
    fresh = build_method("autoprompt", lm, start, Verbalizer(VERBALIZER), labels=("0", "1"))
    direct = fresh.predict_scores(fresh.encode(TEST), 32, cached=False)
    assert torch.allclose(torch.tensor(saved[0]), direct, atol=1e-6)
