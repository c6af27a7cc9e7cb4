"""P-tuning on tiny *randomly initialised* LMs (see conftest): the prompt encoder fills the soft slots."""

import pytest
import torch

from prompting.core.data import Example
from prompting.methods import METHODS, PTuning, build_method
from prompting.core.template import TemplateError
from prompting.training.loop import TrainConfig, train
from prompting.core.verbalizer import Verbalizer

pytestmark = pytest.mark.filterwarnings("ignore:template .* causal LM predicts:UserWarning")

FAMILIES = ["tiny_causal_lm", "tiny_gpt2_lm", "tiny_bert_lm", "tiny_roberta_lm"]
TEMPLATE = "{soft:3} {text_a} {soft:2} It was {mask}."  # anchor words between the soft slots
VERBALIZER = Verbalizer({"0": ["bad"], "1": ["great", "greatest"]})
EXAMPLES = [Example({"text_a": t}, label) for t, label in [
    ("I loved every minute of this movie.", "1"), ("Bad writing and a very bad ending.", "0"),
    ("A small film with a big heart.", "1"), ("Nobody in the theatre laughed.", "0"),
    ("Great performances from the whole cast.", "1"), ("I fell asleep twice.", "0")]]


def first_batch(method):
    data = method.encode(EXAMPLES)
    return next(method.batches(data, len(EXAMPLES))).prompts[min(data.encodings)]


def test_registered_with_its_parameters():
    assert METHODS["ptuning"] is PTuning
    assert set(PTuning.config_class.keys()) == {"demonstrations", "encoder", "hidden_size", "residual", "input_lr"}
    assert PTuning.config_class().encoder == "lstm"


@pytest.mark.parametrize("fixture", FAMILIES)
@pytest.mark.parametrize("encoder", ["lstm", "mlp"])
def test_encoder_output_fills_the_soft_slots_and_anchors_stay(fixture, encoder, request):
    lm = request.getfixturevalue(fixture)
    method = PTuning(lm, TEMPLATE, VERBALIZER, encoder=encoder, hidden_size=16)
    prompt = method.prompt_embeddings()
    assert prompt.shape == (5, lm.embeddings.embedding_dim)
    batch = first_batch(method)
    embeds = method.embed(lm, batch.input_ids, batch)
    rows = torch.arange(len(batch)).unsqueeze(1)
    torch.testing.assert_close(embeds[rows, batch.soft_positions], prompt.expand(len(batch), -1, -1))
    others = torch.ones_like(batch.input_ids, dtype=torch.bool)
    others[rows, batch.soft_positions] = False
    torch.testing.assert_close(embeds[others], lm.embed(batch.input_ids)[others])  # text and "It was"
    scores = method.predict_scores(method.encode(EXAMPLES))
    assert scores.shape == (len(EXAMPLES), 2) and torch.isfinite(scores).all()


def test_lstm_encoder_is_the_papers_shape(tiny_causal_lm):
    method = PTuning(tiny_causal_lm, TEMPLATE, VERBALIZER, hidden_size=None, residual=False)
    encoder = method.prompt_encoder
    dim = tiny_causal_lm.embeddings.embedding_dim
    assert encoder.lstm.bidirectional and encoder.lstm.num_layers == 2 and encoder.lstm.hidden_size == dim
    assert [type(m).__name__ for m in encoder.head] == ["Linear", "ReLU", "Linear"]
    # the soft tokens depend on each other through the LSTM: changing one input changes every output
    before = method.prompt_embeddings().detach().clone()
    with torch.no_grad():
        encoder.inputs[0] += 1.0
    assert ((method.prompt_embeddings() - before).abs().amax(1) > 1e-6).all()


def test_encoder_inputs_start_from_the_slots_text(tiny_causal_lm):
    lm = tiny_causal_lm
    method = PTuning(lm, '{soft:"It was"} {text_a} {soft:2} {mask}', VERBALIZER)
    ids = lm.tokenizer("It was", add_special_tokens=False)["input_ids"]  # first in the template: no space
    inputs = method.prompt_encoder.inputs
    assert inputs.shape[0] == len(ids) + 2
    torch.testing.assert_close(inputs[:len(ids)], lm.embeddings.weight[ids])
    assert not torch.allclose(inputs[len(ids):], lm.embeddings.weight[ids[:1]].expand(2, -1))


@pytest.mark.parametrize("fixture", ["tiny_causal_lm", "tiny_bert_lm"])
@pytest.mark.parametrize("encoder", ["lstm", "mlp"])
def test_residual_encoder_starts_as_the_manual_prompt_and_still_learns(fixture, encoder, request):
    lm = request.getfixturevalue(fixture)
    manual = build_method("manual", lm, "Review: {text_a} It was {mask}.", VERBALIZER)
    method = PTuning(lm, '{soft:"Review:"} {text_a} {soft:"It was"} {mask}.', VERBALIZER, encoder=encoder,
                     hidden_size=16, residual=True)
    torch.testing.assert_close(method.predict_scores(method.encode(EXAMPLES)),
                               manual.predict_scores(manual.encode(EXAMPLES)), atol=1e-5, rtol=0)
    loss = method(next(method.batches(method.encode(EXAMPLES), 6))).sum()
    loss.backward()
    assert method.prompt_encoder.head[-1].weight.grad.abs().sum() > 0  # the zero layer gets a gradient
    assert PTuning(lm, TEMPLATE, VERBALIZER, residual=True).prompt_encoder.inputs.std() < 2 * lm.embeddings.weight.std()


