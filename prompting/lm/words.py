"""The log-probability of every label word at the ``{mask}`` slot: a causal LM's teacher-forced
log-probability of all the word's tokens after the prompt, a masked LM's sum over one mask per token;
many candidates after one query share the query's work (:mod:`prompting.lm.trie`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from prompting.core.template import PromptBatch
from prompting.core.verbalizer import LabelWordIds
from prompting.lm.logprobs import PlainHooks, PromptHooks, log_softmax
from prompting.lm.trie import shared_word_logprobs

if TYPE_CHECKING:
    from prompting.lm.model import LanguageModel

__all__ = ["word_logprobs", "causal_word_logprobs", "masked_word_logprobs", "decoder_word_logprobs"]


def word_logprobs(lm: "LanguageModel", batches: dict[int, PromptBatch], words: LabelWordIds,
                  hooks: PromptHooks | None = None) -> torch.Tensor:
    """[B, n_words] log-probabilities of each whole label word at the ``{mask}`` slot.

    ``batches`` maps a number of mask tokens to the batch encoded with that many masks
    (a causal LM needs only ``{1: batch}``).
    """
    hooks = hooks or PlainHooks()
    if lm.causal and getattr(words, "trie", None) is not None and batches[min(batches)].frozen is None:
        # only hooks that call the LM as it is may reuse the query's keys and values
        if getattr(hooks, "plain_lm_call", False):
            return shared_word_logprobs(lm, batches[min(batches)], words, hooks)
    if lm.causal:
        return causal_word_logprobs(lm, batches[min(batches)], words, hooks)
    if lm.seq2seq:
        return decoder_word_logprobs(lm, batches[min(batches)], words, hooks)
    return masked_word_logprobs(lm, batches, words, hooks)

def causal_word_logprobs(lm: "LanguageModel", batch: PromptBatch, words: LabelWordIds, hooks) -> torch.Tensor:
    size = len(batch)
    columns: dict[int, torch.Tensor] = {}
    single = [i for i, w in enumerate(words.word_ids) if len(w) == 1]
    # a batch without its frozen spans attends to their cached keys and values
    spans = {} if batch.frozen is None else lm.spans.kwargs(batch.frozen.ids)
    if single:
        embeds = hooks.embed(lm, batch.input_ids, batch)
        logits = hooks.forward_lm(lm, embeds, batch.attention_mask, batch.position_ids, 1, **spans)
        first = log_softmax(logits[:, -1])
        for i in single:
            columns[i] = first[:, words.word_ids[i][0]]
    for i, word in enumerate(words.word_ids):
        if len(word) == 1:
            continue
        # teacher forcing: append the word's tokens but the last; left padding keeps rows aligned
        tail = torch.tensor(word[:-1], device=batch.input_ids.device).expand(size, -1)
        ids = torch.cat([batch.input_ids, tail], 1)
        attention = torch.cat([batch.attention_mask, torch.ones_like(tail)], 1)
        last = batch.position_ids[:, -1:]
        positions = torch.cat([batch.position_ids, last + torch.arange(1, len(word), device=last.device)], 1)
        logits = hooks.forward_lm(lm, hooks.embed(lm, ids, batch), attention, positions, len(word), **spans)
        logprobs = log_softmax(logits)
        target = torch.tensor(word, device=logprobs.device)
        columns[i] = logprobs.gather(2, target.expand(size, -1).unsqueeze(-1)).squeeze(-1).sum(1)
    return torch.stack([columns[i] for i in range(len(words.word_ids))], 1)

def masked_word_logprobs(lm: "LanguageModel", batches, words: LabelWordIds, hooks) -> torch.Tensor:
    columns: dict[int, torch.Tensor] = {}
    for n in words.lengths:
        if n not in batches:
            raise ValueError(f"no batch encoded with {n} mask tokens; encode with n_mask={n}")
        batch = batches[n]
        logits = hooks.forward_lm(lm, hooks.embed(lm, batch.input_ids, batch), batch.attention_mask,
                                  batch.position_ids, 0)
        rows = torch.arange(len(batch), device=logits.device).unsqueeze(1)
        at_masks = log_softmax(logits[rows, batch.mask_positions])  # [B, n, V]
        for i, word in enumerate(words.word_ids):
            if len(word) == n:
                target = torch.tensor(word, device=at_masks.device)
                columns[i] = at_masks.gather(2, target.expand(len(batch), -1).unsqueeze(-1)).squeeze(-1).sum(1)
    return torch.stack([columns[i] for i in range(len(words.word_ids))], 1)


def decoder_word_logprobs(lm: "LanguageModel", batch: PromptBatch, words: LabelWordIds, hooks) -> torch.Tensor:
    """An encoder-decoder LM: each word's tokens read by the decoder after its start tokens (T5's sentinel
    style, see :mod:`prompting.lm.seq2seq`); one pass for the one-token words, one per longer word."""
    size, start = len(batch), list(lm.decoder_start_ids)
    embeds = hooks.embed(lm, batch.input_ids, batch)
    columns: dict[int, torch.Tensor] = {}
    groups = {(): [i for i, w in enumerate(words.word_ids) if len(w) == 1]}
    groups.update({tuple(w[:-1]): [i] for i, w in enumerate(words.word_ids) if len(w) > 1})
    for tail, members in groups.items():
        if not members:
            continue
        decoder = torch.tensor(start + list(tail), device=batch.input_ids.device).expand(size, -1)
        logits = hooks.forward_lm(lm, embeds, batch.attention_mask, batch.position_ids, len(tail) + 1,
                                  decoder_input_ids=decoder)
        logprobs = log_softmax(logits)
        for i in members:
            target = torch.tensor(words.word_ids[i], device=logprobs.device).expand(size, -1)
            columns[i] = logprobs[:, -target.shape[1]:].gather(2, target.unsqueeze(-1)).squeeze(-1).sum(1)
    return torch.stack([columns[i] for i in range(len(words.word_ids))], 1)
