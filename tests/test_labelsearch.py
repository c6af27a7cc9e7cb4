"""Label-word search: the two rankings on constructed inputs, and end to end on tiny *random* LMs."""

import pytest
import torch
import yaml

from prompting.core.data import Example
from prompting.training.labelsearch import (mask_outputs, rank_by_classifier, rank_by_likelihood, search_label_words,
                                   write_verbalizer)
from prompting.core.template import Template
from prompting.core.verbalizer import Verbalizer

pytestmark = pytest.mark.filterwarnings("ignore:template .* causal LM predicts:UserWarning")

POSITIVE = ["great", "good", "fun", "nice", "lovely", "funny"]
NEGATIVE = ["terrible", "bad", "awful", "boring", "dull", "weak"]
EXAMPLES = [Example({"text_a": f"The movie was {w}."}, "1") for w in POSITIVE] + \
           [Example({"text_a": f"The film was {w}."}, "0") for w in NEGATIVE]
TEMPLATE = "{text_a} It was {mask}"


@pytest.fixture(params=["tiny_causal_lm", "tiny_bert_lm"])
def lm(request):
    return request.getfixturevalue(request.param)


def test_classifier_ranking_finds_the_words_aligned_with_each_class():
    # class 0 lives along e_2, class 1 along e_5; the output embeddings of tokens 2 and 5 point there
    torch.manual_seed(0)
    labels = torch.tensor([0, 1] * 20)
    features = torch.randn(40, 8) * 0.1
    features[labels == 0, 2] += 1.0
    features[labels == 1, 5] += 1.0
    embeddings = torch.eye(8)
    allowed = torch.ones(8, dtype=torch.bool)
    for similarity in ("cosine", "dot"):
        scores = rank_by_classifier(features, labels, 2, embeddings * 3, allowed, similarity=similarity)
        assert scores[0].argmax() == 2 and scores[1].argmax() == 5
    allowed[2] = False
    assert rank_by_classifier(features, labels, 2, embeddings, allowed)[0].argmax() != 2


def test_likelihood_ranking_prefers_discriminative_words_over_frequent_ones():
    # token 0 is likely everywhere; token 1 marks class 0, token 2 marks class 1
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    probs = torch.full((6, 5), 0.05)
    probs[:, 0] = 0.5
    probs[:3, 1], probs[3:, 2] = 0.35, 0.35
    logprobs = (probs / probs.sum(1, keepdim=True)).log()
    scores = rank_by_likelihood(logprobs, labels, 2, torch.ones(5, dtype=torch.bool), prune=2)
    assert scores[0].argmax() == 1 and scores[1].argmax() == 2
    assert scores[0, 0] < scores[0, 1]  # the most likely word overall is in class 0's set, but ranks lower
    # the score of a word is the mean log-likelihood of the labels with it standing for its class
    by_hand = torch.stack([logprobs[:, 1], logprobs[:, 2]], 1).log_softmax(1).gather(1, labels[:, None]).mean()
    assert scores[0, 1].item() == pytest.approx(by_hand.item(), abs=1e-6)
    assert torch.isinf(scores[:, 3:]).all()  # outside the pruned candidate sets


