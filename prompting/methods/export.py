"""Export a learned prompt to Hugging Face PEFT's adapter format.

    export_peft(method, "adapters/sst2-soft")           # adapter_config.json + adapter_model.safetensors
    model = peft.PeftModel.from_pretrained(base_model, "adapters/sst2-soft")
    ids = peft_input_ids(method, examples)               # what to give that model, one list per example

Soft prompts (``soft``), P-tuning (``ptuning``, its encoder folded into its output) and prefix-tuning
(``prefix``) learned on a causal LM export; PEFT has no masked-LM prompt learning. The PEFT model,
given ``peft_input_ids`` (unpadded, or padded on the right with an attention mask), predicts the
label word with the same log-probabilities as ``method``: exactly, up to float rounding, or
``export_peft`` refuses. What is exported, and why it is exact:

- ``soft`` / ``ptuning`` become PEFT prompt tuning (``PROMPT_TUNING``, ``prompt_embeddings``
  [n, hidden]). P-tuning is exported as prompt tuning, not ``P_TUNING``: its folded output *is* a
  prompt-tuning prompt, and PEFT's ``P_TUNING`` uses stored vectors as they are only in inference
  mode (built for training, it passes them through a fresh, random LSTM). PEFT puts its virtual
  tokens before the whole input, so every ``{soft}`` slot must stand at the start of the template
  (``{soft:8}Review: {text_a} ...``); a template with text before or between soft tokens is
  refused. The special tokens our encoding puts first (a ``<s>``/BOS) become the first virtual
  tokens (their embedding rows), so ``peft_input_ids`` are the template's text after the soft
  tokens *without* special tokens (``tokenizer(text, add_special_tokens=False)``): a BOS added
  again would be a different input.
- ``prefix`` becomes PEFT prefix-tuning (``PREFIX_TUNING``, ``prefix_projection: false``,
  ``prompt_embeddings`` [P, layers * 2 * kv_heads * head_dim] in PEFT's order: per virtual token,
  layer by layer, keys then values, head by head). Positions differ: our prefix takes no positions
  (the input is numbered from 0), PEFT numbers the input from P (the prefix length), and adds P to
  any ``position_ids`` it is given. On a model with rotary position embeddings (Llama, Qwen,
  SmolLM2, ...) only the distance between positions reaches attention, and our prefix keys are
  unrotated (position 0), so the export rotates them to position P: every query then sees them at
  the distance it sees them here. A model with absolute position embeddings (GPT-2) gives its input
  tokens other position vectors under PEFT's numbering; nothing in the prefix can undo that, so
  ``export_peft`` refuses it unless ``strict=False`` (the key/value tensors are then exported as
  they are, and PEFT's scores differ).

``export_peft`` checks the prefix convention on a short probe sequence before writing (the model
run our way and PEFT's way) and refuses when they disagree. Only the prompt is exported: a prompt
trained with ``tune_lm: true`` needs the LM it was trained with as the base model.
"""

from __future__ import annotations

import inspect
import json
import sys
import warnings
from pathlib import Path
from typing import Sequence

import torch

from prompting.core.data import Example
from prompting.methods import PrefixTuning, PromptMethod, PTuning, SoftPrompt
from prompting.methods.prefix import flat_key_values

__all__ = ["export_peft", "peft_input_ids", "PeftExportError", "CONFIG_FILE", "WEIGHTS_FILE", "INFO_FILE"]

CONFIG_FILE = "adapter_config.json"  # PEFT's names (peft.utils.constants)
WEIGHTS_FILE = "adapter_model.safetensors"
INFO_FILE = "prompting_export.json"  # ours: what the adapter expects as input


class PeftExportError(ValueError):
    """A prompt that PEFT's adapter format cannot reproduce exactly."""


