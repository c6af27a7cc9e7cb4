"""Typed settings: every key a config may give, with its type, default, allowed values and sweep range.

One dataclass per method (:mod:`prompting.methods.configs`) and one for training (:class:`TrainConfig`)
are the single source from which the YAML schema, the errors that list valid keys and values, the
sweep search space, a saved prompt's JSON and the settings table in docs/methods.md are derived:

    @dataclass
    class SoftConfig(MethodConfig):
        method: ClassVar[str] = "soft"
        prompt_tokens: int | None = setting(None, "vectors in front of a template without {soft} slots",
                                            minimum=1, search={"low": 2, "high": 32, "log": True})

Each class is validated by a pydantic model made from its fields (:func:`settings_model`); a config's
method entry (:mod:`prompting.config.schema`) is made of the same fields (:func:`setting_fields`).
This module imports neither torch nor transformers, so a config is checked in an instant.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, ClassVar, Literal, Mapping, Optional, Sequence, Union

from pydantic import Field, WithJsonSchema, create_model

from prompting.core.data import DATA_SEEDS, METRICS
from prompting.core.schema import Section, Says, Where, check

__all__ = ["SettingsError", "setting", "Settings", "MethodConfig", "TrainConfig", "TrainingError", "TRAIN_KEYS", "Protocol",
           "MethodSpec", "ENSEMBLES", "CALIBRATIONS", "DATA_SEEDS", "settings_table", "settings_model", "setting_fields",
           "default_of", "KV_CACHE_MB", "CacheMegabytes", "cache_megabytes", "DistillSettings", "distill_problem",
           "ANSWERS"]

ENSEMBLES = ("mean", "wmean")
CALIBRATIONS = ("none", "contextual", "domain")
#: how a classification run's label is read: the label words' scores, or the label word the model writes
ANSWERS = ("score", "generate")

#: the default memory cap of a model's cache of frozen spans' keys and values (prompting.lm.spans.SpanCache)
KV_CACHE_MB = 4096
#: megabytes of that cache: the one rule for a config's ``kv_cache_mb`` and the LM's own argument
CacheMegabytes = Annotated[float, Field(ge=0, allow_inf_nan=False),
                           Says("{path}: {value!r} is not valid; give megabytes >= 0 (0: no cache of frozen text)")]


def cache_megabytes(value) -> float:
    """``value`` if it is a valid ``kv_cache_mb`` (else ValueError, worded as a config's error)."""
    check(CacheMegabytes, value, Where("kv_cache_mb", "kv_cache_mb"), ValueError)
    return value


class SettingsError(ValueError):
    """A setting with an unknown name, a value of the wrong type, or a value outside what is allowed.

    ``detail`` is the message without its owner, for callers that name the place themselves
    (a config's ``methods[1] (soft)``)."""

    def __init__(self, owner: str, detail: str, sep: str = ": "):
        super().__init__(f"{owner}{sep}{detail}")
        self.owner, self.detail, self.sep = owner, detail, sep

    @classmethod
    def worded(cls, owner: str, message: str) -> SettingsError:
        """The error of a whole ``message`` that starts with ``owner``."""
        for sep in (": ", " "):
            if message.startswith(owner + sep):
                return cls(owner, message[len(owner) + len(sep):], sep)
        return cls(owner, message)


def setting(default: Any, help: str, *, choices: Sequence | None = None, minimum: float | None = None,
            positive: bool = False, below: float | None = None, maximum: float | None = None,
            search: dict | None = None, saved: bool = True) -> Any:
    """A dataclass field with what a user needs to know about it.

    ``choices``: the allowed values; ``minimum``: the least allowed number (``positive``: > 0;
    ``below``: what it must stay under; ``maximum``: the greatest allowed number); ``search``: the range a sweep samples by default (see
    :mod:`prompting.config.searchspace`); ``saved``: whether a saved prompt records it (a training
    setting such as P-tuning's ``input_lr`` is not).
    """
    return field(default=default, metadata={"help": help, "choices": tuple(choices) if choices else None,
                                            "minimum": minimum, "positive": positive, "below": below,
                                            "maximum": maximum, "search": search, "saved": saved})


def default_of(cls, name: str) -> Any:
    """The default of dataclass ``cls``'s field ``name`` (where it is written)."""
    found = cls.__dataclass_fields__[name]
    return found.default_factory() if found.default is dataclasses.MISSING else found.default


def _kinds(hint) -> tuple[tuple[type, ...], bool]:
    """The allowed types of a field's annotation (``int | None`` -> ((int,), True))."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = typing.get_args(hint)
        return tuple(a for a in args if a is not type(None)), type(None) in args
    return (hint,), False


def _is_settings(kind) -> bool:
    return isinstance(kind, type) and issubclass(kind, Settings)


def _expected(kinds: tuple[type, ...], nullable: bool, meta: Mapping) -> str:
    if meta.get("choices"):
        text = "one of " + ", ".join(str(c) for c in meta["choices"])
    elif kinds == (bool,):
        text = "true or false"
    else:
        nouns = {int: "an integer", float: "a number", str: "a string", dict: "a mapping"}
        noun = "a mapping" if _is_settings(kinds[0]) else nouns.get(kinds[0], getattr(kinds[0], "__name__", "?"))
        if meta.get("minimum") is not None:
            noun += f" >= {meta['minimum']}"
        elif meta.get("positive"):
            noun += " > 0"
        if meta.get("maximum") is not None:
            noun += f"{' and' if meta.get('minimum') is not None or meta.get('positive') else ''} <= {meta['maximum']}"
        text = noun
    return text + (" (or null)" if nullable else "")


def _one_type(kind, meta: Mapping):
    """The pydantic type of one allowed kind, with the field's bounds."""
    bounds = {"ge": meta.get("minimum"), "gt": 0 if meta.get("positive") else None, "lt": meta.get("below"),
              "le": meta.get("maximum")}
    bounds = {k: v for k, v in bounds.items() if v is not None}
    if kind is float:
        return Annotated[float, Field(allow_inf_nan=False, **bounds)]
    if kind is int:
        return Annotated[int, Field(**bounds)] if bounds else int
    if kind in (str, bool, dict, list):
        return kind
    if _is_settings(kind):
        return settings_model(kind)
    return Annotated[kind, WithJsonSchema({})]  # a class of a method's own: checked with isinstance


def _field_type(kinds: tuple[type, ...], nullable: bool, meta: Mapping):
    if meta.get("choices"):
        base = Literal[tuple(meta["choices"])]
    else:
        members = tuple(_one_type(k, meta) for k in kinds)
        base = members[0] if len(members) == 1 else Union[members]
    return Optional[base] if nullable else base


def setting_fields(cls: type[Settings], keys: Sequence[str] | None = None,
                   defaults: Mapping | None = None) -> dict[str, tuple]:
    """The pydantic fields of ``cls``'s settings (those in ``keys``; ``defaults`` replace the class's):
    type and bounds, default, help, and errors worded by :meth:`Settings.problem`."""
    out = {}
    for f, kinds, nullable in cls.field_info():
        if keys is not None and f.name not in keys:
            continue
        nested = any(_is_settings(k) for k in kinds)
        says = Says(functools.partial(_setting_message, cls, f.name), deep=not nested)
        default = (defaults or {}).get(f.name, default_of(cls, f.name))
        out[f.name] = (Annotated[_field_type(kinds, nullable, f.metadata), says],
                       Field(default, description=f.metadata.get("help")))
    return out


def _setting_message(cls, name: str, section: Where, here: Where, key, value, error) -> str:
    return f"{section.owner}: {cls.problem(name, value)}"


class SettingsSection(Section):
    """The pydantic model of a :class:`Settings` class: errors name its owner, as the class's own do."""

    settings: ClassVar[type]

    @classmethod
    def unknown_key(cls, at: Where, key, data) -> str:
        return f"{at.owner} {cls.settings.unknown_detail(key)}"

    @classmethod
    def not_a_mapping(cls, at: Where, value) -> str:
        return f"{at.owner}: {value!r} is not valid; give a mapping with keys {', '.join(cls.keys())}"

    @classmethod
    def child_of(cls, parent: Where, key: str) -> Where:
        return Where(parent.key(key).path, f"{parent.owner}: {key}")


_MODELS: dict[type, type[SettingsSection]] = {}


def settings_model(cls: type[Settings]) -> type[SettingsSection]:
    """The pydantic model of a settings class (made once per class)."""
    if cls not in _MODELS:
        model = create_model(cls.__name__, __base__=SettingsSection, __doc__=(cls.__doc__ or "").strip() or None,
                             **setting_fields(cls))
        model.settings = cls
        _MODELS[cls] = model
    return _MODELS[cls]


def _plain(value):
    return asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value


@dataclass
class Settings:
    """Base of every typed settings class: one validation place, and errors that name what is valid."""

    #: how errors name the owner, e.g. "soft" (method) or "training"
    owner: ClassVar[str] = "settings"

    def __post_init__(self):
        self.validate()
        self._nest()

    def _nest(self) -> None:
        typed = {}  # nested settings given as a mapping (kept as written): their class, made once here
        for f, kinds, _ in self.field_info():
            kind, value = next((k for k in kinds if _is_settings(k)), None), getattr(self, f.name)
            if kind is not None and value is not None:
                typed[f.name] = kind.checked(value) if isinstance(value, Mapping) else value
        object.__setattr__(self, "_typed", typed)

    def nested(self, name: str):
        """The nested settings of field ``name`` as their class (None when not given)."""
        return self._typed.get(name)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def field_info(cls) -> list[tuple[dataclasses.Field, tuple[type, ...], bool]]:
        hints = typing.get_type_hints(cls)
        return [(f, *_kinds(hints[f.name])) for f in dataclasses.fields(cls)]

    @classmethod
    def problem(cls, name: str, value) -> str:
        """What is wrong with ``value`` for setting ``name``, and what is valid."""
        f, kinds, nullable = next(info for info in cls.field_info() if info[0].name == name)
        verb = "use" if kinds == (bool,) else "give"
        return f"{name}={value!r} is not valid; {verb} {_expected(kinds, nullable, f.metadata)}"

    @classmethod
    def unknown_detail(cls, key) -> str:
        return f"has no parameter {key!r}; its parameters: {', '.join(cls.keys()) or 'none'}"

    @classmethod
    def checked(cls, values: Mapping[str, Any]):
        """Settings from values already validated by :func:`settings_model` (not validated again)."""
        made = cls.__new__(cls)
        for f in dataclasses.fields(cls):
            object.__setattr__(made, f.name, values[f.name] if f.name in values else default_of(cls, f.name))
        made._nest()
        return made

    def validate(self) -> None:
        """Raise :class:`SettingsError` naming the first setting whose value is not allowed."""
        values = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        check(settings_model(type(self)), values, Where("", self.owner),
              lambda message: SettingsError.worded(self.owner, message))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str | None = None):
        """Settings from a mapping; an unknown key is an error that lists the valid ones."""
        unknown = [k for k in values if k not in cls.keys()]
        if unknown:
            raise SettingsError(where or cls.owner, cls.unknown_detail(unknown[0]), sep=" ")
        try:
            return cls(**values)
        except SettingsError as err:
            if where is None or where == err.owner:
                raise
            raise SettingsError(where, err.detail, err.sep) from None

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
    #: the learned slots of a template (``soft``, ``trigger``) the method fills; a template with others is refused
    slots: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.owner = f"method {cls.method!r}"

    def demonstration_settings(self):
        """The demonstrations these settings ask for (``k``, ``selection``, ``separator``), or None: a
        method that is demonstrations (in-context learning) is asked by its own settings."""
        return self if self.demonstrations_always else None

    @classmethod
    def search_space(cls) -> dict[str, dict]:
        """Every parameter a sweep samples by default, with its distribution."""
        own = {f.name: f.metadata["search"] for f in dataclasses.fields(cls) if f.metadata.get("search")}
        return {**cls.train_space, **own}

    def saved(self) -> dict:
        """What a saved prompt records to rebuild the method (training-only settings left out)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.metadata.get("saved", True)}

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
    warmup_ratio: float = setting(0.0, "share of the steps with a rising learning rate (0 <= r < 1)", minimum=0,
                                  below=1)
    weight_decay: float = setting(0.0, "AdamW weight decay", minimum=0)
    max_grad_norm: float = setting(1.0, "gradient clipping norm (0: none)", minimum=0)
    eval_every: int | None = setting(None, "steps between dev evaluations (default: once per epoch)", minimum=1)
    patience: int | None = setting(None, "stop after this many dev evaluations without a better score",
                                   minimum=1)
    select_metric: str = setting("accuracy", "dev metric that selects the best state",
                                 choices=METRICS)
    # the state before training is a candidate for the best-on-dev state; false: only trained states
    # (what PET fine-tuning wants: its untrained state is the zero-shot run, reported on its own)
    select_untrained: bool = setting(True, "the untrained state may be selected on dev")
    seed: int = setting(1, "training seed (data order, initialisation)")

    @classmethod
    def problem(cls, name: str, value) -> str:
        meta = cls.__dataclass_fields__[name].metadata
        if meta.get("below") is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            return f"{name}={value!r} is not valid; use {meta['minimum']:g} <= ratio < {meta['below']:g}"
        return super().problem(name, value)


#: training settings a config's method entry may give (the harness sets seed and select_metric)
TRAIN_KEYS = tuple(k for k in TrainConfig.keys() if k not in ("seed", "select_metric"))


@dataclass
class Protocol:
    """The few-shot protocol: K per class, data seeds, training seeds, and how runs are selected."""

    k: int = 16
    data_seeds: Sequence[int] = DATA_SEEDS
    train_seeds: Sequence[int] = (1,)
    test_limit: int | None = None  # a fixed random subset of the test set (seed 0), for speed
    select_metric: str = default_of(TrainConfig, "select_metric")
    eval_batch_size: int = default_of(TrainConfig, "eval_batch_size")


@dataclass
class DistillSettings(Settings):
    """A method entry's ``distill:`` (``true``, or these settings): PET's final model, trained on the soft labels
    that the entry's pattern ensemble gives the unlabelled examples (see :mod:`prompting.tasks.pet`)."""

    owner: ClassVar[str] = "distill"

    temperature: float = setting(2.0, "the soft labels' temperature: the ensemble's and the final model's label "
                                      "scores are divided by it (PET: 2)", positive=True)
    pattern: int = setting(0, "which of the entry's prompts the final model uses (0: the first)", minimum=0)
    max_steps: int | None = setting(None, "the final model's optimiser steps (when not given: one pass over the "
                                          "unlabelled examples at the entry's batch size, at least the entry's "
                                          "max_steps)", minimum=1)
    save: bool = setting(True, "save the final model (prompt and tuned LM) in the output folder's models/RUN_ID")


