"""Which vocabulary tokens may serve as trigger or label words.

Both AutoPrompt's trigger search and the label-word search pick tokens from the whole vocabulary;
both must skip control tokens, pieces that only continue a word, and tokens that would not read as
a word in a template. The rules are tokenizer conventions, not model families:

- byte-level BPE (GPT-2, RoBERTa, Llama-3, SmolLM2): a word starts with ``Ġ`` (its leading space);
- SentencePiece (Llama-2, Gemma, T5): a word starts with ``▁``;
- WordPiece (BERT): a piece starting with ``##`` continues a word; everything else starts one.

>>> mask = token_mask(lm.tokenizer, lm.embeddings.num_embeddings, alphabetic=True)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Iterable

import torch

__all__ = ["token_mask", "token_strings", "word_start_rule", "label_word_token_ids"]


def word_start_rule(tokenizer) -> tuple[str, str | None]:
    """``("prefix", "Ġ")``, ``("prefix", "▁")``, ``("not_prefix", "##")`` or ``("any", None)``.

    Decided by which marker most vocabulary tokens carry.
    """
    vocab = tokenizer.get_vocab()
    counts = {marker: sum(token.startswith(marker) for token in vocab) for marker in ("Ġ", "▁", "##")}
    marker = max(counts, key=counts.get)
    if counts[marker] < max(10, len(vocab) // 100):
        return "any", None
    return ("not_prefix" if marker == "##" else "prefix"), marker


def token_strings(tokenizer, ids: Iterable[int]) -> list[str]:
    """Each token as text, without the whitespace a word-start marker stands for."""
    return [tokenizer.convert_tokens_to_string([t]).strip() if t is not None else ""
            for t in tokenizer.convert_ids_to_tokens(list(ids))]


def label_word_token_ids(tokenizer, words: Iterable[str]) -> set[int]:
    """Every token id of the words as written alone and after a space (however they are cased)."""
    ids: set[int] = set()
    for word in words:
        for form in {word, word.lower(), word.capitalize()}:
            for text in (form, " " + form):
                ids.update(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids


def token_mask(tokenizer, vocab_size: int, exclude_special: bool = True, exclude_subwords: bool = True,
               alphabetic: bool = False, min_length: int = 1, exclude_ids: Iterable[int] = ()) -> torch.Tensor:
    """Boolean ``[vocab_size]``: True for tokens that may be chosen.

    Always excluded: ids the tokenizer does not know (embedding rows past its vocabulary), tokens
    that are empty once stripped, tokens with braces (they would break a template). Optionally:
    special and added control tokens (``<|im_start|>``, ``[CLS]``), sub-word pieces that do not
    start a word, tokens that are not purely alphabetic, shorter than ``min_length`` characters,
    and ``exclude_ids``.
    """
    n = min(vocab_size, len(tokenizer))
    allowed = torch.zeros(vocab_size, dtype=torch.bool)
    tokens = tokenizer.convert_ids_to_tokens(list(range(n)))
    texts = token_strings(tokenizer, range(n))
    rule, marker = word_start_rule(tokenizer)
    for i, (token, text) in enumerate(zip(tokens, texts)):
        if token is None or not text or "{" in text or "}" in text or any(c.isspace() for c in text):
            continue
        if exclude_subwords and rule == "prefix" and not token.startswith(marker):
            continue
        if exclude_subwords and rule == "not_prefix" and token.startswith(marker):
            continue
        if (alphabetic and not text.isalpha()) or len(text) < min_length:
            continue
        allowed[i] = True
    if exclude_special:
        special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
        allowed[[i for i in special if 0 <= i < vocab_size]] = False
    banned = [i for i in exclude_ids if 0 <= i < vocab_size]
    if banned:
        allowed[banned] = False
    return allowed
