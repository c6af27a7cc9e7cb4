"""LanguageModel.word_logprobs against a brute-force, one-example-at-a-time computation.

The reference side never uses the template encoder, collate or padding: it tokenises the rendered
sentence itself and calls ``model(input_ids=...)`` on one unpadded example at a time.
"""

import pytest
import torch
import transformers

from prompting.lm.logprobs import PlainHooks
from prompting.lm.model import LanguageModel
from prompting.core.template import Template, collate
from prompting.core.verbalizer import Verbalizer

pytestmark = pytest.mark.filterwarnings("ignore:template .* causal LM predicts:UserWarning")

TEMPLATE = "{text_a} It was {mask}."
# different lengths, so every batch is padded
TEXTS = [
    "Bad.",
    "I loved every minute of this movie and would watch it again, and so did my friends.",
    "The plot makes no sense.",
    "Great performances from the whole cast, especially the young lead.",
]
# "great", "terrible" are one token; "greatest" two, "horrible" three (asserted below)
VERBALIZER = Verbalizer({"neg": ["terrible", "horrible"], "pos": ["great", "greatest"]})


def encode_batches(lm):
    enc = Template(TEMPLATE).encoder(lm.tokenizer, causal=lm.causal, max_length=64)
    words = VERBALIZER.tokenize(lm.tokenizer, enc.mask_leading_space)
    examples = [{"text_a": t} for t in TEXTS]
    counts = [1] if lm.causal else words.lengths
    batches = {n: collate(enc.encode(examples, n_mask=n), lm.pad_id, left=lm.causal) for n in counts}
    return words, batches


def brute_force_causal(lm, text, word):
    tok = lm.tokenizer
    context = [tok.bos_token_id] + tok(f"{text} It was", add_special_tokens=False)["input_ids"]
    word_ids = tok(" " + word, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([context + word_ids])
    with torch.no_grad():
        logprobs = lm.model(input_ids=ids).logits[0].float().log_softmax(-1)
    return sum(logprobs[len(context) - 1 + j, t] for j, t in enumerate(word_ids))


def brute_force_masked(lm, text, word):
    tok = lm.tokenizer
    leading = " " if tok.mask_token == "<mask>" else ""  # BPE: the word follows a space
    word_ids = tok(leading + word, add_special_tokens=False)["input_ids"]
    ids = tok(f"{text} It was {tok.mask_token * len(word_ids)}.")["input_ids"]
    masks = [i for i, t in enumerate(ids) if t == tok.mask_token_id]
    assert len(masks) == len(word_ids)
    with torch.no_grad():
        logprobs = lm.model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
    return sum(logprobs[m, t] for m, t in zip(masks, word_ids))


@pytest.mark.parametrize("fixture", ["tiny_causal_lm", "tiny_gpt2_lm", "tiny_bert_lm", "tiny_roberta_lm"])
def test_word_logprobs_equal_unpadded_one_by_one(fixture, request):
    lm = request.getfixturevalue(fixture)
    words, batches = encode_batches(lm)
    lengths = [len(w) for w in words.word_ids]
    assert lengths[0] == 1 and lengths[2] == 1 and lengths[1] == 3 and lengths[3] == 2, lengths
    assert len(set(batches[1].attention_mask.sum(1).tolist())) == len(TEXTS)  # all lengths differ

    with torch.no_grad():
        got = lm.word_logprobs(batches, words, PlainHooks())

    brute = brute_force_causal if lm.causal else brute_force_masked
    words_flat = [w for ws in VERBALIZER.label_words.values() for w in ws]
    expected = torch.tensor([[float(brute(lm, text, w)) for w in words_flat] for text in TEXTS])
    assert got.shape == (len(TEXTS), len(words_flat))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    # the comparison means something only if the scores depend on the example
    assert (expected - expected[0]).abs().amax() > 0.5


def test_masked_scoring_needs_a_batch_per_word_length(tiny_bert_lm):
    words, batches = encode_batches(tiny_bert_lm)
    del batches[3]
    with pytest.raises(ValueError, match="n_mask=3"):
        tiny_bert_lm.word_logprobs(batches, words)


@pytest.mark.parametrize("make_model", [
    lambda: transformers.BertModel(transformers.BertConfig(
        vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)),
    lambda: transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)),
], ids=["BertModel", "BertForSequenceClassification"])
def test_language_model_rejects_models_without_lm_head(make_model, wordpiece_tokenizer):
    with pytest.raises(ValueError, match="neither a masked LM .*, a causal LM .* nor an encoder-decoder LM"):
        LanguageModel(make_model(), wordpiece_tokenizer, device="cpu")


