"""The pieces of AutoPrompt's search that do not depend on its state: HotFlip candidates, the
whole-word vocabulary, the hooks that write triggers into a batch's input, and the text before the
trigger as keys and values (:class:`Shared`), with the row helpers that judging uses."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from prompting.core.template import PromptBatch
from prompting.lm.logprobs import PlainHooks, log_softmax
from prompting.lm.model import LanguageModel
from prompting.lm.vocab import token_strings
from prompting.methods.batches import Batch, EncodedExamples

__all__ = ["hotflip_candidates", "whole_word_tokens", "TriggerHooks", "Shared", "subset", "by_length",
           "shared_text", "score_after_shared_text", "gradient_after_shared_text", "search_rows"]


def hotflip_candidates(averaged_grad: torch.Tensor, embedding_matrix: torch.Tensor, num_candidates: int,
                       increase_loss: bool = False, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Token ids whose embedding most lowers the loss to first order, best first.

    Swapping the token at a position from embedding ``e`` to ``e'`` changes the loss by about
    ``(e' - e) · grad``; ``e`` is fixed, so candidates are ranked by ``-(e' · grad)``.
    ``averaged_grad`` is ``[H]`` (one position, gives ``[num_candidates]``) or ``[T, H]``
    (gives ``[T, num_candidates]``); ``allowed`` is a boolean ``[V]`` mask of tokens that may be chosen.
    """
    with torch.no_grad():
        scores = averaged_grad.to(embedding_matrix.dtype) @ embedding_matrix.T  # [V] or [T, V]
        if not increase_loss:
            scores = -scores
        if allowed is not None:
            scores = scores.masked_fill(~allowed.to(scores.device), -math.inf)
            num_candidates = min(num_candidates, int(allowed.sum()))
        return scores.topk(num_candidates, dim=-1).indices


