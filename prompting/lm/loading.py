"""Where a model comes from, offline: packaged GGUF models de-quantised once into a cache, devices
and dtypes by name, and the error that lists what works offline."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from prompting.lm.aliases import ALIASES, ModelNotAvailableError, PackagedModel

__all__ = ["cache_dir", "resolve_device", "offline_alternatives", "materialise_gguf", "torch_dtype", "check_device_map", "load_pretrained",
           "model_kind"]

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where de-quantised packaged models are kept: $PROMPTING_CACHE or ~/.cache/prompting."""
    return Path(os.environ.get("PROMPTING_CACHE", Path.home() / ".cache" / "prompting"))


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The device to run on: ``auto`` (a GPU when there is one, else the CPU), or the one named, which
    must exist here (a CUDA device with a CPU-only build of torch is refused at once)."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        found = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device={device!r} is not valid; use auto, cpu, mps, cuda or cuda:N") from None
    if found.type == "cuda" and not torch.cuda.is_available():
        why = "this torch is a build without CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        raise ValueError(f"device {str(device)!r} is not available: {why}; use device: cpu (or auto)")
    if found.type == "cuda" and found.index is not None and found.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r} is not available: {torch.cuda.device_count()} CUDA devices "
                         f"are visible (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    if found.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {str(device)!r} is not available here; use device: cpu (or auto)")
    return found


def offline_alternatives() -> str:
    lines = [f"  {alias}: {m.description}; {m.install}" for alias, m in ALIASES.items()]
    return "models that work offline:\n" + "\n".join(lines) + "\n  or a local checkpoint folder"


def packaged_gguf(entry: PackagedModel) -> Path:
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


def materialise_gguf(entry: PackagedModel) -> Path:
    """De-quantise the packaged GGUF once and keep a regular checkpoint in the cache."""
    gguf = packaged_gguf(entry)
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


def torch_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in names:
        raise ValueError(f"dtype={dtype!r} is not valid; choose one of {', '.join(names)}")
    return names[dtype]


def check_device_map(device_map: str) -> str:
    if device_map != "auto":
        raise ValueError(f"device_map={device_map!r} is not valid; use auto (or None for one device)")
    if importlib.util.find_spec("accelerate") is None:
        raise ModelNotAvailableError("device_map='auto' needs the accelerate package, which is not installed: "
                                     "pip install accelerate")
    return device_map


def missing_folder(name: str) -> str | None:
    """What to say about a model name that names a local folder that does not exist, or None for a name
    that is not a path. A path starts with ``.``, ``/`` or ``~``, ends with a separator, has more parts than
    a hub id (``ORG/NAME``), or has a parent folder that exists here. Folders with a close name are listed;
    without one, the models that work offline."""
    shown = os.path.expanduser(name).rstrip("/" + os.sep) or name
    path = Path(shown)
    if name in ALIASES or path.exists():
        return None
    separators = {"/", os.sep}
    parent = path.parent
    if not (name.startswith((".", "/", "~")) or name[-1:] in separators
            or sum(name.count(s) for s in separators) >= 2 or (str(parent) != "." and parent.is_dir())):
        return None
    elsewhere = f"; check the path, or give a model that works offline.\n{offline_alternatives()}"
    if not parent.is_dir():
        found = next((p for p in parent.parents if p.is_dir()), None)
        return (f"model {name!r}: folder {shown!r} does not exist, nor does {str(parent)!r}"
                + (f" (the nearest folder that does is {str(found)!r})" if found is not None else "") + elsewhere)
    import difflib

    names = sorted(p.name for p in parent.iterdir() if p.is_dir())
    close = difflib.get_close_matches(path.name, names, n=3, cutoff=0.6)
    if not close:
        return f"model {name!r}: folder {shown!r} does not exist{elsewhere}"
    return (f"model {name!r}: folder {shown!r} does not exist; folders in {str(parent)!r} with a close name: "
            f"{', '.join(close)}; check the path")


def model_kind(name: str) -> str | None:
    """What kind of LM ``name`` is, from its config alone (no weights are read): ``causal``, ``masked`` or
    ``seq2seq``; None when its config is not here to read (the model's loading then says why)."""
    if name in ALIASES:
        return "causal"  # the packaged models are causal LMs (materialise_gguf loads them as such)
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(os.path.expanduser(name), local_files_only=True)
    except (OSError, ValueError):
        return None
    archs = " ".join(getattr(config, "architectures", None) or [])
    if "MaskedLM" in archs:
        return "masked"
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    return "causal" if archs else None


def load_pretrained(name: str, allow_download: bool = False, dtype=torch.float32, device_map: str | None = None):
    """(model, tokenizer) of an alias (its packaged model de-quantised once), a local folder, or a hub id
    in the local cache; nothing is downloaded unless ``allow_download``. A causal, masked or
    encoder-decoder (T5, Flan-T5, BART) LM, as its config says."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoTokenizer

    if name in ALIASES:
        path, local_only = materialise_gguf(ALIASES[name]), True
    else:
        path, local_only = os.path.expanduser(name), not allow_download
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=local_only)
    except (OSError, ValueError) as err:
        missing = missing_folder(name)
        if missing is not None:
            raise ModelNotAvailableError(missing) from None
        where = "a local folder" if Path(str(path)).exists() else "the local Hugging Face cache"
        raise ModelNotAvailableError(
            f"model {name!r} is not in {where} and downloads are off "
            f"(pass allow_download=True / --allow-download where a network is available).\n"
            f"{offline_alternatives()}\n(cause: {str(err).splitlines()[0]})") from None
    archs = " ".join(getattr(config, "architectures", None) or [])
    auto = (AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else
            AutoModelForMaskedLM if "MaskedLM" in archs else AutoModelForCausalLM)  # T5 / BART: encoder-decoder
    options = {"local_files_only": local_only, "dtype": torch_dtype(dtype),
               **({"device_map": check_device_map(device_map)} if device_map is not None else {})}
    try:
        model = auto.from_pretrained(path, **options)
    except ValueError:  # e.g. an encoder-only config given to AutoModelForCausalLM
        model = AutoModelForMaskedLM.from_pretrained(path, **options)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
    return model, tokenizer
