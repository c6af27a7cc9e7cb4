"""Typed settings: every key a config may give, with its type, default, allowed values and sweep range.

One dataclass per method (:mod:`prompting.methods.configs`) and one for training (:class:`TrainConfig`)
are the single source from which the YAML schema, the errors that list valid keys and values, the
sweep search space, a saved prompt's JSON and the README's settings table are derived:

    @dataclass
    class SoftConfig(MethodConfig):
        method: ClassVar[str] = "soft"
        prompt_tokens: int | None = setting(None, "vectors in front of a template without {soft} slots",
                                            minimum=1, search={"low": 2, "high": 32, "log": True})

This module imports neither torch nor transformers, so a config is checked in an instant.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

from prompting.core.data import DATA_SEEDS

__all__ = ["SettingsError", "setting", "Settings", "MethodConfig", "TrainConfig", "TrainingError", "TRAIN_KEYS", "Protocol",
           "MethodSpec", "ENSEMBLES", "CALIBRATIONS", "DATA_SEEDS", "settings_table"]

ENSEMBLES = ("mean", "wmean")
CALIBRATIONS = ("none", "contextual", "domain")


class SettingsError(ValueError):
    """A setting with an unknown name, a value of the wrong type, or a value outside what is allowed.

    ``detail`` is the message without its owner, for callers that name the place themselves
    (a config's ``methods[1] (soft)``)."""

    def __init__(self, owner: str, detail: str, sep: str = ": "):
        super().__init__(f"{owner}{sep}{detail}")
        self.detail = detail


def setting(default: Any, help: str, *, choices: Sequence | None = None, minimum: float | None = None,
            positive: bool = False, search: dict | None = None, saved: bool = True) -> Any:
    """A dataclass field with what a user needs to know about it.

    ``choices``: the allowed values; ``minimum``: the least allowed number (``positive``: > 0);
    ``search``: the range a sweep samples by default (see :mod:`prompting.config.searchspace`); ``saved``:
    whether a saved prompt records it (a training setting such as P-tuning's ``input_lr`` is not).
    """
    return field(default=default, metadata={"help": help, "choices": tuple(choices) if choices else None,
                                            "minimum": minimum, "positive": positive, "search": search,
                                            "saved": saved})


def _kinds(hint) -> tuple[tuple[type, ...], bool]:
    """The allowed types of a field's annotation (``int | None`` -> ((int,), True))."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = typing.get_args(hint)
        return tuple(a for a in args if a is not type(None)), type(None) in args
    return (hint,), False


def _type_ok(value, kinds: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # YAML's true is not a count, and 1 is not a flag
        return bool in kinds
    if isinstance(value, int) and (int in kinds or float in kinds):
        return True
    if isinstance(value, float) and float in kinds:
        return math.isfinite(value)
    return any(k not in (int, float, bool) and isinstance(value, k) for k in kinds)


def _expected(kinds: tuple[type, ...], nullable: bool, meta: Mapping) -> str:
    if meta.get("choices"):
        text = "one of " + ", ".join(str(c) for c in meta["choices"])
    elif kinds == (bool,):
        text = "true or false"
    else:
        noun = {int: "an integer", float: "a number", str: "a string", dict: "a mapping"}.get(kinds[0], kinds[0].__name__)
        if meta.get("minimum") is not None:
            noun += f" >= {meta['minimum']}"
        elif meta.get("positive"):
            noun += " > 0"
        text = noun
    return text + (" (or null)" if nullable else "")


@dataclass
class Settings:
    """Base of every typed settings class: one validation place, and errors that name what is valid."""

    #: how errors name the owner, e.g. "soft" (method) or "training"
    owner: ClassVar[str] = "settings"

    def __post_init__(self):
        self.validate()

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def field_info(cls) -> list[tuple[dataclasses.Field, tuple[type, ...], bool]]:
        hints = typing.get_type_hints(cls)
        return [(f, *_kinds(hints[f.name])) for f in dataclasses.fields(cls)]

    def validate(self) -> None:
        """Raise :class:`SettingsError` naming the first setting whose value is not allowed."""
        for f, kinds, nullable in self.field_info():
            value, meta = getattr(self, f.name), f.metadata
            if value is None and nullable:
                continue
            ok = _type_ok(value, kinds)
            if ok and meta.get("choices"):
                ok = value in meta["choices"]
            if ok and isinstance(value, (int, float)) and not isinstance(value, bool):
                ok = (meta.get("minimum") is None or value >= meta["minimum"]) and \
                     (not meta.get("positive") or value > 0)
            if not ok:
                verb = "use" if kinds == (bool,) else "give"
                raise SettingsError(self.owner, f"{f.name}={value!r} is not valid; {verb} "
                                                f"{_expected(kinds, nullable, meta)}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str | None = None):
        """Settings from a mapping; an unknown key is an error that lists the valid ones."""
        unknown = [k for k in values if k not in cls.keys()]
        if unknown:
            raise SettingsError(where or cls.owner, f"has no parameter {unknown[0]!r}; its parameters: "
                                                    f"{', '.join(cls.keys()) or 'none'}", sep=" ")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MethodConfig(Settings):
    """A method's own settings (its constructor parameters) and what suits it for training and sweeps.

    ``method`` is the name configs use; ``train_defaults`` are the training settings the method runs
    with unless a config says otherwise; ``train_space`` is what a sweep samples besides the fields'
    own ``search`` ranges: training settings and template slot lengths (``soft_length``,
    ``trigger_length``).
    """

    method: ClassVar[str] = "base"
    summary: ClassVar[str] = ""
    train_defaults: ClassVar[dict] = {}
    train_space: ClassVar[dict] = {}
    #: the method is demonstrations in front of each input (in-context learning), whatever its settings
    demonstrations_always: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.owner = f"method {cls.method!r}"

    @classmethod
    def search_space(cls) -> dict[str, dict]:
        """Every parameter a sweep samples by default, with its distribution."""
        own = {f.name: f.metadata["search"] for f in dataclasses.fields(cls) if f.metadata.get("search")}
        return {**cls.train_space, **own}

    def saved(self) -> dict:
        """What a saved prompt records to rebuild the method (training-only settings left out)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("saved", True)}

    @classmethod
    def from_saved(cls, values: Mapping[str, Any]):
        """Settings from a saved prompt's JSON; keys this version does not know are ignored."""
        return cls(**{k: v for k, v in values.items() if k in cls.keys()})


