"""YAML experiment configs and prompt files, validated with errors that name key, value and what is valid.

A document is checked against the one schema of :mod:`prompting.config.schema` (types, allowed values,
defaults), then its prompt files are read and its templates parsed:

```yaml
name: sst2-manual-vs-learned
model: smollm2-135m
task: {name: sst2, data_dir: ../shared/data/sst2}
fewshot: {k: 16, data_seeds: [13, 21, 42], test_limit: 500}
templates: {file: templates/sst2.yaml, patterns: [0, 1], verbalizers: [0]}
seeds: {train_seeds: [1, 2], select_by: dev, metric: accuracy}
methods:
  - {name: manual, train: false}
  - {name: manual, train: true, lr: 1.0e-5, max_steps: 32, ensemble: wmean}
sweep:                        # for `prompting sweep` (see prompting.sweeps.sweep); `prompting run` ignores it
  method: PET                 # a method's label or name
  params: {lr: {low: 1.0e-6, high: 1.0e-4, log: true}, batch_size: [4, 8]}
```
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prompting.config.schema import DTYPES, Majority, SweepConfig, check_config
from prompting.config.searchspace import SearchSpaceError, build_space
from prompting.core.data import Task
from prompting.core.settings import KV_CACHE_MB, MethodSpec, Protocol
from prompting.core.template import Template, TemplateError
from prompting.core.yamlfile import load_yaml
from prompting.methods import METHODS
from prompting.tasks.schema import LamaTask
from prompting.tasks.textspec import is_generation
from prompting.tasks.spec import (
    TaskSpecError,
    check_task_spec,
    default_choice_verbalizer,
)
from prompting.tasks.spec import load_task_spec as _load_task_spec

__all__ = ["ConfigError", "ExperimentConfig", "ProbeConfig", "parse_probe_config", "SweepConfig", "load_config", "load_configs",
           "parse_config", "load_prompt_file", "builtin_templates", "load_task_spec"]


class ConfigError(ValueError):
    """An experiment config or prompt file that does not fit the schema."""


def _check_keys(where: str, mapping: Any, allowed: tuple[str, ...]) -> dict:
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where} must be a mapping with keys {', '.join(allowed)}; got {mapping!r}")
    for key in mapping:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")
    return mapping


def _label_key(key: Any) -> str:
    return str(key).lower() if isinstance(key, bool) else str(key)  # YAML reads true/false as booleans


def normalise_verbalizer(where: str, value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{where}: a verbalizer maps labels to words, e.g. {{0: [terrible], 1: [great]}}; "
                          f"got {value!r}")
    out = {}
    for label, words in value.items():
        words = [words] if isinstance(words, (str, int, float, bool)) else words
        if not isinstance(words, list) or not words:
            raise ConfigError(f"{where}: label {label!r} needs a list of words; got {words!r}")
        if any(isinstance(w, bool) for w in words):
            raise ConfigError(f"{where}: label {label!r} has the word {words!r}, which YAML read as a "
                              f"boolean; write it as a list ([Yes]) or quote it (\"Yes\")")
        if any(w is None for w in words):
            raise ConfigError(f"{where}: label {_label_key(label)!r} has an empty word ({words!r}; YAML reads null or "
                              "nothing as no word); write the word, quoted if needed")
        out[_label_key(label)] = [str(w) for w in words]
    owners: dict[str, str] = {}
    for label, words in out.items():
        for word in words:
            if owners.setdefault(word.strip(), label) != label:
                raise ConfigError(f"{where}: the word {word!r} stands for both label {owners[word.strip()]!r} and "
                                  f"label {label!r}; give each label its own words")
    return out


# ------------------------------------------------------------------------------------ prompt files
def builtin_templates() -> dict[str, Path]:
    """Prompt files that come with the library, by task name."""
    roots = [Path(__file__).resolve().parents[2] / "templates"]
    try:
        roots.append(Path(str(importlib.resources.files("prompting.templates"))))
    except (ModuleNotFoundError, TypeError):
        pass
    found = {}
    for root in roots:
        for path in sorted(root.glob("*.yaml")) if root.is_dir() else []:
            found.setdefault(path.stem, path)
    return found


def _resolve(path_or_name: str, base: Path | None, what: str) -> Path:
    candidates = [Path(path_or_name).expanduser()]
    if base is not None:
        candidates.append(base / path_or_name)
    for c in candidates:
        if c.is_file():  # a data folder named like the task (sst2/) is not its prompt file
            return c
    builtin = builtin_templates()
    if what == "templates" and path_or_name in builtin:
        return builtin[path_or_name]
    tried = " or ".join(dict.fromkeys(repr(str(c)) for c in candidates))
    extra = f"; built-in prompt files: {', '.join(builtin)}" if what == "templates" else ""
    raise ConfigError(f"{what}: {path_or_name!r} not found (tried {tried}){extra}")


def load_prompt_file(path_or_name: str | Path, base: Path | None = None,
                     default_verbalizer: dict | None = None) -> tuple[list[str], list[dict]]:
    """Read a prompt file (``task``, ``patterns``, ``verbalizers``) by path or built-in task name;
    ``default_verbalizer``: what a file without verbalizers gets (a multiple-choice task's choices)."""
    path = _resolve(str(path_or_name), base, "templates")
    try:
        documents = load_yaml(path.read_text(encoding="utf-8-sig"))
        data = documents[0] if documents else None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    return _prompts_from(str(path), data, default_verbalizer)


def _prompts_from(where: str, data: Any, default_verbalizer: dict | None = None) -> tuple[list[str], list[dict]]:
    _check_keys(where, data, ("task", "patterns", "verbalizers", "file"))
    patterns = data.get("patterns")
    if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) for p in patterns):
        raise ConfigError(f"{where}: 'patterns' must be a non-empty list of template strings; got {patterns!r}")
    verbalizers = data.get("verbalizers", [default_verbalizer] if default_verbalizer else None)
    if not isinstance(verbalizers, list) or not verbalizers:
        raise ConfigError(f"{where}: 'verbalizers' must be a non-empty list of label -> words mappings")
    return patterns, [normalise_verbalizer(f"{where}: verbalizers[{i}]", v) for i, v in enumerate(verbalizers)]


