"""Run records: the append-only store, its errors, seed-search selection and aggregation.

The aggregation tests use synthetic records whose expected numbers are worked out by hand in the
comments, not recomputed with the library's own helpers.
"""

import json
import math
import random

import pytest
import torch

from prompting.core.ids import run_id
from prompting.experiment.results import REQUIRED, ResultsFileError, ResultsStore
from prompting.reporting.aggregate import aggregate, select_runs

VERBALIZER = {"0": ["bad"], "1": ["good"]}


def record(data_seed, train_seed, dev, test, label="PET", template="T1", collapsed=False, dev_f1=None):
    settings = {"task": "toy", "method": "manual", "label": label, "template": template,
                "verbalizer": VERBALIZER, "model": "tiny", "k": 4, "data_seed": data_seed,
                "train_seed": train_seed}
    return {**settings, "run_id": run_id(settings),
            "dev": {"accuracy": dev, "macro_f1": dev if dev_f1 is None else dev_f1},
            "test": {"accuracy": test, "macro_f1": test - 0.1}, "collapsed": collapsed,
            "trainable_params": 10 if train_seed else 0, "seconds": 2.0}


# PET with template T1: 2 data seeds x 3 train seeds, written in a scrambled order
PET_T1 = [
    record(13, 3, 0.75, 0.8), record(13, 1, 0.5, 0.6, collapsed=True), record(13, 2, 0.75, 0.7),
    record(21, 2, 0.5, 0.9, dev_f1=0.4, collapsed=True), record(21, 1, 0.9, 0.65, dev_f1=0.5),
    record(21, 3, 0.6, 0.85, dev_f1=0.95),
]
# PET with template T2: one data seed, a dev tie
PET_T2 = [record(13, 2, 0.6, 0.68, template="T2"), record(13, 1, 0.6, 0.72, template="T2")]
ZERO_SHOT = [record(13, None, 0.55, 0.5, label="manual zero-shot"),
             record(21, None, 0.6, 0.52, label="manual zero-shot")]
RECORDS = PET_T1 + ZERO_SHOT + PET_T2


def ids(records, **match):
    return {r["run_id"] for r in records if all(r[k] == v for k, v in match.items())}


# ------------------------------------------------------------------------------------ selection
def test_seed_search_picks_the_best_dev_run_per_data_split_and_the_first_train_seed_on_ties():
    chosen = select_runs(RECORDS)
    expected = (ids(PET_T1, data_seed=13, train_seed=2)  # dev 0.75 for seeds 2 and 3: seed 2 comes first
                | ids(PET_T1, data_seed=21, train_seed=1)  # dev 0.9
                | ids(PET_T2, train_seed=1)  # dev tie 0.6: seed 1
                | ids(ZERO_SHOT))  # one run per split
    assert chosen == expected


def test_seed_search_by_macro_f1_uses_the_dev_macro_f1():
    chosen = select_runs(PET_T1, metric="macro_f1")
    assert chosen == ids(PET_T1, data_seed=13, train_seed=2) | ids(PET_T1, data_seed=21, train_seed=3)


def test_aggregate_matches_hand_computed_statistics():
    rows = {(r["label"], r["template"]): r for r in aggregate(RECORDS)}
    pet = rows[("PET", "T1")]
    # selected: seed 13 -> train seed 2 (test 0.7), seed 21 -> train seed 1 (test 0.65)
    assert pet["test_selected"] == pytest.approx(
        {"mean": 0.675, "std": math.sqrt(2 * 0.025 ** 2), "min": 0.65, "max": 0.7, "n": 2})
    assert pet["std_data_seeds"] == pytest.approx(0.0353553, abs=1e-6)
    assert pet["dev_selected"] == pytest.approx((0.75 + 0.9) / 2)
    # all six: mean 4.5 / 6 = 0.75; squared deviations sum to 0.07 -> sample std sqrt(0.07 / 5)
    assert pet["test_all"] == pytest.approx({"mean": 0.75, "std": math.sqrt(0.014), "min": 0.6, "max": 0.9, "n": 6})
    # std across train seeds within a split: 0.1 (seed 13) and sqrt(0.035 / 2) (seed 21), averaged
    assert pet["std_train_seeds"] == pytest.approx((0.1 + math.sqrt(0.0175)) / 2)
    assert pet["selection_gain"] == pytest.approx(0.675 - 0.75)
    assert (pet["collapsed"], pet["runs"], pet["data_seeds"]) == (2, 6, 2)
    assert pet["seconds"] == pytest.approx(12.0) and pet["method"] == "manual" and pet["k"] == 4

    zero = rows[("manual zero-shot", "T1")]
    assert zero["test_selected"]["mean"] == pytest.approx(0.51)
    assert zero["test_selected"]["std"] == pytest.approx(math.sqrt(2 * 0.01 ** 2))
    assert zero["std_train_seeds"] == 0.0 and zero["selection_gain"] == pytest.approx(0.0)

    t2 = rows[("PET", "T2")]
    assert t2["test_selected"]["mean"] == pytest.approx(0.72) and t2["test_selected"]["std"] == 0.0
    assert t2["std_train_seeds"] == pytest.approx(math.sqrt(2 * 0.02 ** 2))
    assert t2["selection_gain"] == pytest.approx(0.02)


