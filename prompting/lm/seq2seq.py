"""Encoder-decoder LMs (T5, Flan-T5, BART): where ``{mask}`` goes, what the decoder reads first, and
prefix keys and values at every attention layer.

- ``{mask}`` in the encoder's input is the tokenizer's mask token (BART's ``<mask>``) or, without one,
  its first sentinel (T5's ``<extra_id_0>``); the decoder reads its start token, the special tokens the
  tokenizer puts before a text (BART's ``<s>``) and, after a sentinel, the sentinel again, then writes
  the answer: T5's span-filling format, ``<extra_id_0> great``.
- A prefix (prefix-tuning, Li and Liang 2021) is keys and values for every attention layer: the
  encoder's self-attention, then the decoder's self-attention, then its cross-attention, in layer
  order (:class:`Layout`). They come in through an attention function of our own, registered with
  transformers (``AttentionInterface``): it puts a layer's prefix before the keys and values the layer
  computed and lets every query attend to it (T5's relative position bias is 0 there: the prefix has no
  position), then runs transformers' SDPA attention. Without a prefix it is SDPA attention as it is.
  This works the same in a forward pass and inside ``generate`` (whose caches hold only the real
  tokens' keys and values).
"""

from __future__ import annotations

import contextlib
import functools

import torch

__all__ = ["PREFIX_ATTENTION", "Layout", "use_prefix_attention", "mask_token", "decoder_start_ids"]

#: the attention implementation an encoder-decoder LM runs with (SDPA, with prefixes where given)
PREFIX_ATTENTION = "prompting_prefix"
#: names of cross-attention modules (T5 / mT5, BART / mBART / Pegasus / Marian)
CROSS_ATTENTION = ("EncDecAttention", "encoder_attn", "crossattention", "cross_attn")


def _materialised_mask(*args, **kwargs):
    """transformers' boolean mask, always made (never skipped as "plain causal"): a prefix adds columns."""
    from transformers.masking_utils import sdpa_mask

    kwargs["allow_is_causal_skip"] = False
    kwargs["allow_is_bidirectional_skip"] = False
    return sdpa_mask(*args, **kwargs)


