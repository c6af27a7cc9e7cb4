"""Prompt methods: one small module each, all sharing the template, verbalizer and LM wrapper.

A method registers itself with :func:`register`; configs and the command line find it by name.
"""

from __future__ import annotations

from .autoprompt import AutoPrompt, hotflip_candidates
from .base import Batch, EncodedExamples, PromptMethod
from .prefix import PrefixTuning
from .ptuning import PTuning
from .saving import load_prompt, save_prompt
from .soft import SoftPrompt

__all__ = ["PromptMethod", "EncodedExamples", "Batch", "METHODS", "register", "build_method",
           "AutoPrompt", "hotflip_candidates", "PTuning", "PrefixTuning", "SoftPrompt", "save_prompt",
           "load_prompt"]

METHODS: dict[str, type[PromptMethod]] = {}


def register(cls: type[PromptMethod]) -> type[PromptMethod]:
    METHODS[cls.name] = cls
    return cls


register(PromptMethod)
register(AutoPrompt)
register(PTuning)
register(PrefixTuning)
register(SoftPrompt)


def build_method(name: str, lm, template, verbalizer, labels=None, max_length=None, **params) -> PromptMethod:
    """Construct a registered method; unknown names or parameters get an error naming what is valid."""
    if name not in METHODS:
        raise ValueError(f"method {name!r} is not known; known methods: {', '.join(sorted(METHODS))}")
    cls = METHODS[name]
    unknown = sorted(set(params) - set(cls.method_params))
    if unknown:
        valid = ", ".join(sorted(cls.method_params)) or "none"
        raise ValueError(f"method {name!r} has no parameter {unknown[0]!r}; its parameters: {valid}")
    return cls(lm, template, verbalizer, labels=labels, max_length=max_length, **params)
