"""Ways a method entry used to run silently wrong, as a user meets them through `prompting run` on small
files: demonstrations asking for more examples per class than a split holds, a manual prompt on a
template with learned slots, label names that YAML reads as booleans, and an ensemble whose members'
scores are gone."""

import json
import shutil

import pytest

from prompting.cli import main
from prompting.experiment.results import ResultsStore
from test_reliability import one_error_line, with_model, write_task


def test_demonstrations_asking_more_per_class_than_a_split_holds_are_refused_before_the_model(tmp_path, capsys):
    config = write_task(tmp_path, extra_methods="  - {name: icl, k: 50}\n")  # K = 2 per class
    config.write_text("model: ./no-such-model-is-loaded\n" + config.read_text())
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out"), "-q"]) == 2
    err = one_error_line(capsys, "run")
    assert "k=50 demonstrations per class, but a training split holds K = 2 per class; give k <= 2" in err


def test_demonstrations_on_a_template_method_are_checked_the_same_way(tmp_path, capsys):
    config = write_task(tmp_path, extra_methods="  - {name: manual, train: false, label: demos, "
                                                "demonstrations: {k: 3}}\n")
    config.write_text("model: ./no-such-model-is-loaded\n" + config.read_text())
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out"), "-q"]) == 2
    assert "demonstrations.k=3 demonstrations per class" in one_error_line(capsys, "run")


def test_a_manual_prompt_on_a_template_with_learned_slots_is_refused(tmp_path, capsys):
    config = write_task(tmp_path)
    config.write_text(config.read_text().replace('patterns: ["{text_a} It was {mask}."]',
                                                 'patterns: ["{soft:2} {text_a} It was {mask}."]')
                      + "  - {name: soft, max_steps: 1}\n")
    config.write_text("model: ./no-such-model-is-loaded\n" + config.read_text())
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out"), "-q"]) == 2
    err = one_error_line(capsys, "run")
    assert "method 'manual zero-shot'" in err and "{soft} slots, which method 'manual' does not learn" in err


def test_label_names_that_yaml_reads_as_booleans_keep_their_words(tmp_path, tiny_llama_dir):
    folder = tmp_path / "task"
    folder.mkdir()
    rows = [{"text": f"the film was {w}.", "label": flag} for w, flag in
            [("great", True), ("bad", False), ("good", True), ("dull", False)] * 3]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    config = folder / "exp.yaml"
    config.write_text(f"""model: {tiny_llama_dir}
device: cpu
task: {{name: flags, train: train.jsonl, test: test.jsonl, fields: {{text_a: text}}, labels: {{false: no, true: yes}}}}
fewshot: {{k: 2, data_seeds: [13]}}
templates: {{patterns: ["{{text_a}} It was {{mask}}."], verbalizers: [{{no: [bad], yes: [good]}}]}}
methods:
  - {{name: manual, train: false}}
""")
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out"), "-q"]) == 0
    record, = ResultsStore(tmp_path / "out").records()
    assert record["verbalizer"] == {"no": ["bad"], "yes": ["good"]}
    assert ResultsStore(tmp_path / "out").load_predictions(record["run_id"])["labels"] == ["no", "yes"]


def test_an_ensemble_whose_members_scores_are_gone_says_so(tmp_path, tiny_llama_dir, capsys):
    config = with_model(write_task(tmp_path, patterns=2), tiny_llama_dir)
    out = tmp_path / "out"
    assert main(["run", str(config), "--output-dir", str(out), "-q"]) == 0
    shutil.rmtree(out / "predictions")
    config.write_text(config.read_text().replace("{name: manual, train: false}",
                                                 "{name: manual, train: false, ensemble: mean}"))
    capsys.readouterr()
    assert main(["run", str(config), "--output-dir", str(out), "-q"]) == 0
    err = capsys.readouterr().err
    assert "has no mean ensemble of data seed 13: the label scores of 2 of its 2 runs are missing" in err
    assert not any(r.get("ensemble_of") for r in ResultsStore(out).records())


@pytest.mark.parametrize("device", ["gpu0", "cuda:x"])
def test_a_device_that_is_not_a_device_is_refused_before_the_model(tmp_path, capsys, device):
    config = write_task(tmp_path)
    config.write_text(config.read_text().replace("device: cpu", f"device: {device}"))
    config.write_text("model: ./no-such-model-is-loaded\n" + config.read_text())
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out"), "-q"]) == 2
    assert f"device: {device!r} is not valid" in one_error_line(capsys, "run")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="CUDA is here")
@pytest.mark.parametrize("options", [["--device", "cuda"], ["--workers", "2", "--devices", "cuda:0,cuda:1"]])
def test_a_cuda_device_without_cuda_is_refused_before_any_model_loads(tmp_path, capsys, tiny_llama_dir, options):
    config = with_model(write_task(tmp_path), tiny_llama_dir)
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out"), "-q", *options]) == 2
    err = one_error_line(capsys, "run")
    assert "is not available: this torch is a build without CUDA; use device: cpu (or auto)" in err
    assert not (tmp_path / "out" / "results.jsonl").exists() and not (tmp_path / "out" / ".workers").exists()