def _select(where: str, items: list, chosen: Any) -> list:
    if chosen is None:
        return items
    indices = [chosen] if isinstance(chosen, int) else chosen  # checked by the schema
    for i in indices:
        if not 0 <= i < len(items):
            raise ConfigError(f"{where}: index {i} is out of range; there are {len(items)} (0 to {len(items) - 1})")
    return [items[i] for i in indices]


def _templates(value: Any, base: Path | None, default_verbalizer: dict | None = None) -> list[tuple[str, dict]]:
    if isinstance(value, str):
        patterns, verbalizers = load_prompt_file(value, base, default_verbalizer)
        return list(itertools.product(patterns, verbalizers))
    if "file" in value:
        patterns, verbalizers = load_prompt_file(value["file"], base, default_verbalizer)
        patterns = _select("templates.patterns", patterns, value.get("patterns"))
        verbalizers = _select("templates.verbalizers", verbalizers, value.get("verbalizers"))
    else:
        patterns, verbalizers = _prompts_from("templates", value, default_verbalizer)
    return list(itertools.product(patterns, verbalizers))


def _patterns(value: Any, base: Path | None) -> list[str]:
    """A generation task's templates: a prompt file's patterns (or some of them), or the inline ones; a
    verbalizer is refused (the model writes its answer at ``{mask}``)."""
    where, chosen = "templates", None
    if isinstance(value, str) or "file" in value:
        path = _resolve(str(value if isinstance(value, str) else value["file"]), base, "templates")
        documents = load_yaml(path.read_text(encoding="utf-8-sig"))
        where, chosen, value = str(path), (None if isinstance(value, str) else value.get("patterns")), documents[0]
    _check_keys(where, value, ("task", "patterns", "verbalizers", "file"))
    if value.get("verbalizers") is not None:
        raise ConfigError(f"{where}: verbalizers word labels; a generation task has none (the model writes its "
                          "answer at {mask}): leave them out")
    patterns = value.get("patterns")
    if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) for p in patterns):
        raise ConfigError(f"{where}: 'patterns' must be a non-empty list of template strings; got {patterns!r}")
    return _select("templates.patterns", patterns, chosen)