def test_aggregate_rows_are_best_first_and_independent_of_record_order():
    shuffled = list(RECORDS)
    random.Random(0).shuffle(shuffled)
    rows = aggregate(shuffled)
    assert [(r["label"], r["template"]) for r in rows] == [("PET", "T2"), ("PET", "T1"), ("manual zero-shot", "T1")]
    assert rows == aggregate(RECORDS)


def test_aggregate_on_macro_f1_reports_test_macro_f1():
    row = aggregate(PET_T1, metric="macro_f1")[0]
    # macro_f1 selects train seed 2 (seed 13) and 3 (seed 21): test macro_f1 0.6 and 0.75
    assert row["test_selected"]["mean"] == pytest.approx((0.6 + 0.75) / 2)
    assert row["metric"] == "macro_f1"


# ------------------------------------------------------------------------------------ the store
def test_append_writes_whole_json_lines_and_done_lists_run_ids(tmp_path):
    store = ResultsStore(tmp_path / "out")
    assert store.records() == [] and store.done() == set()
    first = {**PET_T1[0], "loss": torch.tensor(0.25)}  # tensors are stored as numbers
    store.append(first)
    store.append(PET_T1[1])
    raw = store.path.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 2
    lines = raw.decode().splitlines()
    assert json.loads(lines[0]) == {**PET_T1[0], "loss": 0.25}
    assert store.records() == [{**PET_T1[0], "loss": 0.25}, PET_T1[1]]
    assert store.done() == {PET_T1[0]["run_id"], PET_T1[1]["run_id"]}


def test_append_refuses_a_record_without_the_required_fields(tmp_path):
    store = ResultsStore(tmp_path)
    incomplete = {k: v for k, v in PET_T1[0].items() if k not in ("dev", "test")}
    with pytest.raises(ValueError, match="lacks dev, test"):
        store.append(incomplete)
    assert not store.path.exists()


def test_a_cut_off_line_raises_naming_its_line_number(tmp_path):
    store = ResultsStore(tmp_path)
    for r in PET_T1[:2]:
        store.append(r)
    with open(store.path, "a") as f:
        f.write(json.dumps(PET_T1[2])[:40])  # a run killed half-way through writing its line
    with pytest.raises(ResultsFileError) as err:
        store.records()
    message = str(err.value)
    assert str(store.path) in message and "line 3 is not a complete JSON record" in message
    assert "Delete that line" in message
    with pytest.raises(ResultsFileError, match="line 3"):
        store.done()


