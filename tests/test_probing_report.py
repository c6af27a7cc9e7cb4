"""The fact-probing report's intervals and paired tests: the stratified bootstrap against hand-computed
numbers, and the lines report.md writes from hand-written probing records and their saved ranks."""

import numpy as np
import pytest

from prompting.experiment.results import ResultsStore
from prompting.reporting.probing import paired_probe_tables, probe_report
from prompting.reporting.report import write_report
from prompting.reporting.significance import paired_bootstrap, stratified_bootstrap


def test_the_macro_average_weighs_every_group_once_whatever_its_size():
    big = (np.ones(1000), np.zeros(1000))  # +1 on every example
    small = (np.zeros(10), np.zeros(10))  # no difference
    found = stratified_bootstrap([big, small])
    assert found["difference"] == pytest.approx(0.5)  # pooled over examples it would be 1000 / 1010
    assert found["low"] == pytest.approx(0.5) and found["high"] == pytest.approx(0.5)  # nothing varies
    assert found["groups"] == 2 and found["examples"] == 1010
    assert found["p"] == pytest.approx(2 / 2001)


def test_one_group_is_the_paired_bootstrap_over_its_examples():
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 2, 60).astype(float), rng.integers(0, 2, 60).astype(float)
    one, paired = stratified_bootstrap([(a, b)]), paired_bootstrap(a[None], b[None])
    assert one["difference"] == pytest.approx(paired["difference"])
    # other random draws, the same distribution: the intervals agree to a few points
    assert one["low"] == pytest.approx(paired["low"], abs=0.04) and one["high"] == pytest.approx(paired["high"], abs=0.04)
    same = stratified_bootstrap([(a, a), (b, b)])
    assert same["difference"] == 0 and same["p"] == 1.0


def test_stratified_scores_of_other_shapes_are_refused():
    with pytest.raises(ValueError, match="one non-zero length"):
        stratified_bootstrap([(np.ones(3), np.ones(4))])
    with pytest.raises(ValueError, match="one non-zero length"):
        stratified_bootstrap([])


def probe_record(relation, label, protocol, ranks, train_seed=None, method=None):
    ranks = np.asarray(ranks)
    return {"run_id": f"{relation}-{label}-{protocol}".lower().replace(" ", "_"), "task": "lama", "experiment": "lama",
            "relation": relation, "label": label, "method": method or label.split()[0], "protocol": protocol,
            "template": "[X] is [Y] .", "train_seed": train_seed, "data_seed": 0, "model": "m",
            "verbalizer": "candidates", "k": None, "n_test": len(ranks), "seconds": 1.0, "dev": None,
            "test": {"p_at_1": float((ranks <= 1).mean()), "p_at_10": float((ranks <= 10).mean()),
                     "mrr": float((1.0 / ranks).mean())}}


def write_probes(folder, runs, subjects=None):
    store = ResultsStore(folder)
    for relation, label, ranks, seed in runs:
        record = probe_record(relation, label, "candidates", ranks, seed)
        store.append(record)
        saved = {"test_ranks": list(ranks)}
        if subjects is not None:
            saved["test_subjects"] = subjects.get((relation, label), [f"s{i}" for i in range(len(ranks))])
        store.save_predictions(record["run_id"], saved)
    return store


MANUAL_A = [1] * 4 + [2] * 16  # P@1 20%
SOFT_A = [1] * 16 + [3] * 4  # P@1 80%: +60 points, first 4 facts right in both
MANUAL_B = [1] * 10 + [5] * 10  # 50%
SOFT_B = [1] * 10 + [5] * 10  # 50%: the same ranks


def test_each_learned_prompt_is_paired_with_the_manual_template_per_relation_and_macro_averaged(tmp_path):
    store = write_probes(tmp_path, [("P1", "manual zero-shot", MANUAL_A, None), ("P1", "soft", SOFT_A, 1),
                                    ("P2", "manual zero-shot", MANUAL_B, None), ("P2", "soft", SOFT_B, 1)])
    text = "\n".join(paired_probe_tables(store, store.records()))
    rows = {line.split(" | ")[0].strip("| *").split("*")[0]: line for line in text.splitlines() if "| soft |" in line}
    assert "| 20 | 20.0 | 80.0 | +60.0 (" in rows["P1"] and rows["P1"].endswith("| higher |")
    assert "| 20 | 50.0 | 50.0 | +0.0 (+0.0 to +0.0) | 1.000 | not distinguishable |" in rows["P2"]
    macro = rows["macro-average"]  # each relation counts once: (60 + 0) / 2
    assert "| 40 | 35.0 | 65.0 | +30.0 (" in macro and macro.endswith("| higher |")
    assert "**soft** is above the manual template with p < 0.05 on 1 of 2 relations (P1); not distinguishable on P2." in text
    mrr = "\n".join(paired_probe_tables(store, store.records(), "mrr"))
    # P1's MRR: manual 0.2 + 0.8 / 2 = 0.6, soft 0.8 + 0.2 / 3 = 0.8667
    assert "| P1 | soft | 20 | 60.0 | 86.7 | +26.7 (" in mrr


def test_runs_on_other_facts_or_without_saved_ranks_are_not_paired(tmp_path):
    store = write_probes(tmp_path, [("P1", "manual zero-shot", MANUAL_A, None), ("P1", "soft", SOFT_A, 1)],
                         subjects={("P1", "soft"): [f"other{i}" for i in range(20)]})
    text = "\n".join(paired_probe_tables(store, store.records()))
    assert "| P1 | soft | – | – | – | – | – | not paired (other test facts) |" in text
    assert "not paired: P1 (other test facts)" in text
    lonely = write_probes(tmp_path / "b", [("P1", "manual zero-shot", MANUAL_A, None), ("P1", "soft", SOFT_A, 1)])
    (tmp_path / "b" / "predictions" / f"{lonely.records()[1]['run_id']}.json").unlink()
    assert "not paired (saved ranks missing)" in "\n".join(paired_probe_tables(lonely, lonely.records()))
    # without a manual zero-shot run on the relation there is nothing to pair with: no section
    alone = write_probes(tmp_path / "c", [("P1", "soft", SOFT_A, 1)])
    assert paired_probe_tables(alone, alone.records()) == []


def test_the_report_shows_the_macro_interval_the_paired_tests_and_the_plot(tmp_path):
    write_probes(tmp_path, [("P1", "manual zero-shot", MANUAL_A, None), ("P1", "soft", SOFT_A, 1),
                            ("P2", "manual zero-shot", MANUAL_B, None), ("P2", "soft", SOFT_B, 1)])
    out = write_report(tmp_path)
    report = out["report"].read_text()
    intervals = report.split("### Macro-average P@1 with its interval")[1].split("###")[0]
    soft = next(line for line in intervals.splitlines() if line.startswith("| soft (candidates)"))
    low, high = (float(x) for x in soft.split(" | ")[-1].strip(" |").split("–"))
    assert "| 2 | 40 | 65.0 |" in soft and low < 65.0 < high
    assert "#### candidates: P@1, learned prompt − manual template" in report
    assert "#### candidates: MRR (x100), learned prompt − manual template" in report
    assert out["lama_p_at_1"].exists() and "![lama_p_at_1](plots/lama_p_at_1.png)" in report
    # without the saved ranks (a report of records alone) the tables stay and the tests go
    lines = probe_report(ResultsStore(tmp_path).records())
    assert "### P@1" in lines and not any("learned prompt − manual" in line for line in lines)
