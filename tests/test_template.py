"""The template language: parsing, errors, encoding to token ids with slot positions, collate."""

import warnings

import pytest
import torch

from prompting.core.template import (
    Field, Mask, Soft, Template, TemplateError, Text, Trigger, collate,
)

pytestmark = pytest.mark.filterwarnings("ignore:template .* causal LM predicts:UserWarning")


def ids_of(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------------------------------- parsing

def test_parse_every_slot_kind():
    t = Template('{premise} Question: {hypothesis}? {soft} {soft:4} {soft:"It was"} {trigger:5} {mask}'
                 ' {{braces}}')
    assert t.parts == (
        Field("premise"), Text(" Question: "), Field("hypothesis"), Text("? "),
        Soft(1), Text(" "), Soft(4), Text(" "), Soft(0, init_text="It was"), Text(" "),
        Trigger(5), Text(" "), Mask(), Text(" {braces}"),
    )
    assert t.fields == ("premise", "hypothesis")
    assert t.n_trigger == 5
    assert t.has_soft


def test_parse_plain_template_and_field_order():
    t = Template("{text_a} It was {mask}.")
    assert t.parts == (Field("text_a"), Text(" It was "), Mask(), Text("."))
    assert t.fields == ("text_a",) and t.n_trigger == 0 and not t.has_soft
    assert Template("{text_b} and {text_a}, {text_b} {mask}").fields == ("text_b", "text_a")


def test_slot_names_may_be_padded_with_spaces():
    assert Template("{ text_a } {  mask } { soft:2 }").parts == (
        Field("text_a"), Text(" "), Mask(), Text(" "), Soft(2))


def test_literal_braces():
    t = Template('{{"a": {text_a}}} {mask} }}{{')
    assert t.parts == (Text('{"a": '), Field("text_a"), Text("} "), Mask(), Text(" }{"))


def test_fields_named_like_keywords_are_fields():
    assert Template("{softness} {trigger_word} {masked} {mask}").fields == (
        "softness", "trigger_word", "masked")


@pytest.mark.parametrize("text, message", [
    ("{text_a} It was great.", "0 {mask} slots"),
    ("{text_a} {mask} or {mask}", "2 {mask} slots"),
    ("It was {mask}.", "uses no example field"),
    ("{soft:3} {mask}", "uses no example field"),
    ("{text_a It was {mask}.", r"unmatched '\{' at character 0"),
    ("{text_a} It was} {mask}.", r"unmatched '\}' at character 15"),
    ("{text_a}} {mask}", r"unmatched '\}'"),
    ("{{text_a} {mask}", r"unmatched '\}'"),
    ("{text_a} {ma{sk}", r"unmatched '\{'"),
    ("{} {text_a} {mask}", r"slot \{\} is not valid"),
    ("{text a} {mask}", r"slot \{text a\} is not valid"),
    ("{1st} {mask}", r"slot \{1st\} is not valid"),
])
def test_structural_errors(text, message):
    with pytest.raises(TemplateError, match=message):
        Template(text)


@pytest.mark.parametrize("slot", ["{soft:0}", "{soft:}", "{soft:x}", "{soft:-1}", "{soft 4}",
                                  '{soft:""}', '{soft:"  "}', "{soft:2.5}", '{soft:"a" 2}'])
def test_bad_soft_specs(slot):
    with pytest.raises(TemplateError, match="soft"):
        Template(slot + " {text_a} {mask}")


@pytest.mark.parametrize("slot", ["{trigger:0}", "{trigger:}", "{trigger:abc}", "{trigger:-2}", "{trigger 3}"])
def test_bad_trigger_specs(slot):
    with pytest.raises(TemplateError, match=r"trigger:N\} with N >= 1"):
        Template("{text_a} " + slot + " {mask}")


def test_template_must_be_a_string():
    with pytest.raises(TemplateError, match="must be a string, got list"):
        Template(["{text_a} {mask}"])


def test_check_fields_names_missing_and_available_fields():
    t = Template("{premise} ? {mask} , {hypothesis}")
    t.check_fields(["premise", "hypothesis", "label"])
    with pytest.raises(TemplateError, match=r"\{hypothesis\}.*available fields: premise, label"):
        t.check_fields(["premise", "label"])


def test_encoding_an_example_without_the_field(bpe_tokenizer):
    enc = Template("{premise} ? {mask} , {hypothesis}").encoder(bpe_tokenizer, causal=False)
    with pytest.raises(TemplateError, match=r"\{hypothesis\}.*available fields: premise, label"):
        enc.encode([{"premise": "It rained.", "label": "0"}])


def test_equality_and_hash_follow_the_text():
    assert Template("{text_a} {mask}") == Template("{text_a} {mask}")
    assert Template("{text_a} {mask}") != Template("{text_a}  {mask}")
    assert len({Template("{text_a} {mask}"), Template("{text_a} {mask}")}) == 1
    assert str(Template("{text_a} {mask}")) == "{text_a} {mask}"


# ------------------------------------------------------------------------------- causal warning

def test_causal_lm_warns_about_text_after_mask(bpe_tokenizer):
    with pytest.warns(UserWarning, match=r"text after it \(' because it was fun'\) is not seen"):
        Template("{text_a} It was {mask} because it was fun").encoder(bpe_tokenizer, causal=True)


@pytest.mark.parametrize("text, causal", [("{text_a} It was {mask}", True),
                                          ("{text_a} It was {mask}  ", True),
                                          ("{text_a} It was {mask} because", False)])
def test_no_warning_when_nothing_is_hidden(bpe_tokenizer, text, causal):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Template(text).encoder(bpe_tokenizer, causal=causal)


# ------------------------------------------------------------------------------------- encoding

TEXTS = ["a fine film", "  It was great, really!  ", "Bad.", "No, I did not like it",
         "what's 2 + 2?", "line one\nline two"]
TEMPLATES = ["{text_a} It was {mask}.", "Review: {text_a}\nSentiment: {mask}",
             "{text_a}\n\nQuestion: {text_b}? Answer: {mask}, {text_b}", "Review:{text_a} {mask}",
             "({text_a}) {{it}} was {mask} indeed"]


def render(template, example, mask):
    text = template.replace("{{", "\0").replace("}}", "\1")
    for name, value in example.items():
        text = text.replace("{%s}" % name, value.strip())
    return text.replace("{mask}", mask).replace("\0", "{").replace("\1", "}")


@pytest.mark.parametrize("template", TEMPLATES)
def test_masked_bpe_encoding_equals_tokenising_the_whole_sentence(bpe_tokenizer, template):
    enc = Template(template).encoder(bpe_tokenizer, causal=False)
    examples = [{"text_a": t, "text_b": "a yes or no question"} for t in TEXTS]
    for example, encoding in zip(examples, enc.encode(examples)):
        # <mask> swallows the space before it, as in RoBERTa
        assert encoding.input_ids == bpe_tokenizer(render(template, example, "<mask>"))["input_ids"]


@pytest.mark.parametrize("template", TEMPLATES)
def test_causal_bpe_context_plus_label_word_equals_the_whole_sentence(bpe_tokenizer, template):
    enc = Template(template).encoder(bpe_tokenizer, causal=True)
    examples = [{"text_a": t, "text_b": "a yes or no question"} for t in TEXTS]
    for word in ("great", "horrible"):
        word_ids = ids_of(bpe_tokenizer, (" " if enc.mask_leading_space else "") + word)
        for example, encoding in zip(examples, enc.encode(examples)):
            sentence = render(template, example, "{mask}").split("{mask}")[0].rstrip(" ")
            sentence += (" " if enc.mask_leading_space else "") + word
            # bos, no eos: the label word follows the context directly
            assert encoding.input_ids + word_ids == [bpe_tokenizer.bos_token_id] + ids_of(bpe_tokenizer, sentence)
            assert encoding.mask_positions == []


def test_mask_leading_space_follows_the_template(bpe_tokenizer):
    assert Template("{text_a} It was {mask}.").encoder(bpe_tokenizer, causal=False).mask_leading_space
    assert Template("{text_a} Sentiment:\n{mask}").encoder(bpe_tokenizer, causal=True).mask_leading_space is False
    assert Template("{text_a} ({mask})").encoder(bpe_tokenizer, causal=True).mask_leading_space is False


def test_bert_encoding_has_cls_sep_and_masks(wordpiece_tokenizer):
    tok = wordpiece_tokenizer
    enc = Template("{text_a} It was {mask}.").encoder(tok, causal=False)
    (one,) = enc.encode([{"text_a": "A fine film"}], n_mask=1)
    assert one.input_ids == tok("a fine film it was [MASK].")["input_ids"]
    assert one.input_ids[0] == tok.cls_token_id and one.input_ids[-1] == tok.sep_token_id
    (three,) = enc.encode([{"text_a": "A fine film"}], n_mask=3)
    assert three.mask_positions == [6, 7, 8]
    assert [three.input_ids[p] for p in three.mask_positions] == [tok.mask_token_id] * 3
    assert three.input_ids == tok("a fine film it was [MASK][MASK][MASK].")["input_ids"]


@pytest.mark.parametrize("causal", [False, True])
def test_slot_positions_point_at_their_tokens(wordpiece_tokenizer, causal):
    tok = wordpiece_tokenizer
    enc = Template("{soft:2} {text_a} {trigger:3} It was {mask} .").encoder(tok, causal=causal)
    (e,) = enc.encode([{"text_a": "good film"}], n_mask=2)
    tokens = tok.convert_ids_to_tokens(e.input_ids)
    assert tokens[0] == "[CLS]"
    assert e.soft_positions == [1, 2]
    assert tokens[3:5] == ["good", "film"]
    assert e.trigger_positions == [5, 6, 7]
    assert tokens[8:10] == ["it", "was"]
    if causal:  # the context ends where the label word starts: no mask, no [SEP]
        assert e.mask_positions == [] and len(tokens) == 10
    else:
        assert e.mask_positions == [10, 11] and tokens[10:] == ["[MASK]", "[MASK]", ".", "[SEP]"]
    assert all(e.input_ids[p] == enc.placeholder_id for p in e.soft_positions + e.trigger_positions)


def test_soft_slot_initialised_from_text(bpe_tokenizer):
    enc = Template('{text_a} {soft:"It was"} {mask}').encoder(bpe_tokenizer, causal=True)
    init = ids_of(bpe_tokenizer, " It was")
    assert enc.soft_init_ids == [init]
    (e,) = enc.encode([{"text_a": "Bad."}])
    n_text = len(ids_of(bpe_tokenizer, "Bad."))
    assert e.soft_positions == list(range(1 + n_text, 1 + n_text + len(init)))
    assert len(e.input_ids) == 1 + n_text + len(init)


def test_fields_are_stripped(bpe_tokenizer):
    enc = Template("{text_a} It was {mask}.").encoder(bpe_tokenizer, causal=False)
    a, b = enc.encode([{"text_a": "  a fine film \n"}, {"text_a": "a fine film"}])
    assert a.input_ids == b.input_ids


# --------------------------------------------------------------------------------- truncation

def test_only_fields_are_truncated_longest_first(wordpiece_tokenizer):
    tok = wordpiece_tokenizer
    long_a = "the movie was great " * 5  # 20 tokens
    short_b = "it was bad"  # 3 tokens
    enc = Template("{text_a} ? {mask} , {text_b} !").encoder(tok, causal=False, max_length=20)
    (e,) = enc.encode([{"text_a": long_a, "text_b": short_b}])
    # 6 constant tokens ([CLS] ? [MASK] , ! [SEP]) leave 14 for the fields: text_a keeps its first 11
    assert len(e.input_ids) == 20
    assert e.input_ids == tok(" ".join(long_a.split()[:11]) + " ? [MASK] , " + short_b + " !")["input_ids"]
    assert e.mask_positions == [13]


def test_truncation_evens_out_fields_when_both_are_long(wordpiece_tokenizer):
    tok = wordpiece_tokenizer
    enc = Template("{text_a} {text_b} {mask}").encoder(tok, causal=False, max_length=13)
    (e,) = enc.encode([{"text_a": "great " * 12, "text_b": "bad " * 8}])
    # 10 tokens for the fields: 12/8 -> 5/5
    assert e.input_ids == tok("great " * 5 + "bad " * 5 + "[MASK]")["input_ids"]


def test_short_examples_are_not_truncated(wordpiece_tokenizer):
    enc = Template("{text_a} {mask}").encoder(wordpiece_tokenizer, causal=False, max_length=8)
    (e,) = enc.encode([{"text_a": "good good good good good"}])
    assert len(e.input_ids) == 8  # exactly max_length: nothing cut
    assert e.input_ids.count(wordpiece_tokenizer.convert_tokens_to_ids("good")) == 5


def test_truncation_counts_the_masks(wordpiece_tokenizer):
    enc = Template("{text_a} {mask}").encoder(wordpiece_tokenizer, causal=False, max_length=8)
    (e,) = enc.encode([{"text_a": "good good good good good"}], n_mask=3)
    assert len(e.input_ids) == 8 and len(e.mask_positions) == 3


def test_causal_reserve_keeps_room_for_label_word_tokens(bpe_tokenizer):
    enc = Template("{text_a} It was {mask}").encoder(bpe_tokenizer, causal=True, max_length=16)
    enc.reserve = 2  # a three-token label word appends two tokens to the context
    (e,) = enc.encode([{"text_a": "The plot makes no sense, but the action scenes are exciting."}])
    assert len(e.input_ids) == 14
    assert e.input_ids[-2:] == list(ids_of(bpe_tokenizer, " It was"))


def test_template_alone_longer_than_max_length(wordpiece_tokenizer):
    enc = Template("{text_a} the movie was great and the film was good . {mask}").encoder(
        wordpiece_tokenizer, causal=False, max_length=10)
    with pytest.raises(TemplateError, match=r"needs 13 tokens without its fields.*max_length=10"):
        enc.encode([{"text_a": "ok"}])


# ------------------------------------------------------------------------------ with_triggers

def test_with_triggers_gives_a_manual_template_that_reparses():
    t = Template('{soft:2} {text_a} {trigger:2} {{x}} {soft:"It was"} {trigger:1} {mask}.')
    manual = t.with_triggers(["atmosphere", " overall ", "{weird}"])
    assert manual.text == '{soft:2} {text_a} atmosphere overall {{x}} {soft:"It was"} {{weird}} {mask}.'
    assert Template(manual.text) == manual
    assert manual.n_trigger == 0
    assert manual.parts[3] == Text(" atmosphere overall {x} ")
    assert manual.parts[-3:] == (Text(" {weird} "), Mask(), Text("."))


def test_with_triggers_needs_one_word_per_trigger_token():
    with pytest.raises(TemplateError, match="has 3 trigger tokens, got 2 words"):
        Template("{text_a} {trigger:3} {mask}").with_triggers(["a", "b"])


# ------------------------------------------------------------------------------------ collate

def test_collate_left_pads_causal_batches(bpe_tokenizer):
    enc = Template("{soft:2} {text_a} {trigger:1} It was {mask}").encoder(bpe_tokenizer, causal=True)
    encs = enc.encode([{"text_a": "Bad."}, {"text_a": "The plot makes no sense at all."}])
    pad = bpe_tokenizer.pad_token_id
    batch = collate(encs, pad, left=True)
    n0, n1 = len(encs[0].input_ids), len(encs[1].input_ids)
    width = max(n0, n1)
    assert n0 < n1 and batch.input_ids.shape == (2, width) and len(batch) == 2
    assert batch.input_ids[0].tolist() == [pad] * (width - n0) + encs[0].input_ids
    assert batch.attention_mask[0].tolist() == [0] * (width - n0) + [1] * n0
    assert batch.input_ids[1].tolist() == encs[1].input_ids
    # positions count real tokens only, so a padded row sees the same positions as alone
    assert batch.position_ids[0, width - n0:].tolist() == list(range(n0))
    assert batch.position_ids[1].tolist() == list(range(n1))
    for row, e in enumerate(encs):
        for name in ("soft_positions", "trigger_positions"):
            moved = getattr(batch, name)[row].tolist()
            assert [batch.input_ids[row, p].item() for p in moved] == [e.input_ids[p] for p in getattr(e, name)]
            assert moved == [p + width - len(e.input_ids) for p in getattr(e, name)]
    assert batch.mask_positions.shape == (2, 0)
    assert batch.soft_positions.dtype == torch.long


def test_collate_right_pads_masked_batches(wordpiece_tokenizer):
    tok = wordpiece_tokenizer
    enc = Template("{text_a} It was {mask}.").encoder(tok, causal=False)
    encs = enc.encode([{"text_a": "the plot makes no sense"}, {"text_a": "bad"}], n_mask=2)
    batch = collate(encs, tok.pad_token_id, left=False)
    n1 = len(encs[1].input_ids)
    assert batch.input_ids[1].tolist() == encs[1].input_ids + [tok.pad_token_id] * (batch.input_ids.shape[1] - n1)
    assert batch.attention_mask[1].tolist()[:n1] == [1] * n1 and batch.attention_mask[1, n1:].sum() == 0
    assert batch.position_ids[1, :n1].tolist() == list(range(n1))
    assert batch.mask_positions.tolist() == [e.mask_positions for e in encs]
    assert (batch.input_ids.gather(1, batch.mask_positions) == tok.mask_token_id).all()
    moved = batch.to("cpu")
    assert torch.equal(moved.input_ids, batch.input_ids) and torch.equal(moved.mask_positions, batch.mask_positions)
