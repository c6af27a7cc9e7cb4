"""One schema for every config: typed sections with strict types and no unknown keys, errors in the
library's words, LAMA configs read by the same loader, each default written once, and the JSON Schema
that `prompting schema` writes for editors."""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from prompting.config.experiment import ConfigError, ExperimentConfig, ProbeConfig, load_configs, parse_config
from prompting.config.schema import ConfigSection, Fewshot, Seeds, config_model, entry_model, json_schema
from prompting.core.settings import KV_CACHE_MB, Protocol, TrainConfig
from prompting.core.yamlfile import load_yaml
from prompting.methods import METHODS
from prompting.methods.configs import ManualConfig, SoftConfig

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))
BASE = {"task": "sst2", "methods": [{"name": "manual", "train": False}]}
LAMA = """name: tiny-lama
task: {name: lama, data_dir: lama, relations: [P1]}
limits: {test: 4}
methods:
  - {name: majority}
  - {name: manual, train: false}
"""


def error(data) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    return str(err.value)


def write(tmp_path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------ errors in our words
@pytest.mark.parametrize("changes, expected", [
    ({"methods": [{"name": "manual"}, {"name": "soft", "init": "foo"}]},
     "methods[1] (soft): init='foo' is not valid; give one of text, vocab, uniform"),
    ({"metods": []}, "config: unknown key 'metods'; allowed keys: name, model, device"),
    ({"fewshot": {"k": True}}, "fewshot.k: True is not valid; give K examples per class, an integer >= 1"),
    ({"fewshot": {"k": "3"}}, "fewshot.k: '3' is not valid"),
    ({"fewshot": {"eval_batch_size": 2.0}}, "fewshot.eval_batch_size: 2.0 is not valid; give an integer >= 1"),
    ({"seeds": {"train_seeds": [1, True]}}, "seeds.train_seeds: [1, True] is not valid; give a non-empty list"),
    ({"kv_cache_mb": True}, "kv_cache_mb: True is not valid; give megabytes >= 0"),
    ({"dtype": "int8"}, "dtype: 'int8' is not valid; choose one of float32, bfloat16, float16"),
    ({"device_map": "balanced"}, "device_map: 'balanced' is not valid; use auto"),
    ({"name": 7}, "name: 7 is not valid; give a string"),
    ({"methods": [{"name": "soft", "max_steps": True}]}, "methods[0] (soft): max_steps=True is not valid"),
    ({"methods": [{"name": "soft", "lr": "1e-3"}]}, "methods[0] (soft): lr='1e-3' is not valid; give a number > 0"),
    ({"methods": [{"name": "icl", "k": "2"}]}, "methods[0] (icl): k='2' is not valid; give an integer >= 1"),
    ({"methods": [{"name": "manual", "demonstrations": {"k": 1, "selection": "best"}}]},
     "methods[0] (manual): demonstrations: selection='best' is not valid; give one of random, similarity"),
    ({"methods": [{"name": "manual", "label": 3}]}, "methods[0]: label=3 is not valid; give a string"),
    ({"methods": [{"name": "manual", "verbalizer": ["good"]}]}, "methods[0].verbalizer: a verbalizer maps labels"),
    ({"methods": [{"name": 3}]}, "methods[0]: method 3 is not known; known methods:"),
    ({"templates": {"file": "sst2", "patterns": "0"}}, "templates.patterns: '0' is not valid"),
    ({"templates": {"patterns": ["{text_a} {mask}"], "colour": 1}},
     "templates: unknown key 'colour'; allowed keys: file, patterns, verbalizers, task"),
    ({"templates": 3}, "templates must be a prompt file or a mapping with keys file, patterns, verbalizers, task"),
    ({"sweep": {"n_trials": True}}, "sweep.n_trials: True is not valid; give an integer >= 0"),
    ({"sweep": {"stability_lambda": -1}}, "sweep.stability_lambda: -1 is not valid; give a number >= 0"),
    ({"device": "cuda", "device_map": "auto"}, "device_map: auto places the model over every visible device"),
])
def test_types_are_strict_and_errors_name_owner_key_value_and_what_is_valid(changes, expected):
    assert expected in error({**BASE, **changes})


def test_a_config_that_is_not_a_mapping_names_the_keys_it_could_have():
    message = error(["task", "sst2"])
    assert message.startswith("config must be a mapping with keys name, model, device") and "['task', 'sst2']" in message


def test_settings_outside_a_config_keep_their_own_words():
    with pytest.raises(ValueError, match=r"kv_cache_mb: -1 is not valid; give megabytes >= 0"):
        from prompting.core.settings import cache_megabytes

        cache_megabytes(-1)
    config = SoftConfig.from_mapping({"demonstrations": {"k": 2}})
    assert config.demonstrations == {"k": 2}  # as written: records and saved prompts show it so
    assert config.demonstration_settings() is config.demonstration_settings()  # made once
    assert (config.demonstration_settings().k, config.demonstration_settings().selection) == (2, "random")


# ------------------------------------------------------------------------------ LAMA through the one loader
def test_a_lama_config_is_loaded_like_any_config(tmp_path):
    (tmp_path / "lama").mkdir()
    cfg, = load_configs(write(tmp_path, LAMA))
    assert isinstance(cfg, ProbeConfig)
    assert (cfg.name, cfg.relations, cfg.limits, cfg.protocols) == ("tiny-lama", ["P1"], {"test": 4},
                                                                    ["candidates", "vocab"])
    assert cfg.data_dir == tmp_path / "lama"  # relative to the config file
    majority, manual = cfg.methods
    assert (majority.name, majority.label, majority.train) == ("majority", "majority object", False)
    assert manual.label == "manual zero-shot"


def test_a_lama_config_takes_the_model_settings_of_any_config(tmp_path):
    """dtype, max_length and kv_cache_mb reach the fact-probing runs' model as they reach any run's."""
    (tmp_path / "lama").mkdir()
    cfg, = load_configs(write(tmp_path, LAMA + "dtype: bfloat16\nmax_length: 64\nkv_cache_mb: 0\n"))
    assert (cfg.dtype, cfg.max_length, cfg.kv_cache_mb) == ("bfloat16", 64, 0)


@pytest.mark.parametrize("text, expected", [
    (LAMA + "methods: [{name: majority}]\n", "the key 'methods' is given twice in one mapping"),
    (LAMA + "limts: {test: 3}\n", "config: unknown key 'limts'; allowed keys:"),
    (LAMA.replace("limits: {test: 4}", "limits: {test: true}"), "limits.test=True is not valid"),
    (LAMA + "fewshot: {k: 4}\n", "config: 'fewshot' is not used with the lama task; a lama config takes name, "
                                 "model, device, dtype, device_map, max_length, kv_cache_mb, task, limits, "
                                 "protocols, methods"),
    (LAMA + "protocols: [candidates, every]\n", "protocols: 'every' is not known; choose from candidates, vocab"),
    (LAMA.replace("{name: majority}", "{name: majority, k: 1}"),
     "methods[0] (majority): unknown key 'k'; allowed keys: name, label"),
])
def test_a_lama_config_with_a_duplicate_or_unknown_key_is_refused(tmp_path, text, expected):
    with pytest.raises(ConfigError) as err:
        load_configs(write(tmp_path, text))
    assert expected in str(err.value) and str(tmp_path / "exp.yaml") in str(err.value)


def test_prompting_run_refuses_a_lama_config_with_a_duplicate_key(tmp_path, capsys):
    from prompting.cli import main

    path = write(tmp_path, LAMA + "methods: [{name: majority}]\n")
    assert main(["run", str(path), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prompting run: error: ") and "the key 'methods' is given twice" in err


@pytest.mark.parametrize("argv, expected", [
    (["sweep", "{path}", "--n-trials", "1"], "is a fact-probing (lama) config; a sweep runs a few-shot task's"),
    (["eval", "--config", "{path}"], "is a fact-probing (lama) config; run it with prompting run"),
])
def test_commands_for_few_shot_tasks_refuse_a_lama_config_clearly(tmp_path, capsys, argv, expected):
    from prompting.cli import main

    path = write(tmp_path, LAMA)
    assert main([a.replace("{path}", str(path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err


@pytest.mark.parametrize("changes, expected", [
    ({"limits": {"test": 3}}, "config: 'limits' goes with the lama task only"),
    ({"protocols": ["vocab"]}, "config: 'protocols' goes with the lama task only"),
    ({"methods": [{"name": "manual"}, {"name": "majority"}]},
     "methods[1]: method 'majority' is the lama task's baseline"),
])
def test_lama_keys_are_valid_only_with_the_lama_task(changes, expected):
    assert expected in error({**BASE, **changes})


def test_a_classification_command_refuses_a_lama_task_clearly():
    from prompting.config.experiment import check_task

    with pytest.raises(ConfigError, match="lama is fact probing, not a classification task"):
        check_task({"name": "lama", "data_dir": "x", "relations": ["P1"]})


# ------------------------------------------------------------------------------ each default written once
def test_the_default_kv_cache_reaches_the_lm(tmp_path, tiny_llama_dir):
    from prompting.experiment.harness import build_experiment
    from prompting.lm.model import LanguageModel

    (tmp_path / "train.tsv").write_text("text_a\tlabel\n" + "".join(f"text {i}\t{i % 2}\n" for i in range(8)))
    cfg = parse_config({"model": str(tiny_llama_dir), "task": {"name": "toy", "train": "train.tsv",
                                                               "test": "train.tsv", "labels": [0, 1]},
                        "templates": {"patterns": ["{text_a} {mask}"], "verbalizers": [{0: "bad", 1: "good"}]},
                        "fewshot": {"k": 2},  # 4 examples per class: K = 2 for train and 2 for dev
                        "methods": [{"name": "manual", "train": False}]}, base=tmp_path)
    assert cfg.kv_cache_mb == KV_CACHE_MB
    experiment = build_experiment(cfg, tmp_path / "out")
    assert experiment.lm.spans.cap == KV_CACHE_MB * 2 ** 20
    assert inspect.signature(LanguageModel.load).parameters["kv_cache_mb"].default == KV_CACHE_MB


def test_defaults_come_from_the_classes_that_use_them():
    protocol, fewshot, seeds = Protocol(), Fewshot(), Seeds()
    assert (fewshot.k, fewshot.data_seeds, fewshot.test_limit, fewshot.eval_batch_size) == \
        (protocol.k, list(protocol.data_seeds), protocol.test_limit, protocol.eval_batch_size)
    assert (seeds.train_seeds, seeds.metric) == (list(protocol.train_seeds), protocol.select_metric)
    assert protocol.eval_batch_size == TrainConfig().eval_batch_size
    soft = entry_model(SoftConfig).model_fields
    assert soft["lr"].default == SoftConfig.train_defaults["lr"] and soft["init"].default == SoftConfig().init
    assert entry_model(ManualConfig).model_fields["tune_lm"].default is True
    assert ConfigSection.model_fields["kv_cache_mb"].default == KV_CACHE_MB


def test_parsing_a_config_builds_no_training_or_method_settings(monkeypatch):
    built = []
    for cls in (TrainConfig, SoftConfig):
        monkeypatch.setattr(cls, "validate", lambda self, cls=cls: built.append(cls))
    cfg = parse_config({**BASE, "methods": [{"name": "soft", "lr": 0.1, "demonstrations": {"k": 1}}]})
    assert built == [] and cfg.methods[0].params == {"demonstrations": {"k": 1}}
    assert cfg.methods[0].train_config == {"lr": 0.1}


# ------------------------------------------------------------------------------ the JSON Schema
def test_the_schema_has_every_method_in_a_union_on_name():
    schema = json_schema()
    entries = schema["properties"]["methods"]["items"]
    assert entries["discriminator"]["propertyName"] == "name"
    assert set(entries["discriminator"]["mapping"]) == set(METHODS) | {"majority"}
    soft = schema["$defs"]["SoftEntry"]
    assert soft["properties"]["init"]["enum"] == ["text", "vocab", "uniform"] and not soft["additionalProperties"]
    assert soft["properties"]["lr"]["default"] == SoftConfig.train_defaults["lr"]
    assert "description" in soft["properties"]["prompt_tokens"]


def test_a_method_registered_later_is_in_the_schema():
    from prompting.core.settings import MethodConfig, setting

    @dataclasses.dataclass
    class LaterConfig(MethodConfig):
        method = "later"
        start: float = setting(1.0, "where it starts", positive=True)

    METHODS.add(LaterConfig, "nowhere:Later")
    try:
        assert "later" in json_schema()["properties"]["methods"]["items"]["discriminator"]["mapping"]
        assert "methods[0] (later): start=0 is not valid; give a number > 0" in error(
            {**BASE, "methods": [{"name": "later", "start": 0}]})
    finally:
        METHODS._configs.pop("later")
        METHODS._classes.pop("later")
    assert "later" not in json_schema()["properties"]["methods"]["items"]["discriminator"]["mapping"]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_committed_config_fits_the_json_schema(path):
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json_schema())
    for document in load_yaml(path.read_text()):
        assert not [e.message for e in validator.iter_errors(document)], path.name
    assert not validator.is_valid({**BASE, "metods": []})
    assert not validator.is_valid({**BASE, "methods": [{"name": "soft", "init": "foo"}]})
    assert not validator.is_valid({**BASE, "fewshot": {"k": True}})


def test_the_schema_of_the_models_is_the_schema_that_checks_configs():
    models = config_model().model_json_schema()
    assert json_schema()["properties"] == models["properties"] and json_schema()["$defs"] == models["$defs"]
    for path in EXPERIMENTS:
        assert all(isinstance(c, (ExperimentConfig, ProbeConfig)) for c in load_configs(path))


def test_prompting_schema_writes_json_without_torch(tmp_path):
    out = tmp_path / "schemas" / "prompting.schema.json"
    code = ("import sys\nfrom prompting.cli import main\ncode = main(['schema', '--output', sys.argv[1]])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    schema = json.loads(out.read_text())
    assert schema["$schema"].startswith("https://json-schema.org/") and "methods" in schema["required"]
    printed = subprocess.run([sys.executable, "-m", "prompting.cli", "schema"], capture_output=True, text=True)
    assert printed.returncode == 0 and json.loads(printed.stdout) == schema
