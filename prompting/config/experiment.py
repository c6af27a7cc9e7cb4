"""YAML experiment configs and prompt files, validated with errors that name key, value and what is valid.

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
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prompting.core.data import DATA_SEEDS, Task
from prompting.core.yamlfile import load_yaml
from prompting.methods import METHODS, method_config
from prompting.core.settings import CALIBRATIONS, ENSEMBLES, TRAIN_KEYS, MethodSpec, Protocol, SettingsError, TrainConfig
from prompting.tasks.spec import TaskSpecError, check_task_spec, default_choice_verbalizer
from prompting.tasks.spec import load_task_spec as _load_task_spec

__all__ = ["ConfigError", "ExperimentConfig", "load_config", "load_configs", "parse_config", "load_prompt_file",
           "builtin_templates", "load_task_spec"]

METHOD_KEYS = ("name", "train", "label", "template", "verbalizer", "ensemble", "train_seeds", "calibration")
TOP_KEYS = ("name", "model", "device", "dtype", "device_map", "max_length", "kv_cache_mb", "task", "fewshot", "templates",
            "seeds", "methods", "sweep")
FEWSHOT_KEYS = ("k", "data_seeds", "test_limit", "eval_batch_size")
SEED_KEYS = ("train_seeds", "select_by", "metric")
SWEEP_KEYS = ("method", "params", "n_trials", "objective", "stability_lambda", "pruner", "startup_trials", "seed")
OBJECTIVES = ("mean", "stable")
PRUNERS = ("median", "none")
DTYPES = ("float32", "bfloat16", "float16")  # what the LM's weights are loaded in and compute in
DEVICE_MAPS = ("auto",)  # accelerate spreads a model too large for one device over every visible one


class ConfigError(ValueError):
    """An experiment config or prompt file that does not fit the schema."""


def _check_keys(where: str, mapping: Any, allowed: tuple[str, ...]) -> dict:
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where} must be a mapping with keys {', '.join(allowed)}; got {mapping!r}")
    for key in mapping:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")
    return mapping


def _int_list(where: str, value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{where}: {value!r} is not valid; give a non-empty list of integers")
    return value




def _optional_count(where: str, value: Any, null: bool = True) -> int | None:
    if value is None and null:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:  # YAML `true` is not a count
        raise ConfigError(f"{where}: {value!r} is not valid; give an integer >= 1" + (" or null" if null else ""))
    return value


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
    tried = " or ".join(repr(str(c)) for c in candidates)
    extra = f"; built-in prompt files: {', '.join(builtin)}" if what == "templates" else ""
    raise ConfigError(f"{what}: {path_or_name!r} not found (tried {tried}){extra}")


def load_prompt_file(path_or_name: str | Path, base: Path | None = None,
                     default_verbalizer: dict | None = None) -> tuple[list[str], list[dict]]:
    """Read a prompt file (``task``, ``patterns``, ``verbalizers``) by path or built-in task name;
    ``default_verbalizer``: what a file without verbalizers gets (a multiple-choice task's choices)."""
    path = _resolve(str(path_or_name), base, "templates")
    try:
        documents = load_yaml(path.read_text())
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
    indices = _int_list(where, chosen)
    for i in indices:
        if not 0 <= i < len(items):
            raise ConfigError(f"{where}: index {i} is out of range; there are {len(items)} (0 to {len(items) - 1})")
    return [items[i] for i in indices]


def _templates(value: Any, base: Path | None, default_verbalizer: dict | None = None) -> list[tuple[str, dict]]:
    if isinstance(value, str):
        patterns, verbalizers = load_prompt_file(value, base, default_verbalizer)
        return list(itertools.product(patterns, verbalizers))
    _check_keys("templates", value, ("file", "patterns", "verbalizers", "task"))
    if "file" in value:
        patterns, verbalizers = load_prompt_file(value["file"], base, default_verbalizer)
        patterns = _select("templates.patterns", patterns, value.get("patterns"))
        verbalizers = _select("templates.verbalizers", verbalizers, value.get("verbalizers"))
    else:
        patterns, verbalizers = _prompts_from("templates", value, default_verbalizer)
    return list(itertools.product(patterns, verbalizers))


# ------------------------------------------------------------------------------------ experiment
@dataclass
class ExperimentConfig:
    name: str
    model: str
    task: dict
    protocol: Protocol
    prompts: list[tuple[str, dict]]
    methods: list[MethodSpec]
    device: str = "auto"
    # the LM computes in this dtype; learned prompt parameters and their optimizer state stay float32
    dtype: str = "float32"
    device_map: str | None = None  # "auto": accelerate places the model over every visible device
    # megabytes of frozen text's keys and values kept per model (prompting.lm.model.SpanCache; 0: none)
    kv_cache_mb: float = 4096
    max_length: int | None = None
    base: Path | None = field(default=None, repr=False)
    sweep: SweepConfig | None = None
    source: dict | None = field(default=None, repr=False)  # the mapping it was read from (sweeps export it)


@dataclass
class SweepConfig:
    """A config's ``sweep:`` section (see :mod:`prompting.sweeps.sweep`); the command line may override it."""

    method: str | None = None  # name or label of one of the config's methods
    params: dict = field(default_factory=dict)  # distributions that replace or extend the method's space
    n_trials: int | None = None
    objective: str = "mean"  # mean dev over data seeds, or "stable": mean - stability_lambda * std
    stability_lambda: float = 1.0
    pruner: str = "median"
    startup_trials: int = 5  # trials sampled at random (and never pruned) before TPE and pruning start
    # the sampler's seed (plus the study's trial count when a worker joins); leave it unset for
    # workers started at the same moment, which would otherwise propose the same trials
    seed: int | None = None


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
    from prompting.config.searchspace import SearchSpaceError, build_space

    fixed = list(spec.params) + list(spec.train_config) + (["template"] if spec.template else [])
    templates = [spec.template] if spec.template else list(dict.fromkeys(t for t, _ in prompts))
    try:
        return build_space(where, METHODS.config(spec.name), fixed, overrides, templates, trained=spec.train)
    except (SearchSpaceError, ValueError) as err:
        raise ConfigError(str(err)) from None


def _sweep(value: Any, specs: list[MethodSpec], prompts) -> SweepConfig:
    _check_keys("sweep", value, SWEEP_KEYS)
    out = SweepConfig(**value)
    for key, allowed in (("objective", OBJECTIVES), ("pruner", PRUNERS)):
        if getattr(out, key) not in allowed:
            raise ConfigError(f"sweep.{key}: {getattr(out, key)!r} is not valid; choose one of {', '.join(allowed)}")
    for key, low in (("n_trials", 0), ("startup_trials", 0), ("seed", None)):
        v = getattr(out, key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or (low is not None and v < low)):
            raise ConfigError(f"sweep.{key}: {v!r} is not valid; give an integer" + (f" >= {low}" if low is not None else ""))
    lam = out.stability_lambda
    if not isinstance(lam, (int, float)) or isinstance(lam, bool) or lam < 0:
        raise ConfigError(f"sweep.stability_lambda: {lam!r} is not valid; give a number >= 0")
    if out.method is not None and not isinstance(out.method, str):
        raise ConfigError(f"sweep.method: {out.method!r} is not valid; give a method's label or name")
    if out.params is None:
        out.params = {}
    if not isinstance(out.params, dict):
        raise ConfigError(f"sweep.params: {out.params!r} is not valid; give a mapping of parameter -> distribution, "
                          "e.g. {lr: {low: 1.0e-4, high: 1.0e-2, log: true}, encoder: [lstm, mlp]}")
    if out.method is not None or len(specs) == 1:  # else the command line says which method
        method_space(specs[select_method(specs, out.method)], prompts, out.params)
    return out


def _method(i: int, entry: Any) -> MethodSpec:
    where = f"methods[{i}]"
    if not isinstance(entry, dict) or "name" not in entry:
        raise ConfigError(f"{where} must be a mapping with a 'name' (one of {', '.join(sorted(METHODS))}); got {entry!r}")
    name = entry["name"]
    if name not in METHODS:
        raise ConfigError(f"{where}: method {name!r} is not known; known methods: {', '.join(sorted(METHODS))}")
    own = METHODS.config(name).keys()
    _check_keys(f"{where} ({name})", entry, METHOD_KEYS + TRAIN_KEYS + own)
    train = entry.get("train", True)
    if not isinstance(train, bool):
        raise ConfigError(f"{where}: train={train!r} is not valid; use true or false")
    train_config = {k: entry[k] for k in TRAIN_KEYS if k in entry}
    params = {k: entry[k] for k in own if k in entry}
    try:
        method_config(name, params)
        TrainConfig(**{**METHODS.config(name).train_defaults, **train_config})
    except SettingsError as err:
        raise ConfigError(f"{where} ({name}): {err.detail}") from None
    if entry.get("ensemble") is not None and entry["ensemble"] not in ENSEMBLES:
        raise ConfigError(f"{where}: ensemble={entry['ensemble']!r} is not valid; choose one of {', '.join(ENSEMBLES)}")
    verbalizer = entry.get("verbalizer")
    seeds = entry.get("train_seeds")
    if seeds is not None and not train:
        raise ConfigError(f"{where}: train_seeds={seeds!r} is given but train is false; an untrained prompt has no "
                          "training seed")
    seeds = None if seeds is None else _int_list(f"{where}.train_seeds", seeds)
    calibration = entry.get("calibration") or []
    if not isinstance(calibration, (str, list)) or not all(isinstance(c, str) for c in (
            [calibration] if isinstance(calibration, str) else calibration)):
        raise ConfigError(f"{where}: calibration={calibration!r} is not valid; give one of "
                          f"{', '.join(CALIBRATIONS)} or a list of them")
    verbalizer = normalise_verbalizer(f"{where}.verbalizer", verbalizer) if verbalizer is not None else None
    try:
        return MethodSpec(
            name=name, train=train, label=entry.get("label"), template=entry.get("template"), verbalizer=verbalizer,
            params=params, train_config=train_config, ensemble=entry.get("ensemble"),
            train_seeds=seeds, calibration=calibration)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None


def _check_templates(prompts: list[tuple[str, dict]], specs: list[MethodSpec]) -> None:
    """Every template parses (one {mask}, known slots), before any data or model is loaded."""
    from prompting.core.template import Template, TemplateError

    where = [("templates", t) for t, _ in prompts] + \
        [(f"methods[{i}].template", s.template) for i, s in enumerate(specs) if s.template]
    for place, text in where:
        try:
            Template(text)
        except TemplateError as err:
            raise ConfigError(f"{place}: {err}") from None


def _hardware(data: dict, specs: list[MethodSpec]) -> tuple[str, str, str | None]:
    """The config's device, dtype and device_map, checked (accelerate is looked for, not imported)."""
    import importlib.util

    device, dtype, device_map = data.get("device", "auto"), data.get("dtype", "float32"), data.get("device_map")
    if not isinstance(device, str) or not device:
        raise ConfigError(f"device: {device!r} is not valid; use auto, cpu, cuda or cuda:N")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype: {dtype!r} is not valid; choose one of {', '.join(DTYPES)}")
    if device_map is not None:
        if device_map not in DEVICE_MAPS:
            raise ConfigError(f"device_map: {device_map!r} is not valid; use auto (or leave it out for one device)")
        if device != "auto":
            raise ConfigError(f"device_map: auto places the model over every visible device itself; "
                              f"drop device: {device!r} (or device_map)")
        if importlib.util.find_spec("accelerate") is None:
            raise ConfigError("device_map: auto needs the accelerate package, which is not installed: "
                              "pip install accelerate")
    for i, spec in enumerate(specs):
        tunes = {**METHODS.config(spec.name).train_defaults, **spec.train_config}.get("tune_lm")
        if dtype != "float32" and spec.train and tunes:
            raise ConfigError(f"methods[{i}] ({spec.label}) trains the LM's own weights (tune_lm), which dtype: "
                              f"{dtype} would hold and update in {dtype} (small steps round away); use dtype: "
                              "float32 for it, or a method that keeps the LM frozen")
    return device, dtype, device_map


def parse_config(data: Any, base: Path | None = None) -> ExperimentConfig:
    """Validate a config mapping (already read from YAML)."""
    _check_keys("config", data, TOP_KEYS)
    for key in ("task", "methods"):
        if key not in data:
            raise ConfigError(f"config: missing key {key!r}")
    task = check_task(data["task"])
    fewshot = _check_keys("fewshot", data.get("fewshot", {}), FEWSHOT_KEYS)
    seeds = _check_keys("seeds", data.get("seeds", {}), SEED_KEYS)
    k = fewshot.get("k", 16)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"fewshot.k: {k!r} is not valid; give K examples per class, an integer >= 1")
    limit = _optional_count("fewshot.test_limit", fewshot.get("test_limit"))
    eval_batch_size = _optional_count("fewshot.eval_batch_size", fewshot.get("eval_batch_size", 32), null=False)
    max_length = _optional_count("max_length", data.get("max_length"))
    if seeds.get("select_by", "dev") != "dev":
        raise ConfigError(f"seeds.select_by: {seeds['select_by']!r} is not valid; only 'dev' is supported")
    metric = seeds.get("metric", "accuracy")
    if metric not in ("accuracy", "macro_f1"):
        raise ConfigError(f"seeds.metric: {metric!r} is not valid; choose accuracy or macro_f1")
    protocol = Protocol(k=k, data_seeds=_int_list("fewshot.data_seeds", fewshot.get("data_seeds", list(DATA_SEEDS))),
                        train_seeds=_int_list("seeds.train_seeds", seeds.get("train_seeds", [1])),
                        test_limit=limit, select_metric=metric,
                        eval_batch_size=eval_batch_size)
    methods = data["methods"]
    if not isinstance(methods, list) or not methods:
        raise ConfigError("methods: give a non-empty list of methods, e.g. [{name: manual, train: false}]")
    specs = [_method(i, m) for i, m in enumerate(methods)]
    templates = data.get("templates", task["name"])
    prompts = _templates(templates, base, default_choice_verbalizer(task))
    _check_templates(prompts, specs)
    model = data.get("model", "smollm2-135m")
    if not isinstance(model, str):
        raise ConfigError(f"model: {model!r} is not valid; give an alias, hub id or local path")
    sweep = _sweep(data["sweep"], specs, prompts) if data.get("sweep") is not None else None
    device, dtype, device_map = _hardware(data, specs)
    kv_cache_mb = data.get("kv_cache_mb", 4096)
    if isinstance(kv_cache_mb, bool) or not isinstance(kv_cache_mb, (int, float)) or kv_cache_mb < 0:
        raise ConfigError(f"kv_cache_mb: {kv_cache_mb!r} is not valid; give megabytes >= 0 (0: no cache of "
                          "frozen text)")
    return ExperimentConfig(name=str(data.get("name", "experiment")), model=model, task=task,
                            protocol=protocol, prompts=prompts, methods=specs, device=device, dtype=dtype,
                            device_map=device_map, kv_cache_mb=kv_cache_mb, max_length=max_length, base=base,
                            sweep=sweep, source=data)


def load_configs(path: str | Path) -> list[ExperimentConfig]:
    """Every experiment in a YAML file: one document, or several separated by ``---``
    (e.g. one per task) that write into the same results directory."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        documents = [d for d in load_yaml(path.read_text()) if d is not None]
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


def load_config(path: str | Path) -> ExperimentConfig:
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