class TrainingError(RuntimeError):
    """Training cannot go on (the loss became NaN or infinite)."""


@dataclass
class TrainConfig(Settings):
    """How to train. ``max_steps`` wins over ``epochs`` when both are given."""

    owner: ClassVar[str] = "training"

    lr: float = setting(1e-5, "learning rate of the method's own parameters", positive=True)
    lm_lr: float | None = setting(None, "the LM's own rate when tune_lm (P-tuning trains both)", positive=True)
    tune_lm: bool = setting(False, "train the LM's weights too (PET fine-tuning)")
    epochs: float = setting(8, "passes over the training examples (when max_steps is not given)", positive=True)
    max_steps: int | None = setting(None, "optimiser steps; wins over epochs", minimum=1)
    batch_size: int = setting(8, "training examples per step", minimum=1)
    eval_batch_size: int = setting(32, "examples per forward pass when scoring", minimum=1)
    warmup_ratio: float = setting(0.0, "share of the steps with a rising learning rate (0 <= r < 1)", minimum=0)
    weight_decay: float = setting(0.0, "AdamW weight decay", minimum=0)
    max_grad_norm: float = setting(1.0, "gradient clipping norm (0: none)", minimum=0)
    eval_every: int | None = setting(None, "steps between dev evaluations (default: once per epoch)", minimum=1)
    patience: int | None = setting(None, "stop after this many dev evaluations without a better score",
                                   minimum=1)
    select_metric: str = setting("accuracy", "dev metric that selects the best state",
                                 choices=("accuracy", "macro_f1"))
    # the state before training is a candidate for the best-on-dev state; false: only trained states
    # (what PET fine-tuning wants: its untrained state is the zero-shot run, reported on its own)
    select_untrained: bool = setting(True, "the untrained state may be selected on dev")
    seed: int = setting(1, "training seed (data order, initialisation)")

    def validate(self) -> None:
        super().validate()
        if self.warmup_ratio >= 1:
            raise SettingsError(self.owner, f"warmup_ratio={self.warmup_ratio!r} is not valid; use 0 <= ratio < 1")


#: training settings a config's method entry may give (the harness sets seed and select_metric)
TRAIN_KEYS = tuple(k for k in TrainConfig.keys() if k not in ("seed", "select_metric"))


