"""LanguageModel: one interface over masked and causal LMs, and offline model loading.

    lm = LanguageModel.load("smollm2-135m")          # embedded default, no network needed
    lm = LanguageModel.load("roberta-large")         # a hub id already in the local cache
    lm = LanguageModel.load("/path/to/checkpoint")

Per-architecture differences (padding side, special tokens, where the label word is read) live
here, so methods never branch on the model family.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Protocol

import torch

from prompting.lm.aliases import ALIASES, DEFAULT_MODEL, ModelNotAvailableError, PackagedModel
from prompting.core.template import PromptBatch
from prompting.core.verbalizer import LabelWordIds

__all__ = ["LanguageModel", "ModelNotAvailableError", "PlainHooks", "SpanCache", "DEFAULT_MODEL", "ALIASES",
           "resolve_device", "cache_dir", "KV_CACHE_MB"]

#: the default memory cap of a model's cache of frozen spans' keys and values (:class:`SpanCache`)
KV_CACHE_MB = 4096

log = logging.getLogger(__name__)
_SERIALS = itertools.count()


def cache_dir() -> Path:
    """Where de-quantised packaged models are kept: $PROMPTING_CACHE or ~/.cache/prompting."""
    return Path(os.environ.get("PROMPTING_CACHE", Path.home() / ".cache" / "prompting"))


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"device={device!r} is not valid; use auto, cpu, cuda or cuda:N") from None


def _offline_alternatives() -> str:
    lines = [f"  {alias}: {m.description}; {m.install}" for alias, m in ALIASES.items()]
    return "models that work offline:\n" + "\n".join(lines) + "\n  or a local checkpoint folder"


def _packaged_gguf(entry: PackagedModel) -> Path:
    spec = importlib.util.find_spec(entry.module)  # locate without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            f"model {entry.alias!r} needs the package {entry.module}, which is not installed; "
            f"install it with: {entry.install}")
    if entry.assembled:
        return Path(importlib.import_module(entry.module).assemble())
    for folder in spec.submodule_search_locations:
        files = sorted(Path(folder).rglob("*.gguf"))
        if files:
            return files[0]
    raise ModelNotAvailableError(f"package {entry.module} holds no .gguf file; reinstall it: {entry.install}")


def _materialise_gguf(entry: PackagedModel) -> Path:
    """De-quantise the packaged GGUF once and keep a regular checkpoint in the cache."""
    gguf = _packaged_gguf(entry)
    target = cache_dir() / "models" / f"{entry.alias}-{gguf.stem}"
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("de-quantising %s once into %s", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers refuses save_pretrained on a GGUF-loaded model until the quantizer is dropped
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)  # atomic: an interrupted first load leaves no half-written cache
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _kind_of(model) -> str:
    name = type(model).__name__
    if name.endswith("ForMaskedLM"):
        return "masked"
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return "causal"
    raise ValueError(f"model class {name} is neither a masked LM (…ForMaskedLM) nor a causal LM "
                     "(…ForCausalLM); load the model with its language-modelling head")


class PromptHooks(Protocol):
    """What a prompt method may change in the forward pass (see prompting.methods.base)."""

    def embed(self, lm: "LanguageModel", input_ids: torch.Tensor, batch: PromptBatch) -> torch.Tensor: ...

    def forward_lm(self, lm: "LanguageModel", inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                   position_ids: torch.Tensor, logits_to_keep: int, **spans) -> torch.Tensor:
        """``spans``: ``prefix`` and ``prefix_mask`` of :meth:`LanguageModel.forward` when the batch left
        its frozen spans out (pass them on to ``lm.forward``)."""


class LanguageModel:
    """A masked or causal LM with its tokenizer, behind one interface.

    ``word_logprobs`` gives the log-probability of every label word at the ``{mask}`` slot:
    causal LM, the teacher-forced log-probability of all the word's tokens after the prompt;
    masked LM, the sum over one ``[MASK]`` per word token.
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
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

        if name in ALIASES:
            path, local_only = _materialise_gguf(ALIASES[name]), True
        else:
            path, local_only = os.path.expanduser(name), not allow_download
        try:
            config = AutoConfig.from_pretrained(path, local_files_only=local_only)
        except (OSError, ValueError) as err:
            where = "a local folder" if Path(str(path)).exists() else "the local Hugging Face cache"
            raise ModelNotAvailableError(
                f"model {name!r} is not in {where} and downloads are off "
                f"(pass allow_download=True / --allow-download where a network is available).\n"
                f"{_offline_alternatives()}\n(cause: {str(err).splitlines()[0]})") from None
        archs = " ".join(getattr(config, "architectures", None) or [])
        auto = AutoModelForMaskedLM if "MaskedLM" in archs else AutoModelForCausalLM
        options = {"local_files_only": local_only, "dtype": _torch_dtype(dtype),
                   **({"device_map": _device_map(device_map)} if device_map is not None else {})}
        try:
            model = auto.from_pretrained(path, **options)
        except ValueError:  # e.g. an encoder-only config given to AutoModelForCausalLM
            model = AutoModelForMaskedLM.from_pretrained(path, **options)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
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
        if prefix is not None:
            keys, values = prefix
            size, length = attention_mask.shape[0], keys.shape[-2]
            if prefix_mask is None:
                prefix_mask = attention_mask.new_ones(size, length)
            attention_mask = torch.cat([prefix_mask.to(attention_mask), attention_mask], 1)
            cache = self._prefix_cache(keys, values)
            kwargs[self._cache_argument()] = cache
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
        """(attention layers, key/value heads, head size): the shape of one token's keys or values."""
        config = self.config.get_text_config()
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return config.num_hidden_layers, kv_heads, head_dim

    def _cache_argument(self) -> str:
        # transformers 5.x renames ``past_key_values`` to ``cache``, one model family at a time
        import inspect

        forward = self.model.base_model.forward
        return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"

    def _prefix_cache(self, keys: torch.Tensor | None = None, values: torch.Tensor | None = None):
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
        cache = self._prefix_cache()
        ids = input_ids.to(self.device)
        positions = torch.arange(start, start + ids.shape[1], device=self.device).unsqueeze(0)
        self.forward(self.embed(ids), torch.ones_like(ids), positions, 1, **{self._cache_argument(): cache})
        return (torch.stack([layer.keys[0] for layer in cache.layers]),
                torch.stack([layer.values[0] for layer in cache.layers]))

    def word_logprobs(self, batches: dict[int, PromptBatch], words: LabelWordIds,
                      hooks: PromptHooks | None = None) -> torch.Tensor:
        """[B, n_words] log-probabilities of each whole label word at the ``{mask}`` slot.

        ``batches`` maps a number of mask tokens to the batch encoded with that many masks
        (a causal LM needs only ``{1: batch}``).
        """
        hooks = hooks or PlainHooks()
        if self.causal and getattr(words, "trie", None) is not None and batches[min(batches)].frozen is None:
            from prompting.lm.trie import _plain_forward, shared_word_logprobs  # many candidates: shared work

            if _plain_forward(hooks):
                return shared_word_logprobs(self, batches[min(batches)], words, hooks)
        if self.causal:
            return self._causal_word_logprobs(batches[min(batches)], words, hooks)
        return self._masked_word_logprobs(batches, words, hooks)

    def _causal_word_logprobs(self, batch: PromptBatch, words: LabelWordIds, hooks) -> torch.Tensor:
        size = len(batch)
        columns: dict[int, torch.Tensor] = {}
        single = [i for i, w in enumerate(words.word_ids) if len(w) == 1]
        # a batch without its frozen spans attends to their cached keys and values
        spans = {} if batch.frozen is None else self.spans.kwargs(batch.frozen.ids)
        if single:
            embeds = hooks.embed(self, batch.input_ids, batch)
            logits = hooks.forward_lm(self, embeds, batch.attention_mask, batch.position_ids, 1, **spans)
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
            logits = hooks.forward_lm(self, hooks.embed(self, ids, batch), attention, positions, len(word), **spans)
            logprobs = log_softmax(logits)
            target = torch.tensor(word, device=logprobs.device)
            columns[i] = logprobs.gather(2, target.expand(size, -1).unsqueeze(-1)).squeeze(-1).sum(1)
        return torch.stack([columns[i] for i in range(len(words.word_ids))], 1)

    def _masked_word_logprobs(self, batches, words: LabelWordIds, hooks) -> torch.Tensor:
        columns: dict[int, torch.Tensor] = {}
        for n in words.lengths:
            if n not in batches:
                raise ValueError(f"no batch encoded with {n} mask tokens; encode with n_mask={n}")
            batch = batches[n]
            logits = hooks.forward_lm(self, hooks.embed(self, batch.input_ids, batch), batch.attention_mask,
                                      batch.position_ids, 0)
            rows = torch.arange(len(batch), device=logits.device).unsqueeze(1)
            at_masks = log_softmax(logits[rows, batch.mask_positions])  # [B, n, V]
            for i, word in enumerate(words.word_ids):
                if len(word) == n:
                    target = torch.tensor(word, device=at_masks.device)
                    columns[i] = at_masks.gather(2, target.expand(len(batch), -1).unsqueeze(-1)).squeeze(-1).sum(1)
        return torch.stack([columns[i] for i in range(len(words.word_ids))], 1)


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


