"""`prompting.load_results`: a committed results folder as a data frame, one row per record with the report's
numbers (a setting's dev-selected runs average to its summary.csv row), and the per-example predictions
whose accuracy is each run's recorded one."""

import json
from pathlib import Path

import pytest

import prompting

pd = pytest.importorskip("pandas")

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results"


def test_one_row_per_record_with_the_reports_numbers():
    folder = RESULTS / "sst2_compare"
    records = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]
    runs = prompting.load_results(folder)
    assert list(runs.run_id) == [r["run_id"] for r in records]
    assert list(runs.test_accuracy) == [r["test"]["accuracy"] for r in records]
    soft = runs[runs.method == "soft"].iloc[0]
    assert soft.train_config_lr == 0.03 and soft.params_init == "text" and soft.verbalizer == "negative / positive"
    assert pd.isna(runs[~runs.train].train_seed).all() and runs.train_seed.dtype == "Int64"
    # every row of the report's summary: its runs, and the mean, spread and dev score of its dev-selected runs
    summary = pd.read_csv(folder / "summary.csv", keep_default_na=False)
    by_setting = runs.groupby(["label", "template"], sort=False)
    chosen = runs[runs.selected].groupby(["label", "template"], sort=False)
    assert len(summary) == by_setting.ngroups == 23
    for row in summary.itertuples():
        key = (row.label, row.template)
        assert by_setting.size()[key] == row.runs
        assert chosen.test_accuracy.mean()[key] == pytest.approx(row.test_selected_mean, abs=1e-12)
        assert chosen.test_accuracy.std()[key] == pytest.approx(row.test_selected_std, abs=1e-12)
        assert chosen.dev_accuracy.mean()[key] == pytest.approx(row.dev_selected, abs=1e-12)
        assert by_setting.test_accuracy.mean()[key] == pytest.approx(row.test_all_mean, abs=1e-12)


def test_the_predictions_of_every_run_give_its_recorded_accuracy():
    runs, predictions = prompting.load_results(RESULTS / "copa", predictions=True)
    assert set(predictions.columns) >= {"run_id", "split", "example", "gold", "predicted", "correct", "score_0", "score_1"}
    test = predictions[predictions.split == "test"]
    assert (test.groupby("run_id").size() == 100).all()  # COPA's 100 validation questions
    accuracy = test.groupby("run_id").correct.mean()
    assert accuracy.to_dict() == pytest.approx(dict(zip(runs.run_id, runs.test_accuracy)))
    best = test[["score_0", "score_1"]].to_numpy().argmax(1)
    assert (test.predicted == pd.Series(best, index=test.index).astype(str)).all()


def test_a_fact_probing_folder_gives_ranks_and_a_missing_folder_says_so(tmp_path):
    runs, predictions = prompting.load_results(RESULTS / "lama", predictions=True)
    assert {"relation", "protocol", "test_p_at_1", "test_mrr"} <= set(runs.columns)
    first = runs.iloc[0]
    ranks = predictions[(predictions.run_id == first.run_id) & (predictions.split == "test")]["rank"]
    assert len(ranks) == first.n_test and (ranks == 1).mean() == pytest.approx(first.test_p_at_1)
    with pytest.raises(FileNotFoundError, match="no run records in"):
        prompting.load_results(tmp_path)
