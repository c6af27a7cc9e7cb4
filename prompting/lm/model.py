"""LanguageModel: one interface over masked and causal LMs, and offline model loading.

    lm = LanguageModel.load("smollm2-135m")          # embedded default, no network needed
    lm = LanguageModel.load("roberta-large")         # a hub id already in the local cache
    lm = LanguageModel.load("/path/to/checkpoint")

Per-architecture differences (padding side, special tokens, where the label word is read) live
here, so methods never branch on the model family.
"""

from __future__ import annotations

import functools
import itertools
import logging

import torch

from prompting.core.template import PromptBatch
from prompting.core.verbalizer import LabelWordIds
from prompting.lm.aliases import DEFAULT_MODEL, ModelNotAvailableError
from prompting.lm.chat import chat_turn
from prompting.lm.loading import load_pretrained, resolve_device
from prompting.lm.logprobs import PromptHooks
from prompting.lm.seq2seq import Layout, decoder_start_ids, mask_token, seq2seq_forward, seq2seq_key_values, use_prefix_attention
from prompting.lm.spans import KV_CACHE_MB, SpanCache
from prompting.lm.words import word_logprobs

__all__ = ["LanguageModel", "ModelNotAvailableError", "DEFAULT_MODEL"]


log = logging.getLogger(__name__)
_SERIALS = itertools.count()


def _kind_of(model) -> str:
    name = type(model).__name__
    if name.endswith("ForMaskedLM"):
        return "masked"
    if getattr(model.config, "is_encoder_decoder", False) and name.endswith("ForConditionalGeneration"):
        return "seq2seq"
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return "causal"
    raise ValueError(f"model class {name} is neither a masked LM (…ForMaskedLM), a causal LM (…ForCausalLM) nor "
                     "an encoder-decoder LM (…ForConditionalGeneration); load the model with its language-modelling "
                     "head")


