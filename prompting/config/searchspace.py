"""Search spaces for sweeps: plain data, declared in each method's config class, checked with clear errors.

A method's config class (see :mod:`prompting.core.settings`) gives each of its settings a ``search``
distribution, and training settings and slot lengths in ``train_space``; a distribution is

    {"low": 1e-4, "high": 1e-2, "log": True}      # float (log scale)
    {"low": 8, "high": 64, "step": 8}             # int: low and high are integers
    {"choices": ["lstm", "mlp"]}                  # categorical (a plain list also works)

A parameter is one of the method's own settings, a :class:`~prompting.core.settings.TrainConfig`
field, ``template`` (choices of template strings), or a template slot length: ``soft_length`` sets
the N of every ``{soft:N}`` slot, ``trigger_length`` the N of every ``{trigger:N}`` slot.

This module never imports optuna: configs are checked without it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

from prompting.core.settings import TRAIN_KEYS, MethodConfig
from prompting.core.template import Soft, Template, Trigger, unparse

__all__ = ["SearchSpaceError", "Param", "parse_param", "sweepable", "build_space", "apply_params",
           "resize_slots", "SLOT_PARAMS"]

SLOT_PARAMS = {"soft_length": Soft, "trigger_length": Trigger}
SCALARS = (str, int, float, bool, type(None))


class SearchSpaceError(ValueError):
    """A search space that names an unknown parameter or an invalid distribution."""


@dataclass(frozen=True)
class Param:
    """One dimension: ``choices`` (categorical), or ``low``..``high`` (int when both are integers)."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple | None = None

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(isinstance(v, int) for v in (self.low, self.high))

    def suggest(self, trial) -> Any:
        """The value an optuna trial samples for this parameter."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.is_int:
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def to_dict(self) -> dict:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        out = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_param(where: str, name: str, spec: Any) -> Param:
    """A distribution from ``{low, high, log, step}``, ``{choices: [...]}`` or a list of choices."""
    shape = "{low: L, high: H} (optional log: true or step: S) or {choices: [...]}"
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, dict):
        raise SearchSpaceError(f"{where}.{name}: {spec!r} is not a distribution; give {shape}")
    if "choices" in spec:
        extra = sorted(set(spec) - {"choices"})
        choices = spec["choices"]
        if extra:
            raise SearchSpaceError(f"{where}.{name}: {extra[0]!r} cannot go with 'choices'; give {shape}")
        if not isinstance(choices, list) or not choices or not all(isinstance(c, SCALARS) for c in choices):
            raise SearchSpaceError(f"{where}.{name}: choices={choices!r} is not valid; give a non-empty list "
                                   "of strings, numbers, booleans or null")
        return Param(name, choices=tuple(choices))
    unknown = sorted(set(spec) - {"low", "high", "log", "step"})
    if unknown:
        raise SearchSpaceError(f"{where}.{name}: unknown key {unknown[0]!r}; allowed keys: low, high, log, step, "
                               "choices")
    low, high, log, step = spec.get("low"), spec.get("high"), spec.get("log", False), spec.get("step")
    if not (_number(low) and _number(high)):
        raise SearchSpaceError(f"{where}.{name}: low={low!r}, high={high!r} are not valid; give two numbers, "
                               f"i.e. {shape}")
    if not low < high:
        raise SearchSpaceError(f"{where}.{name}: low={low!r} must be below high={high!r}")
    if not isinstance(log, bool):
        raise SearchSpaceError(f"{where}.{name}: log={log!r} is not valid; use true or false")
    if log and low <= 0:
        raise SearchSpaceError(f"{where}.{name}: log: true needs low > 0; got low={low!r}")
    if step is not None and (not _number(step) or step <= 0 or log):
        raise SearchSpaceError(f"{where}.{name}: step={step!r} is not valid; give a number > 0, without log")
    if step is not None and isinstance(low, int) and isinstance(high, int) and not isinstance(step, int):
        raise SearchSpaceError(f"{where}.{name}: step={step!r} must be an integer for an integer range")
    return Param(name, low=low, high=high, log=log, step=step)


def sweepable(config_cls: type[MethodConfig]) -> tuple[str, ...]:
    """Every parameter a sweep of the method with config class ``config_cls`` may sample."""
    return config_cls.keys() + TRAIN_KEYS + ("template",) + tuple(SLOT_PARAMS)


def _has_slots(templates: Sequence[str], kind: type) -> bool:
    return any(isinstance(p, kind) and not getattr(p, "init_text", None)
               for t in templates for p in Template(t).parts)


def _applies(name: str, templates: Sequence[str]) -> bool:
    """Whether a parameter can change these templates' runs (a slot length needs such a slot)."""
    if name in SLOT_PARAMS:  # one template to resize: the method's own, or the experiment's only one
        return len(set(templates)) == 1 and _has_slots(templates, SLOT_PARAMS[name])
    if name == "prompt_tokens":  # soft prompts: only for templates that do not place their own slots
        return not any(Template(t).has_soft for t in templates)
    return True


