"""Live training curves: `prompting run --tensorboard DIR` on the main job's config writes, for every run, a
folder named by its run id that TensorBoard's own reader reads back with the training loss, learning rate
and dev curve of each trained run and every run's final metrics and settings (HParams); the one training
loop reports to the logger it is given and to no one without one; MLflow gets the same through its client."""

from pathlib import Path

import pytest
import torch
import yaml

from prompting.cli import main
from prompting.config.experiment import ConfigError, parse_config
from prompting.core.data import Example
from prompting.core.settings import TrainConfig
from prompting.core.verbalizer import Verbalizer
from prompting.experiment.results import ResultsStore
from prompting.methods import build_method
from prompting.training.curves import StepLogger, reporting_to
from prompting.training.loop import train

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = [Example({"text_a": f"the movie was {w} ."}, label) for w, label in
            (("great", "1"), ("terrible", "0"), ("good", "1"), ("bad", "0"), ("fine", "1"), ("awful", "0"))]


class Steps(StepLogger):
    def __init__(self):
        self.steps, self.evaluations = [], []

    def step(self, step, loss, lrs):
        self.steps.append((step, loss, dict(lrs)))

    def evaluation(self, step, dev, dev_loss):
        self.evaluations.append((step, dict(dev), dev_loss))


def soft_method(lm):
    torch.manual_seed(0)
    return build_method("soft", lm, "{text_a} {soft:2} It was {mask}.", Verbalizer({"0": ["bad"], "1": ["good"]}),
                        labels=["0", "1"])


def test_the_training_loop_reports_each_step_and_evaluation_to_its_logger(tiny_causal_lm):
    method = soft_method(tiny_causal_lm)
    config = TrainConfig(lr=0.1, max_steps=4, batch_size=2, eval_every=2, warmup_ratio=0.5)
    watched = Steps()
    result = train(method, method.encode(EXAMPLES[:4]), method.encode(EXAMPLES[4:]), config, progress=False,
                   logger=watched)
    assert [s for s, _, _ in watched.steps] == [1, 2, 3, 4]
    assert [loss for _, loss, _ in watched.steps] == [h["loss"] for h in result.history]
    # warm-up over 2 steps, then linear decay: the rate each step trained with
    assert [lrs["soft"] for _, _, lrs in watched.steps] == pytest.approx([0.05, 0.1, 0.1, 0.05])
    assert [(s, d) for s, d, _ in watched.evaluations] == [(h["step"], h["dev"]) for h in result.history if "dev" in h]
    assert [s for s, _, _ in watched.evaluations] == [2, 4]
    # set around the call (as the executor does), the same logger hears the same steps; the result is the same
    again, method = Steps(), soft_method(tiny_causal_lm)
    with reporting_to(again):
        same = train(method, method.encode(EXAMPLES[:4]), method.encode(EXAMPLES[4:]), config, progress=False)
    assert again.steps == watched.steps and same.history == result.history


def quickstart_on(tmp_path: Path, model: Path, **changes) -> Path:
    """The main job's config on another model, with a smaller protocol (one split, K = 4)."""
    config = yaml.safe_load((ROOT / "experiments" / "quickstart.yaml").read_text())
    config.update(model=str(model), device="cpu", fewshot={"k": 4, "data_seeds": [13], "test_limit": 8}, **changes)
    path = tmp_path / "quickstart.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def read_runs(directory: Path) -> dict:
    """Every run folder read back by TensorBoard's own reader: its scalars and HParams settings."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    runs = {}
    for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
        events = EventAccumulator(str(folder)).Reload()
        scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
        start = HParamsPluginData.FromString(events.PluginTagToContent("hparams")["_hparams_/session_start_info"])
        settings = {k: v.string_value or v.number_value for k, v in start.session_start_info.hparams.items()}
        runs[folder.name] = {"scalars": scalars, "settings": settings}
    return runs


def test_run_with_tensorboard_writes_every_runs_curves_that_tensorboard_reads_back(tmp_path, tiny_llama_dir):
    pytest.importorskip("tensorboard")
    config, out, curves = quickstart_on(tmp_path, tiny_llama_dir), tmp_path / "out", tmp_path / "tb"
    assert main(["run", str(config), "--output-dir", str(out), "-q", "--no-summary", "--tensorboard", str(curves)]) == 0
    records = {r["run_id"]: r for r in ResultsStore(out).records() if not r.get("calibration")}
    runs = read_runs(curves)
    assert set(runs) == set(records) and len(runs) == 7  # two zero-shot prompts, PET, soft, P-tuning, prefix, AutoPrompt
    for run_id, run in runs.items():
        record, scalars = records[run_id], run["scalars"]
        assert run["settings"]["label"] == record["label"] and run["settings"]["template"] == record["template"]
        assert scalars["test/accuracy"] == [(record["steps"], pytest.approx(record["test"]["accuracy"]))]
        if not record["train"]:
            assert "train/loss" not in scalars
            continue
        assert run["settings"].get("train_config_max_steps") == record["train_config"].get("max_steps")
        assert [s for s, _ in scalars["train/loss"]] == list(range(1, record["steps"] + 1))
        assert [(s, pytest.approx(v)) for s, v in scalars["dev/accuracy"]] == \
            [(s, dev) for s, dev, _ in record["dev_curve"]]
        if record["method"] != "autoprompt":  # a search has no learning rate
            assert any(tag.startswith("train/lr") for tag in scalars)
    ptuning = next(runs[i]["scalars"] for i, r in records.items() if r["method"] == "ptuning")
    assert {"train/lr/ptuning", "train/lr/ptuning.inputs"} <= set(ptuning)  # its two rates, each its own curve
    # run again: every run is recorded, nothing runs and nothing is written twice
    assert main(["run", str(config), "--output-dir", str(out), "-q", "--no-summary", "--tensorboard", str(curves)]) == 0
    assert read_runs(curves) == runs


def test_the_config_key_and_a_missing_package_are_checked_before_the_model_loads(tmp_path, monkeypatch, capsys):
    config = quickstart_on(tmp_path, tmp_path / "no-such-model", tensorboard=str(tmp_path / "tb"))
    real = __import__("importlib").util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--tensorboard (tensorboard:) needs the tensorboard package, which is not installed: pip install " \
           "tensorboard" in err and err.count("\n") == 1
    with pytest.raises(ConfigError, match="mlflow: 5 is not valid; give a tracking URI"):
        parse_config({"task": "mr", "methods": [{"name": "manual"}], "mlflow": 5})


def test_mlflow_gets_each_runs_curves_through_its_own_client(tmp_path, tiny_llama_dir):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    config = tmp_path / "exp.yaml"
    config.write_text(f"""name: curves
model: {tiny_llama_dir}
device: cpu
task: mr
fewshot: {{k: 4, data_seeds: [13], test_limit: 8}}
templates: {{file: mr, patterns: [0], verbalizers: [0]}}
methods: [{{name: soft, template: "Review: {{text_a}}{{soft:2}} Sentiment: {{mask}}", lr: 0.03, max_steps: 4, eval_every: 2}}]
""")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out"), "-q", "--no-summary", "--mlflow", uri]) == 0
    record = ResultsStore(tmp_path / "out").records()[0]
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("curves").experiment_id])
    assert run.info.run_name == record["run_id"] and run.info.status == "FINISHED"
    assert run.data.params["method"] == "soft" and run.data.params["train_config_max_steps"] == "4"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3, 4]
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "dev/accuracy")] == \
        [(s, pytest.approx(dev)) for s, dev, _ in record["dev_curve"]]
    assert run.data.metrics["test/accuracy"] == pytest.approx(record["test"]["accuracy"])