class LanguageModel:
    """A masked, causal or encoder-decoder LM with its tokenizer, behind one interface.

    ``word_logprobs`` gives the log-probability of every label word at the ``{mask}`` slot:
    causal LM, the teacher-forced log-probability of all the word's tokens after the prompt;
    masked LM, the sum over one ``[MASK]`` per word token; encoder-decoder LM, the decoder's
    teacher-forced log-probability of the word's tokens (see :mod:`prompting.lm.seq2seq`).
    """

    def __init__(self, model, tokenizer, name: str | None = None, device="auto", max_length: int = 512,
                 kv_cache_mb: float = KV_CACHE_MB):
        self.model = model
        self.tokenizer = tokenizer
        self.kind = _kind_of(model)
        self.name = name or getattr(model.config, "_name_or_path", None) or type(model).__name__
        if getattr(model, "hf_device_map", None):  # placed by accelerate (device_map): inputs go where it starts
            self.device = self.embeddings.weight.device
        else:
            self.device = resolve_device(device)
            self.model.to(self.device)
        self.model.eval()
        self.layout = None
        if self.seq2seq:  # prefixes through an attention function of ours (prompting.lm.seq2seq)
            use_prefix_attention(model)
            self.layout = Layout(model)
        model_max = getattr(model.config, "max_position_embeddings", None) or max_length
        self.max_length = min(max_length, model_max)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        self.pad_id = tokenizer.pad_token_id
        self._restored: dict[int, int] = {}
        self.spans = SpanCache(self, kv_cache_mb)
        self.serial = next(_SERIALS)  # tells apart models that Python may give the same id

    @property
    def causal(self) -> bool:
        return self.kind == "causal"

    @property
    def masked(self) -> bool:
        return self.kind == "masked"

    @property
    def seq2seq(self) -> bool:
        """An encoder-decoder LM: the prompt goes to the encoder, the answer comes from the decoder."""
        return self.kind == "seq2seq"

    def template_encoder(self, template, max_length: int | None = None, chat: bool = False, **options):
        """The template's encoder for this LM: a causal prompt ends at ``{mask}``; a masked LM puts its mask
        token there; an encoder-decoder LM its mask or sentinel token (:func:`prompting.lm.seq2seq.mask_token`).
        ``chat``: the prompt is a user message in the tokenizer's chat template (:mod:`prompting.lm.chat`)."""
        if self.seq2seq:
            options["mask_id"] = mask_token(self.tokenizer)[0]
        if chat:
            options["around"] = chat_turn(self)
        return template.encoder(self.tokenizer, self.causal, max_length or self.max_length, **options)

    @functools.cached_property
    def decoder_start_ids(self) -> list[int]:
        """What an encoder-decoder LM's decoder reads before the answer (:func:`prompting.lm.seq2seq.decoder_start_ids`)."""
        return decoder_start_ids(self.model, self.tokenizer)

    @property
    def config(self):
        return self.model.config

    @property
    def embeddings(self) -> torch.nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the LM's weights are held and compute in (learned prompt parameters stay float32)."""
        return self.embeddings.weight.dtype

    @property
    def frozen(self) -> bool:
        """Whether no weight of the LM would take a gradient now: gradients are off (scoring) or no
        weight asks for one (every prompt method's training but LM tuning)."""
        return not torch.is_grad_enabled() or not any(p.requires_grad for p in self.model.parameters())

    def weights_version(self) -> int:
        """Changes whenever a weight is changed in place (an optimiser step, ``load_state_dict``) or
        replaced: what a cache of the LM's activations is valid for. Weights put back with
        :meth:`restore` have the version they had at :meth:`snapshot`."""
        version = hash(tuple((id(p), p._version) for p in self.model.parameters()))
        return self._restored.get(version, version)

    def snapshot(self) -> tuple[dict[str, torch.Tensor], int]:
        """A copy of the LM's weights (before tuning them), and their version."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}, self.weights_version()

    def restore(self, snapshot: tuple[dict[str, torch.Tensor], int]) -> None:
        """Put back the weights of :meth:`snapshot`: the LM's caches made before are valid again."""
        state, version = snapshot
        self.model.load_state_dict(state)
        self._restored[hash(tuple((id(p), p._version) for p in self.model.parameters()))] = version

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def __repr__(self) -> str:
        return f"LanguageModel({self.name!r}, kind={self.kind}, device={self.device})"

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(cls, name: str = DEFAULT_MODEL, device="auto", max_length: int = 512,
             allow_download: bool = False, dtype=torch.float32, device_map: str | None = None,
             kv_cache_mb: float = KV_CACHE_MB) -> "LanguageModel":
        """Load an alias (``smollm2-135m``), a local folder, or a hub id from the local cache.

        Nothing is downloaded unless ``allow_download=True``: a hub id that is not cached fails at
        once with the offline alternatives. ``dtype`` (a torch dtype or its name: float32, bfloat16,
        float16) is what the weights are loaded in and compute in; ``device_map="auto"`` lets
        accelerate place a model too large for one device over every visible one (``device`` is then
        not used).
        """
        if device_map is None:
            device = resolve_device(device)  # a device that is not there is refused before the weights load
        model, tokenizer = load_pretrained(name, allow_download, dtype, device_map)
        if device_map is not None:  # accelerate placed it: the device it starts on takes the inputs
            device = model.get_input_embeddings().weight.device
        return cls(model, tokenizer, name=name, device=device, max_length=max_length, kv_cache_mb=kv_cache_mb)

    # ---------------------------------------------------------------- forward
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embeddings(input_ids)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                logits_to_keep: int = 0, prefix: tuple[torch.Tensor, torch.Tensor] | None = None,
                prefix_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """Logits [B, L', V]; a causal LM computes only the last ``logits_to_keep`` (0: all).

        ``prefix`` (prefix-tuning) is ``(keys, values)``, each [layers, B, kv_heads, P, head_dim]
        (see :attr:`kv_shape`): vectors that every attention layer attends to before the input, in
        every row. They take no positions: the input tokens are numbered exactly as without them.
        ``prefix_mask`` [B, P] (default all ones) says which prefix vectors each row may attend to.
        """
        if self.seq2seq:
            return seq2seq_forward(self, inputs_embeds, attention_mask, logits_to_keep, prefix, prefix_mask, **kwargs)
        if prefix is not None:
            keys, values = prefix
            size, length = attention_mask.shape[0], keys.shape[-2]
            if prefix_mask is None:
                prefix_mask = attention_mask.new_ones(size, length)
            attention_mask = torch.cat([prefix_mask.to(attention_mask), attention_mask], 1)
            cache = self.prefix_cache(keys, values)
            kwargs[self.cache_argument()] = cache
            logits = self.forward(inputs_embeds, attention_mask, position_ids, logits_to_keep, **kwargs)
            stored = [layer.keys.shape[-2] for layer in cache.layers if getattr(layer, "keys", None) is not None]
            if max(stored, default=0) <= length:  # the model never appended the input's own keys
                raise ValueError(
                    f"model {self.name!r} ({type(self.model).__name__}) ignored the prefix keys/values; "
                    "prefix-tuning needs a model whose attention layers take a key/value cache")
            return logits
        if self.causal:
            keep = _last_positions(logits_to_keep, inputs_embeds.shape[1], inputs_embeds.device)
            out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                             position_ids=position_ids, logits_to_keep=keep, use_cache=False, **kwargs)
        else:
            # masked LMs use their own absolute positions; padding is on the right
            out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)
        return out.logits

    # ---------------------------------------------------------------- key/value prefixes
    @property
    def kv_shape(self) -> tuple[int, int, int]:
        """(attention layers, key/value heads, head size): the shape of one token's keys or values (an
        encoder-decoder LM: its encoder's self-attention, decoder self- and cross-attention layers)."""
        if self.layout is not None:
            return self.layout.kv_shape
        config = self.config.get_text_config()
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return config.num_hidden_layers, kv_heads, head_dim

    def cache_argument(self) -> str:
        # transformers 5.x renames ``past_key_values`` to ``cache``, one model family at a time
        import inspect

        forward = self.model.base_model.forward
        return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"

    def prefix_cache(self, keys: torch.Tensor | None = None, values: torch.Tensor | None = None):
        """A fresh key/value cache holding the prefix, or empty; the model appends the input's own
        keys and values to it during the forward pass."""
        layers = None
        if keys is not None:
            if keys.shape[0] != self.kv_shape[0]:
                raise ValueError(f"prefix has keys for {keys.shape[0]} layers; model {self.name!r} has "
                                 f"{self.kv_shape[0]} attention layers")
            layers = list(zip(keys.unbind(0), values.unbind(0)))
        if self.causal:
            from transformers import DynamicCache

            # the config gives hybrid models (sliding-window layers) their own layer types
            return DynamicCache(ddp_cache_data=layers, config=self.config)
        return _positionless_cache_class()(ddp_cache_data=layers)

    @property
    def relative_positions(self) -> bool:
        """Whether attention sees only the distance between two positions (rotary embeddings: Llama,
        SmolLM2, Qwen, Gemma), not where they are (absolute embeddings: GPT-2, BERT)."""
        return any(type(m).__name__.endswith("RotaryEmbedding") for m in self.model.modules())

    @torch.no_grad()
    def key_values(self, input_ids: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's own keys and values for a token sequence [1, T]: each [layers, kv_heads, T, head_dim].

        The tokens are numbered from ``start``. ``start=-T`` puts them just before an input numbered
        from 0, as a prefix (models with :attr:`relative_positions` only). Prefix-tuning initialises
        its prefix from these activations of real words.
        """
        if start < 0 and not self.relative_positions:
            raise ValueError(f"start={start} is not valid for model {self.name!r}: it has absolute position "
                             "embeddings, numbered from 0")
        if self.seq2seq:
            return seq2seq_key_values(self, input_ids)
        cache = self.prefix_cache()
        ids = input_ids.to(self.device)
        positions = torch.arange(start, start + ids.shape[1], device=self.device).unsqueeze(0)
        self.forward(self.embed(ids), torch.ones_like(ids), positions, 1, **{self.cache_argument(): cache})
        return (torch.stack([layer.keys[0] for layer in cache.layers]),
                torch.stack([layer.values[0] for layer in cache.layers]))

    def prefixed(self, prefix: tuple[torch.Tensor, torch.Tensor] | None):
        """Inside, an encoder-decoder LM attends to ``prefix`` (keys, values [layers, kv_heads, P, head_dim],
        one prefix for every row) at every attention layer, ``generate`` included."""
        keys, values = (None, None) if prefix is None else (t.unsqueeze(1) for t in prefix)
        return self.layout.prefixed(keys, values)

    def word_logprobs(self, batches: dict[int, PromptBatch], words: LabelWordIds,
                      hooks: PromptHooks | None = None) -> torch.Tensor:
        """[B, n_words] log-probabilities of each whole label word at the ``{mask}`` slot (see
        :func:`prompting.lm.words.word_logprobs`)."""
        return word_logprobs(self, batches, words, hooks)


def _last_positions(count: int, length: int, device) -> int | torch.Tensor:
    """``logits_to_keep`` for the last ``count`` of ``length`` positions (0: all), as an index tensor.

    Given an int, transformers keeps ``hidden[:, -count:]``: a view whose rows lie a whole sequence
    apart. When the LM's weights are frozen (every prompt method, and every model after
    ``prompting.training.loop``), torch's matmul takes a much slower path on that strided input on CPU
    (SmolLM2's 49k vocabulary, one thread: 79 instead of 19 ms at batch 8, 315 instead of 37 ms at
    batch 32). Indexing with a tensor selects the same positions into a contiguous tensor; the logits
    agree up to float32 rounding (the two kernels add in different orders).
    """
    if count <= 0 or count >= length:
        return 0  # every position: the hidden states as they are, already contiguous
    return torch.arange(length - count, length, device=device)


@functools.lru_cache(maxsize=None)
def _positionless_cache_class():
    from transformers import DynamicCache  # imported on first use, as everywhere in this module

    class PositionlessCache(DynamicCache):
        """A masked LM's prefix cache. An encoder asks its cache for a length only to shift the input's
        absolute positions (BERT); a prefix must not shift them, so this cache reports none."""

        def get_seq_length(self, layer_idx: int = 0) -> int:
            return 0

    return PositionlessCache


