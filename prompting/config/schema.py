"""The schema of an experiment config: one typed section per part, each default written once.

Every key a config may give is a field of a section here (pydantic models, see
:mod:`prompting.core.schema`): the top level, the task (:mod:`prompting.tasks.schema`), ``fewshot``,
``seeds``, ``templates``, each method entry, ``sweep``, and LAMA's ``limits`` and ``protocols``.
A method entry is made of its method's settings class, :class:`~prompting.core.settings.TrainConfig`'s
fields and the entry's own keys; the entries form a union on ``name``, made from the registry of
methods, so that a method registered later is known too. :func:`json_schema` is what ``prompting
schema`` writes for editors. Imports no torch.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BeforeValidator, Discriminator, Field, Tag, create_model, model_validator

from prompting.core.schema import Problem, Says, Section, Where, check, choices_text
from prompting.core.settings import (ANSWERS, CALIBRATIONS, ENSEMBLES, KV_CACHE_MB, TRAIN_KEYS, CacheMegabytes, DistillSettings,
                                     MethodConfig, MethodSpec, Protocol, SettingsError, TrainConfig, default_of,
                                     distill_problem, setting_fields, settings_model)
from prompting.lm.aliases import DEFAULT_MODEL
from prompting.methods import METHODS
from prompting.tasks.schema import LAMA_PROTOCOLS, LamaTask, TaskSection

__all__ = ["ConfigSection", "Fewshot", "Seeds", "PromptFile", "InlinePrompts", "MethodEntry", "Majority", "Limits",
           "SweepConfig", "entry_model", "config_model", "check_config", "json_schema", "DTYPES", "DEVICE_MAPS",
           "OBJECTIVES", "PRUNERS", "METRICS", "LAMA_KEYS", "TEMPLATE_KEYS"]

DTYPES = ("float32", "bfloat16", "float16")  # what the LM's weights are loaded in and compute in
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"  # what torch.device takes, and auto
DEVICE_MAPS = ("auto",)  # accelerate spreads a model too large for one device over every visible one
OBJECTIVES = ("mean", "stable")  # a sweep's: mean dev over data seeds, or mean - stability_lambda * std
PRUNERS = ("median", "none")
METRICS = TrainConfig.__dataclass_fields__["select_metric"].metadata["choices"]
LAMA_KEYS = ("name", "model", "device", "dtype", "device_map", "max_length", "kv_cache_mb", "task", "limits",
             "protocols", "methods", "tensorboard", "mlflow")
TEMPLATE_KEYS = ("file", "patterns", "verbalizers", "task")

_CHOOSE = "{path}: {value!r} is not valid; choose one of "
_INT_LIST = "{path}: {value!r} is not valid; give a non-empty list of integers"
IntList = Annotated[Union[int, Annotated[list[int], Field(min_length=1)]], Says(_INT_LIST)]
Word = Union[str, int, float, bool, None]
#: label -> words (YAML reads a label 0 or true as a number or boolean; the words are checked when read)
Verbalizer = Annotated[dict[Union[str, int, bool], Union[Word, list[Word]]], Field(min_length=1)]
_VERBALIZER = "{path}: a verbalizer maps labels to words, e.g. {0: [terrible], 1: [great]}; got {value!r}"


class Fewshot(Section):
    """How many examples: K per class, the data seeds, a fixed test subset, the scoring batch."""

    k: Annotated[int, Field(ge=1), Says("{path}: {value!r} is not valid; give K examples per class, an integer >= 1")] \
        = default_of(Protocol, "k")
    """K training examples per class (and K per class as dev)"""
    data_seeds: IntList = list(default_of(Protocol, "data_seeds"))
    """seeds of the K-shot samples: one run per data seed"""
    test_limit: Annotated[Optional[int], Field(ge=1), Says("{path}: {value!r} is not valid; give an integer >= 1 "
                                                            "or null")] = default_of(Protocol, "test_limit")
    """score a fixed random subset of this many test examples (null: all)"""
    eval_batch_size: Annotated[int, Field(ge=1), Says("{path}: {value!r} is not valid; give an integer >= 1")] \
        = default_of(Protocol, "eval_batch_size")
    """examples per forward pass when scoring"""


class Seeds(Section):
    """Training seeds, and how the runs of a method are selected."""

    train_seeds: IntList = list(default_of(Protocol, "train_seeds"))
    """training seeds of every trained method (one run per seed)"""
    select_by: Annotated[Literal["dev"], Says("{path}: {value!r} is not valid; only 'dev' is supported")] = "dev"
    """runs are selected on dev"""
    metric: Annotated[Literal[METRICS], Says("{path}: {value!r} is not valid; choose " + choices_text(METRICS, " or "))] \
        = default_of(Protocol, "select_metric")
    """the dev metric that selects runs and training states"""


class PromptFile(Section):
    """A prompt file (a path, or a built-in task's name) and which of its patterns and verbalizers to cross."""

    file: Annotated[str, Says("{path}: {value!r} is not valid; give a prompt file's path or a built-in task name")]
    """a prompt file's path (relative to the config), or a built-in task's name"""
    patterns: Optional[IntList] = None
    """indices of the file's patterns to use (all when not given)"""
    verbalizers: Optional[IntList] = None
    """indices of the file's verbalizers to use (all when not given)"""
    task: Optional[str] = None
    """the task the prompts are for (not checked)"""


class InlinePrompts(Section):
    """Patterns and verbalizers written in the config."""

    patterns: Annotated[Optional[list[str]], Field(min_length=1),
                        Says("{place}: 'patterns' must be a non-empty list of template strings; got {value!r}")] = None
    """templates: text with {text_a} (or the task's fields), one {mask}, and {soft:N} / {trigger:N} slots"""
    verbalizers: Annotated[Optional[list[Verbalizer]], Field(min_length=1),
                           Says("{place}: 'verbalizers' must be a non-empty list of label -> words mappings")] = None
    """label -> word (or words): each verbalizer is crossed with every pattern"""
    task: Optional[str] = None
    """the task the prompts are for (not checked)"""

    @classmethod
    def unknown_key(cls, at: Where, key, data) -> str:
        return f"{at.place}: unknown key {key!r}; allowed keys: {', '.join(TEMPLATE_KEYS)}"


def _prompts_kind(value) -> str | None:
    if isinstance(value, str):
        return "file name"
    return ("file" if "file" in value else "inline") if isinstance(value, dict) else None


Templates = Annotated[
    Union[Annotated[str, Tag("file name")], Annotated[PromptFile, Tag("file")], Annotated[InlinePrompts, Tag("inline")]],
    Discriminator(_prompts_kind),
    Says(f"{{path}} must be a prompt file or a mapping with keys {', '.join(TEMPLATE_KEYS)}; got {{value!r}}", False)]


def _calibration_message(section: Where, here: Where, key, value, error) -> str:
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else None
    if items is not None and all(isinstance(c, str) for c in items):
        bad = next(c for c in items if c not in CALIBRATIONS)
        return (f"{section.place}: calibration={bad!r} is not valid; choose one of {', '.join(CALIBRATIONS)} "
                "(or a list of them)")
    return f"{section.place}: calibration={value!r} is not valid; give one of {', '.join(CALIBRATIONS)} or a list of them"


def _distill_message(section: Where, here: Where, key, value, error) -> str:
    if isinstance(value, dict):
        try:
            DistillSettings.from_mapping(value)
        except SettingsError as err:
            return f"{section.place}: distill{err.sep}{err.detail}"
    return (f"{section.place}: distill={value!r} is not valid; give true, or a mapping with keys "
            f"{', '.join(DistillSettings.keys())}")


class Entry(Section):
    """An entry of ``methods:``; errors name it by its place and method (``methods[1] (soft)``)."""

    @classmethod
    def unknown_key(cls, at: Where, key, data) -> str:
        return f"{at.owner}: unknown key {key!r}; allowed keys: {', '.join(cls.keys())}"


class MethodEntry(Entry):
    """A method as an experiment runs it: its own settings, its training settings and the entry's keys."""

    name: str
    train: Annotated[bool, Says("{place}: train={value!r} is not valid; use true or false")] \
        = default_of(MethodSpec, "train")
    """false: the prompt as it starts (manual: zero-shot); true: trained on the K-shot training set"""
    label: Annotated[Optional[str], Says("{place}: label={value!r} is not valid; give a string")] = None
    """the method's name in results and reports (default: its name, or PET / manual zero-shot)"""
    template: Annotated[Optional[str], Says("{place}: template={value!r} is not valid; give a template")] = None
    """this method's own template, instead of the experiment's patterns"""
    verbalizer: Annotated[Optional[Verbalizer], Says(_VERBALIZER)] = None
    """this method's own verbalizer (label -> words), instead of the experiment's"""
    ensemble: Annotated[Optional[Literal[ENSEMBLES]],
                        Says("{place}: ensemble={value!r} is not valid; choose one of " + ", ".join(ENSEMBLES))] = None
    """combine this method's runs over all patterns: mean, or wmean (weighted by dev score)"""
    train_seeds: Optional[IntList] = None
    """this method's training seeds, instead of seeds.train_seeds (fewer for a costly method)"""
    calibration: Annotated[Optional[Union[Literal[CALIBRATIONS], list[Literal[CALIBRATIONS]]]],
                           Says(_calibration_message)] = None
    """also record each run's label scores calibrated: contextual, domain, or a list of them (none: nothing)"""
    distill: Annotated[Optional[Union[bool, settings_model(DistillSettings)]], Says(_distill_message)] = None
    """PET's final model: trained on the soft labels the ensemble gives the task's unlabelled examples (true, or {temperature, pattern, max_steps, save})"""
    answer: Annotated[Literal[ANSWERS], Says("{place}: answer={value!r} is not valid; choose one of "
                                             + ", ".join(ANSWERS))] = default_of(MethodSpec, "answer")
    """classification: the label is the best-scored label word's (score), or the first label word in a short answer the model writes (generate; a causal or encoder-decoder LM)"""
    chat: Annotated[bool, Says("{place}: chat={value!r} is not valid; use true or false")] \
        = default_of(MethodSpec, "chat")
    """the prompt, up to {mask}, as a user message in the tokenizer's chat template; the answer is the assistant's reply (a causal LM with a chat template)"""

    @model_validator(mode="after")
    def _trained_seeds(self):
        if self.train_seeds is not None and not self.train:
            raise Problem(f"train_seeds={self.train_seeds!r} is given but train is false; an untrained prompt has "
                          "no training seed")
        problem = distill_problem(self.name, self.train, self.ensemble, self.distill)
        if problem:
            raise Problem(problem)
        return self

    def spec(self, raw: dict, verbalizer: dict | None) -> MethodSpec:
        """The entry as a :class:`MethodSpec`: settings as the config wrote them (they name its runs)."""
        own = METHODS.config(self.name).keys()
        seeds = [self.train_seeds] if isinstance(self.train_seeds, int) else self.train_seeds
        return MethodSpec(name=self.name, train=self.train, label=self.label, template=self.template,
                          verbalizer=verbalizer, params={k: raw[k] for k in own if k in raw},
                          train_config={k: raw[k] for k in TRAIN_KEYS if k in raw}, ensemble=self.ensemble,
                          train_seeds=seeds, calibration=self.calibration or (), distill=raw.get("distill"),
                          answer=self.answer, chat=self.chat)


class Majority(Entry):
    """LAMA's baseline: each candidate object ranked by how often it is a training fact's object."""

    name: Literal["majority"]
    label: Annotated[str, Says("{place}: label={value!r} is not valid; give a string")] = "majority object"
    """the baseline's name in results and reports"""


_ENTRIES: dict[type, type[MethodEntry]] = {}


def entry_model(config: type[MethodConfig]) -> type[MethodEntry]:
    """The entry of one method (made once per config class): training defaults are the method's own."""
    if config not in _ENTRIES:
        _ENTRIES[config] = create_model(
            f"{config.method.title()}Entry", __base__=MethodEntry, __doc__=config.summary or None,
            name=(Literal[config.method], ...), **setting_fields(TrainConfig, TRAIN_KEYS, config.train_defaults),
            **setting_fields(config))
    return _ENTRIES[config]


def _entry_message(section: Where, here: Where, key, value, error) -> str:
    known = ", ".join(sorted(METHODS))
    if error["type"] == "union_tag_invalid":
        return f"{here.path}: method {value.get('name')!r} is not known; known methods: {known}"
    return f"{here.path} must be a mapping with a 'name' (one of {known}); got {value!r}"


_FACTS = Annotated[Optional[int], Field(ge=1),
                   Says("{path}={value!r} is not valid; give a count >= 1 or null (all facts)")]


class Limits(Section):
    """Facts per split of each LAMA relation: a seeded sample (null: all)."""

    train: _FACTS = None
    """training facts of a learned prompt"""
    dev: _FACTS = None
    """dev facts that select a learned prompt's state"""
    test: _FACTS = None
    """test facts ranked over the relation's candidates"""
    vocab_test: _FACTS = None
    """test facts (with a one-token object) ranked over the whole vocabulary"""


def _protocols_message(section: Where, here: Where, key, value, error) -> str:
    bad = next((p for p in value if p not in LAMA_PROTOCOLS), value) if isinstance(value, list) else value
    return f"{here.path}: {bad!r} is not known; choose from {', '.join(LAMA_PROTOCOLS)}"


class SweepConfig(Section):
    """A config's ``sweep:`` section (see :mod:`prompting.sweeps.sweep`); the command line may override it."""

    method: Annotated[Optional[str], Says("{path}: {value!r} is not valid; give a method's label or name")] = None
    """the label or name of the method to sweep (needed when the config has several)"""
    params: Annotated[dict[str, Any], BeforeValidator(lambda v: {} if v is None else v),
                      Says("{path}: {value!r} is not valid; give a mapping of parameter -> distribution, e.g. "
                            "{lr: {low: 1.0e-4, high: 1.0e-2, log: true}, encoder: [lstm, mlp]}")] \
        = Field(default_factory=dict)
    """distributions that replace or extend the method's search space: {low, high, log, step}, {choices: [...]} or a list of choices (checked with the space: prompting.config.searchspace)"""
    n_trials: Annotated[Optional[int], Field(ge=0), Says("{path}: {value!r} is not valid; give an integer >= 0")] = None
    """finished trials the study should have (the command line's --n-trials wins)"""
    objective: Annotated[Literal[OBJECTIVES], Says(_CHOOSE + ", ".join(OBJECTIVES))] = OBJECTIVES[0]
    """mean: mean dev over data seeds; stable: mean - stability_lambda * std"""
    stability_lambda: Annotated[float, Field(ge=0, allow_inf_nan=False),
                                Says("{path}: {value!r} is not valid; give a number >= 0")] = 1.0
    """the weight of the std in the stable objective"""
    pruner: Annotated[Literal[PRUNERS], Says(_CHOOSE + ", ".join(PRUNERS))] = PRUNERS[0]
    """stop a trial whose data seeds score below the median so far, or none"""
    startup_trials: Annotated[int, Field(ge=0), Says("{path}: {value!r} is not valid; give an integer >= 0")] = 5
    """trials sampled at random (and never pruned) before TPE and pruning start"""
    seed: Annotated[Optional[int], Says("{path}: {value!r} is not valid; give an integer")] = None
    """the sampler's seed (plus the study's trial count when a worker joins); leave it unset for workers
    started at the same moment, which would otherwise propose the same trials"""


class ConfigSection(Section):
    """An experiment config (one YAML document); ``methods`` is typed by :func:`config_model`."""

    name: Annotated[Optional[str], Says("{path}: {value!r} is not valid; give a string")] = None
    """the experiment's name in results (default: experiment, or lama)"""
    model: Annotated[str, Says("{path}: {value!r} is not valid; give an alias, hub id or local path")] = DEFAULT_MODEL
    """an alias (prompting models), a Hugging Face hub id in the local cache, or a local folder"""
    device: Annotated[str, Field(pattern=DEVICE_PATTERN), Says("{path}: {value!r} is not valid; use auto, cpu, mps, "
                                                                "cuda or cuda:N")] \
        = "auto"
    """auto, cpu, cuda or cuda:N"""
    dtype: Annotated[Literal[DTYPES], Says(_CHOOSE + ", ".join(DTYPES))] = DTYPES[0]
    """what the LM computes in; learned prompt parameters and their optimizer state stay float32"""
    device_map: Annotated[Optional[Literal[DEVICE_MAPS]],
                          Says("{path}: {value!r} is not valid; use auto (or leave it out for one device)")] = None
    """auto: accelerate places a model too large for one device over every visible one"""
    max_length: Annotated[Optional[int], Field(ge=1), Says("{path}: {value!r} is not valid; give an integer >= 1 "
                                                            "or null")] = None
    """tokens of an input at most (the model's own limit when lower)"""
    kv_cache_mb: CacheMegabytes = KV_CACHE_MB
    """megabytes of frozen text's keys and values kept per model (0: no cache)"""
    task: TaskSection
    """a built-in task's name, its section ({name, data_dir}), your own files' section, or lama's"""
    fewshot: Fewshot = Field(default_factory=Fewshot)
    templates: Optional[Templates] = None
    """a prompt file (path or built-in task name), {file, patterns, verbalizers}, or {patterns, verbalizers}
    (default: the task's built-in prompt file)"""
    seeds: Seeds = Field(default_factory=Seeds)
    methods: list[Any]
    sweep: Optional[SweepConfig] = None
    """for prompting sweep (prompting run ignores it)"""
    tensorboard: Annotated[Optional[str], Field(min_length=1), Says("{path}: {value!r} is not valid; give a folder")] \
        = None
    """live curves: each run's training loss, learning rate, dev metric and final metrics for TensorBoard, in a folder per run id under this one (relative to where prompting runs; needs the tensorboard package)"""
    mlflow: Annotated[Optional[Union[Literal[True], Annotated[str, Field(min_length=1)]]],
                      Says("{path}: {value!r} is not valid; give a tracking URI (e.g. sqlite:///mlflow.db or "
                           "http://localhost:5000), or true for MLflow's default store")] = None
    """live curves in MLflow: a tracking URI, or true for MLflow's default (a local store); one MLflow run per run (needs mlflow)"""
    limits: Optional[Limits] = None
    """lama only: facts per split of each relation"""
    protocols: Annotated[list[Literal[LAMA_PROTOCOLS]], Says(_protocols_message)] = list(LAMA_PROTOCOLS)
    """lama only: rank each fact's object among the relation's candidates, or over the whole vocabulary"""

    @model_validator(mode="after")
    def _fits_its_task(self):
        given = [k for k in self.keys() if k in self.model_fields_set]
        if isinstance(self.task, LamaTask):
            extra = [k for k in given if k not in LAMA_KEYS]
            if extra:
                raise Problem(f"{extra[0]!r} is not used with the lama task; a lama config takes "
                              f"{', '.join(LAMA_KEYS)}")
            return self
        for key in ("limits", "protocols"):
            if key in given:
                raise Problem(f"{key!r} goes with the lama task only (task: {{name: lama, data_dir: ..., "
                              "relations: [...]}})")
        for i, entry in enumerate(self.methods):
            if isinstance(entry, Majority):
                raise Problem(f"methods[{i}]: method 'majority' is the lama task's baseline; known methods: "
                              f"{', '.join(sorted(METHODS))}", at=None)
        if self.device_map is not None and self.device != "auto":
            raise Problem(f"device_map: auto places the model over every visible device itself; drop device: "
                          f"{self.device!r} (or device_map)", at=None)
        return self


_CONFIGS: dict[tuple, type[ConfigSection]] = {}


def config_model() -> type[ConfigSection]:
    """The config schema with every method registered now (made again when the registry changes)."""
    key = tuple((name, METHODS.config(name)) for name in METHODS)
    if key not in _CONFIGS:
        entries = tuple(entry_model(config) for _, config in key) + (Majority,)
        entry = Annotated[Union[entries], Field(discriminator="name"), Says(_entry_message, deep=False)]
        methods = Annotated[list[entry], Field(min_length=1),
                            Says("{path}: give a non-empty list of methods, e.g. [{name: manual, train: false}]",
                                 deep=False)]
        about = "the methods to run: each a mapping with a name, its settings and training settings"
        _CONFIGS[key] = create_model("Config", __base__=ConfigSection, __doc__=ConfigSection.__doc__,
                                     methods=(methods, Field(description=about)))
    return _CONFIGS[key]


def check_config(data, error: type[Exception]) -> ConfigSection:
    """One config document validated; the first error raises ``error`` in the library's words."""
    return check(config_model(), data, Where("", "config"), error)


def json_schema() -> dict:
    """The JSON Schema of a config document, for editors (``prompting schema``)."""
    schema = config_model().model_json_schema()
    schema["title"] = "prompting experiment config"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
