"""Save a learned prompt as a small folder, and load it onto a model to predict with it.

    save_prompt(method, "prompts/sst2-ptuning")     # prompt.safetensors + prompt.json
    method = load_prompt("prompts/sst2-ptuning", lm)
    method.predict(examples)                         # the same scores as before saving

``prompt.safetensors`` holds :meth:`PromptMethod.prompt_state`: the learned tensors, with prompt
encoders folded into their output (as PEFT does), so a loaded P-tuning or prefix prompt needs no
LSTM or MLP. ``prompt.json`` holds everything else needed to rebuild the method: its name and
parameters, the template, the verbalizer, the task's labels, and the model it was trained on
(name, kind, hidden size, key/value shape, a checksum of its weights).

Only the prompt is saved, not the LM, unless ``lm_weights=True`` (a PET model, whose whole LM was tuned:
the LM's weights go into ``lm.safetensors``, and loading puts them into the LM it is given). A prompt
trained with ``tune_lm: true`` and saved without them needs the tuned LM, so loading warns when the
LM's weights differ from those at saving.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from prompting.core.verbalizer import Verbalizer
from prompting.lm.model import LanguageModel
from prompting.methods import METHODS
from prompting.methods.choices import ChoiceVerbalizer

if TYPE_CHECKING:  # a saved prompt is any method; methods.base calls save_prompt
    from prompting.methods.base import PromptMethod

__all__ = ["save_prompt", "load_prompt", "PromptLoadError", "TENSORS_FILE", "META_FILE", "LM_FILE"]

FORMAT_VERSION = 1
TENSORS_FILE = "prompt.safetensors"
META_FILE = "prompt.json"
LM_FILE = "lm.safetensors"


class PromptLoadError(ValueError):
    """A saved prompt that is missing, malformed, or made for another model."""


@torch.no_grad()
def _weights_checksum(lm: LanguageModel) -> float:
    # a sum is enough to notice that the LM was tuned after (or before) the prompt was saved
    return float(sum(p.double().sum().item() for p in lm.model.parameters()))


def _model_info(lm: LanguageModel) -> dict:
    return {"name": lm.name, "kind": lm.kind, "hidden_size": lm.embeddings.embedding_dim,
            "kv_shape": list(lm.kv_shape), "weights_checksum": _weights_checksum(lm)}


def save_prompt(method: PromptMethod, directory: str | Path, lm_weights: bool = False) -> Path:
    """Write ``prompt.safetensors`` and ``prompt.json`` into ``directory`` (created if needed); with
    ``lm_weights``, the LM's own weights too (``lm.safetensors``: a model whose LM was tuned)."""
    from safetensors.torch import save_file, save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if lm_weights:  # tied weights (input and output embeddings) are stored once
        save_model(method.lm.model, str(directory / LM_FILE))
    state = {name: t.detach().to("cpu").contiguous().clone() for name, t in method.prompt_state().items()}
    save_file(state, str(directory / TENSORS_FILE))
    meta = {
        "format": FORMAT_VERSION,
        "method": method.name,
        "params": method.config.saved(),
        "learned": method.learned(),
        "template": method.template.text,
        "verbalizer": method.verbalizer.to_dict(),
        "aggregate": method.verbalizer.aggregate,
        # a multiple-choice verbalizer: how its choices are scored (sum or mean over their tokens)
        **({"choice_score": method.verbalizer.score} if method.choices is not None else {}),
        "labels": list(method.labels),
        "max_length": method.encoder.max_length,
        **({"chat": True} if method.chat else {}),  # the prompt is a chat's user message
        "model": _model_info(method.lm),
        **({"lm_weights": LM_FILE} if lm_weights else {}),
        "tensors": {name: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
                    for name, t in state.items()},
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return directory


def _read_meta(directory: Path) -> dict:
    """A saved prompt's ``prompt.json`` (its tensors' file checked to be there)."""
    for name in (META_FILE, TENSORS_FILE):
        if not (directory / name).is_file():
            raise PromptLoadError(f"{str(directory)!r} is not a saved prompt: {name} is missing")
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        meta["model"].get("name")
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise PromptLoadError(f"{directory / META_FILE}: not a valid prompt description ({err})") from None
    if meta.get("format") != FORMAT_VERSION:
        raise PromptLoadError(f"{directory / META_FILE}: format {meta.get('format')!r} is not supported "
                              f"(this version reads format {FORMAT_VERSION})")
    return meta


def load_prompt(directory: str | Path, lm: LanguageModel, strict: bool = True) -> PromptMethod:
    """Rebuild a saved prompt on ``lm``, ready to predict.

    The model must be the one the prompt was saved with: a different hidden size, key/value shape
    or kind (masked vs causal) is an error, and so is a different model name unless ``strict=False``
    (the same model loaded under another name or path). A prompt saved with the LM's weights (a PET
    model) puts them into ``lm``: its weights are replaced.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = _read_meta(directory)
    saved, here = meta["model"], _model_info(lm)
    for key, what in (("hidden_size", "hidden size"), ("kind", "kind"), ("kv_shape", "key/value shape")):
        if saved.get(key) != here[key]:
            raise PromptLoadError(
                f"the prompt in {str(directory)!r} was saved with model {saved.get('name')!r} "
                f"({what} {saved.get(key)}) and cannot be loaded onto model {lm.name!r} ({what} {here[key]})")
    if strict and saved.get("name") != lm.name:
        raise PromptLoadError(
            f"the prompt in {str(directory)!r} was saved with model {saved.get('name')!r}, not {lm.name!r}; "
            "pass strict=False if this is the same model under another name")
    if meta["method"] not in METHODS:
        raise PromptLoadError(f"the prompt was saved by method {meta['method']!r}, which is not known here; "
                              f"known methods: {', '.join(sorted(METHODS))}")
    if meta.get("lm_weights"):  # the tuned LM of the saved model, put into the LM given
        from safetensors.torch import load_model

        load_model(lm.model, str(directory / meta["lm_weights"]), device=str(lm.device))
        here = _model_info(lm)
    cls = METHODS[meta["method"]]
    config = cls.config_class.from_saved(meta.get("params") or {})
    verbalizer = (ChoiceVerbalizer(meta["verbalizer"], meta["choice_score"]) if "choice_score" in meta
                  else Verbalizer(meta["verbalizer"], aggregate=meta.get("aggregate", "mean")))
    with torch.random.fork_rng(devices=[]):  # a random init that is overwritten must not move the global RNG
        method = cls(lm, meta["template"], verbalizer, labels=meta["labels"], max_length=meta.get("max_length"),
                     config=config, chat=meta.get("chat", False))
    method.load_prompt_state(load_file(str(directory / TENSORS_FILE), device=str(lm.device)))
    method.eval()
    checksum = saved.get("weights_checksum")
    if checksum is not None and abs(checksum - here["weights_checksum"]) > 1e-6 * max(1.0, abs(checksum)):
        warnings.warn(f"the weights of model {lm.name!r} differ from those the prompt in {str(directory)!r} was "
                      "saved with (was the LM tuned with tune_lm?); its predictions may differ", stacklevel=2)
    return method
