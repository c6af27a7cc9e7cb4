"""benchmarks/learning_check.py: its configs, and the comparison that flags a drop (toy runs, tiny LM)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from prompting.config.experiment import load_config
from prompting.core.settings import MethodSpec, Protocol

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("learning_check", ROOT / "benchmarks" / "learning_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_check_is_a_config_of_one_method_on_the_fixed_test_sample(check):
    assert sorted(p.stem for p in check.CONFIGS.glob("*.yaml")) == sorted(check.CHECKS)
    for name in check.CHECKS:
        cfg = load_config(check.CONFIGS / f"{name}.yaml")
        assert cfg.name == name and len(cfg.methods) == 1
        assert (cfg.task["name"], cfg.protocol.k, list(cfg.protocol.data_seeds), list(cfg.protocol.train_seeds),
                cfg.protocol.test_limit) == ("sst2", 16, [13], [1], 500)
        assert cfg.methods[0].train_config == {}  # the library's training defaults


def _toy_run(check, folder: Path, name: str, lm) -> None:
    """A check's run as the script does it (its training timed into about.json), on a toy task."""
    from prompting.experiment.harness import Experiment
    from tests.test_harness import PATTERNS, VERBALIZER, toy_task

    spec = MethodSpec("soft", params={"init": "text"}, template='{soft:"Review:"} {text_a} {mask}',
                      train_config={"lr": 1e-3, "max_steps": 2, "batch_size": 4})
    experiment = Experiment(lm, toy_task(), [spec], [(PATTERNS[0], VERBALIZER)],
                            Protocol(k=4, data_seeds=(13,), train_seeds=(1,)), output_dir=folder, name=name)
    training = {}
    check._time_training(experiment.executor, training)
    experiment.run(progress=False)
    assert list(training) == ["13/1"] and training["13/1"] >= 0
    (folder / check.ABOUT).write_text(json.dumps({"threads": 1, "train_seconds": {name: training}}))


def test_the_same_run_twice_is_bit_identical_and_a_worse_one_is_flagged(check, tiny_causal_lm, tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)  # main() moves to the repository root; put the working folder back after
    committed, new = tmp_path / "committed", tmp_path / "new"
    _toy_run(check, committed, "soft-text", tiny_causal_lm)
    _toy_run(check, new, "soft-text", tiny_causal_lm)
    assert check.compare(committed, new, ["soft-text"]) == 0
    out = capsys.readouterr().out
    assert "bit-identical" in out and "no check dropped" in out and "+0.000" in out
    assert " run " not in out  # the training times compared, not the runs' whole times

    # every committed answer right, every new one wrong: the interval lies below 0
    for folder, right in ((committed, True), (new, False)):
        for path in (folder / "predictions").glob("*.json"):
            saved = json.loads(path.read_text())
            gold = [saved["labels"].index(g) for g in saved["test_gold"]]
            saved["test"] = [[1.0, 0.0] if (g == 0) == right else [0.0, 1.0] for g in gold]
            path.write_text(json.dumps(saved))
    assert check.compare(committed, new, ["soft-text"]) == 1
    out = capsys.readouterr().out
    assert "DROP" in out and "1 check(s) dropped: soft-text" in out
    assert check.main(["--no-run", "--output-dir", str(new), "--against", str(committed), "--checks", "soft-text"]) == 1
    # the other way round it is a gain, not a drop
    assert check.main(["--no-run", "--output-dir", str(committed), "--against", str(new), "--checks", "soft-text"]) == 0


def test_a_check_without_records_is_reported_not_compared(check, tiny_causal_lm, tmp_path, capsys):
    committed = tmp_path / "committed"
    _toy_run(check, committed, "soft-text", tiny_causal_lm)
    empty = tmp_path / "new"
    shutil.copytree(committed, empty)
    (empty / "results.jsonl").write_text("")
    assert check.compare(committed, empty, ["soft-text", "prefix-text"]) == 0
    out = capsys.readouterr().out
    assert "soft-text        no new record" in out and "prefix-text      no committed record" in out
    assert "not compared: soft-text, prefix-text" in out