def _torch_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in names:
        raise ValueError(f"dtype={dtype!r} is not valid; choose one of {', '.join(names)}")
    return names[dtype]


def _device_map(device_map: str) -> str:
    if device_map != "auto":
        raise ValueError(f"device_map={device_map!r} is not valid; use auto (or None for one device)")
    if importlib.util.find_spec("accelerate") is None:
        raise ModelNotAvailableError("device_map='auto' needs the accelerate package, which is not installed: "
                                     "pip install accelerate")
    return device_map


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


class PlainHooks:
    """The manual prompt: token embeddings as they are, the LM's own forward."""

    def embed(self, lm: LanguageModel, input_ids: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
        return lm.embed(input_ids)

    def forward_lm(self, lm: LanguageModel, inputs_embeds, attention_mask, position_ids, logits_to_keep, **spans):
        return lm.forward(inputs_embeds, attention_mask, position_ids, logits_to_keep, **spans)


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
        if cap_mb < 0:
            raise ValueError(f"kv_cache_mb={cap_mb!r} is not valid; give a size in megabytes >= 0 (0: no cache)")
        self.lm, self.cap = lm, int(cap_mb * 2 ** 20)
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
        from prompting.core.template import Encoding, collate

        found = {}
        order = sorted(spans, key=len)
        for rows in token_budget_batches([len(s) for s in order], MAX_BATCH_TOKENS, 64):
            chunk = [order[i] for i in rows]
            batch = collate([Encoding(list(s), []) for s in chunk], self.lm.pad_id, left=True).to(self.lm.device)
            cache = self.lm._prefix_cache()
            self.lm.forward(self.lm.embed(batch.input_ids), batch.attention_mask, batch.position_ids, 1,
                            **{self.lm._cache_argument(): cache})
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