class IntKeepHooks(PlainHooks):
    """The computation before the contiguous LM-head input: ``logits_to_keep`` as an int, straight to the model."""

    def forward_lm(self, lm, inputs_embeds, attention_mask, position_ids, logits_to_keep):
        if not lm.causal:
            return lm.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask).logits
        return lm.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                        logits_to_keep=logits_to_keep, use_cache=False).logits


@pytest.mark.parametrize("kind", ["llama", "gpt2", "bert", "roberta"])
def test_lm_head_gets_contiguous_input_and_scores_are_unchanged(kind, make_tiny_lm):
    """LanguageModel.forward asks for the last positions with an index tensor, so the LM head's matmul
    gets a contiguous input (an int makes transformers slice a strided view; with frozen weights torch
    then takes a ~4x slower matmul path on CPU); the scores are those of the int slice."""
    lm = make_tiny_lm(kind)
    lm.model.requires_grad_(False)  # frozen, as train() leaves it and every prompt method trains it
    words, batches = encode_batches(lm)
    seen = []
    hook = lm.model.get_output_embeddings().register_forward_pre_hook(
        lambda module, args: seen.append((tuple(args[0].shape), args[0].is_contiguous())))
    try:
        with torch.no_grad():
            got = lm.word_logprobs(batches, words, PlainHooks())
    finally:
        hook.remove()
    with torch.no_grad():
        before = lm.word_logprobs(batches, words, IntKeepHooks())
    # the same numbers up to float32 rounding: the two matmul kernels add in different orders
    torch.testing.assert_close(got, before, atol=1e-6, rtol=1e-6)
    assert seen and all(contiguous for _, contiguous in seen), seen
    if lm.causal:  # one pass per distinct word length: 1 position, then 2 and 3 (teacher forcing)
        assert sorted(shape[1] for shape, _ in seen) == [1, 2, 3], seen

    # the forward itself (grad mode on, as in training), for every count of kept positions
    batch = batches[min(batches)]
    embeds = lm.embed(batch.input_ids)
    length = embeds.shape[1]
    for keep in ([0, 1, 3, length, length + 2] if lm.causal else [0]):
        ours = lm.forward(embeds, batch.attention_mask, batch.position_ids, keep)
        reference = IntKeepHooks().forward_lm(lm, embeds, batch.attention_mask, batch.position_ids, keep)
        assert ours.shape == reference.shape, keep
        torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-6)


def test_log_softmax_normaliser_is_summed_in_float64_over_a_large_vocabulary():
    # a 49k-token vocabulary (SmolLM2's size): float32's own log_softmax sums the exponentials in
    # float32 and is off by about 1e-5; ours agrees with float64 to float32's rounding of the output
    from prompting.lm.logprobs import NORMALISER_ROWS, log_normaliser, log_softmax

    logits = (torch.randn(NORMALISER_ROWS + 3, 49152, generator=torch.Generator().manual_seed(0)) * 4).float()
    reference = logits.double().log_softmax(-1)
    assert (log_normaliser(logits) - logits.double().logsumexp(-1)).abs().max() < 1e-7
    ours = (log_softmax(logits).double() - reference).abs().max().item()
    assert ours < 2.5e-6 < 1e-5 < (logits.log_softmax(-1).double() - reference).abs().max().item()
    # gradients are those of log_softmax (training uses the same function)
    x = logits[:2].clone().requires_grad_(True)
    weights = torch.randn(2, 49152, generator=torch.Generator().manual_seed(1))
    (log_softmax(x) * weights).sum().backward()
    y = logits[:2].double().clone().requires_grad_(True)
    (y.log_softmax(-1) * weights.double()).sum().backward()
    assert torch.allclose(x.grad.double(), y.grad, atol=1e-6)
