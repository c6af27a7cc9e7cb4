"""Prefix-tuning on tiny *randomly initialised* LMs (see conftest), causal and masked.

The backbone puts the prefix in the model's key/value cache. These tests pin down what that must
mean: the attention mask covers the prefix, the input keeps its positions, every layer gets its own
prefix, and a prefix made of the model's own keys/values for some words acts like those words.
"""

import pytest
import torch

from prompting.core.data import Example
from prompting.methods import METHODS, PrefixTuning, build_method
from prompting.methods.soft import common_token_ids
from prompting.training.loop import TrainConfig, train
from prompting.core.verbalizer import Verbalizer

pytestmark = pytest.mark.filterwarnings("ignore:template .* causal LM predicts:UserWarning")

FAMILIES = ["tiny_causal_lm", "tiny_gpt2_lm", "tiny_bert_lm", "tiny_roberta_lm"]
TEMPLATE = "{text_a} It was {mask}."
VERBALIZER = Verbalizer({"0": ["bad"], "1": ["great", "greatest"]})
EXAMPLES = [Example({"text_a": t}, label) for t, label in [
    ("I loved every minute of this movie and would watch it again.", "1"), ("Bad.", "0"),
    ("A small film with a big heart.", "1"), ("Nobody in the theatre laughed, and several people walked out.", "0"),
    ("Great performances.", "1"), ("I fell asleep twice.", "0")]]


def padded_batch(lm, size=4, length=9, seed=0):
    """Random ids with rows of different lengths, padded the way the backbone pads this model."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 300, (size, length), generator=generator)
    attention = torch.ones(size, length, dtype=torch.long)
    for row in range(1, size):
        pad = 2 * row
        if lm.causal:
            attention[row, :pad] = 0
        else:
            attention[row, length - pad:] = 0
    positions = (attention.cumsum(1) - 1).clamp(min=0)
    return ids, attention, positions


def random_prefix(lm, size, length=3, seed=1):
    layers, heads, head_dim = lm.kv_shape
    generator = torch.Generator().manual_seed(seed)
    keys, values = torch.randn(2, layers, 1, heads, length, head_dim, generator=generator)
    return keys.expand(-1, size, -1, -1, -1), values.expand(-1, size, -1, -1, -1)


def test_registered_with_its_parameters():
    assert METHODS["prefix"] is PrefixTuning
    defaults = PrefixTuning.config_class()
    assert defaults.prefix_projection is True
    assert set(PrefixTuning.config_class.keys()) == {"demonstrations", "prefix_length", "prefix_projection", "prefix_hidden_size",
                                                    "init", "init_text"}
    assert defaults.prefix_length is None  # 10, or the moved words' length


@pytest.mark.parametrize("fixture", FAMILIES)
def test_a_prefix_nobody_attends_to_changes_nothing(fixture, request):
    """Zero values behind -inf attention logits (a masked-out prefix): the logits of every real token
    are those of the plain model, padding included, so the input kept its positions."""
    lm = request.getfixturevalue(fixture)
    ids, attention, positions = padded_batch(lm)
    keys, values = random_prefix(lm, len(ids))
    with torch.no_grad():
        plain = lm.forward(lm.embed(ids), attention, positions)
        hidden = lm.forward(lm.embed(ids), attention, positions, prefix=(keys, torch.zeros_like(values)),
                            prefix_mask=torch.zeros(len(ids), keys.shape[-2]))
        seen = lm.forward(lm.embed(ids), attention, positions, prefix=(keys, values))
    real = attention.bool()
    torch.testing.assert_close(hidden[real], plain[real], atol=1e-4, rtol=0)
    assert (seen[real] - plain[real]).abs().amax() > 0.1  # an attended prefix does change them


@pytest.mark.parametrize("fixture", ["tiny_causal_lm", "tiny_gpt2_lm"])
def test_the_models_own_keys_for_words_act_like_those_words(fixture, request):
    """Causal LM: prefix = the model's keys/values for some words == the words written before the input
    (with the input's positions moved along by their length, as for real words)."""
    lm = request.getfixturevalue(fixture)
    words = torch.randint(10, 300, (1, 4), generator=torch.Generator().manual_seed(2))
    ids, attention, positions = padded_batch(lm)
    keys, values = lm.key_values(words)
    assert keys.shape == (lm.kv_shape[0], lm.kv_shape[1], 4, lm.kv_shape[2])
    size = len(ids)
    prefix = tuple(t.unsqueeze(1).expand(-1, size, -1, -1, -1) for t in (keys, values))
    with torch.no_grad():
        got = lm.forward(lm.embed(ids), attention, positions + 4, prefix=prefix)
        for row in range(size):
            real = ids[row][attention[row].bool()]
            full = lm.model(input_ids=torch.cat([words[0], real]).unsqueeze(0)).logits[0, 4:]
            torch.testing.assert_close(got[row][attention[row].bool()], full, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fixture", FAMILIES)
def test_the_prefix_reaches_every_layer(fixture, request):
    lm = request.getfixturevalue(fixture)
    torch.manual_seed(0)
    method = PrefixTuning(lm, TEMPLATE, VERBALIZER, prefix_length=3, prefix_projection=False)
    data = method.encode(EXAMPLES)
    base = method.predict_scores(data)
    layers, heads, head_dim = lm.kv_shape
    width = heads * head_dim
    for layer in range(layers):
        for part in (0, 1):  # keys, then values, of this layer only
            start = (layer * 2 + part) * width
            with torch.no_grad():
                method.prefix[:, start:start + width] += 3.0
            changed = (method.predict_scores(data) - base).abs().amax()
            with torch.no_grad():
                method.prefix[:, start:start + width] -= 3.0
            assert changed > 1e-3, f"layer {layer} {'values' if part else 'keys'} have no effect"
    torch.testing.assert_close(method.predict_scores(data), base)


@pytest.mark.parametrize("fixture", FAMILIES)
def test_batched_scores_equal_one_by_one(fixture, request):
    """The attention mask covers the prefix in every row, whatever that row's padding."""
    lm = request.getfixturevalue(fixture)
    torch.manual_seed(0)
    method = PrefixTuning(lm, TEMPLATE, VERBALIZER, prefix_length=4, prefix_hidden_size=16)
    together = method.predict_scores(method.encode(EXAMPLES), batch_size=len(EXAMPLES))
    alone = torch.cat([method.predict_scores(method.encode([ex])) for ex in EXAMPLES])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=0)
    plain = build_method("manual", lm, TEMPLATE, VERBALIZER)
    assert (together - plain.predict_scores(plain.encode(EXAMPLES))).abs().amax() > 1e-3


@pytest.mark.parametrize("fixture", ["tiny_causal_lm", "tiny_bert_lm"])
@pytest.mark.parametrize("projection", [True, False])
def test_text_init_starts_from_the_models_keys_for_the_words(fixture, projection, request):
    lm = request.getfixturevalue(fixture)
    method = PrefixTuning(lm, TEMPLATE, VERBALIZER, prefix_length=5, prefix_projection=projection,
                          prefix_hidden_size=16, init="text", init_text="great or bad")
    ids = lm.tokenizer("great or bad", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ids[i % len(ids)] for i in range(5)])
    expected = lm.key_values(ids.unsqueeze(0))
    for got, want in zip(method.prefix_key_values(), expected):
        torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-3)


