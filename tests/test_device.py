"""What needs an accelerator: the LM on the device in bfloat16 and float16 (scores within the stated
tolerance of float32 on the CPU, learned prompts in float32, peak memory recorded), device_map: auto,
and `prompting run` workers with one device each. The device is ``PROMPTING_TEST_DEVICE`` (what
benchmarks/gpu_check.py sets; ``cpu`` checks the tests themselves), else cuda where torch sees one;
without either these tests skip."""

import os
import subprocess
import sys

import pytest
import torch

from prompting.lm.model import LanguageModel
from test_precision import AGREEMENT, METHODS, SCORING, TRAINED, run
from test_reliability import ENV, with_model, write_task

DEVICE = os.environ.get("PROMPTING_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else None)
on_device = pytest.mark.skipif(DEVICE is None, reason="no accelerator (set PROMPTING_TEST_DEVICE to run these)")


@pytest.fixture(scope="module")
def reference(tiny_llama_dir, tmp_path_factory):
    """Every method's test scores with the LM in float32 on the CPU."""
    return run(LanguageModel.load(str(tiny_llama_dir), device="cpu"), tmp_path_factory.mktemp("cpu"))


@on_device
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_on_the_device_scores_within_tolerance_of_float32(reference, tiny_llama_dir, tmp_path, dtype):
    if dtype == "float16" and not DEVICE.startswith("cuda"):
        pytest.skip("float16 is a GPU format; on a CPU its kernels are emulated and slow")
    lm = LanguageModel.load(str(tiny_llama_dir), device=DEVICE, dtype=dtype)
    assert lm.dtype == getattr(torch, dtype) and lm.device.type == torch.device(DEVICE).type
    ours = run(lm, tmp_path)
    for label, (record, scores) in reference.items():
        low_record, low_scores = ours[label]
        difference = (low_scores - scores).abs().max().item()
        assert difference <= (TRAINED if record["train"] else SCORING), (label, dtype, difference)
        assert (low_scores.argmax(1) == scores.argmax(1)).float().mean().item() >= AGREEMENT, label
        assert low_record["peak_memory_mb"] > 0
    # the learned prompts are float32 on the device
    from prompting.methods import build_method
    from prompting.core.verbalizer import Verbalizer

    for spec in METHODS[1:4]:
        method = build_method(spec.name, lm, spec.template or "{text_a} It was {mask}.",
                              Verbalizer({"0": ["bad"], "1": ["good"]}), labels=("0", "1"), **spec.params)
        params = list(method.parameters())
        assert params and all(p.dtype == torch.float32 and p.device.type == lm.device.type for p in params)


@on_device
def test_device_map_auto_places_the_model_and_scores_as_one_device(reference, tiny_llama_dir, tmp_path):
    pytest.importorskip("accelerate")
    lm = LanguageModel.load(str(tiny_llama_dir), dtype="float32", device_map="auto")
    scores = run(lm, tmp_path, METHODS[:1])["manual zero-shot"][1]
    assert torch.allclose(scores, reference["manual zero-shot"][1], atol=1e-3)


@on_device
def test_two_workers_one_device_each_finish_the_config(tiny_llama_dir, tmp_path):
    config = with_model(write_task(tmp_path, data_seeds=(13, 21), patterns=2), tiny_llama_dir)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "prompting.cli", "run", str(config), "--output-dir", str(out),
                           "--workers", "2", "--devices", f"{DEVICE},{DEVICE}", "-q"], env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"on {DEVICE}" in done.stdout
    assert len((out / "results.jsonl").read_text().splitlines()) == 4


def test_the_gpu_check_script_runs_on_the_cpu_and_writes_its_tables(tiny_llama_dir, tmp_path):
    """benchmarks/gpu_check.py --device cpu on a tiny config: the main job (split into its bfloat16
    and float32 documents) and the throughput table of every method, written as Markdown."""
    trained = "  - {name: manual, train: true, max_steps: 1, batch_size: 2}\n" \
              "  - {name: soft, prompt_tokens: 2, max_steps: 1, batch_size: 2}\n"
    config = with_model(write_task(tmp_path, extra_methods=trained), tiny_llama_dir)
    report = tmp_path / "check.md"
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "gpu_check.py")
    done = subprocess.run([sys.executable, script, "--device", "cpu", "--skip", "tests", "--config", str(config),
                           "--output-dir", str(tmp_path / "out"), "--score-examples", "8", "--train-steps", "2",
                           "--out", str(report)], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    text = report.read_text()
    assert "CPU only" in text and "exit 0" in text and "## Device tests" not in text
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in text.splitlines()
            if line.startswith("| ") and " | bfloat16 | " in line or " | float32 | " in line}
    assert rows["manual zero-shot"][1] == "bfloat16" and rows["soft"][1] == "bfloat16" and rows["PET"][1] == "float32"
    assert float(rows["soft"][2].replace(",", "")) > 0 and float(rows["PET"][4].replace(",", "")) > 0
    # the main job recorded every run: the bfloat16 ones under their own ids
    import json

    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert sorted((r["label"], r.get("dtype", "float32")) for r in records) == \
        [("PET", "float32"), ("manual zero-shot", "bfloat16"), ("soft", "bfloat16")]