def build_space(where: str, config_cls: type[MethodConfig], fixed: Sequence[str], overrides: dict | None,
                templates: Sequence[str], trained: bool = True) -> dict[str, Param]:
    """The method's declared space, less the keys fixed in the method entry, updated by ``overrides``.

    A declared parameter that cannot apply to these templates (``soft_length`` without a ``{soft:N}``
    slot) is left out; an override that names an unknown or inapplicable parameter is an error.
    An untrained method (``train: false``) has no training parameters to sample.
    """
    allowed = sweepable(config_cls)
    if not trained:
        allowed = tuple(a for a in allowed if a not in TRAIN_KEYS)
    space = {}
    for name, spec in config_cls.search_space().items():
        if name not in sweepable(config_cls):  # a method that declares what it cannot take is a library bug
            raise SearchSpaceError(f"{config_cls.__name__}.train_space: unknown parameter {name!r}")
        if name in allowed and name not in fixed and _applies(name, templates):
            space[name] = parse_param(f"{config_cls.__name__}.search_space", name, spec)
    if overrides is not None and not isinstance(overrides, dict):
        raise SearchSpaceError(f"{where}: {overrides!r} is not valid; give a mapping of parameter -> distribution")
    for name, spec in (overrides or {}).items():
        if name not in allowed:
            untrained = " (it is not trained: train: false)" if name in TRAIN_KEYS else ""
            raise SearchSpaceError(
                f"{where}: unknown parameter {name!r} for method {config_cls.method!r}{untrained}; sweepable "
                f"parameters: {', '.join(allowed)}")
        if not _applies(name, templates):
            what = "one template with a {soft:N} slot" if name == "soft_length" else \
                "one template with a {trigger:N} slot" if name == "trigger_length" else "a template without {soft} slots"
            raise SearchSpaceError(f"{where}: {name!r} needs {what}; the templates are "
                                   f"{', '.join(repr(t) for t in templates)}")
        space[name] = parse_param(where, name, spec)
        if name == "template":
            for choice in space[name].choices or ():
                if not isinstance(choice, str):
                    raise SearchSpaceError(f"{where}.template: choices must be template strings; got {choice!r}")
                Template(choice)
    return space


def resize_slots(template: str, kind: str, count: int) -> str:
    """``template`` with every ``{soft:N}`` (kind ``soft_length``) or ``{trigger:N}`` slot set to ``count``."""
    part_type = SLOT_PARAMS[kind]
    parts = [part_type(count) if isinstance(p, part_type) and not getattr(p, "init_text", None) else p
             for p in Template(template).parts]
    return "".join(unparse(p) for p in parts)


def apply_params(spec, values: dict, templates: Sequence[str], label: str | None = None):
    """A copy of a :class:`~prompting.experiment.harness.MethodSpec` with sampled ``values`` put where they belong.

    Slot lengths rewrite the method's templates: when the method brings no template of its own, it
    gets one per distinct template of the experiment (so use them with a method ``template``).
    """
    params, train_config, template = dict(spec.params), dict(spec.train_config), spec.template
    slots = {k: v for k, v in values.items() if k in SLOT_PARAMS}
    for name, value in values.items():
        if name == "template":
            template = value
        elif name in SLOT_PARAMS:
            continue
        elif name in TRAIN_KEYS:
            train_config[name] = value
        else:
            params[name] = value
    if slots:
        if template is None:
            if len(set(templates)) != 1:
                raise SearchSpaceError("a slot length needs one template: give the method its own 'template'")
            template = templates[0]
        for kind, count in slots.items():
            template = resize_slots(template, kind, count)
    return dataclasses.replace(spec, params=params, train_config=train_config, template=template,
                               label=label or spec.label, ensemble=None)
