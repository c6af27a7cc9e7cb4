"""The pieces of AutoPrompt's search that do not depend on its state: HotFlip candidates, the
whole-word vocabulary, the hooks that write triggers into a batch's input, and the text before the
trigger as keys and values (:class:`Shared`), with the row helpers that judging uses."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from prompting.lm.logprobs import PlainHooks
from prompting.lm.model import LanguageModel
from prompting.core.template import PromptBatch
from prompting.lm.vocab import token_strings
from prompting.methods.batches import EncodedExamples

__all__ = ["hotflip_candidates", "whole_word_tokens", "TriggerHooks", "Shared", "subset", "by_length"]


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
