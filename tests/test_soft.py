"""Soft prompt tuning on tiny *randomly initialised* LMs (see conftest): placement, init, training."""

import pytest
import torch

from prompting.core.data import Example
from prompting.methods import METHODS, SoftPrompt, build_method
from prompting.core.template import TemplateError
from prompting.training.loop import TrainConfig, train
from prompting.core.verbalizer import Verbalizer

pytestmark = pytest.mark.filterwarnings("ignore:template .* causal LM predicts:UserWarning")

FAMILIES = ["tiny_causal_lm", "tiny_gpt2_lm", "tiny_bert_lm", "tiny_roberta_lm"]
VERBALIZER = Verbalizer({"0": ["bad"], "1": ["great", "greatest"]})
EXAMPLES = [Example({"text_a": t}, label) for t, label in [
    ("I loved every minute of this movie.", "1"), ("Bad writing and a very bad ending.", "0"),
    ("A small film with a big heart.", "1"), ("Nobody in the theatre laughed.", "0"),
    ("Great performances from the whole cast.", "1"), ("I fell asleep twice.", "0")]]


def embedded(method, examples=EXAMPLES):
    batch = next(method.batches(method.encode(examples), len(examples))).prompts[min(method.encode(examples).encodings)]
    return batch, method.embed(method.lm, batch.input_ids, batch)


def test_registered_with_its_parameters():
    assert METHODS["soft"] is SoftPrompt
    assert set(SoftPrompt.config_class.keys()) == {"demonstrations", "prompt_tokens", "init", "init_text"}
    assert SoftPrompt.config_class.train_defaults["tune_lm"] is False


@pytest.mark.parametrize("fixture", FAMILIES)
def test_prompt_tokens_go_before_the_manual_template(fixture, request):
    lm = request.getfixturevalue(fixture)
    method = SoftPrompt(lm, "Review: {text_a} It was {mask}.", VERBALIZER, prompt_tokens=4, init="vocab")
    assert method.template.text == "{soft:4}Review: {text_a} It was {mask}."
    assert method.soft_prompt.shape == (4, lm.embeddings.embedding_dim)
    batch, embeds = embedded(method)
    rows = torch.arange(len(batch)).unsqueeze(1)
    torch.testing.assert_close(embeds[rows, batch.soft_positions], method.soft_prompt.expand(len(batch), -1, -1))
    # every other position keeps its word embedding; the soft slots come right after the special tokens
    others = torch.ones_like(batch.input_ids, dtype=torch.bool)
    others[rows, batch.soft_positions] = False
    torch.testing.assert_close(embeds[others], lm.embed(batch.input_ids)[others])
    start = len(method.encoder.prefix_ids)
    first = (batch.attention_mask.argmax(1) if lm.causal else torch.zeros(len(batch), dtype=torch.long)) + start
    assert torch.equal(batch.soft_positions, first.unsqueeze(1) + torch.arange(4))


@pytest.mark.parametrize("fixture", FAMILIES)
def test_text_init_in_the_templates_slots_starts_as_the_manual_prompt(fixture, request):
    lm = request.getfixturevalue(fixture)
    manual = build_method("manual", lm, "Review: {text_a} It was {mask}.", VERBALIZER)
    soft = SoftPrompt(lm, '{soft:"Review:"} {text_a} {soft:"It was"} {mask}.', VERBALIZER, init="text")
    data = manual.encode(EXAMPLES)
    torch.testing.assert_close(soft.predict_scores(soft.encode(EXAMPLES)), manual.predict_scores(data),
                               atol=1e-5, rtol=0)


def test_text_init_repeats_the_templates_words_or_init_text(tiny_causal_lm):
    lm = tiny_causal_lm
    tokenize = lambda text: lm.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    method = SoftPrompt(lm, "Review: {text_a} It was {mask}.", VERBALIZER, prompt_tokens=7)
    words = tokenize("Review: It was .")
    expected = [words[i % len(words)] for i in range(7)]
    torch.testing.assert_close(method.soft_prompt, lm.embeddings.weight[expected])
    method = SoftPrompt(lm, "{text_a} {mask}", VERBALIZER, prompt_tokens=3, init_text="terrible or great")
    torch.testing.assert_close(method.soft_prompt, lm.embeddings.weight[tokenize("terrible or great")[:3]])


def test_vocab_init_draws_ordinary_tokens(tiny_causal_lm):
    lm = tiny_causal_lm
    torch.manual_seed(0)
    method = SoftPrompt(lm, "{text_a} {mask}", VERBALIZER, prompt_tokens=50, init="vocab")
    weight = lm.embeddings.weight
    # each vector is one row of the embedding matrix, never a special token's
    matches = (method.soft_prompt.unsqueeze(1) - weight.unsqueeze(0)).abs().amax(-1) < 1e-7
    assert matches.any(1).all()
    chosen = matches.float().argmax(1)
    assert not set(chosen.tolist()) & set(lm.tokenizer.all_special_ids)
    assert len(set(chosen.tolist())) > 10


def test_uniform_init_has_the_vocabularys_spread(tiny_causal_lm):
    torch.manual_seed(0)
    method = SoftPrompt(tiny_causal_lm, "{text_a} {mask}", VERBALIZER, prompt_tokens=64, init="uniform")
    spread = tiny_causal_lm.embeddings.weight.std().item()
    assert method.soft_prompt.abs().max() <= 3 ** 0.5 * spread + 1e-6
    assert abs(method.soft_prompt.std().item() - spread) < 0.2 * spread


def test_bad_settings_name_the_field(tiny_causal_lm):
    lm = tiny_causal_lm
    with pytest.raises(TemplateError, match="already places its soft tokens"):
        SoftPrompt(lm, "{soft:2} {text_a} {mask}", VERBALIZER, prompt_tokens=4)
    with pytest.raises(ValueError, match="init='random'.*text, vocab, uniform"):
        SoftPrompt(lm, "{text_a} {mask}", VERBALIZER, init="random")
    with pytest.raises(ValueError, match="prompt_tokens=0"):
        SoftPrompt(lm, "{text_a} {mask}", VERBALIZER, prompt_tokens=0)
    with pytest.raises(TemplateError, match="init 'text' needs words"):
        SoftPrompt(lm, "{soft:2} {text_a} {mask}", VERBALIZER, init="text")
    with pytest.raises(ValueError, match="has no parameter 'prefix_length'"):
        build_method("soft", lm, "{text_a} {mask}", VERBALIZER, prefix_length=3)


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_training_moves_only_the_soft_prompt(kind, make_tiny_lm):
    lm = make_tiny_lm(kind)
    torch.manual_seed(0)
    method = SoftPrompt(lm, "{text_a} It was {mask}.", VERBALIZER, prompt_tokens=4, init="vocab",
                        labels=["0", "1"])
    assert [p is method.soft_prompt for g in method.parameter_groups(1e-2) for p in g["params"]] == [True]
    lm_before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    prompt_before = method.soft_prompt.detach().clone()
    data = method.encode(EXAMPLES)
    result = train(method, data, None, TrainConfig(lr=3e-2, max_steps=15, batch_size=6), progress=False)
    assert all(torch.equal(lm_before[k], v) for k, v in lm.model.state_dict().items())
    assert not torch.allclose(method.soft_prompt, prompt_before)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
