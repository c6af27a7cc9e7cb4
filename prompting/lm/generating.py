"""Text the LM writes: the teacher-forced log-probability of each row's target text after its prompt, and
decoding through transformers' ``generate`` (greedy or beam search), for causal and encoder-decoder LMs.

Both go through a prompt method's hooks (see :class:`prompting.lm.logprobs.PromptHooks`): ``embed`` makes
the input embeddings (soft prompts, P-tuning, AutoPrompt's triggers), ``forward_lm`` the LM call
(prefix-tuning's keys and values), and ``lm_prefix`` gives the keys and values every row attends to before
its input, which ``generate`` puts into its cache. A causal prompt is padded on the left and the target is
appended on the right, numbered on from the prompt; an encoder-decoder LM reads the prompt in its encoder
and the target in its decoder, after the decoder's start tokens (:attr:`LanguageModel.decoder_start_ids`).

Decoding stops at the end-of-text token or at any token that holds a newline (:func:`stop_token_ids`):
the text a row wrote is everything before it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from prompting.core.template import PromptBatch
from prompting.lm.logprobs import PlainHooks, log_softmax

if TYPE_CHECKING:
    from prompting.lm.model import LanguageModel

__all__ = ["Decoding", "target_logprobs", "generate_ids", "stop_token_ids", "written_text"]


@dataclass(frozen=True)
class Decoding:
    """How text is written: beams (1: greedy) and the most new tokens a row may write."""

    num_beams: int = 1
    max_new_tokens: int = 64


def stop_token_ids(lm: "LanguageModel") -> list[int]:
    """The end-of-text token and every token whose text holds a newline: decoding stops at either."""
    return _stop_ids(lm.tokenizer, lm.embeddings.num_embeddings)


@functools.lru_cache(maxsize=8)
def _stop_ids(tokenizer, vocab_size: int) -> list[int]:
    size = min(vocab_size, len(tokenizer))
    texts = tokenizer.batch_decode([[i] for i in range(size)])
    found = [i for i, text in enumerate(texts) if "\n" in text]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return list(dict.fromkeys(eos + found))


def written_text(lm: "LanguageModel", ids: list[int]) -> str:
    """The text of generated token ids up to the first stop (end of text, or a newline), stripped."""
    stops = set(stop_token_ids(lm))
    kept = []
    for token in ids:
        if token in stops:
            kept.append(token)  # a token such as ".\n" keeps the text before its newline
            break
        kept.append(token)
    text = lm.tokenizer.decode(kept, skip_special_tokens=True)
    return text.split("\n", 1)[0].strip()


def target_logprobs(lm: "LanguageModel", batch: PromptBatch, targets: torch.Tensor, known: torch.Tensor,
                    hooks=None) -> torch.Tensor:
    """[B, T] log-probability of each target token after its row's prompt (0 where ``known`` is false).

    ``targets`` [B, T] holds each row's target ids from the left, padded on the right; ``known`` [B, T]
    says which are tokens. Teacher forcing: every target token is read after the true ones before it.
    """
    hooks = hooks or PlainHooks()
    width = targets.shape[1]
    if lm.seq2seq:
        start = torch.tensor(lm.decoder_start_ids, device=targets.device).expand(len(batch), -1)
        decoder = torch.cat([start, targets[:, :-1]], 1)
        decoder_mask = torch.cat([torch.ones_like(start), known[:, :-1].long()], 1)
        embeds = hooks.embed(lm, batch.input_ids, batch)
        logits = hooks.forward_lm(lm, embeds, batch.attention_mask, batch.position_ids, width,
                                  decoder_input_ids=decoder, decoder_attention_mask=decoder_mask)
    else:
        spans = {} if batch.frozen is None else lm.spans.kwargs(batch.frozen.ids)
        ids = torch.cat([batch.input_ids, targets[:, :-1]], 1)
        attention = torch.cat([batch.attention_mask, known[:, :-1].long()], 1)
        last = batch.position_ids[:, -1:]
        positions = torch.cat([batch.position_ids, last + torch.arange(1, width, device=last.device)], 1)
        logits = hooks.forward_lm(lm, hooks.embed(lm, ids, batch), attention, positions, width, **spans)
    token = log_softmax(logits[:, -width:]).gather(2, targets.unsqueeze(-1)).squeeze(-1)
    return token * known


@torch.no_grad()
def generate_ids(lm: "LanguageModel", batch: PromptBatch, hooks=None, decoding: Decoding = Decoding(),
                 prefix: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[list[int]]:
    """The token ids each row writes after its prompt (with the stop token that ended it, if any).

    ``prefix``: keys and values [layers, kv_heads, P, head_dim] every row attends to before its input
    (prefix-tuning, shared demonstrations); a batch that left out its frozen spans attends to theirs.
    """
    from transformers import GenerationConfig

    hooks = hooks or PlainHooks()
    stops = stop_token_ids(lm)
    config = GenerationConfig(max_new_tokens=decoding.max_new_tokens, num_beams=decoding.num_beams, do_sample=False,
                              eos_token_id=stops, pad_token_id=lm.pad_id, bos_token_id=lm.tokenizer.bos_token_id)
    embeds = hooks.embed(lm, batch.input_ids, batch)
    if lm.seq2seq:
        config.decoder_start_token_id = lm.decoder_start_ids[0]
        start = torch.tensor(lm.decoder_start_ids, device=embeds.device).expand(len(batch), -1)
        with lm.prefixed(prefix):
            out = lm.model.generate(inputs_embeds=embeds, attention_mask=batch.attention_mask, decoder_input_ids=start,
                                    generation_config=config)
        return [row[start.shape[1]:].tolist() for row in out]
    inputs = _causal_inputs(lm, batch, embeds, prefix, decoding.num_beams)
    out = lm.model.generate(generation_config=config, **inputs)
    return [row.tolist() for row in out]


def _causal_inputs(lm: "LanguageModel", batch: PromptBatch, embeds: torch.Tensor, prefix, beams: int) -> dict:
    """``generate``'s inputs for a causal LM: with a prefix (a method's, or the batch's frozen spans) in a
    key/value cache, the embeddings get as many leading columns (``generate`` drops them: the cache holds
    those positions), the attention mask the prefix's, and the positions numbered as in a forward pass."""
    mask, positions = batch.attention_mask, batch.position_ids
    keys = values = None
    if prefix is not None:
        size = len(batch)
        keys, values = (t.to(embeds.dtype).unsqueeze(1).expand(-1, size, -1, -1, -1) for t in prefix)
        prefix_mask = mask.new_ones(size, keys.shape[-2])
    elif batch.frozen is not None:
        spans = lm.spans.kwargs(batch.frozen.ids)
        if spans:
            keys, values = spans["prefix"]
            prefix_mask = spans["prefix_mask"]
    if keys is None:
        return {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": positions}
    length = keys.shape[-2]
    cache = lm.prefix_cache(keys.repeat_interleave(beams, 1), values.repeat_interleave(beams, 1))
    return {"inputs_embeds": torch.cat([embeds.new_zeros(len(batch), length, embeds.shape[-1]), embeds], 1),
            "attention_mask": torch.cat([prefix_mask.to(mask), mask], 1),
            "position_ids": torch.cat([positions.new_zeros(len(batch), length), positions], 1),
            lm.cache_argument(): cache}
