"""The report's paired test and variance split: the statistics against hand-computed numbers, and the
lines report.md writes from them (hand-written records and predictions)."""

import numpy as np
import pytest

from prompting.reporting.report import write_report
from prompting.core.ids import run_id
from prompting.experiment.results import ResultsStore
from prompting.reporting.significance import paired_bootstrap, resampled_differences, two_sided_p, variance_split

VERBALIZER = {"0": ["bad"], "1": ["good"]}


def test_resampled_differences_by_hand():
    a = [[1, 0, 1], [1, 1, 0]]  # 2 data seeds x 3 test examples, 1 = right
    b = [[0, 0, 1], [1, 0, 0]]  # differences: [[1, 0, 0], [0, 1, 0]]
    seeds = [[0, 0], [1, 0], [1, 1]]
    examples = [[0, 0, 2], [1, 2, 2], [1, 1, 1]]
    # draw 1: seed 0 twice, examples 0, 0, 2 -> (1 + 1 + 0) x 2 / 6; draw 2: seed 1 then 0, examples 1, 2, 2 ->
    # (1 + 0 + 0 + 0 + 0 + 0) / 6; draw 3: seed 1 twice, example 1 three times -> 6 / 6
    assert np.allclose(resampled_differences(a, b, seeds, examples), [4 / 6, 1 / 6, 1.0])


def test_two_sided_p_by_hand():
    # 1 of 4 draws at or below 0, 3 at or above: 2 * min((1 + 1) / 5, (3 + 1) / 5) = 0.8
    assert two_sided_p([0.1, 0.2, -0.1, 0.3]) == pytest.approx(0.8)
    assert two_sided_p([0.1] * 9) == pytest.approx(2 * 1 / 10)
    assert two_sided_p([0.0] * 9) == 1.0


def test_paired_bootstrap_sees_a_clear_difference_and_no_difference():
    rng = np.random.default_rng(1)
    b = (rng.random((5, 200)) < 0.6).astype(float)
    same = paired_bootstrap(b, b)
    assert same["difference"] == 0 and same["p"] == 1.0 and same["low"] == same["high"] == 0
    better = np.maximum(b, (rng.random((5, 200)) < 0.5))  # right wherever b is, and on half the rest
    test = paired_bootstrap(better, b, resamples=500)
    assert test["difference"] == pytest.approx((better - b).mean())
    assert 0 < test["low"] < test["difference"] < test["high"] and test["p"] == pytest.approx(2 / 501)
    with pytest.raises(ValueError, match="paired scores need one shape"):
        paired_bootstrap(b, b[:, :10])


def test_variance_split_by_hand():
    runs = [("T1", 1, 1, 0.8), ("T1", 1, 2, 0.6), ("T1", 2, 1, 0.9), ("T1", 2, 2, 0.9),
            ("T2", 1, 1, 0.5), ("T2", 1, 2, 0.5), ("T2", 2, 1, 0.7), ("T2", 2, 2, 0.7)]
    # total 0.18 around 0.7; templates 8 x 0.1^2 = 0.08; data seeds 8 x 0.1^2 = 0.08; training seeds 2 x 0.1^2
    split = variance_split(runs)
    assert split == pytest.approx({"templates": 4 / 9, "data seeds": 4 / 9, "training seeds": 1 / 9})
    assert variance_split([("T", 1, 1, 0.5), ("T", 2, 1, 0.5)]) is None


def _runs(store, label, right, seeds=(13, 21), method="manual", train=True, by_name=True):
    """One run per data seed whose test predictions are right where ``right`` (per seed) says; gold labels
    saved by name beside the label order, or (``by_name=False``, as older files) as column indices."""
    gold = [0, 1] * 20
    for seed, hits in zip(seeds, right):
        settings = {"task": "sst2", "method": method, "label": label, "template": "{text_a} It was {mask}.",
                    "verbalizer": VERBALIZER, "model": "tiny", "k": 4, "data_seed": seed, "train_seed": 1 if train else None}
        rid = run_id(settings)
        predicted = [g if h else 1 - g for g, h in zip(gold, hits)]
        saved_gold = {"labels": ["0", "1"], "test_gold": [str(g) for g in gold]} if by_name else {"test_gold": gold}
        store.save_predictions(rid, {"test": [[0.0, 1.0] if p else [1.0, 0.0] for p in predicted], **saved_gold,
                                     "dev": [], "dev_gold": []})
        store.append({**settings, "run_id": rid, "train": train, "dev": {"accuracy": 0.5},
                      "test": {"accuracy": float(np.mean(hits))}, "collapsed": False, "trainable_params": 0,
                      "seconds": 1.0})


@pytest.mark.parametrize("old_files", [False, True], ids=["gold by name", "gold as indices"])
def test_report_names_a_significant_winner_and_a_tie(tmp_path, old_files):
    store = ResultsStore(tmp_path)
    _runs(store, "strong", [[1] * 36 + [0] * 4, [1] * 34 + [0] * 6])
    _runs(store, "zero-shot", [[1] * 20 + [0] * 20, [0] * 20 + [1] * 20], train=False, by_name=not old_files)
    _runs(store, "close", [[1] * 35 + [0] * 5, [1] * 34 + [0] * 6], by_name=not old_files)
    write_report(tmp_path, plots=False)
    report = (tmp_path / "report.md").read_text()
    winner = next(line for line in report.splitlines() if line.startswith("Best:"))
    assert "paired test: not distinguishable from close (p = " in winner
    table = report.split("The best row against every other:")[1].split("Against the best zero-shot")[0]
    row = next(line for line in table.splitlines() if line.startswith("| manual zero-shot") or
               line.startswith("| zero-shot"))
    assert "+37.5" in row and row.endswith("| higher |")  # (70 - 40) / 80 = 0.375
    assert "Variance split" in report