# ------------------------------------------------------------------------------------ experiment
@dataclass
class ExperimentConfig:
    """A config document as an experiment runs it (its defaults are the schema's:
    :mod:`prompting.config.schema`)."""

    name: str
    model: str
    task: dict
    protocol: Protocol
    prompts: list[tuple[str, dict]]
    methods: list[MethodSpec]
    device: str
    dtype: str  # the LM computes in this dtype; learned prompt parameters and their optimizer state stay float32
    device_map: str | None  # "auto": accelerate places the model over every visible device
    kv_cache_mb: float  # megabytes of frozen text's keys and values kept per model (prompting.lm.spans; 0: none)
    max_length: int | None
    base: Path | None = field(default=None, repr=False)
    sweep: SweepConfig | None = None
    source: dict | None = field(default=None, repr=False)  # the mapping it was read from (sweeps export it)
    tensorboard: str | None = None  # live curves: TensorBoard's folder (prompting.experiment.tracking)
    mlflow: str | bool | None = None  # live curves: MLflow's tracking URI, or True for its default store

    @property
    def select_metric(self) -> str:
        return self.protocol.select_metric

    def limit_test(self, n: int) -> None:
        """Score a fixed random ``n`` of the test examples (``--test-limit``)."""
        self.protocol.test_limit = n


@dataclass
class ProbeConfig:
    """A LAMA fact-probing config (``task: {name: lama, ...}``), as
    :func:`prompting.experiment.harness.build_experiments` runs it (one experiment per relation):
    ``data_dir`` found relative to the config file, ``limits`` as the config wrote them (every record
    keeps them), ``methods`` a :class:`MethodSpec` each (``majority``: the task's baseline)."""

    name: str
    model: str
    data_dir: Path
    relations: list[str]
    limits: dict
    protocols: list[str]
    methods: list[MethodSpec]
    device: str
    template: str | None
    dtype: str = DTYPES[0]
    device_map: str | None = None
    kv_cache_mb: float = KV_CACHE_MB
    max_length: int | None = None
    source: dict | None = field(default=None, repr=False)
    tensorboard: str | None = None
    mlflow: str | bool | None = None

    select_metric = "accuracy"  # runs are ranked, not selected by a dev metric

    def limit_test(self, n: int) -> None:
        """Rank a fixed random ``n`` of each relation's test facts (``--test-limit``)."""
        self.limits["test"] = n


def select_method(specs: list[MethodSpec], wanted: str | None, where: str = "sweep.method") -> int:
    """The index of the one method entry named (by label, else by name) ``wanted``."""
    labels = ", ".join(repr(s.label) for s in specs)
    if wanted is None:
        if len(specs) == 1:
            return 0
        raise ConfigError(f"{where}: the config has {len(specs)} methods ({labels}); say which one to sweep")
    for how in ("label", "name"):
        found = [i for i, s in enumerate(specs) if getattr(s, how) == wanted]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ConfigError(f"{where}: {wanted!r} names {len(found)} methods; name one by its label: {labels}")
    raise ConfigError(f"{where}: {wanted!r} is not one of the config's methods; their labels: {labels}")


