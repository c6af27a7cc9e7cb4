"""Calibration: the math against hand-computed numbers, and the harness's calibrated records (saved
beside the raw scores, their own rows, ensembles of calibrated runs) on a tiny *randomly initialised*
causal LM (see conftest)."""

import math

import numpy as np
import pytest
import torch

from conftest import NEGATIVE, POSITIVE, SUBJECTS
from prompting.training.calibration import calibrate, contextual, domain
from prompting.config.experiment import ConfigError, parse_config
from prompting.core.data import Example, Task
from prompting.experiment.harness import Experiment, MethodSpec, Protocol
from prompting.experiment.derived import calibrated_id
from prompting.experiment.results import ResultsStore
from prompting.reporting.aggregate import aggregate

PATTERNS = ["{text_a} It was {mask}.", "Review: {text_a} Sentiment: {mask}"]
VERBALIZER = {"0": ["bad"], "1": ["good"]}
TRAIN = [Example({"text_a": f"{s} was {adjective}."}, label)
         for s in SUBJECTS for adjective, label in zip(POSITIVE[:3] + NEGATIVE[:3], "111000")]
TEST = [Example({"text_a": f"{s} is {adjective}."}, label)
        for s in SUBJECTS[:5] for adjective, label in ((POSITIVE[5], "1"), (NEGATIVE[5], "0"))]


def test_contextual_calibration_by_hand():
    # content-free probabilities (0.9, 0.1) and (0.7, 0.3): p_cf = (0.8, 0.2). An input at (0.6, 0.4):
    # (0.6 / 0.8, 0.4 / 0.2) = (0.75, 2.0), renormalised (3/11, 8/11): the label flips to the second
    out = contextual(np.log([[0.6, 0.4]]), np.log([[0.9, 0.1], [0.7, 0.3]]))
    assert np.allclose(np.exp(out), [[3 / 11, 8 / 11]])
    # unnormalised log-scores (label words' log-probabilities) give the same: only the ratios count
    assert np.allclose(contextual(np.log([[0.06, 0.04]]), np.log([[0.09, 0.01], [0.35, 0.15]])), out)


def test_domain_calibration_by_hand():
    # log P(word | input) - log P(word | template without input)
    out = domain(np.log([[0.2, 0.1], [0.05, 0.3]]), np.log([0.4, 0.05]))
    assert np.allclose(out, [[math.log(0.5), math.log(2.0)], [math.log(0.125), math.log(6.0)]])
    saved = {"inputs": ["N/A", "", "[MASK]"], "scores": np.log([[0.9, 0.1], [0.4, 0.05], [0.7, 0.3]]).tolist()}
    assert np.allclose(calibrate("domain", np.log([[0.2, 0.1]]), saved), [[math.log(0.5), math.log(2.0)]])
    assert np.allclose(calibrate("contextual", [[0.0, 0.0]], saved), contextual([[0.0, 0.0]], saved["scores"]))
    with pytest.raises(ValueError, match="calibration='platt' is not valid; choose one of none, contextual, domain"):
        calibrate("platt", [[0.0, 0.0]], saved)


def test_config_takes_one_calibration_or_a_list():
    base = {"task": "sst2", "templates": {"patterns": PATTERNS[:1], "verbalizers": [VERBALIZER]}}
    config = parse_config({**base, "methods": [{"name": "manual", "train": False, "calibration": [none, "domain"]}
                                               for none in ["none"]]})
    assert config.methods[0].calibration == ("domain",)
    config = parse_config({**base, "methods": [{"name": "manual", "calibration": "contextual"}]})
    assert config.methods[0].calibration == ("contextual",)
    with pytest.raises(ConfigError, match=r"methods\[0\]: calibration='pmi' is not valid; choose one of none, "
                                          "contextual, domain"):
        parse_config({**base, "methods": [{"name": "manual", "calibration": "pmi"}]})