def test_shapes_follow_grouped_query_attention(tiny_causal_lm):
    lm = tiny_causal_lm  # 4 query heads, 2 key/value heads
    layers, heads, head_dim = lm.kv_shape
    assert (layers, heads, head_dim) == (2, 2, 8)
    method = PrefixTuning(lm, TEMPLATE, VERBALIZER, prefix_length=6, prefix_hidden_size=16)
    keys, values = method.prefix_key_values()
    assert keys.shape == values.shape == (2, 2, 6, 8)
    sizes = {n: p.numel() for n, p in method.named_parameters()}
    hidden = lm.embeddings.embedding_dim
    assert sizes == {"prefix_inputs": 6 * hidden, "prefix_mlp.0.weight": 16 * hidden, "prefix_mlp.0.bias": 16,
                     "prefix_mlp.2.weight": 2 * 2 * 2 * 8 * 16, "prefix_mlp.2.bias": 2 * 2 * 2 * 8}


def test_bad_settings_name_the_field(tiny_causal_lm):
    lm = tiny_causal_lm
    with pytest.raises(ValueError, match="prefix_length=0"):
        PrefixTuning(lm, TEMPLATE, VERBALIZER, prefix_length=0)
    with pytest.raises(ValueError, match="init='words'.*random, vocab, text"):
        PrefixTuning(lm, TEMPLATE, VERBALIZER, init="words")
    with pytest.raises(ValueError, match="prefix_projection='yes'"):
        PrefixTuning(lm, TEMPLATE, VERBALIZER, prefix_projection="yes")
    with pytest.raises(ValueError, match="init 'text' needs words"):
        PrefixTuning(lm, "{text_a} {mask}", VERBALIZER, init="text")


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_training_moves_only_the_prefix(kind, make_tiny_lm):
    lm = make_tiny_lm(kind)
    torch.manual_seed(0)
    method = PrefixTuning(lm, TEMPLATE, VERBALIZER, prefix_length=3, prefix_hidden_size=16, labels=["0", "1"])
    groups = method.parameter_groups(1e-2)
    assert [g["name"] for g in groups] == ["prefix"]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in method.parameters()}
    lm_before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    own_before = {k: v.clone() for k, v in method.state_dict().items()}
    result = train(method, method.encode(EXAMPLES), None, TrainConfig(lr=1e-2, max_steps=15, batch_size=6),
                   progress=False)
    assert all(torch.equal(lm_before[k], v) for k, v in lm.model.state_dict().items())
    assert all(not torch.equal(own_before[k], v) for k, v in method.state_dict().items())
    assert result.history[-1]["loss"] < result.history[0]["loss"]