def method_space(spec: MethodSpec, prompts: list[tuple[str, dict]], overrides: dict | None,
                 where: str = "sweep.params") -> dict:
    """The search space of one method entry: its class's, less what the entry fixes, plus ``overrides``."""
    fixed = list(spec.params) + list(spec.train_config) + (["template"] if spec.template else [])
    templates = [spec.template] if spec.template else list(dict.fromkeys(t for t, _ in prompts))
    try:
        return build_space(where, METHODS.config(spec.name), fixed, overrides, templates, trained=spec.train)
    except (SearchSpaceError, ValueError) as err:
        raise ConfigError(str(err)) from None


def _entries(section, data: dict) -> list:
    """The method entries as runs need them; a verbalizer's words checked as a prompt file's are."""
    specs = []
    for i, (entry, raw) in enumerate(zip(section.methods, data["methods"])):
        if isinstance(entry, Majority):
            specs.append(MethodSpec("majority", train=False, label=entry.label))
            continue
        verbalizer = raw.get("verbalizer")
        verbalizer = normalise_verbalizer(f"methods[{i}].verbalizer", verbalizer) if verbalizer is not None else None
        specs.append(entry.spec(raw, verbalizer))
    return specs


def _check_templates(prompts: list[tuple[str, dict]], specs: list[MethodSpec]) -> None:
    """Every template parses (one {mask}, known slots), before any data or model is loaded."""
    where = [("templates", t) for t, _ in prompts] + \
        [(f"methods[{i}].template", s.template) for i, s in enumerate(specs) if s.template]
    for place, text in where:
        try:
            Template(text)
        except TemplateError as err:
            raise ConfigError(f"{place}: {err}") from None


def _hardware(section, specs: list[MethodSpec]) -> None:
    """What the schema cannot see: accelerate installed for device_map, and no LM trained in low precision."""
    if section.device_map is not None and importlib.util.find_spec("accelerate") is None:
        raise ConfigError("device_map: auto needs the accelerate package, which is not installed: "
                          "pip install accelerate")
    for i, spec in enumerate(specs):
        tunes = {**METHODS.config(spec.name).train_defaults, **spec.train_config}.get("tune_lm")
        if section.dtype != DTYPES[0] and spec.train and tunes:
            raise ConfigError(f"methods[{i}] ({spec.label}) trains the LM's own weights (tune_lm), which dtype: "
                              f"{section.dtype} would hold and update in {section.dtype} (small steps round away); "
                              f"use dtype: {DTYPES[0]} for it, or a method that keeps the LM frozen")


def _probe_config(section, data: dict, specs: list, base: Path | None) -> ProbeConfig:
    task: LamaTask = section.task
    data_dir = Path(task.data_dir).expanduser()
    if base is not None and not data_dir.is_absolute() and not data_dir.is_dir() and (base / data_dir).is_dir():
        data_dir = base / data_dir  # relative to the config file rather than the working folder
    return ProbeConfig(section.name or "lama", section.model, data_dir, list(task.relations),
                       dict(data.get("limits") or {}), list(section.protocols), specs, section.device, task.template,
                       dtype=section.dtype, device_map=section.device_map, kv_cache_mb=section.kv_cache_mb,
                       max_length=section.max_length, source=data, tensorboard=section.tensorboard,
                       mlflow=section.mlflow)


