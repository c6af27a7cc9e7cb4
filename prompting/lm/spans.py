"""Keys and values of the frozen text before a template's first learned slot, computed once per span."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from prompting.core.settings import KV_CACHE_MB, cache_megabytes
from prompting.core.template import Encoding, collate
from prompting.lm.logprobs import MAX_BATCH_TOKENS, token_budget_batches

if TYPE_CHECKING:
    from prompting.lm.model import LanguageModel

__all__ = ["SpanCache", "KV_CACHE_MB"]


class SpanCache:
    """Keys and values of frozen leading spans of a causal LM's inputs, computed once per span.

    A template whose learned slots all come after the input (``Review: {text_a} {soft:4} {mask}``) has,
    in every example, a leading span (template words and the input text) that nothing learned
    changes. Its keys and values are computed once and kept here, keyed by the span's token ids, and
    every later pass (training steps, dev evaluations, training seeds, AutoPrompt candidates, test
    scoring of every run) computes only the tokens after it, attending to the cached ones. The
    results are those of the whole sequence up to float rounding; the cache empties itself when
    the LM's weights change.

    Spans are kept until they hold ``cap_mb`` megabytes; beyond that, the spans of a batch that are not
    kept are computed for that batch only (the same numbers, at the cost of recomputing them).
    """

    def __init__(self, lm: LanguageModel, cap_mb: float = KV_CACHE_MB):
        self.lm, self.cap = lm, int(cache_megabytes(cap_mb) * 2 ** 20)
        self.entries: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        self.bytes, self.computed, self.hits, self._version = 0, 0, 0, None
        self._stash: tuple = (None, {}, 0)  # (weights version, entries, bytes) of the weights before

    def __len__(self) -> int:
        return len(self.entries)

    def clear(self) -> None:
        self.entries, self.bytes, self._stash = {}, 0, (None, {}, 0)

    @torch.no_grad()
    def _compute(self, spans: list[tuple[int, ...]]) -> dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]]:
        """Keys and values [layers, kv_heads, length, head_dim] of each span, in left-padded batches."""
        found = {}
        order = sorted(spans, key=len)
        for rows in token_budget_batches([len(s) for s in order], MAX_BATCH_TOKENS, 64):
            chunk = [order[i] for i in rows]
            batch = collate([Encoding(list(s), []) for s in chunk], self.lm.pad_id, left=True).to(self.lm.device)
            cache = self.lm.prefix_cache()
            self.lm.forward(self.lm.embed(batch.input_ids), batch.attention_mask, batch.position_ids, 1,
                            **{self.lm.cache_argument(): cache})
            width = batch.input_ids.shape[1]
            keys = torch.stack([layer.keys for layer in cache.layers], 1)  # [B, layers, kv_heads, T, head_dim]
            values = torch.stack([layer.values for layer in cache.layers], 1)
            for row, span in enumerate(chunk):
                found[span] = (keys[row, :, :, width - len(span):].clone(), values[row, :, :, width - len(span):].clone())
        self.computed += len(found)
        return found

    def _lookup(self, spans: list[tuple[int, ...]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        version = self.lm.weights_version()
        if version != self._version:
            # the spans of the weights before are kept aside (within the cap): weights put back after
            # tuning the LM (PET) find them again
            stash, self._stash = self._stash, (self._version, self.entries, self.bytes)
            self.entries, self.bytes = (stash[1], stash[2]) if stash[0] == version else ({}, 0)
            self._version = version
        missing = list(dict.fromkeys(s for s in spans if s and s not in self.entries))
        self.hits += sum(1 for s in spans if s) - len(missing)
        fresh = self._compute(missing) if missing else {}
        if () in spans:  # an input that is empty before its first learned slot: nothing to attend to
            layers, heads, dim = self.lm.kv_shape
            empty = torch.zeros(layers, heads, 0, dim, dtype=self.lm.dtype, device=self.lm.device)
            fresh[()] = (empty, empty)
        for span, (keys, values) in fresh.items():
            size = (keys.numel() + values.numel()) * keys.element_size()
            if self.bytes + self._stash[2] + size <= self.cap:
                self.entries[span] = (keys, values)
                self.bytes += size
        return [self.entries.get(s) or fresh[s] for s in spans]

    def kwargs(self, spans: list[tuple[int, ...]]) -> dict:
        """``prefix`` and ``prefix_mask`` for :meth:`LanguageModel.forward`: each row's span keys and
        values, left-padded to the longest span."""
        longest = max(len(s) for s in spans)
        if longest == 0:  # no row has a frozen token (an empty input right before a learned slot)
            return {}
        found = self._lookup(spans)
        layers, heads, _, dim = found[0][0].shape
        keys = found[0][0].new_zeros(layers, len(spans), heads, longest, dim)
        values = torch.zeros_like(keys)
        mask = torch.zeros(len(spans), longest, dtype=torch.long, device=keys.device)
        for row, (k, v) in enumerate(found):
            n = k.shape[2]
            keys[:, row, :, longest - n:] = k
            values[:, row, :, longest - n:] = v
            mask[row, longest - n:] = 1
        return {"prefix": (keys, values), "prefix_mask": mask}