def export_peft(method: PromptMethod, directory, strict: bool = True) -> Path:
    """Write ``method``'s prompt as a PEFT adapter folder that ``PeftModel.from_pretrained`` loads.

    ``strict=False`` exports a prefix for a model without rotary position embeddings anyway, with a
    warning (see the module docstring). Returns the folder.
    """
    lm = method.lm
    if not lm.causal:
        raise PeftExportError(f"model {lm.name!r} is a masked LM; PEFT's prompt learning supports causal LMs "
                              "(task_type CAUSAL_LM) only, so there is no adapter format to export to")
    if isinstance(method, PrefixTuning):
        config, weights = _prefix_export(method, strict)
    elif isinstance(method, (SoftPrompt, PTuning)):
        config, weights = _prompt_tuning_export(method)
    else:
        raise PeftExportError(f"method {method.name!r} learns no continuous prompt for PEFT to hold; "
                              "exportable methods: soft, ptuning, prefix")
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(directory))
    save_file({"prompt_embeddings": weights.detach().float().cpu().contiguous()},
              str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    info = {"method": method.name, "template": method.template.text, "verbalizer": method.verbalizer.to_dict(),
            "labels": list(method.labels), "peft_type": str(config.peft_type.value),
            "input": ("the template's text after its soft tokens, tokenized without special tokens"
                      if config.peft_type.value == "PROMPT_TUNING" else
                      "the template's text with the tokenizer's special tokens, as prompting encodes it"),
            "padding": "none, or on the right with an attention mask"}
    (directory / INFO_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return directory


def peft_input_ids(method: PromptMethod, examples: Sequence[Example]) -> list[list[int]]:
    """Token ids to give the adapter that :func:`export_peft` wrote, one list per example.

    For prompt tuning our encoding without its leading special tokens and soft tokens (they are the
    adapter's virtual tokens); for prefix-tuning our encoding as it is. The label word follows these ids.
    """
    encodings = method.encode(examples).encodings[1]
    if isinstance(method, PrefixTuning):
        return [list(e.input_ids) for e in encodings]
    skip = len(method.encoder.prefix_ids) + _leading_soft_count(method)
    return [list(e.input_ids[skip:]) for e in encodings]


# ---------------------------------------------------------------------------------- prompt tuning
def _leading_soft_count(method: PromptMethod) -> int:
    """How many soft tokens open the template; an error if any soft token comes later."""
    pieces = method.encoder.pieces
    leading = 0
    while leading < len(pieces) and pieces[leading][0] == "soft":
        leading += 1
    if any(kind in ("soft", "trigger") for kind, _ in pieces[leading:]):
        raise PeftExportError(
            f"template {method.template.text!r} has soft tokens after the start; PEFT's prompt learning puts "
            "all its virtual tokens before the input, so only a template whose {soft} slots all come first "
            "(e.g. \"{soft:8}Review: {text_a} Sentiment: {mask}\") exports exactly")
    return sum(count for _, count in pieces[:leading])


@torch.no_grad()
def _prompt_tuning_export(method):
    from peft import PromptTuningConfig

    lm = method.lm
    _leading_soft_count(method)
    prompt = method.soft_prompt if isinstance(method, SoftPrompt) else method.prompt_embeddings()
    lead = torch.tensor(method.encoder.prefix_ids, dtype=torch.long, device=lm.device)
    weights = torch.cat([lm.embed(lead).float(), prompt.float()])
    text = lm.config.get_text_config()
    config = PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=weights.shape[0], token_dim=weights.shape[1],
        num_transformer_submodules=1, num_attention_heads=text.num_attention_heads,
        num_layers=text.num_hidden_layers, prompt_tuning_init="RANDOM", inference_mode=True,
        base_model_name_or_path=lm.name)
    return config, weights


# ---------------------------------------------------------------------------------- prefix-tuning
@torch.no_grad()
def _prefix_export(method: PrefixTuning, strict: bool):
    from peft import PrefixTuningConfig

    lm = method.lm
    keys, values = (t.detach().float() for t in method.prefix_key_values())  # [layers, kv_heads, P, head_dim]
    length = keys.shape[2]
    rotated = _rotate_keys(lm, keys, length)
    mismatch = _probe_difference(lm, keys, values, rotated if rotated is not None else keys)
    if mismatch is not None:
        why = (f"model {lm.name!r} ({type(lm.model).__name__}) does not score the same with the prefix under "
               f"PEFT's position numbering (the input from {length}, after the prefix) as under ours (the "
               f"input from 0; {mismatch})")
        if rotated is None:
            why += ("; it has no rotary position embeddings that a rotation of the prefix keys could "
                    "compensate (absolute position embeddings, as in GPT-2, cannot be)")
        else:
            why += ", even with the prefix keys rotated to PEFT's positions"
        if strict:
            raise PeftExportError(why + "; pass strict=False to export the keys and values anyway")
        warnings.warn(why + "; exported anyway (strict=False): PEFT's scores will differ", stacklevel=3)
        rotated = None
    if rotated is not None:
        keys = rotated
    layers, kv_heads, _, head_dim = keys.shape
    # PEFT views each virtual token's vector as [layers * 2, kv_heads, head_dim]: layer by layer, keys then values
    weights = flat_key_values(keys, values)
    config = PrefixTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=length, token_dim=kv_heads * head_dim,
        num_transformer_submodules=1, num_attention_heads=kv_heads, num_layers=layers,
        encoder_hidden_size=kv_heads * head_dim, prefix_projection=False, inference_mode=True,
        base_model_name_or_path=lm.name)
    return config, weights