class TriggerHooks(PlainHooks):
    """Forward hooks that put triggers into the input.

    ``rows`` is ``[B, T]`` trigger ids (a different trigger per row: candidate scoring); or
    ``embeds`` is ``[T, H]`` trigger embeddings shared by all rows (a leaf, for the gradient).
    """

    def __init__(self, rows: torch.Tensor | None = None, embeds: torch.Tensor | None = None):
        self.rows, self.embeds = rows, embeds

    def embed(self, lm: LanguageModel, input_ids: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
        rows = torch.arange(len(batch), device=input_ids.device).unsqueeze(1)
        positions = batch.trigger_positions
        if self.rows is not None:
            input_ids = input_ids.clone()
            input_ids[rows, positions] = self.rows.to(input_ids.device)
        embeds = lm.embed(input_ids)
        if self.embeds is not None:
            values = self.embeds.to(embeds.dtype).expand(len(batch), -1, -1)
            embeds = embeds.index_put((rows.expand_as(positions), positions), values)
        return embeds



@dataclass
class Shared:
    """The text before the trigger as keys and values, and what follows it (the trigger on): the
    tail's token ids, attention mask and positions, and the trigger's columns in the tail."""

    ids: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    columns: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    prefix_mask: torch.Tensor


def subset(data: EncodedExamples, rows: Sequence[int]) -> EncodedExamples:
    return EncodedExamples({n: [encs[i] for i in rows] for n, encs in data.encodings.items()},
                           data.labels[list(rows)])


def by_length(data: EncodedExamples, rows: Sequence[int]) -> list[int]:
    """``rows`` shortest first: chunks of similar length need little padding."""
    lengths = data.encodings[min(data.encodings)]
    return sorted(rows, key=lambda i: len(lengths[i].input_ids))


def whole_word_tokens(tokenizer, allowed: torch.Tensor) -> torch.Tensor:
    """``allowed`` narrowed to alphabetic whole words that the tokenizer gives back as that one token.

    A trigger written into a template is tokenised again when the template is loaded; a token that
    does not come back as itself from its own text would make the saved prompt differ from the one
    that was searched. Punctuation, digits and code (``'+``, ``(``, ``3D``) are left out as well, so the
    found prompt reads as words; word-start pieces that are not words (``affili``) can remain.
    """
    ids = allowed.nonzero().squeeze(1).tolist()
    texts = token_strings(tokenizer, ids)
    keep = [(i, t) for i, t in zip(ids, texts) if t.isalpha()]
    encoded = tokenizer([" " + t for _, t in keep], add_special_tokens=False)["input_ids"]
    words = torch.zeros_like(allowed)
    words[[i for (i, _), e in zip(keep, encoded) if e == [i]]] = True
    return words


def search_rows(config, n: int, generator: torch.Generator) -> tuple[list[int], list[int]]:
    """The training rows of this iteration's gradient and of its judging: all ``n`` where the
    setting covers them, else a new random batch, the judged one apart from the gradient's
    when there are enough examples (the paper's fresh batch)."""
    everything = list(range(n))
    if config.gradient_examples >= n and config.score_examples >= n:
        return everything, everything
    order = torch.randperm(n, generator=generator).tolist()
    grad_rows = everything if config.gradient_examples >= n else order[:config.gradient_examples]
    if config.score_examples >= n:
        return grad_rows, everything
    rest = order[len(grad_rows):] if len(grad_rows) < n else order
    judge_rows = rest[:config.score_examples]
    if len(judge_rows) < config.score_examples:  # not enough unseen examples: top up from the rest
        judge_rows += [i for i in order if i not in judge_rows][:config.score_examples - len(judge_rows)]
    return grad_rows, judge_rows


# ------------------------------------------------------------------ the text before the trigger, once
def shared_text(method, batch: Batch) -> Shared | None:
    """The text before the trigger as keys and values computed once, or None.

    On a causal LM the tokens before the first trigger do not depend on the trigger. When the batch
    left them out (:attr:`PromptMethod.frozen_text`), their keys and values come from the LM's cache of frozen
    spans, computed once per example for the whole search; otherwise they are computed here once
    per batch. Every candidate row attends to them (numbered where they stand), and only the
    trigger and what follows it run per candidate: for ``{text_a} {trigger:5} {mask}`` 5 tokens
    instead of the whole sentence. None when that does not apply (masked LM, multi-token label
    words, a trigger that is not in the same column in every left-padded row, nothing before it):
    the caller then runs the whole input.
    """
    if not method.lm.causal or any(len(w) != 1 for w in method.words.word_ids):
        return None
    prompt = batch.prompts[min(batch.prompts)]
    columns = prompt.trigger_positions
    if not bool((columns == columns[:1]).all()):
        return None
    if prompt.frozen is not None:
        spans = method.lm.spans.kwargs(prompt.frozen.ids)
        return Shared(prompt.input_ids, prompt.attention_mask, prompt.position_ids, columns[0],
                       *spans["prefix"], spans["prefix_mask"])
    first = int(columns[0].min())
    if first == 0:
        return None
    with torch.no_grad():
        out = method.lm.model(inputs_embeds=method.lm.embed(prompt.input_ids[:, :first]),
                            attention_mask=prompt.attention_mask[:, :first],
                            position_ids=prompt.position_ids[:, :first], use_cache=True)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    keys = torch.stack([layer.keys for layer in cache.layers])  # [layers, B, kv_heads, first, head_dim]
    values = torch.stack([layer.values for layer in cache.layers])
    tail = prompt.input_ids[:, first:]
    return Shared(tail, torch.ones_like(tail), prompt.position_ids[:, first:], columns[0] - first,
                   keys, values, prompt.attention_mask[:, :first])


def label_logprobs_after(method, shared: Shared, tail_embeds: torch.Tensor, copies: int) -> torch.Tensor:
    """``[copies x B, n_labels]`` label log-probabilities of the rows ``tail_embeds`` (the trigger
    and what follows it), each ``copies`` block of rows attending to the shared text."""
    logits = method.lm.forward(tail_embeds, shared.mask.repeat(copies, 1), shared.positions.repeat(copies, 1), 1,
                             prefix=(shared.keys.repeat(1, copies, 1, 1, 1), shared.values.repeat(1, copies, 1, 1, 1)),
                             prefix_mask=shared.prefix_mask.repeat(copies, 1))
    words = log_softmax(logits[:, -1])[:, [w[0] for w in method.words.word_ids]]
    return method.words.aggregate_scores(words).log_softmax(-1)


@torch.no_grad()
def score_after_shared_text(method, candidates: torch.Tensor, data: EncodedExamples) -> torch.Tensor | None:
    """:meth:`AutoPrompt.score_triggers` with the text before the trigger computed once (see
    :func:`shared_text`); None where that does not apply."""
    batch = next(method.batches(data, len(data)))
    shared = shared_text(method, batch)
    if shared is None:
        return None
    size, count = len(batch), len(candidates)
    tail = shared.ids.repeat(count, 1)  # row = candidate x size + example
    tail[:, shared.columns] = candidates.to(tail.device).repeat_interleave(size, 0)
    labels = label_logprobs_after(method, shared, method.lm.embed(tail), count)
    return labels.gather(1, batch.labels.repeat(count).unsqueeze(1)).view(count, size).mean(1).cpu()


def gradient_after_shared_text(method, batch: Batch) -> tuple[torch.Tensor, float] | None:
    """:meth:`AutoPrompt.trigger_gradient` back-propagating through the trigger and what follows it only
    (the text before it does not depend on the trigger); None where that does not apply (also
    for trigger slots apart from each other)."""
    columns = batch.prompts[min(batch.prompts)].trigger_positions[0]
    if not bool((columns.diff() == 1).all()):
        return None
    shared = shared_text(method, batch)
    if shared is None:
        return None
    start, end = int(shared.columns[0]), int(shared.columns[-1]) + 1
    embeds = method.lm.embeddings.weight[method.trigger_ids].detach().clone().requires_grad_(True)
    with torch.enable_grad():
        tail = method.lm.embed(shared.ids).detach()
        tail = torch.cat([tail[:, :start], embeds.to(tail.dtype).expand(len(batch), -1, -1), tail[:, end:]], 1)
        loss = F.nll_loss(label_logprobs_after(method, shared, tail, 1), batch.labels)
        grad, = torch.autograd.grad(loss, embeds)
    return grad, loss.item()