def test_bad_settings_name_the_field(tiny_causal_lm):
    lm = tiny_causal_lm
    with pytest.raises(TemplateError, match="no \\{soft\\} slot"):
        PTuning(lm, "{text_a} It was {mask}.", VERBALIZER)
    with pytest.raises(ValueError, match="encoder='gru'.*lstm, mlp"):
        PTuning(lm, TEMPLATE, VERBALIZER, encoder="gru")
    with pytest.raises(ValueError, match="hidden_size=0"):
        PTuning(lm, TEMPLATE, VERBALIZER, hidden_size=0)
    with pytest.raises(ValueError, match="residual='no'"):
        PTuning(lm, TEMPLATE, VERBALIZER, residual="no")
    with pytest.raises(ValueError, match="input_lr=0 is not valid; give a number > 0"):
        PTuning(lm, TEMPLATE, VERBALIZER, input_lr=0)
    with pytest.raises(ValueError, match="has no parameter 'prompt_tokens'"):
        build_method("ptuning", lm, TEMPLATE, VERBALIZER, prompt_tokens=3)


@pytest.mark.parametrize("kind", ["llama", "roberta"])
def test_frozen_lm_training_moves_only_the_encoder(kind, make_tiny_lm):
    lm = make_tiny_lm(kind)
    torch.manual_seed(0)
    method = PTuning(lm, TEMPLATE, VERBALIZER, hidden_size=16, labels=["0", "1"])
    groups = method.parameter_groups(1e-3)
    assert [g["name"] for g in groups] == ["ptuning.inputs", "ptuning"]  # the inputs at a soft prompt's rate
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in method.prompt_encoder.parameters()}
    lm_before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    encoder_before = {k: v.clone() for k, v in method.prompt_encoder.state_dict().items()}
    result = train(method, method.encode(EXAMPLES), None, TrainConfig(lr=1e-2, max_steps=15, batch_size=6),
                   progress=False)
    assert all(torch.equal(lm_before[k], v) for k, v in lm.model.state_dict().items())
    assert all(not torch.equal(encoder_before[k], v) for k, v in method.prompt_encoder.state_dict().items())
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_tune_lm_trains_the_lm_with_its_own_rate(make_tiny_lm):
    lm = make_tiny_lm("llama")
    method = PTuning(lm, TEMPLATE, VERBALIZER, hidden_size=16, labels=["0", "1"])
    groups = method.parameter_groups(1e-3, lm_lr=1e-5, tune_lm=True)
    assert [(g["name"], g["lr"]) for g in groups] == [("ptuning.inputs", 3e-2), ("ptuning", 1e-3), ("lm", 1e-5)]
    lm_before = {k: v.clone() for k, v in lm.model.named_parameters()}
    train(method, method.encode(EXAMPLES), None,
          TrainConfig(lr=1e-3, lm_lr=1e-3, tune_lm=True, max_steps=2, batch_size=6), progress=False)
    changed = [k for k, v in lm.model.named_parameters() if not torch.equal(lm_before[k], v)]
    assert len(changed) > len(lm_before) // 2


def test_input_vectors_train_at_their_own_rate(make_tiny_lm):
    """``input_lr``: the inputs (with ``residual``, the prompt itself) get a soft prompt's rate; the
    LSTM and MLP keep the training rate, and every encoder parameter is in exactly one group."""
    lm = make_tiny_lm("llama")
    method = PTuning(lm, TEMPLATE, VERBALIZER, hidden_size=16, residual=True, input_lr=3e-2, labels=["0", "1"])
    groups = method.parameter_groups(1e-3, lm_lr=1e-5, tune_lm=True)
    assert [(g["name"], g["lr"]) for g in groups] == [("ptuning.inputs", 3e-2), ("ptuning", 1e-3), ("lm", 1e-5)]
    assert groups[0]["params"] == [method.prompt_encoder.inputs]
    encoder = [id(p) for g in groups[:2] for p in g["params"]]
    assert sorted(encoder) == sorted(id(p) for p in method.prompt_encoder.parameters())
    # one step: the inputs move by about their own rate (Adam's first step is lr * sign)
    before = method.prompt_encoder.inputs.detach().clone()
    train(method, method.encode(EXAMPLES), None, TrainConfig(lr=1e-3, max_steps=1, batch_size=6, max_grad_norm=0),
          progress=False)
    moved = (method.prompt_encoder.inputs.detach() - before).abs().amax().item()
    assert 1e-2 < moved <= 3e-2 + 1e-6
    paper = PTuning(lm, TEMPLATE, VERBALIZER, residual=False)
    assert [g["name"] for g in paper.parameter_groups(1e-3)] == ["ptuning"]  # the paper's: one rate


def test_by_default_the_encoder_is_a_residual_bottleneck_and_a_text_start_is_kept(tiny_causal_lm):
    """The defaults: a 64-wide encoder added to its inputs (which start as the prompt's words) and the
    inputs trained at a soft prompt's rate, so P-tuning from the manual words starts as the manual prompt."""
    lm = tiny_causal_lm
    method = PTuning(lm, '{soft:"Review:"} {text_a} {soft:"It was"} {mask}.', VERBALIZER)
    assert method.prompt_encoder.residual and method.prompt_encoder.lstm.hidden_size == 64
    assert [(g["name"], g["lr"]) for g in method.parameter_groups(1e-3)] == [("ptuning.inputs", 3e-2),
                                                                            ("ptuning", 1e-3)]
    manual = build_method("manual", lm, "Review: {text_a} It was {mask}.", VERBALIZER)
    torch.testing.assert_close(method.predict_scores(method.encode(EXAMPLES)),
                               manual.predict_scores(manual.encode(EXAMPLES)), atol=1e-5, rtol=0)