def _rotate_keys(lm, keys: torch.Tensor, shift: int) -> torch.Tensor | None:
    """``keys`` [layers, kv_heads, P, head_dim] rotated as the model rotates keys at position ``shift``;
    None for a model without rotary position embeddings."""
    rotary = next((m for m in lm.model.modules() if type(m).__name__.endswith("RotaryEmbedding")), None)
    apply = getattr(sys.modules.get(type(lm.model).__module__), "apply_rotary_pos_emb", None)
    if rotary is None or apply is None:
        return None
    layer_types = getattr(lm.config.get_text_config(), "layer_types", None)
    by_type = "layer_type" in inspect.signature(rotary.forward).parameters and layer_types
    positions = torch.full((1, keys.shape[2]), shift, dtype=torch.long, device=keys.device)
    rotated = []
    try:
        for layer, layer_keys in enumerate(keys):
            extra = {"layer_type": layer_types[layer]} if by_type else {}
            cos, sin = (t.float() for t in rotary(layer_keys, positions, **extra))
            norm = (cos.square() + sin.square()).sqrt()  # drop any attention scaling folded into cos/sin
            rotated.append(apply(layer_keys, layer_keys, cos / norm, sin / norm)[1][0])
    except (TypeError, ValueError, RuntimeError, IndexError):  # a rotary module of another shape
        return None
    return torch.stack(rotated)


def _probe_difference(lm, keys, values, peft_keys) -> str | None:
    """None if a probe sequence gets the same logits with the prefix our way (input from 0) and
    PEFT's way (``peft_keys`` in the cache, positions left to the model: from P); else the difference."""
    training = lm.model.training
    lm.model.eval()  # no dropout: the two runs must be comparable
    try:
        return _compare_on_probe(lm, keys, values, peft_keys)
    finally:
        lm.model.train(training)


def _compare_on_probe(lm, keys, values, peft_keys) -> str | None:
    vocab = lm.embeddings.num_embeddings
    ids = (torch.arange(8, device=lm.device) * 7 + 5).remainder(vocab).unsqueeze(0)
    embeds = lm.embed(ids)
    dtype = embeds.dtype
    prefix = tuple(t.to(dtype).unsqueeze(1) for t in (keys, values))
    ours = lm.forward(embeds, torch.ones_like(ids), torch.arange(ids.shape[1], device=lm.device).unsqueeze(0),
                      prefix=prefix).float()
    cache = lm.prefix_cache(peft_keys.to(dtype).unsqueeze(1), prefix[1])
    mask = torch.ones(1, keys.shape[2] + ids.shape[1], dtype=torch.long, device=lm.device)
    theirs = lm.model(inputs_embeds=embeds, attention_mask=mask, use_cache=True,
                      **{lm.cache_argument(): cache}).logits.float()
    tolerance = (1e-4 if dtype in (torch.float32, torch.float64) else 3e-2) * max(1.0, ours.abs().max().item())
    difference = (ours - theirs).abs().max().item()
    return None if difference <= tolerance else f"largest logit difference {difference:.3g} on a probe sequence"