def distill_problem(name: str, train: bool, ensemble: str | None, distill) -> str | None:
    """What is wrong with a method entry's ``distill`` (as written: None, a boolean or settings), or None.
    ``ipet`` always ends with its distillation; ``manual`` distils only when trained and ensembled."""
    if name == "ipet":
        if not train:
            return ("train=False is not valid for ipet: it trains every generation's models; leave train out "
                    "(or give train: true)")
        if distill is False:
            return ("distill=False is not valid for ipet: it ends with its distillation; leave distill out, or "
                    f"give true or a mapping with keys {', '.join(DistillSettings.keys())}")
        return None
    if distill is None or distill is False:
        return None
    said = f"distill={distill!r}" if isinstance(distill, bool) else "distill"
    if name != "manual":
        return (f"{said} is not valid with method {name!r}; distillation goes with name: manual and train: true "
                "(PET), or name: ipet")
    if not train:
        return (f"{said} is not valid with train=False; it learns from trained pattern models: give train: true, "
                "or leave distill out")
    if ensemble is None:
        return (f"{said} needs ensemble (none given): the final model learns the pattern ensemble's soft labels; "
                f"give ensemble: {' or '.join(ENSEMBLES)}")
    return None


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
    ``distill`` (``True`` or :class:`DistillSettings`' keys) trains PET's final model on the ensemble's soft labels
    of the task's unlabelled examples; ``ipet`` always does (see :mod:`prompting.tasks.pet`).
    ``answer`` (``score`` or ``generate``): a classification run's label is the best-scored label word's, or the
    label word the model writes after the prompt (see :mod:`prompting.tasks.answers`).
    ``chat``: the prompt, up to ``{mask}``, is a user message in the tokenizer's chat template, and the label word
    (or the written answer) the assistant's reply (see :mod:`prompting.lm.chat`).
    The default label of an entry with ``answer: generate`` or ``chat`` says so: ``manual zero-shot (chat,
    answer: generate)``.
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
    distill: DistillSettings | Mapping | bool | None = None
    answer: str = ANSWERS[0]
    chat: bool = False

    def __post_init__(self):
        self._distill()
        if self.answer not in ANSWERS:
            raise ValueError(f"answer={self.answer!r} is not valid; choose one of {', '.join(ANSWERS)}")
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
            if self.name == "ipet":
                self.label = "iPET"
            how = ["chat"] * self.chat + [f"answer: {self.answer}"] * (self.answer != ANSWERS[0])
            self.label += f" ({', '.join(how)})" if how else ""

    def _distill(self) -> None:
        """``distill`` as settings (or None); ipet distils always and labels with the mean ensemble unless told."""
        problem = distill_problem(self.name, self.train, self.ensemble, self.distill)
        if problem:
            raise ValueError(problem)
        if self.name == "ipet":
            self.ensemble = self.ensemble or ENSEMBLES[0]
            self.distill = True if self.distill is None else self.distill
        if self.distill is True:
            self.distill = DistillSettings()
        elif isinstance(self.distill, Mapping):
            self.distill = DistillSettings.from_mapping(self.distill)
        elif self.distill is False:
            self.distill = None


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
    ``prompting methods`` prints it; docs/methods.md's table is this text."""
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