def test_a_json_line_without_the_run_fields_names_the_missing_keys(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(PET_T1[0])
    partial = {k: v for k, v in PET_T1[1].items() if k not in ("model", "test")}
    with open(store.path, "a") as f:
        f.write("\n" + json.dumps(partial) + "\n")  # blank lines are skipped
    with pytest.raises(ResultsFileError) as err:
        store.records()
    assert "line 3 is not a run record (missing model, test)" in str(err.value)
    store.path.write_text("[1, 2]\n")
    with pytest.raises(ResultsFileError, match=f"line 1 is not a run record \\(missing {', '.join(REQUIRED)}\\)"):
        store.records()


def test_predictions_round_trip_and_missing_ones_are_none(tmp_path):
    store = ResultsStore(tmp_path)
    scores = {"dev": [[-0.5, -1.0]], "test": [[-2.0, -0.1], [-0.3, -0.4]]}
    store.save_predictions("abc", scores)
    assert store.load_predictions("abc") == scores
    assert store.load_predictions("nope") is None
    assert not list((tmp_path / "predictions").glob(".*"))  # no temporary file left behind


def test_run_id_is_stable_under_key_order_and_changes_with_any_setting():
    settings = {"task": "toy", "template": "T1", "data_seed": 13, "train_config": {"lr": 1e-5, "max_steps": 8}}
    reordered = {"train_config": {"max_steps": 8, "lr": 1e-5}, "data_seed": 13, "template": "T1", "task": "toy"}
    assert run_id(settings) == run_id(reordered)
    assert run_id(settings) != run_id({**settings, "data_seed": 21})
    assert run_id(settings) != run_id({**settings, "train_config": {"lr": 2e-5, "max_steps": 8}})


def test_a_run_recorded_twice_counts_once(tmp_path):
    """Two processes started on one directory both record a run: aggregation must not count it twice."""
    from prompting.experiment.results import ResultsStore

    store = ResultsStore(tmp_path)
    base = {"task": "t", "method": "manual", "label": "PET", "template": "{text_a} {mask}",
            "verbalizer": {"0": ["bad"], "1": ["good"]}, "model": "m", "k": 4, "data_seed": 13,
            "dev": {"accuracy": 0.5}}
    store.append({**base, "run_id": "a", "train_seed": 1, "test": {"accuracy": 0.9}})
    store.append({**base, "run_id": "b", "train_seed": 2, "test": {"accuracy": 0.7}})
    store.append({**base, "run_id": "a", "train_seed": 1, "test": {"accuracy": 0.9}})
    assert [r["run_id"] for r in store.records()] == ["a", "b"]


def _saved(store, rid, predicted, gold, n_labels=2):
    scores = [[1.0 if j == p else 0.0 for j in range(n_labels)] for p in predicted]
    store.save_predictions(rid, {"dev": [], "test": scores, "dev_gold": [], "test_gold": list(gold)})


def test_bootstrap_interval_brackets_the_score_with_the_width_of_the_test_sample(tmp_path):
    """A deterministic run still gets a spread: the luck of drawing this test sample. 400 examples
    at 75% give about ±4.2 points (1.96 * sqrt(.75 * .25 / 400)); identical runs change nothing."""
    from prompting.reporting.aggregate import bootstrap_interval

    store = ResultsStore(tmp_path)
    gold = [0, 1] * 200
    _saved(store, "perfect", gold, gold)
    _saved(store, "three-quarters", [g if i % 4 else 1 - g for i, g in enumerate(gold)], gold)
    _saved(store, "again", [g if i % 4 else 1 - g for i, g in enumerate(gold)], gold)
    assert bootstrap_interval(store, ["perfect"]) == (1.0, 1.0)
    low, high = bootstrap_interval(store, ["three-quarters"])
    assert low < 0.75 < high and abs((high - low) / 2 - 0.0424) < 0.01
    assert bootstrap_interval(store, ["three-quarters", "again"]) == (low, high)
    mixed = bootstrap_interval(store, ["perfect", "three-quarters"])  # the mean of the runs' scores
    assert mixed[0] < 0.875 < mixed[1] and mixed[1] - mixed[0] < high - low


def test_bootstrap_interval_of_macro_f1_and_when_it_cannot_be_computed(tmp_path):
    from prompting.reporting.aggregate import bootstrap_interval

    store = ResultsStore(tmp_path)
    gold = [0, 1] * 100
    _saved(store, "one-class", [1] * 200, gold)  # F1 2/3 on class 1, 0 on class 0: macro 1/3
    low, high = bootstrap_interval(store, ["one-class"], "macro_f1")
    assert low < 1 / 3 < high and high - low < 0.1  # the share of class 1 in a 200-draw moves it
    assert bootstrap_interval(store, ["one-class"], "accuracy")[0] < 0.5
    store.save_predictions("old", {"dev": [], "test": [[0.0, 1.0]] * 200})  # recorded before gold was kept
    assert bootstrap_interval(store, ["one-class", "old"]) is None
    assert bootstrap_interval(store, ["missing"]) is None


def test_a_dev_tie_between_training_seeds_goes_to_the_lower_dev_cross_entropy():
    """As in the training loop: equal dev accuracy, then the lower dev loss, then the first seed."""
    base = {"task": "toy", "method": "manual", "label": "PET", "template": "T1", "verbalizer": {"0": ["bad"]},
            "model": "tiny", "k": 4, "data_seed": 13, "test": {"accuracy": 0.5}}
    runs = [{**base, "run_id": f"seed{s}", "train_seed": s, "dev": {"accuracy": 0.75}, "dev_loss": loss}
            for s, loss in ((1, 0.61), (2, 0.43), (3, 0.43))]
    assert select_runs(runs) == {"seed2"}
    older = [{k: v for k, v in r.items() if k != "dev_loss"} for r in runs]  # recorded without it
    assert select_runs(older) == {"seed1"}
    runs[0]["dev"] = {"accuracy": 0.78}  # a better dev score still wins, whatever its loss
    assert select_runs(runs) == {"seed1"}
