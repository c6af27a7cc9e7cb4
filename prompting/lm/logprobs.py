"""Log-probabilities with a float64 normaliser, the hooks a prompt method puts into the forward pass,
and token-budget batches."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch

from prompting.core.template import PromptBatch

if TYPE_CHECKING:
    from prompting.lm.model import LanguageModel

__all__ = ["log_normaliser", "log_softmax", "token_budget_batches", "MAX_BATCH_TOKENS", "MAX_PADDING",
           "PromptHooks", "PlainHooks", "NORMALISER_ROWS"]


#: rows of logits whose normaliser is summed at a time (each row is cast to float64: 49k values for SmolLM2)
NORMALISER_ROWS = 256


def log_normaliser(logits: torch.Tensor) -> torch.Tensor:
    """``logsumexp`` over the last dimension, in float64, the exponentials summed in float64.

    float32's own ``log_softmax`` over a vocabulary of 49k tokens is off by about 1.5e-5 per token
    (the sum's rounding), enough for two exact ways of scoring the same multi-token word to disagree
    at 1e-4; summed in float64 they agree to float32's rounding of the logits. Rows are taken
    ``NORMALISER_ROWS`` at a time, so a large block of logits never exists in float64 whole.
    """
    x = logits.float()
    flat = x.reshape(-1, x.shape[-1])
    parts = []
    for start in range(0, flat.shape[0], NORMALISER_ROWS):
        part = flat[start:start + NORMALISER_ROWS]
        top = part.detach().amax(-1, keepdim=True)
        parts.append(top.squeeze(-1).double() + (part - top).exp().sum(-1, dtype=torch.float64).log())
    return (torch.cat(parts) if parts else flat.new_zeros(0, dtype=torch.float64)).reshape(x.shape[:-1])


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities (float32) with the normaliser of :func:`log_normaliser`."""
    x = logits.float()
    return (x.double() - log_normaliser(x).unsqueeze(-1)).float()


#: the default token budget of a scoring batch: rows x padded length (see :func:`token_budget_batches`)
MAX_BATCH_TOKENS = 2048


#: the most padded tokens a scoring batch may have per real token (see :func:`token_budget_batches`)
MAX_PADDING = 1.2


def token_budget_batches(lengths: list[int], max_tokens: int = MAX_BATCH_TOKENS, max_rows: int | None = None,
                         max_padding: float = MAX_PADDING) -> list[list[int]]:
    """Consecutive runs of ``lengths`` (sort them first) whose rows x longest row stay within
    ``max_tokens`` tokens, ``max_rows`` rows and ``max_padding`` times the batch's real tokens: batches
    of similar length that cost about the same each and are little padding (cost is linear in
    padded tokens). A row longer than the budget is a batch of its own."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = real = 0
    for i, n in enumerate(lengths):
        wider = max(longest, n)
        size = (len(current) + 1) * wider
        if current and (size > max_tokens or (max_rows and len(current) >= max_rows)
                        or size > max_padding * (real + n)):
            batches.append(current)
            current, wider, real = [], n, 0
        current.append(i)
        longest, real = wider, real + n
    if current:
        batches.append(current)
    return batches


class PromptHooks(Protocol):
    """What a prompt method may change in the forward pass (see prompting.methods.base)."""

    #: whether ``forward_lm`` calls the LM as it is (then work on a shared query may be reused)
    plain_lm_call: bool

    def embed(self, lm: "LanguageModel", input_ids: torch.Tensor, batch: PromptBatch) -> torch.Tensor: ...

    def forward_lm(self, lm: "LanguageModel", inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                   position_ids: torch.Tensor, logits_to_keep: int, **spans) -> torch.Tensor:
        """``spans``: ``prefix`` and ``prefix_mask`` of :meth:`LanguageModel.forward` when the batch left
        its frozen spans out (pass them on to ``lm.forward``)."""


class PlainHooks:
    """The manual prompt: token embeddings as they are, the LM's own forward."""

    #: the LM is called as it is (hooks that change only the input embeddings keep this)
    plain_lm_call = True

    def embed(self, lm: LanguageModel, input_ids: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
        return lm.embed(input_ids)

    def forward_lm(self, lm: LanguageModel, inputs_embeds, attention_mask, position_ids, logits_to_keep, **spans):
        return lm.forward(inputs_embeds, attention_mask, position_ids, logits_to_keep, **spans)