def parse_config(data: Any, base: Path | None = None) -> ExperimentConfig | ProbeConfig:
    """Validate a config mapping (already read from YAML); a lama task's gives a :class:`ProbeConfig`."""
    section = check_config(data, ConfigError)
    specs = _entries(section, data)
    if isinstance(section.task, LamaTask):
        methods = [s for s in specs if s.name in METHODS]  # and the task's baseline
        _check_templates([], methods)
        _hardware(section, methods)
        return _probe_config(section, data, specs, base)
    task = {"name": data["task"]} if isinstance(data["task"], str) else dict(data["task"])
    templates = data.get("templates")
    if is_generation(task):  # the model writes its answer: patterns without verbalizers
        prompts = [(p, {}) for p in _patterns(task["name"] if templates is None else templates, base)]
    else:
        try:
            prompts = _templates(task["name"] if templates is None else templates, base, default_choice_verbalizer(task))
        except ConfigError:
            if templates is not None:
                raise
            raise ConfigError(f"templates: task {task['name']!r} has no built-in prompt file, so the config needs a "
                              "templates: section: a prompt file (templates: my_prompts.yaml), or patterns and "
                              "verbalizers written in it (templates: {patterns: [\"{text_a} It was {mask}.\"], "
                              "verbalizers: [{neg: bad, pos: good}]}); built-in prompt files: "
                              f"{', '.join(builtin_templates())}") from None
    _check_templates(prompts, specs)
    sweep = section.sweep
    if sweep is not None and (sweep.method is not None or len(specs) == 1):  # else the command line says which
        method_space(specs[select_method(specs, sweep.method)], prompts, sweep.params)
    _hardware(section, specs)
    fewshot, seeds = section.fewshot, section.seeds
    listed = lambda seeds: [seeds] if isinstance(seeds, int) else list(seeds)
    protocol = Protocol(k=fewshot.k, data_seeds=listed(fewshot.data_seeds), train_seeds=listed(seeds.train_seeds),
                        test_limit=fewshot.test_limit, select_metric=seeds.metric,
                        eval_batch_size=fewshot.eval_batch_size)
    return ExperimentConfig(name=section.name or "experiment", model=section.model, task=task, protocol=protocol,
                            prompts=prompts, methods=specs, device=section.device, dtype=section.dtype,
                            device_map=section.device_map, kv_cache_mb=section.kv_cache_mb,
                            max_length=section.max_length, base=base, sweep=sweep, source=data,
                            tensorboard=section.tensorboard, mlflow=section.mlflow)


def parse_probe_config(data: dict, base: Path | None = None) -> ProbeConfig:
    """A LAMA config checked by the one config schema (see :mod:`prompting.config.schema`)."""
    cfg = parse_config(data, base)
    if not isinstance(cfg, ProbeConfig):
        raise ConfigError("task: a fact-probing config has task: {name: lama, data_dir: ..., relations: [...]}")
    return cfg


def load_configs(path: str | Path) -> list[ExperimentConfig | ProbeConfig]:
    """Every experiment in a YAML file: one document, or several separated by ``---``
    (e.g. one per task) that write into the same results directory. A fact-probing document
    (``task: {name: lama, ...}``) gives a :class:`ProbeConfig`."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        documents = [d for d in load_yaml(path.read_text(encoding="utf-8-sig")) if d is not None]
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not documents:
        raise ConfigError(f"{path}: the file is empty; it needs at least 'task' and 'methods'")
    configs = []
    for i, data in enumerate(documents):
        try:
            configs.append(parse_config(data, base=path.parent))
        except ConfigError as err:
            where = f"{path}" + (f" (document {i + 1})" if len(documents) > 1 else "")
            raise ConfigError(f"{where}: {err}") from None
    return configs


def load_config(path: str | Path) -> ExperimentConfig | ProbeConfig:
    """The experiment in a single-document YAML file."""
    configs = load_configs(path)
    if len(configs) != 1:
        raise ConfigError(f"{path}: holds {len(configs)} experiments; use load_configs")
    return configs[0]


def check_task(task: Any) -> dict:
    """A config's ``task:`` section, checked (see :mod:`prompting.tasks.spec`)."""
    try:
        return check_task_spec(task)
    except TaskSpecError as err:
        raise ConfigError(str(err)) from None


def load_task_spec(spec: dict, base: Path | None = None) -> Task:
    """A built-in task, or a custom one from its files (see :mod:`prompting.tasks.spec`)."""
    try:
        return _load_task_spec(spec, base)
    except TaskSpecError as err:
        raise ConfigError(str(err)) from None