MANUAL = "Review: {text_a} It was {mask}."


@pytest.mark.parametrize("projection", [True, False])
def test_text_init_from_the_leading_words_starts_as_exactly_the_manual_prompt(projection, tiny_causal_lm):
    """On a rotary causal LM the leading words move into the prefix: at step 0 every example (of
    every length, so padding too) scores as under the manual template."""
    lm = tiny_causal_lm
    manual = build_method("manual", lm, MANUAL, VERBALIZER)
    method = PrefixTuning(lm, MANUAL, VERBALIZER, prefix_projection=projection, prefix_hidden_size=16,
                          init="text")
    # the start-of-text token (this tokenizer has one) moves with the words
    words = manual.encoder.prefix_ids + lm.tokenizer("Review:", add_special_tokens=False)["input_ids"]
    assert len(manual.encoder.prefix_ids) == 1 and method.prefix_length == len(words)
    assert method.template.text == MANUAL  # what a record and a saved prompt name
    # the input no longer holds them, and the text after them tokenises as before
    data, whole = method.encode(EXAMPLES), manual.encode(EXAMPLES)
    for ours, theirs in zip(data.encodings[1], whole.encodings[1]):
        assert words + ours.input_ids == theirs.input_ids
    torch.testing.assert_close(method.predict_scores(data), manual.predict_scores(whole), atol=1e-4, rtol=0)
    # and a longer prefix (the words repeated in front) still trains from there
    longer = PrefixTuning(lm, MANUAL, VERBALIZER, prefix_length=len(words) + 3, prefix_hidden_size=16, init="text")
    assert longer.prefix_key_values()[0].shape[2] == len(words) + 3


def test_a_saved_leading_words_prefix_loads_with_the_same_scores(tiny_causal_lm, tmp_path):
    lm = tiny_causal_lm
    method = PrefixTuning(lm, MANUAL, VERBALIZER, prefix_hidden_size=16, init="text", labels=["0", "1"])
    train(method, method.encode(EXAMPLES), None, TrainConfig(lr=1e-2, max_steps=3, batch_size=6), progress=False)
    method.save(tmp_path / "prefix")
    loaded = PrefixTuning.load(tmp_path / "prefix", lm)
    torch.testing.assert_close(loaded.predict_scores(loaded.encode(EXAMPLES)),
                               method.predict_scores(method.encode(EXAMPLES)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fixture", ["tiny_gpt2_lm", "tiny_bert_lm"])
def test_without_rotary_positions_the_words_stay_in_the_template(fixture, request):
    """Absolute positions (GPT-2, BERT) cannot number a prefix before 0: the template is kept whole
    and the prefix starts from the words' keys and values, repeated to 10 positions."""
    lm = request.getfixturevalue(fixture)
    method = PrefixTuning(lm, MANUAL, VERBALIZER, prefix_hidden_size=16, init="text")
    manual = build_method("manual", lm, MANUAL, VERBALIZER)
    assert method.prefix_length == 10
    assert [e.input_ids for e in method.encode(EXAMPLES).encodings[min(method.words.lengths)]] == \
        [e.input_ids for e in manual.encode(EXAMPLES).encodings[min(manual.words.lengths)]]
    with pytest.raises(ValueError, match="absolute position"):
        lm.key_values(torch.tensor([[5, 6]]), start=-2)


def test_a_prefix_too_short_for_the_leading_words_is_refused(tiny_causal_lm):
    with pytest.raises(ValueError, match="prefix_length=1 is too short for the template's leading words 'Review:'"):
        PrefixTuning(tiny_causal_lm, MANUAL, VERBALIZER, prefix_length=1, init="text")


@pytest.mark.parametrize("fixture", ["tiny_causal_lm", "tiny_gpt2_lm"])
def test_vocab_init_is_the_models_own_keys_for_random_common_tokens(fixture, request):
    lm = request.getfixturevalue(fixture)
    torch.manual_seed(3)
    method = PrefixTuning(lm, TEMPLATE, VERBALIZER, prefix_length=4, prefix_hidden_size=16, init="vocab")
    torch.manual_seed(3)  # the same draw: the tokens are the method's first use of the generator
    ids = common_token_ids(lm, 4)
    assert not (set(ids.tolist()) & set(lm.tokenizer.all_special_ids))
    start = -4 if lm.relative_positions else 0  # text just before the input, where positions allow
    for got, want in zip(method.prefix_key_values(), lm.key_values(ids.unsqueeze(0), start=start)):
        torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-3)
