"""Verbalizers: validation, label order, in-context tokenisation, aggregation of several words."""

import math

import pytest
import torch

from prompting.core.verbalizer import LabelWordIds, Verbalizer, VerbalizerError


def ids_of(tokenizer, text):
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_labels_are_strings_in_given_order_and_words_are_stripped():
    v = Verbalizer({1: ["great ", " good"], 0: "terrible"})
    assert v.labels == ("1", "0")
    assert v.label_words == {"1": ("great", "good"), "0": ("terrible",)}
    assert v.aggregate == "mean"
    assert Verbalizer(v.to_dict(), aggregate="mean") == v
    assert v.describe() == "1: great, good | 0: terrible"


@pytest.mark.parametrize("words, message", [
    ({}, "maps each label to its words"),
    ([("0", "bad")], "maps each label to its words"),
    ({0: []}, "label 0 has no label words"),
    ({0: None, 1: "great"}, "label 0 has no label words"),
    ({0: "  ", 1: "great"}, "label 0 has no label words"),
    ({0: ["bad", ""], 1: "great"}, "label 0 has no label words"),
    ({0: 5}, "must be a string or a list of strings, got 5"),
    # YAML reads unquoted yes / no as booleans
    ({0: False, 1: True}, "quote yes / no in YAML"),
    ({0: [False], 1: [True]}, "quote yes / no in YAML"),
    ({0: "bad", "0": "awful"}, "label '0' is given twice"),
])
def test_invalid_label_words(words, message):
    with pytest.raises(VerbalizerError, match=message):
        Verbalizer(words)


def test_unknown_aggregate_names_the_choices():
    with pytest.raises(VerbalizerError, match="aggregate='sum' is not known; choose one of mean, max, logsumexp"):
        Verbalizer({0: "bad", 1: "good"}, aggregate="sum")


def test_check_labels():
    v = Verbalizer({0: "bad", 1: "good"})
    v.check_labels([0, 1])
    v.check_labels(["1", "0"])
    with pytest.raises(VerbalizerError, match="no words for label '2'"):
        v.check_labels([0, 1, 2])
    with pytest.raises(VerbalizerError, match="has words for label '1', which the task does not have"):
        v.check_labels(["0"])
    with pytest.raises(VerbalizerError, match="no words for label 'neg'"):
        v.check_labels(["neg", "pos"])


def test_ordered_follows_the_task(bpe_tokenizer):
    v = Verbalizer({"pos": ["great", "good"], "neg": "bad"}, aggregate="max")
    ordered = v.ordered(["neg", "pos"])
    assert ordered.labels == ("neg", "pos")
    assert ordered.aggregate == "max"
    words = ordered.tokenize(bpe_tokenizer, leading_space=True)
    assert words.word_label.tolist() == [0, 1, 1]
    assert words.word_ids[0] == ids_of(bpe_tokenizer, " bad")
    with pytest.raises(VerbalizerError, match="no words for label 'neutral'"):
        v.ordered(["neg", "neutral", "pos"])


def test_bpe_words_are_tokenised_in_context(bpe_tokenizer):
    v = Verbalizer({0: ["terrible", "horrible"], 1: ["great"]})
    spaced = v.tokenize(bpe_tokenizer, leading_space=True)
    bare = v.tokenize(bpe_tokenizer, leading_space=False)
    assert spaced.word_ids == (ids_of(bpe_tokenizer, " terrible"), ids_of(bpe_tokenizer, " horrible"),
                               ids_of(bpe_tokenizer, " great"))
    assert bare.word_ids == (ids_of(bpe_tokenizer, "terrible"), ids_of(bpe_tokenizer, "horrible"),
                             ids_of(bpe_tokenizer, "great"))
    assert spaced.word_ids[2] != bare.word_ids[2]  # " great" is one token, "great" two
    # multi-token words are kept whole, never cut to their first token
    assert [len(w) for w in spaced.word_ids] == [1, 3, 1]
    assert spaced.lengths == [1, 3]
    assert spaced.word_label.tolist() == [0, 0, 1] and spaced.n_labels == 2


def test_wordpiece_words_ignore_the_leading_space(wordpiece_tokenizer):
    v = Verbalizer({0: "Bad", 1: "greatest"})
    words = v.tokenize(wordpiece_tokenizer, leading_space=True)
    assert words.word_ids == v.tokenize(wordpiece_tokenizer, leading_space=False).word_ids
    assert [wordpiece_tokenizer.convert_ids_to_tokens(list(w)) for w in words.word_ids] == [
        ["bad"], ["great", "##est"]]


def test_word_the_tokenizer_cannot_represent(wordpiece_tokenizer):
    v = Verbalizer({0: "bad", 1: ["great", "€uro"]})
    with pytest.raises(VerbalizerError, match="label word '€uro' of label '1' cannot be represented"):
        v.tokenize(wordpiece_tokenizer, leading_space=False)


LOGPROBS = torch.log(torch.tensor([[0.1, 0.3, 0.2],
                                   [0.4, 0.05, 0.01]]))
LABEL_OF_WORD = torch.tensor([0, 1, 1])


@pytest.mark.parametrize("aggregate, expected", [
    ("mean", [[math.log(0.1), (math.log(0.3) + math.log(0.2)) / 2],
              [math.log(0.4), (math.log(0.05) + math.log(0.01)) / 2]]),
    ("max", [[math.log(0.1), math.log(0.3)],
             [math.log(0.4), math.log(0.05)]]),
    ("logsumexp", [[math.log(0.1), math.log(0.5)],
                   [math.log(0.4), math.log(0.06)]]),
])
def test_aggregation_by_hand(aggregate, expected):
    words = LabelWordIds(((5,), (6, 7), (8,)), LABEL_OF_WORD, n_labels=2, aggregate=aggregate)
    torch.testing.assert_close(words.aggregate_scores(LOGPROBS), torch.tensor(expected))


def test_aggregate_is_carried_from_verbalizer_to_scores(bpe_tokenizer):
    words = Verbalizer({0: "bad", 1: ["great", "good"]}, aggregate="logsumexp").tokenize(bpe_tokenizer, True)
    assert words.aggregate == "logsumexp"
    scores = words.aggregate_scores(torch.log(torch.tensor([[0.2, 0.15, 0.1]])))
    # any of the positive words (0.25) beats the one negative word (0.2) only when probabilities add up
    assert scores.argmax(1).item() == 1
    assert Verbalizer({0: "bad", 1: ["great", "good"]}, aggregate="max").tokenize(
        bpe_tokenizer, True).aggregate_scores(torch.log(torch.tensor([[0.2, 0.15, 0.1]]))).argmax(1).item() == 0
