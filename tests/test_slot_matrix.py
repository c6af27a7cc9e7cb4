"""Every method at every learned-slot position, with and without calibration and demonstrations.

The tiny causal LM here has a tokenizer that adds no beginning-of-sequence token (as SmolLM2's):
a template whose learned slot comes right after the input then has, for an empty input (the
content-free inputs of calibration), no token at all before the slot. Every cell runs through the
harness, and where a method computes the text before its slot once (a causal LM, the LM frozen),
its scores agree with the plain path (every token run) to 1e-5.
"""

import itertools

import pytest
import torch

from conftest import build_bpe_tokenizer, build_tiny_lm
from prompting.training.calibration import content_free_scores
from prompting.core.data import Example, Task
from prompting.experiment.harness import Experiment, MethodSpec, Protocol
from prompting.methods import build_method
from prompting.core.verbalizer import Verbalizer

pytestmark = pytest.mark.filterwarnings("ignore:template .* causal LM predicts:UserWarning")

VERBALIZER = {"0": ["bad"], "1": ["good"]}
TRAIN = [Example({"text_a": a, "text_b": b}, label) for a, b, label in [
    ("the film was great.", "yes.", "1"), ("the plot was dull.", "no.", "0"),
    ("a warm and funny story.", "it is.", "1"), ("nobody laughed.", "not at all.", "0"),
    ("the cast was brilliant.", "sure.", "1"), ("I fell asleep twice.", "no.", "0"),
    ("the music was lovely.", "yes.", "1"), ("the script was weak.", "hardly.", "0")]]
TEST = TRAIN[:4]

# where the learned slot sits; {slot} becomes each method's own slot
POSITIONS = {
    "before the input": "{slot} {text_a} It was {mask}.",
    "right after the input": "{text_a} {slot} It was {mask}.",
    "after words": "{text_a} It was {slot} {mask}.",
    "between two inputs": "{text_a} {slot} {text_b} {mask}",
}
SLOTS = {"soft": "{soft:2}", "ptuning": "{soft:2}", "autoprompt": "{trigger:2}"}
PARAMS = {"soft": {"init": "vocab"}, "ptuning": {"hidden_size": 8}, "autoprompt": {"iterations": 1, "num_candidates": 2},
          "prefix": {"prefix_length": 2, "prefix_hidden_size": 8}, "manual": {}, "icl": {"k": 1}}
TRAIN_CONFIG = {"max_steps": 2, "batch_size": 4, "eval_every": 2}


@pytest.fixture(scope="module")
def no_bos_lm():
    tokenizer = build_bpe_tokenizer()
    tokenizer._tokenizer.post_processor = None  # no <s> ... </s>: the input's first token is its own
    assert tokenizer("hello")["input_ids"] == tokenizer("hello", add_special_tokens=False)["input_ids"]
    lm = build_tiny_lm("llama", tokenizer, seed=4)
    return lm


def template_for(method: str, position: str) -> str:
    """The template of ``method`` at ``position``; methods without a slot of their own (manual, PET,
    prefix-tuning, ICL) get the same words with nothing at the slot."""
    slot = SLOTS.get(method, "")
    return " ".join(POSITIONS[position].replace("{slot}", slot).split())


def spec_for(method: str, position: str, calibration: bool, demonstrations: bool) -> MethodSpec:
    """``pet`` is the manual prompt fine-tuned; ``manual`` and ``icl`` train nothing."""
    params = dict(PARAMS["manual" if method == "pet" else method])
    if demonstrations and method != "icl":
        params["demonstrations"] = {"k": 1}
    train = method not in ("manual", "icl")
    return MethodSpec("manual" if method == "pet" else method, train=train, template=template_for(method, position),
                      params=params, train_config=TRAIN_CONFIG if train else {},
                      calibration="contextual" if calibration else ())


CELLS = [(m, p, c, d) for m, p, c, d in itertools.product(
    ["manual", "pet", "soft", "ptuning", "prefix", "autoprompt", "icl"], POSITIONS, (False, True), (False, True))
    # ICL is demonstrations: it has no "without" cell
    if not (m == "icl" and not d)]


@pytest.mark.parametrize("method, position, calibration, demonstrations", CELLS,
                         ids=[f"{m}-{p.replace(' ', '_')}-{'cal' if c else 'nocal'}-{'demo' if d else 'nodemo'}"
                              for m, p, c, d in CELLS])
def test_every_method_runs_at_every_slot_position(no_bos_lm, tmp_path, method, position, calibration,
                                                  demonstrations):
    task = Task("toy", ("0", "1"), ("text_a", "text_b"), list(TRAIN), list(TEST))
    spec = spec_for(method, position, calibration, demonstrations)
    experiment = Experiment(no_bos_lm, task, [spec], [(spec.template, VERBALIZER)],
                            Protocol(k=2, data_seeds=(13,), train_seeds=(1,)), output_dir=tmp_path)
    records = experiment.run(progress=False)
    assert len(records) == (2 if calibration else 1)
    for record in records:
        assert 0.0 <= record["test"]["accuracy"] <= 1.0 and record["n_test"] == len(TEST)
    if calibration:
        assert any(r.get("calibration") == "contextual" for r in records)


@pytest.mark.parametrize("method", ["soft", "ptuning", "autoprompt"])
@pytest.mark.parametrize("position", ["right after the input", "after words", "between two inputs"])
@pytest.mark.parametrize("demonstrations", [False, True])
def test_cached_text_scores_equal_the_plain_path(no_bos_lm, method, position, demonstrations):
    """The content-free inputs (an empty input right before the slot included) and real inputs score
    the same whether the text before the slot is cached or run with the rest."""
    no_bos_lm.model.requires_grad_(False)
    params = dict(PARAMS[method])
    if demonstrations:
        params["demonstrations"] = {"k": 1}
    torch.manual_seed(0)
    built = build_method(method, no_bos_lm, template_for(method, position), Verbalizer(VERBALIZER),
                         labels=["0", "1"], **params)
    built.set_demonstration_pool(TRAIN, seed=1)
    assert built.frozen_text
    data = built.encode(TEST)
    fast = (built.predict_scores(data, 4, cached=False), content_free_scores(built)["scores"])
    cap, no_bos_lm.spans.cap = no_bos_lm.spans.cap, 0
    try:
        assert not built.frozen_text
        slow = (built.predict_scores(data, 4, cached=False), content_free_scores(built)["scores"])
    finally:
        no_bos_lm.spans.cap = cap
    torch.testing.assert_close(fast[0], slow[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(fast[1]), torch.tensor(slow[1]), atol=1e-5, rtol=0)
