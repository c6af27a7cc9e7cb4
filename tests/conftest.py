"""Shared offline fixtures: tiny tokenizers trained in-process and tiny *randomly initialised* LMs.

Nothing here downloads anything; everything is built from the built-in text below, seeded, in well
under three seconds for the whole session.

Tokenizers (session-scoped, treat as read-only):

``bpe_tokenizer``
    Byte-level BPE (GPT-2 / RoBERTa style, no prefix space) trained on :data:`CORPUS`, vocab 800,
    wrapped as a transformers ``PreTrainedTokenizerFast``. Specials: ``<pad>`` 0, ``<s>`` 1 (bos),
    ``</s>`` 2 (eos), ``<unk>`` 3, ``<mask>`` 4 (lstrip, as in RoBERTa). ``tokenizer(text)`` gives
    ``<s> text </s>``. ``" great"``, ``" good"``, ``" bad"``, ``" terrible"`` are single tokens;
    ``" greatest"`` (2) and ``" horrible"`` (3) are multi-token.
``wordpiece_tokenizer``
    Lower-casing BERT-style WordPiece, a fixed vocab of ~360 pieces from :data:`CORPUS`, with ``[PAD]`` 0,
    ``[UNK]`` 1, ``[CLS]`` 2, ``[SEP]`` 3, ``[MASK]`` 4; ``tokenizer(text)`` gives
    ``[CLS] text [SEP]``. Characters absent from the corpus (``"€"``) become ``[UNK]``.

Models (session-scoped ``prompting.lm.model.LanguageModel`` on cpu, eval mode; do not train them in
place, ask ``make_tiny_lm`` for a private copy instead):

``tiny_causal_lm``   random 2-layer ``LlamaForCausalLM`` (hidden 32, 4 heads, 2 kv heads) + BPE.
``tiny_gpt2_lm``     random 2-layer ``GPT2LMHeadModel`` (absolute positions) + BPE.
``tiny_bert_lm``     random 2-layer ``BertForMaskedLM`` + WordPiece.
``tiny_roberta_lm``  random 2-layer ``RobertaForMaskedLM`` + BPE (label words with a leading space).

``make_tiny_lm(kind, seed=0)`` (function-scoped) builds a fresh one of ``"llama"``, ``"gpt2"``,
``"bert"`` or ``"roberta"``, e.g. for tests that update weights.

The random weights use a large ``initializer_range`` (0.5 instead of 0.02) so the output really
depends on the input: with the usual tiny init, every context gives nearly the same distribution and
a padding or position bug would hide below test tolerances.
"""

from __future__ import annotations

import itertools
import re

import pytest
import torch

SUBJECTS = ["the movie", "the film", "this movie", "this film", "the story", "the acting", "the plot",
            "the music", "the ending", "the script", "the cast", "the director", "it"]
VERBS = ["was", "is", "felt", "seemed", "looked"]
POSITIVE = ["great", "good", "fine", "fun", "nice", "positive", "lovely", "wonderful", "brilliant", "funny"]
NEGATIVE = ["terrible", "bad", "awful", "boring", "poor", "negative", "dull", "weak", "slow", "sad"]
SENTENCES = """I loved every minute of this movie and would watch it again.
I hated the film from the first scene to the last one.
Yes, it was worth the ticket, and my friends agreed with me.
No, it was not worth the money or the time we spent.
The actors did their best with a script that had nothing to say.
A warm and funny story about a family that learns to laugh again.
The characters are thin, the jokes are old, and the pace is slow.
What a beautiful film: the music, the light, the faces, all of it.
Nobody in the theatre laughed, and several people walked out early.
It is the kind of movie you remember for years after you see it.
The plot makes no sense, but the action scenes are exciting.
Great performances from the whole cast, especially the young lead.
Bad writing, bad editing, and a very bad ending.
Do not waste your evening on this one.
The director knows how to tell a simple story with real feeling.
Positive reviews were everywhere, yet I found it rather empty.
Negative critics missed the point of this quiet, clever picture.
Was it good? Yes. Was it great? Not quite.
Is it bad? No, just forgettable.
Two hours of noise, explosions and shouting without a single idea.
A small film with a big heart and a lot of charm.
The first half drags, but the second half is strong.
Every scene looks like a painting, and every line sounds true.
My children enjoyed it, and so did I.
The sequel is better than the original in almost every way.
I fell asleep twice, which says enough about this film.
Sharp dialogue, clever twists and an ending that works.
The special effects cannot hide a story with no soul.
It was a pleasant surprise, much better than the trailer suggested.
The worst movie I have seen this year, and I have seen many.""".splitlines()
CLOSERS = ["It was great.", "It was terrible.", "It was good.", "It was bad.",
           "Yes, I liked it.", "No, I did not like it."]


def _corpus() -> list[str]:
    lines = list(SENTENCES)
    for subject, verb, adjective in itertools.product(SUBJECTS, VERBS, POSITIVE + NEGATIVE):
        lines.append(f"{subject[0].upper()}{subject[1:]} {verb} {adjective}.")
    for i, (subject, adjective) in enumerate(itertools.product(SUBJECTS, POSITIVE + NEGATIVE)):
        label = "positive" if adjective in POSITIVE else "negative"
        lines.append(f"Review: {subject} was {adjective}. Sentiment: {label}. {CLOSERS[i % len(CLOSERS)]}")
    return lines


# Tiny models gain nothing from threads, and on a busy two-core machine OpenMP spin-waiting made a
# forward pass a hundred times slower.
torch.set_num_threads(1)

CORPUS = _corpus()  # ~1600 short lines of movie-review English


def build_bpe_tokenizer():
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=800, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<pad>", "<s>", "</s>", "<unk>", AddedToken("<mask>", lstrip=True)])
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")