@dataclass
class Protocol:
    """The few-shot protocol: K per class, data seeds, training seeds, and how runs are selected."""

    k: int = 16
    data_seeds: Sequence[int] = DATA_SEEDS
    train_seeds: Sequence[int] = (1,)
    test_limit: int | None = None  # a fixed random subset of the test set (seed 0), for speed
    select_metric: str = "accuracy"
    eval_batch_size: int = 32


@dataclass
class MethodSpec:
    """One method as an experiment runs it.

    ``params`` go to the method's config class; ``train_config`` to :class:`TrainConfig`.
    ``template``/``verbalizer`` replace the experiment's prompts for this method.
    ``ensemble`` (``mean`` or ``wmean``) combines this method's runs over all patterns.
    ``calibration`` (``contextual``, ``domain``, or a list of them; ``none`` adds nothing) adds, beside
    each run, a record of its label scores calibrated (see :mod:`prompting.training.calibration`): another row
    of the same runs, no second training.
    ``tags`` are extra fields written into each of this method's records but not part of the run id
    (a sweep puts its trial there); a run already recorded keeps the tags it was recorded with.
    ``train_seeds`` replaces the experiment's training seeds for this method (fewer for a costly one).
    """

    name: str = "manual"
    train: bool = True
    label: str | None = None
    template: str | None = None
    verbalizer: dict | None = None
    params: dict = field(default_factory=dict)
    train_config: dict = field(default_factory=dict)
    ensemble: str | None = None
    tags: dict = field(default_factory=dict)
    train_seeds: Sequence[int] | None = None
    calibration: Sequence[str] | str = ()

    def __post_init__(self):
        if self.ensemble is not None and self.ensemble not in ENSEMBLES:
            raise ValueError(f"ensemble={self.ensemble!r} is not valid; choose one of {', '.join(ENSEMBLES)}")
        wanted = [self.calibration] if isinstance(self.calibration, str) else list(self.calibration or ())
        for how in wanted:
            if how not in CALIBRATIONS:
                raise ValueError(f"calibration={how!r} is not valid; choose one of {', '.join(CALIBRATIONS)} "
                                 "(or a list of them)")
        self.calibration = tuple(dict.fromkeys(how for how in wanted if how != "none"))
        if self.label is None:
            self.label = self.name if self.train or self.name != "manual" else "manual zero-shot"
            if self.name == "manual" and self.train:
                self.label = "PET"


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, dict):
        if "choices" in value:
            return "{" + ", ".join(str(c) for c in value["choices"]) + "}"
        scale = " log" if value.get("log") else ""
        step = f" step {value['step']}" if value.get("step") else ""
        return f"{value['low']:g}–{value['high']:g}{scale}{step}"
    if isinstance(value, str):  # a separator's newlines as \n, so that the table row stays one line
        return "`" + value.encode("unicode_escape").decode() + "`"
    return "`" + str(value).lower() + "`" if isinstance(value, bool) else f"`{value}`"


def _rows(cls: type[Settings], first: str, keys: Sequence[str] | None = None) -> list[str]:
    space = cls.search_space() if issubclass(cls, MethodConfig) else {}
    rows = []
    for f, kinds, nullable in cls.field_info():
        if keys is not None and f.name not in keys:
            continue
        allowed = _expected(kinds, nullable, f.metadata).replace(" (or null)", ", or null")
        rows.append(f"| {first} | `{f.name}` | {_cell(f.default)} | {allowed} | {_cell(space.get(f.name))} | "
                    f"{f.metadata['help']} |")
    return rows


def settings_table(config_classes: Sequence[type[MethodConfig]]) -> str:
    """Markdown tables of every method's settings (name, default, allowed values, sweep range, meaning,
    and the training settings the method runs with and sweeps), then of the training settings.
    ``prompting methods`` prints it; the README's tables are this text."""
    lines = ["| method | setting | default | allowed | sweep range | what it does |", "|---|---|---|---|---|---|"]
    for cls in config_classes:
        train = ", ".join(f"`{k}: {_cell(v).strip('`')}`" for k, v in cls.train_defaults.items()) or "–"
        swept = ", ".join(f"`{k}` {_cell(v)}" for k, v in cls.train_space.items()) or "–"
        lines.append(f"| `{cls.method}` | *training* | {train} | | {swept} | {cls.summary} |")
        lines += _rows(cls, f"`{cls.method}`")
    lines += ["", "Training settings (any trained method's entry; the method's own defaults above come first):", "",
              "| | setting | default | allowed | | what it does |", "|---|---|---|---|---|---|"]
    lines += _rows(TrainConfig, "", TRAIN_KEYS)
    return "\n".join(lines)