@pytest.fixture(scope="module")
def calibrated_experiment(tiny_causal_lm, tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibrated")
    task = Task("toy", ("0", "1"), ("text_a",), list(TRAIN), list(TEST))
    specs = [MethodSpec("manual", train=False, calibration=["contextual", "domain"], ensemble="mean"),
             MethodSpec("icl", params={"k": 1}, calibration="contextual")]
    experiment = Experiment(tiny_causal_lm, task, specs, [(p, VERBALIZER) for p in PATTERNS],
                            Protocol(k=4, data_seeds=[1, 2], train_seeds=[1]), output_dir=folder)
    return experiment.run(progress=False), ResultsStore(folder)


def test_calibrated_scores_are_saved_beside_the_raw_ones(calibrated_experiment):
    records, store = calibrated_experiment
    raw = [r for r in records if not r.get("calibration") and not r.get("ensemble_of")]
    assert len(raw) == 2 * 2 * 2  # zero-shot and icl: 2 patterns x 2 data seeds
    for record in raw:
        saved = store.load_predictions(record["run_id"])
        free = saved["content_free"]
        assert free["inputs"] == ["N/A", "", "<mask>"] and np.asarray(free["scores"]).shape == (3, 2)
        hows = ["contextual", "domain"] if record["method"] == "manual" else ["contextual"]
        for how in hows:
            rid = calibrated_id(record["run_id"], how)
            calibrated = store.load_predictions(rid)
            assert np.allclose(calibrated["test"], calibrate(how, saved["test"], free))
            assert calibrated["test_gold"] == saved["test_gold"]
            row = store.record(rid)
            assert row["label"] == f"{record['label']} + {how} calibration" and row["calibrated_from"] == record["run_id"]
            assert calibrated["labels"] == saved["labels"] == ["0", "1"]  # gold by name, in the scores' order
            gold = np.asarray([saved["labels"].index(g) for g in saved["test_gold"]])
            assert row["test"]["accuracy"] == pytest.approx((np.argmax(calibrated["test"], 1) == gold).mean())


def test_ensembles_of_calibrated_scores(calibrated_experiment):
    records, store = calibrated_experiment
    ensembles = [r for r in records if r.get("ensemble_of")]
    assert sorted({r["label"] for r in ensembles}) == [
        "manual zero-shot ensemble (mean)", "manual zero-shot ensemble (mean) + contextual calibration",
        "manual zero-shot ensemble (mean) + domain calibration"]
    for ensemble in ensembles:
        members = [store.load_predictions(i)["test"] for i in ensemble["ensemble_of"]]
        assert all(store.record(i).get("calibration") == ensemble.get("calibration") for i in ensemble["ensemble_of"])
        expected = torch.stack([torch.tensor(m).softmax(-1) for m in members]).mean(0).log()
        assert torch.allclose(torch.tensor(store.load_predictions(ensemble["run_id"])["test"]), expected.float(),
                              atol=1e-5)
    rows = aggregate(records)  # every calibration its own row: 2 patterns x 3 zero-shot, 3 ensembles, 2 x 2 icl
    assert len(rows) == 13 and len({(r["label"], r["template"]) for r in rows}) == 13


def test_calibration_added_later_needs_no_new_run(tiny_causal_lm, tmp_path):
    task = Task("toy", ("0", "1"), ("text_a",), list(TRAIN), list(TEST))
    prompts = [(PATTERNS[0], VERBALIZER)]
    first = Experiment(tiny_causal_lm, task, [MethodSpec("manual", train=False)], prompts,
                       Protocol(k=4, data_seeds=[1], train_seeds=[1]), output_dir=tmp_path).run(progress=False)
    store = ResultsStore(tmp_path)
    saved = store.load_predictions(first[0]["run_id"])
    free = saved.pop("content_free")
    names = saved.pop("labels")  # as recorded by a version without content-free scores and label order,
    for split in ("dev", "test"):  # whose gold labels were column indices
        saved[f"{split}_gold"] = [names.index(g) for g in saved[f"{split}_gold"]]
    store.save_predictions(first[0]["run_id"], saved)
    again = Experiment(tiny_causal_lm, task, [MethodSpec("manual", train=False, calibration="contextual")], prompts,
                       Protocol(k=4, data_seeds=[1], train_seeds=[1]), output_dir=tmp_path)
    again.executor.execute = lambda *a, **k: pytest.fail("a recorded run ran again")
    records = again.run(progress=False)
    assert [r["run_id"] for r in records if not r.get("calibration")] == [first[0]["run_id"]]
    assert [r["label"] for r in records if r.get("calibration")] == ["manual zero-shot + contextual calibration"]
    # the zero-shot prompt learned nothing: its content-free scores are computed then, as they were
    assert np.allclose(store.load_predictions(first[0]["run_id"])["content_free"]["scores"], free["scores"], atol=1e-5)
    calibrated = next(r for r in records if r.get("calibration"))
    out = store.load_predictions(calibrated["run_id"])
    assert out["labels"] == ["0", "1"] and out["test_gold"] == [e.label for e in TEST]
    predicted = [out["labels"][i] for i in np.argmax(out["test"], 1)]
    assert calibrated["test"]["accuracy"] == pytest.approx(np.mean([p == e.label for p, e in zip(predicted, TEST)]))
    assert sum(c["predicted"] for c in out["test_per_class"].values()) == len(TEST)