WORDPIECE_SUFFIXES = ["##est", "##ly", "##or", "##rible", "##s", "##ed", "##ing", "##er", "##ful", "##ness"]


def build_wordpiece_tokenizer():
    # The vocab is chosen here, not learned: tokenizers' WordPieceTrainer breaks ties differently
    # from run to run. Every ASCII character alone and as a ##continuation, a few suffixes, then
    # every corpus word (most frequent first, capped at 600 entries).
    import string
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = specials + chars + ["##" + ch for ch in chars] + WORDPIECE_SUFFIXES
    words = Counter(w for line in CORPUS for w in re.findall(r"[a-z]+", line.lower()))
    for word, _ in sorted(words.items(), key=lambda item: (-item[1], item[0])):
        if len(pieces) >= 600:
            break
        if word not in pieces:
            pieces.append(word)
    tok = Tokenizer(models.WordPiece({piece: i for i, piece in enumerate(pieces)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def build_t5_tokenizer():
    """A T5-style tokenizer: SentencePiece-like pieces (``▁`` marks a word's start), ``<pad>`` 0, ``</s>`` 1,
    ``<unk>`` 2, sentinels ``<extra_id_0>`` ... ``<extra_id_9>`` and no mask token; ``tokenizer(text)`` gives
    ``text </s>``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    sentinels = [f"<extra_id_{i}>" for i in range(10)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=600, show_progress=False, special_tokens=["<pad>", "</s>", "<unk>"] + sentinels)
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                                   additional_special_tokens=sentinels)


INIT_RANGE = 0.5
SIZES = dict(num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, initializer_range=INIT_RANGE)


def build_tiny_lm(kind: str, tokenizer, seed: int = 0):
    """A ``LanguageModel`` around a tiny randomly initialised model of ``kind``."""
    import transformers as tf

    from prompting.lm.model import LanguageModel

    specials = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    if kind == "llama":
        config = tf.LlamaConfig(hidden_size=32, num_key_value_heads=2, max_position_embeddings=128,
                                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                **SIZES, **specials)
        model_class = tf.LlamaForCausalLM
    elif kind == "gpt2":
        config = tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, initializer_range=INIT_RANGE,
                               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                               **specials)
        model_class = tf.GPT2LMHeadModel
    elif kind == "bert":
        config = tf.BertConfig(hidden_size=32, max_position_embeddings=128, **SIZES, **specials)
        model_class = tf.BertForMaskedLM
    elif kind == "roberta":
        # RoBERTa numbers positions from pad_token_id + 1
        config = tf.RobertaConfig(hidden_size=32, max_position_embeddings=130,
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  **SIZES, **specials)
        model_class = tf.RobertaForMaskedLM
    elif kind == "t5":  # relative position buckets, no mask token: {mask} becomes a sentinel
        config = tf.T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                             decoder_start_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                             initializer_factor=2.0, **specials)
        model_class = tf.T5ForConditionalGeneration
    elif kind == "bart":  # absolute positions, a <mask> token; the decoder starts with </s> <s>
        config = tf.BartConfig(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                               decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                               max_position_embeddings=128, init_std=INIT_RANGE, bos_token_id=tokenizer.bos_token_id,
                               eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
                               forced_eos_token_id=None, **specials)
        model_class = tf.BartForConditionalGeneration
    else:
        raise ValueError(f"kind={kind!r}; expected llama, gpt2, bert, roberta, t5 or bart")
    torch.manual_seed(seed)
    model = model_class(config)
    return LanguageModel(model, tokenizer, name=f"tiny-random-{kind}", device="cpu")


@pytest.fixture(scope="session")
def bpe_tokenizer():
    return build_bpe_tokenizer()


@pytest.fixture(scope="session")
def wordpiece_tokenizer():
    return build_wordpiece_tokenizer()


@pytest.fixture(scope="session")
def tiny_causal_lm(bpe_tokenizer):
    return build_tiny_lm("llama", bpe_tokenizer)


@pytest.fixture(scope="session")
def tiny_gpt2_lm(bpe_tokenizer):
    return build_tiny_lm("gpt2", bpe_tokenizer)


@pytest.fixture(scope="session")
def tiny_bert_lm(wordpiece_tokenizer):
    return build_tiny_lm("bert", wordpiece_tokenizer)


@pytest.fixture(scope="session")
def tiny_roberta_lm(bpe_tokenizer):
    return build_tiny_lm("roberta", bpe_tokenizer)


@pytest.fixture(scope="session")
def t5_tokenizer():
    return build_t5_tokenizer()


@pytest.fixture(scope="session")
def tiny_t5_lm(t5_tokenizer):
    return build_tiny_lm("t5", t5_tokenizer)


@pytest.fixture(scope="session")
def tiny_bart_lm(bpe_tokenizer):
    return build_tiny_lm("bart", bpe_tokenizer)


@pytest.fixture
def make_tiny_lm(bpe_tokenizer, wordpiece_tokenizer, t5_tokenizer):
    """Factory for a private tiny random LM: ``make_tiny_lm("gpt2", seed=1)``."""
    def make(kind: str, seed: int = 0):
        tokenizer = {"bert": wordpiece_tokenizer, "t5": t5_tokenizer}.get(kind, bpe_tokenizer)
        return build_tiny_lm(kind, tokenizer, seed)
    return make


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, bpe_tokenizer):
    """A tiny random Llama saved as a local checkpoint folder, for tests that load a model by path
    (``model: <folder>`` in a config, as a user would)."""
    lm = build_tiny_lm("llama", bpe_tokenizer)
    path = tmp_path_factory.mktemp("tiny-llama")
    lm.model.save_pretrained(path)
    lm.tokenizer.save_pretrained(path)
    return path
