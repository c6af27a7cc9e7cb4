"""A report that cannot mislead: runs on other test examples never share a row, the majority class of
the scored test sample is a row and a line, every row says how many test examples it was scored on and
which class it predicts most, label words read in the task's label order, nothing is said about a
spread that was not measured, and missing prediction files are named."""

import csv
import shutil

import pytest

from prompting.cli import main
from prompting.core.data import Example, Task
from prompting.core.ids import run_id
from prompting.experiment.harness import Experiment, MethodSpec, Protocol
from prompting.experiment.results import ResultsStore
from prompting.reporting.report import write_report

LABELS = ["yes", "no"]  # the task's order: not alphabetical
VERBALIZER = {"yes": ["good"], "no": ["bad"]}


def table_rows(report: str) -> list[dict]:
    """The first summary table of the report as dicts by column name."""
    lines = [line for line in report.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    rows = []
    for line in lines[2:]:
        if line.startswith("|---"):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if len(cells) != len(header):
            break
        rows.append(dict(zip(header, cells)))
    return rows


def run_record(label, template, test, predicted, gold, train_seed=None, data_seed=13, test_limit=None):
    settings = {"task": "toy", "method": "manual", "label": label, "template": template, "verbalizer": VERBALIZER,
                "model": "tiny", "k": 4, "data_seed": data_seed, "train_seed": train_seed, "test_limit": test_limit,
                "train": train_seed is not None}
    record = {**settings, "run_id": run_id(settings), "dev": {"accuracy": 0.5}, "test": {"accuracy": test},
              "collapsed": False, "trainable_params": 0, "seconds": 1.0, "n_test": len(gold)}
    scores = [[1.0, 0.0] if p == "yes" else [0.0, 1.0] for p in predicted]
    return record, {"dev": [], "test": scores, "labels": LABELS, "dev_gold": [], "test_gold": gold}


def store_of(tmp_path, runs) -> ResultsStore:
    store = ResultsStore(tmp_path / "runs")
    for record, predictions in runs:
        store.append(record)
        store.save_predictions(record["run_id"], predictions)
    return store


GOLD = ["no"] * 7 + ["yes"] * 3  # 70% "no"


def test_the_majority_class_is_a_row_and_rows_below_it_are_marked(tmp_path):
    store = store_of(tmp_path, [
        run_record("better", "{text_a} A {mask}", 0.8, ["no"] * 7 + ["yes", "yes", "no"], GOLD),
        run_record("worse", "{text_a} B {mask}", 0.6, ["no"] * 4 + ["yes"] * 3 + ["yes", "no", "no"], GOLD)])
    write_report(store.directory, plots=False)
    report = (store.directory / "report.md").read_text()
    rows = table_rows(report)
    assert [r["method"] for r in rows] == ["better", "*majority class* (always `no`)", "worse †"]
    assert [r["vs majority"] for r in rows] == ["+10.0", "–", "-10.0"]
    assert rows[1]["test (sel.) mean ± std"] == "70.0" and all(r["test n"] == "10" for r in rows)
    assert rows[0]["predicted most"] == "no (80.0%)"
    assert "† not above the majority class of its test sample: worse" in report
    with open(store.directory / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert [(r["n_test"], r["majority_label"], r["majority_share"]) for r in summary] == [("10", "no", "0.7")] * 2


def test_no_best_is_named_when_every_row_is_below_the_majority_class(tmp_path):
    store = store_of(tmp_path, [
        run_record("a", "{text_a} A {mask}", 0.6, ["no"] * 4 + ["yes"] * 3 + ["yes", "no", "no"], GOLD),
        run_record("b", "{text_a} B {mask}", 0.5, ["yes"] * 5 + ["no"] * 5, GOLD)])
    write_report(store.directory, plots=False)
    report = (store.directory / "report.md").read_text()
    assert "Best:" not in report
    assert "No setting scores above the majority class of its test sample (always `no`: 70.0%)" in report


def test_label_words_read_in_the_task_s_label_order(tmp_path):
    store = store_of(tmp_path, [run_record("a", "{text_a} A {mask}", 0.8, GOLD, GOLD)])
    write_report(store.directory, plots=False)
    assert table_rows((store.directory / "report.md").read_text())[0]["verbalizer"] == "good / bad"


def test_one_training_seed_makes_no_claim_about_a_training_seed_spread(tmp_path):
    fixed = [run_record(name, f"{{text_a}} {name} {{mask}}", test, GOLD[:7] + ["yes"] * 3 if test > 0.9 else GOLD,
                        GOLD, train_seed=1) for name, test in (("a", 1.0), ("b", 0.7))]
    for record, _ in fixed:
        record["k"] = None  # a fixed split: one data seed
    store = store_of(tmp_path, fixed)
    write_report(store.directory, plots=False)
    best = next(line for line in (store.directory / "report.md").read_text().splitlines() if line.startswith("Best:"))
    assert "spread" not in best and "std" not in best


def test_missing_prediction_files_are_named_and_pairing_says_why(tmp_path):
    store = store_of(tmp_path, [
        run_record("a", "{text_a} A {mask}", 0.8, ["no"] * 7 + ["yes", "yes", "no"], GOLD),
        run_record("b", "{text_a} B {mask}", 0.6, ["no"] * 4 + ["yes"] * 3 + ["yes", "no", "no"], GOLD)])
    shutil.rmtree(store.directory / "predictions")
    write_report(store.directory, plots=False)
    report = (store.directory / "report.md").read_text()
    assert "2 of 2 runs have no saved predictions (`predictions/RUN_ID.json`" in report
    assert "not paired (saved predictions missing)" in report


@pytest.fixture
def toy_task():
    train = [Example({"text_a": f"the film was {w}."}, label) for w, label in
             [("great", "1"), ("good", "1"), ("fine", "1"), ("nice", "1"), ("bad", "0"), ("awful", "0"),
              ("dull", "0"), ("poor", "0")] * 2]
    test = [Example({"text_a": f"it was {w}."}, label) for w, label in
            [("great", "1"), ("bad", "0"), ("lovely", "1"), ("weak", "0"), ("fun", "1"), ("slow", "0")]]
    return Task("toy", ("0", "1"), ("text_a",), train, test)


def test_runs_on_other_test_examples_never_share_a_row(tiny_causal_lm, toy_task, tmp_path):
    """``run --test-limit 2``, then the whole test set into the same folder: two rows, each with its size."""
    prompts = [("{text_a} It was {mask}.", {"0": ["bad"], "1": ["good"]})]
    for limit in (2, None):
        Experiment(tiny_causal_lm, toy_task, [MethodSpec("manual", train=False)], prompts,
                   Protocol(k=2, data_seeds=(13,), test_limit=limit), output_dir=tmp_path).run(progress=False)
    assert main(["report", str(tmp_path), "--no-plots"]) == 0
    rows = [r for r in table_rows((tmp_path / "report.md").read_text()) if not r["method"].startswith("*")]
    assert sorted((r["test n"], r["runs"]) for r in rows) == [("2", "1"), ("6", "1")]


def test_the_protocol_line_says_how_many_test_examples_are_scored(toy_task):
    from prompting.tasks.classification import Classification

    assert Classification(toy_task).describe(Protocol(k=2, test_limit=4)).endswith(
        "test: 4 of 6 examples (a fixed random sample, seed 0)")
    assert Classification(toy_task).describe(Protocol(k=2)).endswith("test: 6 examples")
