"""The LM in bfloat16 on CPU: scores within a stated tolerance of float32, learned prompt parameters
and their optimizer state in float32, the dtype part of the run id; device_map: auto and the config
keys, with their errors."""

import re

import pytest
import torch

from conftest import NEGATIVE, POSITIVE, SUBJECTS
from prompting.lm.model import LanguageModel
from prompting.config.experiment import ConfigError, parse_config
from prompting.core.data import Example, Task
from prompting.experiment.harness import Experiment, MethodSpec, Protocol

# bfloat16 keeps 8 bits of mantissa (relative rounding 2^-9 per operation). On the tiny random Llama,
# whose label log-probabilities reach about -13, scoring a prompt moves them by at most SCORING nats
# from float32 (measured: 0.17); a trained prompt also took its 2 steps along bfloat16 gradients, so
# its scores may move by up to TRAINED nats (measured: at most 0.49, P-tuning). Predictions agree on
# at least AGREEMENT of the test examples (measured: all).
SCORING, TRAINED, AGREEMENT = 0.25, 1.0, 0.9
METHODS = [MethodSpec("manual", train=False),
           MethodSpec("soft", params={"prompt_tokens": 2}, train_config={"max_steps": 2, "batch_size": 2}),
           MethodSpec("ptuning", params={"encoder": "mlp"}, template="{soft:2} {text_a} It was {mask}.",
                      train_config={"max_steps": 2, "batch_size": 2}),
           MethodSpec("prefix", params={"prefix_length": 2}, train_config={"max_steps": 2, "batch_size": 2}),
           MethodSpec("autoprompt", template="{text_a} {trigger:1} {mask}.",
                      params={"num_candidates": 4, "iterations": 1}, train_config={"max_steps": 1, "batch_size": 2})]


def toy_task() -> Task:
    examples = [Example({"text_a": f"{s} was {w}."}, label) for s in SUBJECTS[:8]
                for w, label in ((POSITIVE[0], "1"), (NEGATIVE[0], "0"), (POSITIVE[1], "1"), (NEGATIVE[1], "0"))]
    return Task("toy", ("0", "1"), ("text_a",), examples, examples[:12])


def run(lm, out, methods=METHODS):
    experiment = Experiment(lm, toy_task(), methods, [("{text_a} It was {mask}.", {"0": ["bad"], "1": ["good"]})],
                            Protocol(k=2, data_seeds=(13,)), output_dir=out)
    records = experiment.run(progress=False)
    return {r["label"]: (r, torch.tensor(experiment.store.load_predictions(r["run_id"])["test"])) for r in records}


@pytest.fixture(scope="module")
def both(tiny_llama_dir, tmp_path_factory):
    return {dtype: run(LanguageModel.load(str(tiny_llama_dir), device="cpu", dtype=dtype),
                       tmp_path_factory.mktemp(dtype)) for dtype in ("float32", "bfloat16")}


def test_bfloat16_scores_are_within_tolerance_of_float32_for_every_method(both):
    full, half = both["float32"], both["bfloat16"]
    assert sorted(full) == sorted(half) == sorted(m.label for m in METHODS)
    for label, (record, scores) in full.items():
        low_record, low_scores = half[label]
        difference = (low_scores - scores).abs().max().item()
        assert difference <= (TRAINED if record["train"] else SCORING), (label, difference)
        assert (low_scores.argmax(1) == scores.argmax(1)).float().mean().item() >= AGREEMENT, label
        assert low_record["run_id"] != record["run_id"] and low_record["dtype"] == "bfloat16"
        assert "dtype" not in record  # float32 runs keep the ids they always had


def test_learned_prompt_parameters_and_optimizer_state_stay_float32(tiny_llama_dir, tmp_path, monkeypatch):
    lm = LanguageModel.load(str(tiny_llama_dir), device="cpu", dtype="bfloat16")
    assert lm.dtype == torch.bfloat16 and lm.model.lm_head.weight.dtype == torch.bfloat16
    optimizers = []

    class Recorded(torch.optim.AdamW):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            optimizers.append(self)

    monkeypatch.setattr(torch.optim, "AdamW", Recorded)
    run(lm, tmp_path, METHODS[1:4])
    assert len(optimizers) == 3
    for optimizer in optimizers:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        assert params and all(p.dtype == torch.float32 for p in params)
        states = [t for p in params for t in optimizer.state[p].values() if t.dim() > 0]
        assert states and all(t.dtype == torch.float32 for t in states)


def test_device_map_auto_loads_through_accelerate_and_scores_as_without(tiny_llama_dir, tmp_path):
    pytest.importorskip("accelerate")
    placed = LanguageModel.load(str(tiny_llama_dir), dtype="float32", device_map="auto")
    # accelerate put it on the visible devices (here the CPU alone); inputs go where the model starts
    assert placed.device == placed.embeddings.weight.device
    plain = LanguageModel.load(str(tiny_llama_dir), device="cpu")
    ours = run(placed, tmp_path / "placed", METHODS[:1])["manual zero-shot"][1]
    theirs = run(plain, tmp_path / "plain", METHODS[:1])["manual zero-shot"][1]
    if placed.device.type == "cpu":
        assert torch.allclose(ours, theirs, atol=1e-5)


CONFIG = {"task": {"name": "toy", "train": "t.tsv", "test": "t.tsv", "labels": [0, 1]},
          "templates": {"patterns": ["{text_a} It was {mask}."], "verbalizers": [{0: ["bad"], 1: ["good"]}]},
          "methods": [{"name": "soft"}]}


def test_config_dtype_and_device_map_are_typed_and_checked(monkeypatch):
    cfg = parse_config({**CONFIG, "dtype": "bfloat16", "device_map": "auto"})
    assert (cfg.dtype, cfg.device_map, cfg.device) == ("bfloat16", "auto", "auto")
    assert parse_config(CONFIG).dtype == "float32" and parse_config(CONFIG).device_map is None
    bad = [({"dtype": "fp16"}, "dtype: 'fp16' is not valid; choose one of float32, bfloat16, float16"),
           ({"device_map": "balanced"}, "device_map: 'balanced' is not valid; use auto"),
           ({"device_map": "auto", "device": "cuda:1"}, "drop device: 'cuda:1'"),
           ({"dtype": "bfloat16", "methods": [{"name": "manual", "train": True}]},
            "methods[0] (PET) trains the LM's own weights (tune_lm)")]
    for extra, message in bad:
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_config({**CONFIG, **extra})
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "accelerate" else real(name, *a))
    with pytest.raises(ConfigError, match="device_map: auto needs the accelerate package"):
        parse_config({**CONFIG, "device_map": "auto"})
