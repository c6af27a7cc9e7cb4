"""Soft prompt tuning (Lester et al. 2021): trainable input embeddings, nothing else; the LM is frozen.

    method = SoftPrompt(lm, "Review: {text_a}\\nSentiment: {mask}", verbalizer, prompt_tokens=8)
    method.template   # Template('{soft:8}Review: {text_a}\\nSentiment: {mask}')

The learned vectors take the place of the template's ``{soft}`` slots; a template without any gets
``prompt_tokens`` of them in front. ``init`` says where they start:

- ``text``: embeddings of real tokens: a ``{soft:"text"}`` slot's own text, else ``init_text``, else
  the template's own words, repeated to fill the slots. ``{soft:"Review:"} {text_a} {soft:"Sentiment:"}
  {mask}`` therefore starts as exactly the manual prompt ``Review: {text_a} Sentiment: {mask}``;
- ``vocab``: embeddings of tokens drawn at random (from the global torch generator) among the 5,000
  lowest ids, which BPE and WordPiece vocabularies give to their most frequent pieces (Lester et al.
  sample the 5,000 most common tokens);
- ``uniform``: uniform noise with the spread of the vocabulary's embeddings (U(-√3σ, √3σ)).

The helpers here (:func:`place_soft`, :func:`soft_init_ids`) are shared with P-tuning, whose prompt
encoder produces the vectors that fill the same slots.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from prompting.lm.model import LanguageModel
from prompting.core.template import PromptBatch, Template, TemplateEncoder, TemplateError, Text
from prompting.methods.base import PromptMethod
from prompting.methods.configs import SOFT_INITS, SoftConfig

__all__ = ["SoftPrompt", "place_soft", "soft_init_ids", "soft_slot_counts", "template_words",
           "SOFT_INITS"]

COMMON_VOCAB = 5000


def place_soft(embeds: torch.Tensor, positions: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """Input embeddings [B, L, H] with the ``{soft}`` slots (positions [B, n]) replaced by ``prompt`` [n, H]."""
    if positions.shape[1] != prompt.shape[0]:
        raise ValueError(f"the batch has {positions.shape[1]} soft positions but the prompt has "
                         f"{prompt.shape[0]} vectors; encode the examples with this method's template")
    rows = torch.arange(embeds.shape[0], device=embeds.device).unsqueeze(1)
    filled = prompt.to(embeds.dtype).unsqueeze(0).expand(embeds.shape[0], -1, -1)
    return embeds.index_put((rows.expand_as(positions), positions), filled)


def template_words(template: Template) -> str:
    """The template's own words (its constant text), e.g. ``"Review: Sentiment:"``."""
    return " ".join(p.text.strip() for p in template.parts if isinstance(p, Text) and p.text.strip())


def soft_init_ids(encoder: TemplateEncoder, source_text: str | None, tokenizer) -> list[int]:
    """Token ids to initialise every soft position from, slot by slot.

    A ``{soft:"text"}`` slot takes its own text's tokens; a ``{soft:N}`` slot takes the next N tokens
    of ``source_text``, cycling through it when it is shorter.
    """
    source = list(tokenizer(source_text, add_special_tokens=False)["input_ids"]) if source_text else []
    ids, cursor = [], 0
    for own, count in zip(encoder.soft_init_ids, soft_slot_counts(encoder)):
        if own is not None:
            ids.extend(own)
            continue
        if not source:
            raise TemplateError(
                f"template {encoder.template.text!r}: init 'text' needs words for its {{soft:{count}}} slot; "
                "give init_text, write the slot as {soft:\"some words\"}, or use init 'vocab' or 'uniform'")
        ids.extend(source[(cursor + i) % len(source)] for i in range(count))
        cursor += count
    return ids


def soft_slot_counts(encoder: TemplateEncoder) -> list[int]:
    """How many soft tokens each ``{soft}`` slot of the template holds, in order."""
    return [count for kind, count in encoder.pieces if kind == "soft"]


def common_token_ids(lm: LanguageModel, n: int) -> torch.Tensor:
    """``n`` ids drawn (global torch generator) among the 5,000 lowest ids that are not special tokens."""
    size = min(COMMON_VOCAB, lm.embeddings.num_embeddings)
    special = set(lm.tokenizer.all_special_ids)
    pool = torch.tensor([i for i in range(size) if i not in special])
    return pool[torch.randint(len(pool), (n,))]


def initial_embeddings(lm: LanguageModel, encoder: TemplateEncoder, init: str, init_text: str | None) -> torch.Tensor:
    """[n_soft, H] starting vectors for the soft slots (see the module docstring for ``init``)."""
    n = sum(soft_slot_counts(encoder))
    weight = lm.embeddings.weight.detach()
    if init == "text":
        source = init_text if init_text is not None else template_words(encoder.template)
        ids = torch.tensor(soft_init_ids(encoder, source, lm.tokenizer), device=weight.device)
        return weight[ids].float().clone()
    if init == "vocab":
        return weight[common_token_ids(lm, n).to(weight.device)].float().clone()
    bound = math.sqrt(3) * weight.float().std().item()
    return torch.empty(n, weight.shape[1], device=weight.device).uniform_(-bound, bound)


class SoftPrompt(PromptMethod):
    """Lester et al.'s prompt tuning: ``n`` trainable input vectors, the LM frozen."""

    name = "soft"
    reuses_frozen_text = True
    config_class = SoftConfig

    def adapt(self, template: Template, config: SoftConfig) -> tuple[Template, SoftConfig]:
        if template.has_soft:
            if config.prompt_tokens is not None:
                raise TemplateError(
                    f"template {template.text!r} already places its soft tokens with {{soft}} slots; "
                    f"drop prompt_tokens={config.prompt_tokens!r} or the slots")
            return template, config
        # no space: the template's first word keeps the tokenisation it has in the manual prompt;
        # the template then says how many soft tokens there are and where
        return (Template("{soft:%d}" % (config.prompt_tokens or 8) + template.text),
                dataclasses.replace(config, prompt_tokens=None))

    def setup(self) -> None:
        self.soft_prompt = torch.nn.Parameter(
            initial_embeddings(self.lm, self.encoder, self.config.init, self.config.init_text))

    def embed(self, lm: LanguageModel, input_ids: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
        return place_soft(super().embed(lm, input_ids, batch), batch.soft_positions, self.soft_prompt)