def _prefix_attention(module, query, key, value, attention_mask, **kwargs):
    """SDPA attention with the module's prefix (``module.prompting_prefix``) before its keys and values;
    ``module.prompting_capture``, when set, receives the keys and values the module computed."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    capture = getattr(module, "prompting_capture", None)
    if capture is not None:
        capture.append((key.detach(), value.detach()))
    state = getattr(module, "prompting_prefix", None)
    if state is not None:
        keys, values, allowed = state
        rows, queries = query.shape[0], query.shape[2]
        if keys.shape[0] != rows:  # beams: each row's prefix once per beam
            keys, values, allowed = (t.repeat_interleave(rows // keys.shape[0], 0) for t in (keys, values, allowed))
        key = torch.cat([keys.to(key.dtype), key], 2)
        value = torch.cat([values.to(value.dtype), value], 2)
        own = key.shape[2] - keys.shape[2]
        if attention_mask is None:
            attention_mask = torch.ones(rows, 1, queries, own, dtype=torch.bool, device=query.device)
        before = allowed.bool()[:, None, None, :].expand(rows, 1, queries, keys.shape[2])
        if attention_mask.dtype != torch.bool:
            before = torch.where(before, 0.0, torch.finfo(attention_mask.dtype).min).to(attention_mask.dtype)
        attention_mask = torch.cat([before, attention_mask.expand(rows, 1, queries, own)], -1)
        if kwargs.get("position_bias") is not None:
            kwargs["position_bias"] = torch.nn.functional.pad(kwargs["position_bias"], (keys.shape[2], 0))
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


@functools.lru_cache(maxsize=None)
def _register() -> None:
    from transformers import AttentionInterface, AttentionMaskInterface

    AttentionInterface.register(PREFIX_ATTENTION, _prefix_attention)
    AttentionMaskInterface.register(PREFIX_ATTENTION, _materialised_mask)


def use_prefix_attention(model) -> None:
    """Run ``model`` with the prefix-aware attention (registered with transformers once)."""
    _register()
    model.set_attn_implementation(PREFIX_ATTENTION)


class Layout:
    """The attention modules of an encoder-decoder model, in prefix order: the encoder's self-attention,
    the decoder's self-attention, the decoder's cross-attention (each in layer order)."""

    def __init__(self, model):
        found = [(name, m) for name, m in model.named_modules()
                 if type(m).__name__.endswith("Attention") and hasattr(m, "layer_idx")]
        encoder = [m for name, m in found if ".decoder." not in f".{name}"]
        decoder = [(name, m) for name, m in found if ".decoder." in f".{name}"]
        crossing = {name: any(c in name for c in CROSS_ATTENTION) for name, _ in decoder}
        self.modules = (encoder + [m for name, m in decoder if not crossing[name]]
                        + [m for name, m in decoder if crossing[name]])
        shapes = {(_heads(m), _head_dim(m)) for m in self.modules}
        if not self.modules or len(shapes) != 1:
            raise ValueError(f"model {type(model).__name__}: prefix-tuning needs attention layers of one shape "
                             f"(heads, head size); found {sorted(shapes) or 'none'}")
        self.heads, self.head_dim = shapes.pop()

    @property
    def kv_shape(self) -> tuple[int, int, int]:
        return len(self.modules), self.heads, self.head_dim

    @contextlib.contextmanager
    def prefixed(self, keys: torch.Tensor | None, values: torch.Tensor | None, mask: torch.Tensor | None = None):
        """Every module attends to its prefix while inside: ``keys``, ``values`` [layers, rows, heads, P, dim]
        (rows: 1 for one prefix shared by every row), ``mask`` [rows, P] (default all ones)."""
        if keys is None:
            yield
            return
        if keys.shape[0] != len(self.modules):
            raise ValueError(f"prefix has keys for {keys.shape[0]} layers; the model has {len(self.modules)} "
                             "attention layers (encoder self-attention, decoder self- and cross-attention)")
        mask = mask if mask is not None else torch.ones(keys.shape[1], keys.shape[3], device=keys.device)
        try:
            for m, k, v in zip(self.modules, keys, values):
                m.prompting_prefix = (k, v, mask)
            yield
        finally:
            for m in self.modules:
                m.prompting_prefix = None

    @contextlib.contextmanager
    def captured(self):
        """Inside, each module keeps the keys and values it computes; yields the lists, in prefix order."""
        lists = [[] for _ in self.modules]
        try:
            for m, found in zip(self.modules, lists):
                m.prompting_capture = found
            yield lists
        finally:
            for m in self.modules:
                m.prompting_capture = None


def _heads(module) -> int:
    return getattr(module, "n_heads", None) or getattr(module, "num_heads", None) or module.config.num_attention_heads


def _head_dim(module) -> int:
    return getattr(module, "key_value_proj_dim", None) or getattr(module, "head_dim", None)


def mask_token(tokenizer) -> tuple[int | None, bool]:
    """The id ``{mask}`` becomes in the encoder's input, and whether it is a sentinel that the decoder reads
    again before the answer (T5); (None, False) for a tokenizer with neither (the slot is then left empty)."""
    if tokenizer.mask_token_id is not None:
        return tokenizer.mask_token_id, False
    sentinel = tokenizer.convert_tokens_to_ids("<extra_id_0>")
    if sentinel is not None and sentinel != tokenizer.unk_token_id:
        return sentinel, True
    return None, False


def decoder_start_ids(model, tokenizer) -> list[int]:
    """What the decoder reads before the answer: its start token, the special tokens the tokenizer puts
    before a text, and a sentinel ``{mask}`` again."""
    from prompting.core.template import special_tokens_around

    start = model.config.decoder_start_token_id
    if start is None:
        start = model.generation_config.decoder_start_token_id
    if start is None:
        raise ValueError(f"model {type(model).__name__} has no decoder_start_token_id in its config")
    mask, again = mask_token(tokenizer)
    return [start] + special_tokens_around(tokenizer)[0] + ([mask] if again else [])


def seq2seq_forward(lm, inputs_embeds, attention_mask, logits_to_keep: int = 0, prefix=None, prefix_mask=None,
                    decoder_input_ids=None, decoder_attention_mask=None, **kwargs) -> torch.Tensor:
    """The decoder's logits [B, T', V] (the last ``logits_to_keep``; 0: all) for the encoder's input embeddings
    and ``decoder_input_ids`` (default: the decoder's start tokens); ``prefix`` = (keys, values) each
    [layers, B, heads, P, head_dim] in :class:`Layout` order, ``prefix_mask`` [B, P]."""
    if decoder_input_ids is None:
        decoder_input_ids = torch.tensor(lm.decoder_start_ids, device=inputs_embeds.device).expand(
            inputs_embeds.shape[0], -1)
    keys, values = prefix if prefix is not None else (None, None)
    with lm.layout.prefixed(keys, values, prefix_mask):
        out = lm.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                       decoder_attention_mask=decoder_attention_mask, use_cache=False, **kwargs)
    return out.logits[:, -logits_to_keep:] if logits_to_keep else out.logits


@torch.no_grad()
def seq2seq_key_values(lm, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own keys and values for a token sequence [1, T] at every attention layer (:class:`Layout`
    order), each [layers, heads, T, head_dim]: the encoder's for the text as its input, the decoder's
    self-attention for the text as the decoder's input, its cross-attention for the encoder's output."""
    ids = input_ids.to(lm.device)
    with lm.layout.captured() as found:
        lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), decoder_input_ids=ids, use_cache=False)
    return (torch.stack([f[0][0][0] for f in found]), torch.stack([f[0][1][0] for f in found]))
