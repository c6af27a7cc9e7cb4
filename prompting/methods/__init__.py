"""Prompt methods: one small module each, all sharing the template, verbalizer and LM wrapper.

A method is a :class:`PromptMethod` subclass with a typed config class (see
:mod:`prompting.core.settings`); :func:`register` makes it known to configs and the command line:

    @dataclass
    class ScaledConfig(MethodConfig):
        method: ClassVar[str] = "scaled"
        temperature: float = setting(1.0, "divides the label scores", positive=True)

    @register
    class Scaled(PromptMethod):
        name, config_class = "scaled", ScaledConfig

        def forward(self, batch):
            return super().forward(batch) / self.config.temperature

(docs/adding-a-method.md has one that learns).

The built-in methods are registered by name and module, so that this package, and with it a YAML
config's check, loads without torch; their classes are imported when first used.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Iterator

from prompting.methods.configs import BUILTIN_CONFIGS, MethodConfig

if TYPE_CHECKING:
    from prompting.methods.base import PromptMethod

__all__ = ["PromptMethod", "ManualPrompt", "IPet", "EncodedExamples", "Batch", "SearchMethod", "METHODS", "register",
           "build_method", "method_config", "AutoPrompt", "hotflip_candidates", "PTuning", "PrefixTuning",
           "SoftPrompt", "InContext", "save_prompt", "load_prompt", "MethodConfig"]

# names importable from this package, and the module that defines each (imported on first use)
_LAZY = {"PromptMethod": "base", "ManualPrompt": "base", "IPet": "base", "EncodedExamples": "base", "Batch": "base",
         "SearchMethod": "base", "AutoPrompt": "autoprompt", "hotflip_candidates": "autoprompt",
         "PTuning": "ptuning", "PrefixTuning": "prefix", "SoftPrompt": "soft", "InContext": "icl", "save_prompt": "saving",
         "load_prompt": "saving"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Registry(Mapping):
    """Method name -> method class; the config class of a name is known without importing its module."""

    def __init__(self):
        self._configs: dict[str, type[MethodConfig]] = {}
        self._classes: dict[str, object] = {}  # a class, or "module:Class" until first use

    def add(self, config: type[MethodConfig], cls) -> None:
        self._configs[config.method] = config
        self._classes[config.method] = cls

    def config(self, name: str) -> type[MethodConfig]:
        """The config class of method ``name``; an unknown name is an error that lists the known ones."""
        if name not in self._configs:
            raise ValueError(f"method {name!r} is not known; known methods: {', '.join(sorted(self))}")
        return self._configs[name]

    def __getitem__(self, name: str) -> type[PromptMethod]:
        cls = self._classes[name]
        if isinstance(cls, str):
            module, _, attr = cls.partition(":")
            cls = self._classes[name] = getattr(importlib.import_module(module), attr)
        return cls

    def __contains__(self, name) -> bool:  # without importing the class
        return name in self._configs

    def __iter__(self) -> Iterator[str]:
        return iter(self._configs)

    def __len__(self) -> int:
        return len(self._configs)


METHODS = Registry()


def register(cls: type[PromptMethod]) -> type[PromptMethod]:
    """Make a method known by its config class's name (usable as a class decorator)."""
    if cls.config_class.method != cls.name:
        raise ValueError(f"{cls.__name__}.name is {cls.name!r} but its config class {cls.config_class.__name__} "
                         f"names method {cls.config_class.method!r}; make them the same")
    METHODS.add(cls.config_class, cls)
    return cls


_BUILTIN_CLASSES = {"manual": "base:ManualPrompt", "ipet": "base:IPet", "soft": "soft:SoftPrompt", "ptuning": "ptuning:PTuning",
                    "prefix": "prefix:PrefixTuning", "autoprompt": "autoprompt:AutoPrompt",
                    "icl": "icl:InContext"}
for _config in BUILTIN_CONFIGS:
    METHODS.add(_config, f"{__name__}.{_BUILTIN_CLASSES[_config.method]}")


def method_config(name: str, params: dict | None = None, where: str | None = None) -> MethodConfig:
    """Method ``name``'s validated settings from ``params``; errors name the key or value and what is valid."""
    return METHODS.config(name).from_mapping(params or {}, where=where)


def build_method(name: str, lm, template, verbalizer, labels=None, max_length=None, chat: bool = False,
                 **params) -> PromptMethod:
    """Construct a registered method; unknown names or parameters get an error naming what is valid.
    ``chat``: the prompt is a user message in the tokenizer's chat template (:mod:`prompting.lm.chat`)."""
    config = method_config(name, params)
    return METHODS[name](lm, template, verbalizer, labels=labels, max_length=max_length, config=config, chat=chat)