def test_mask_features_are_what_the_lm_head_reads(lm):
    features, logprobs = mask_outputs(lm, TEMPLATE, EXAMPLES[:3])
    head = lm.model.get_output_embeddings()
    torch.testing.assert_close(head(features).log_softmax(-1), logprobs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ranking", ["classifier", "likelihood"])
def test_search_returns_whole_alphabetic_words_never_special_tokens(lm, ranking):
    result = search_label_words(lm, TEMPLATE, EXAMPLES, ["0", "1"], ranking=ranking, k=5, prune=50)
    assert set(result.words) == {"0", "1"}
    tokenizer = lm.tokenizer
    specials = set(tokenizer.all_special_ids)
    lead = Template(TEMPLATE).encoder(tokenizer, lm.causal).mask_leading_space
    for label, ranked in result.words.items():
        assert len(ranked) == 5
        scores = [s for _, s in ranked]
        assert scores == sorted(scores, reverse=True)
        for (word, _), token in zip(ranked, result.token_ids[label]):
            assert word.isalpha() and len(word) >= 2 and token not in specials
            assert not tokenizer.convert_ids_to_tokens(token).startswith("##")
            # the verbalizer will score exactly the ranked token
            assert tokenizer((" " if lead else "") + word, add_special_tokens=False)["input_ids"] == [token]
    verbalizer = result.verbalizer(2)
    assert verbalizer.labels == ("0", "1") and all(len(ws) == 2 for ws in verbalizer.label_words.values())


def test_write_verbalizer_creates_and_extends_a_templates_file(tmp_path):
    path = tmp_path / "sst2.yaml"
    write_verbalizer(path, {0: ["awful", "yes"], 1: ["great"]}, task="sst2", pattern="Review: {text_a}\nSentiment: {mask}")
    data = yaml.safe_load(path.read_text())
    assert data == {"task": "sst2", "patterns": ["Review: {text_a}\nSentiment: {mask}"],
                    "verbalizers": [{0: ["awful", "yes"], 1: ["great"]}]}  # "yes" stays a string
    path.write_text("# kept\n" + path.read_text())
    write_verbalizer(path, Verbalizer({"0": ["bad"], "1": ["good"]}), task="sst2")
    write_verbalizer(path, Verbalizer({"0": ["bad"], "1": ["good"]}), task="sst2")  # not added twice
    text = path.read_text()
    assert text.startswith("# kept\n") and "  - {0: [bad], 1: [good]}" in text
    assert [Verbalizer(v) for v in yaml.safe_load(text)["verbalizers"]] == [
        Verbalizer({0: ["awful", "yes"], 1: ["great"]}), Verbalizer({0: ["bad"], 1: ["good"]})]
    with pytest.raises(ValueError, match="task 'sst2', not 'rte'"):
        write_verbalizer(path, {0: ["x"]}, task="rte")


def test_bad_inputs_name_the_problem(tiny_causal_lm):
    with pytest.raises(ValueError, match="ranking='best'"):
        search_label_words(tiny_causal_lm, TEMPLATE, EXAMPLES, ["0", "1"], ranking="best")
    with pytest.raises(ValueError, match="'2'"):
        search_label_words(tiny_causal_lm, TEMPLATE, EXAMPLES + [Example({"text_a": "x"}, "2")], ["0", "1"])
    with pytest.raises(ValueError, match="trigger"):
        search_label_words(tiny_causal_lm, "{text_a} {trigger:2} {mask}", EXAMPLES, ["0", "1"])


def test_precomputed_outputs_give_the_same_ranking(tiny_causal_lm):
    outputs = mask_outputs(tiny_causal_lm, TEMPLATE, EXAMPLES)
    for ranking in ("classifier", "likelihood"):
        direct = search_label_words(tiny_causal_lm, TEMPLATE, EXAMPLES, ["0", "1"], ranking=ranking, k=3)
        reused = search_label_words(tiny_causal_lm, TEMPLATE, EXAMPLES, ["0", "1"], ranking=ranking, k=3,
                                    outputs=outputs)
        assert direct.words == reused.words
    with pytest.raises(ValueError, match="outputs must come from mask_outputs"):
        search_label_words(tiny_causal_lm, TEMPLATE, EXAMPLES[:4], ["0", "1"], outputs=outputs)


def test_length_sorted_batches_give_each_example_its_own_outputs_in_input_order(lm):
    # examples of very different lengths, in an order that sorting by length changes: batched under the
    # token budget, every row comes back where it was and equals the example scored alone
    texts = ["Bad.", "The film was long, slow and in the end rather dull to sit through.", "Fun.",
             "A warm, funny and clever movie.", "Awful acting, awful script, awful everything here."]
    examples = [Example({"text_a": t}, "0") for t in texts]
    features, logprobs = mask_outputs(lm, TEMPLATE, examples, batch_size=3)
    for i, example in enumerate(examples):
        alone_features, alone_logprobs = mask_outputs(lm, TEMPLATE, [example], batch_size=1)
        assert torch.allclose(features[i], alone_features[0], atol=1e-5)
        assert torch.allclose(logprobs[i], alone_logprobs[0], atol=1e-5)
