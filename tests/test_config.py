"""Experiment configs and prompt files: every error names the key, the value and what is allowed;
the shipped prompt files and experiment configs parse and fit their tasks."""

import bz2
from pathlib import Path

import pytest

import prompting.config.experiment as config_module
from prompting.config.experiment import ConfigError, load_config, load_prompt_file, load_task_spec, parse_config
from prompting.core.data import TASKS
from prompting.methods import METHODS
from prompting.core.template import Template
from prompting.core.texts import TEXT_TASKS
from prompting.core.yamlfile import load_yaml
from prompting.tasks.textspec import is_generation

ROOT = Path(__file__).resolve().parents[1]
BASE = {"name": "t", "model": "tiny", "task": {"name": "sst2", "data_dir": "data/sst2"}, "templates": "sst2",
        "methods": [{"name": "manual", "train": False}]}


def config_with(**changes):
    data = {**BASE, **changes}
    return {k: v for k, v in data.items() if v is not None}


def error(data) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    return str(err.value)


def write_yaml(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------ schema errors
def test_a_valid_config_gives_protocol_prompts_and_methods():
    cfg = parse_config(config_with(fewshot={"k": 8, "data_seeds": [13, 21], "test_limit": 100},
                                   seeds={"train_seeds": [1, 2], "metric": "macro_f1"}))
    assert (cfg.protocol.k, list(cfg.protocol.data_seeds), list(cfg.protocol.train_seeds)) == (8, [13, 21], [1, 2])
    assert cfg.protocol.test_limit == 100 and cfg.protocol.select_metric == "macro_f1"
    assert len(cfg.prompts) == 4 * 3  # every pattern x every verbalizer of templates/sst2.yaml
    assert cfg.methods[0].name == "manual" and cfg.methods[0].train is False


def test_unknown_top_level_key_names_it_and_the_allowed_keys():
    message = error(config_with(modle="tiny"))
    assert "unknown key 'modle'" in message and "allowed keys:" in message and "model" in message


def test_unknown_method_names_the_known_ones():
    message = error(config_with(methods=[{"name": "lora"}]))
    assert "methods[0]: method 'lora' is not known" in message
    assert f"known methods: {', '.join(sorted(METHODS))}" in message


def test_unknown_method_parameter_names_the_methods_parameters():
    message = error(config_with(methods=[{"name": "manual", "train": False}, {"name": "manual", "encoder": "lstm"}]))
    assert "methods[1] (manual): unknown key 'encoder'" in message and "lr" in message and "tune_lm" in message
    name, keys = next((n, METHODS.config(n).keys()) for n in sorted(METHODS) if METHODS.config(n).keys())
    message = error(config_with(methods=[{"name": name, "no_such_parameter": 1}]))
    assert f"methods[0] ({name}): unknown key 'no_such_parameter'" in message
    assert all(p in message for p in keys)


@pytest.mark.parametrize("entry, expected", [
    ({"name": "manual", "lr": -1}, "methods[0] (manual): lr=-1 is not valid; give a number > 0"),
    ({"name": "manual", "warmup_ratio": 2}, "warmup_ratio=2 is not valid; use 0 <= ratio < 1"),
    ({"name": "manual", "lr": "fast"}, "methods[0] (manual): lr='fast' is not valid; give a number"),
    ({"name": "manual", "tune_lm": "yes"}, "methods[0] (manual): tune_lm='yes' is not valid; use true or false"),
    ({"name": "manual", "train": "yes"}, "methods[0]: train='yes' is not valid; use true or false"),
    ({"name": "manual", "ensemble": "max"}, "methods[0]: ensemble='max' is not valid; choose one of mean, wmean"),
    ("manual", "methods[0] must be a mapping with a 'name'"),
])
def test_bad_method_settings(entry, expected):
    assert expected in error(config_with(methods=[entry]))


@pytest.mark.parametrize("fewshot, expected", [
    ({"k": 0}, "fewshot.k: 0 is not valid; give K examples per class, an integer >= 1"),
    ({"k": "16"}, "fewshot.k: '16' is not valid"),
    ({"k": True}, "fewshot.k: True is not valid"),
    ({"data_seeds": []}, "fewshot.data_seeds: [] is not valid; give a non-empty list of integers"),
    ({"data_seeds": [13, "21"]}, "fewshot.data_seeds: [13, '21'] is not valid"),
    ({"data_seeds": [13.5]}, "fewshot.data_seeds: [13.5] is not valid"),
    ({"test_limit": 0}, "fewshot.test_limit: 0 is not valid; give an integer >= 1 or null"),
    ({"test_limit": "all"}, "fewshot.test_limit: 'all' is not valid"),
    ({"test_limit": True}, "fewshot.test_limit: True is not valid"),
    ({"eval_batch_size": "big"}, "fewshot.eval_batch_size: 'big' is not valid; give an integer >= 1"),
    ({"shots": 4}, "fewshot: unknown key 'shots'; allowed keys: k, data_seeds, test_limit, eval_batch_size"),
])
def test_bad_fewshot_settings(fewshot, expected):
    assert expected in error(config_with(fewshot=fewshot))


def test_a_single_data_seed_may_be_given_as_a_number():
    assert list(parse_config(config_with(fewshot={"data_seeds": 42})).protocol.data_seeds) == [42]


@pytest.mark.parametrize("seeds, expected", [
    ({"select_by": "test"}, "seeds.select_by: 'test' is not valid; only 'dev' is supported"),
    ({"metric": "f1"}, "seeds.metric: 'f1' is not valid; choose accuracy or macro_f1"),
    ({"train_seeds": "1"}, "seeds.train_seeds: '1' is not valid; give a non-empty list of integers"),
])
def test_bad_seed_settings(seeds, expected):
    assert expected in error(config_with(seeds=seeds))


@pytest.mark.parametrize("changes, expected", [
    ({"max_length": 0}, "max_length: 0 is not valid; give an integer >= 1 or null"),
    ({"model": 7}, "model: 7 is not valid; give an alias, hub id or local path"),
    ({"kv_cache_mb": -1}, "kv_cache_mb: -1 is not valid; give megabytes >= 0 (0: no cache of frozen text)"),
    ({"kv_cache_mb": "lots"}, "kv_cache_mb: 'lots' is not valid"),
    ({"methods": []}, "methods: give a non-empty list of methods"),
    ({"task": {"name": "sst5"}}, "task: 'sst5' is not built in (built in: mr, sst2, cb, rte, boolq)"),
    ({"task": {"name": "sst2", "dir": "x"}}, "task: unknown key 'dir'"),
])
def test_bad_top_level_values(changes, expected):
    assert expected in error(config_with(**changes))


def test_missing_task_or_methods_is_named():
    assert "config: missing key 'task'" in error({"methods": BASE["methods"]})
    assert "config: missing key 'methods'" in error({"task": "sst2"})


def test_template_file_not_found_names_the_paths_tried_and_the_built_in_files():
    message = error(config_with(templates="nope.yaml"))
    assert "templates: 'nope.yaml' not found (tried 'nope.yaml')" in message
    assert "built-in prompt files: boolq, cb, e2e, mr, rte, sst2" in message


def test_a_task_of_ones_own_without_templates_is_told_to_give_them():
    task = {"name": "reviews", "train": "train.csv", "test": "test.csv", "fields": {"text_a": "review"},
            "labels": ["neg", "pos"]}
    message = error({"task": task, "methods": [{"name": "manual"}]})
    assert "templates: task 'reviews' has no built-in prompt file, so the config needs a templates: section" in message
    assert "built-in prompt files: boolq, cb, e2e, mr, rte, sst2" in message


def test_a_folder_named_like_the_task_beside_the_config_is_not_taken_for_its_prompt_file(tmp_path):
    (tmp_path / "sst2").mkdir()  # e.g. the task's data folder
    path = write_yaml(tmp_path, "task: {name: sst2, data_dir: sst2}\ntemplates: sst2\nmethods: [{name: manual}]\n")
    assert [v for _, v in load_config(path).prompts][:1] == [{"0": ["negative"], "1": ["positive"]}]


def test_pattern_or_verbalizer_index_out_of_range_says_how_many_there_are():
    message = error(config_with(templates={"file": "sst2", "patterns": [0, 7]}))
    assert "templates.patterns: index 7 is out of range; there are 4 (0 to 3)" in message
    message = error(config_with(templates={"file": "sst2", "verbalizers": [3]}))
    assert "templates.verbalizers: index 3 is out of range; there are 3 (0 to 2)" in message


def test_selected_patterns_and_verbalizers_are_crossed():
    cfg = parse_config(config_with(templates={"file": "sst2", "patterns": [1, 0], "verbalizers": [1]}))
    patterns, verbalizers = load_prompt_file("sst2")
    assert cfg.prompts == [(patterns[1], verbalizers[1]), (patterns[0], verbalizers[1])]


def test_inline_prompts_need_patterns_and_verbalizers():
    assert "'patterns' must be a non-empty list" in error(config_with(templates={"verbalizers": [{0: ["a"], 1: ["b"]}]}))
    assert "'verbalizers' must be a non-empty list" in error(config_with(templates={"patterns": ["{text_a} {mask}"]}))
    assert "label 1 needs a list of words; got []" in error(
        config_with(templates={"patterns": ["{text_a} {mask}"], "verbalizers": [{0: ["a"], 1: []}]}))


def test_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write_yaml(tmp_path, "task: [sst2\n"))
    with pytest.raises(ConfigError) as err:
        load_config(write_yaml(tmp_path, "task: sst2\nmethods: [{name: manual}]\ncolour: red\n"))
    assert str(tmp_path / "exp.yaml") in str(err.value) and "unknown key 'colour'" in str(err.value)


# ------------------------------------------------------------------------- YAML booleans and words
def test_yaml_boolean_labels_become_true_false_and_words_stay_as_written(tmp_path):
    path = write_yaml(tmp_path, """
task: {name: boolq, data_dir: data}
templates:
  patterns: ["{passage} {question}? {mask}"]
  verbalizers:
    - {false: [No], true: [Yes]}
    - {false: [False, off], true: [True, on]}
methods: [{name: manual, train: false}]
""")
    cfg = load_config(path)
    assert [v for _, v in cfg.prompts] == [{"false": ["No"], "true": ["Yes"]},
                                         {"false": ["False", "off"], "true": ["True", "on"]}]
    assert cfg.methods[0].train is False  # booleans that are settings stay booleans


def test_single_label_words_and_method_verbalizers_stay_as_written_too(tmp_path):
    path = write_yaml(tmp_path, """
task: boolq
templates: {patterns: ["{passage} {question}? {mask}"], verbalizers: [{"false": No, "true": Yes}]}
methods:
  - {name: manual, train: false, verbalizer: {false: [off], true: [on]}}
  - {name: manual, train: true, tune_lm: true}
""")
    cfg = load_config(path)
    assert cfg.prompts[0][1] == {"false": ["No"], "true": ["Yes"]}
    assert cfg.methods[0].verbalizer == {"false": ["off"], "true": ["on"]}
    assert cfg.methods[1].train_config == {"tune_lm": True}


def test_a_boolean_given_as_a_label_word_is_refused_not_turned_into_true():
    message = error(config_with(templates={"patterns": ["{text_a} {mask}"], "verbalizers": [{0: [False], 1: ["yes"]}]}))
    assert "label 0 has the word [False], which YAML read as a boolean" in message


def test_yaml_floats_without_a_dot_are_numbers(tmp_path):
    path = write_yaml(tmp_path, "task: sst2\nmethods: [{name: manual, lr: 1e-5, weight_decay: 1E-2}]\n")
    train_config = load_config(path).methods[0].train_config
    assert train_config == {"lr": 1e-5, "weight_decay": 0.01}


def test_custom_task_with_boolean_labels_and_files_relative_to_the_config(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"q": "is it?", "answer": true}\n{"q": "is it not?", "answer": false}\n')
    (tmp_path / "test.jsonl").write_text('{"q": "really?", "answer": true}\n')
    path = write_yaml(tmp_path, """
task: {name: yesno, train: train.jsonl, test: test.jsonl, fields: {text_a: q}, label_column: answer,
       labels: [false, true]}
templates: {patterns: ["{text_a} {mask}"], verbalizers: [{false: [No], true: [Yes]}]}
methods: [{name: manual, train: false}]
""")
    cfg = load_config(path)
    task = load_task_spec(cfg.task, cfg.base)
    assert task.labels == ("false", "true") and task.text_fields == ("text_a",) and not task.fixed_split
    assert [e.label for e in task.train] == ["true", "false"] and task.test[0]["text_a"] == "really?"


def test_custom_task_needs_test_and_labels():
    with pytest.raises(ConfigError, match="task 'mine': a custom task needs 'labels'"):
        load_task_spec({"name": "mine", "train": "t.tsv", "test": "t.tsv"})


# --------------------------------------------------------------------------- shipped prompt files
@pytest.fixture(scope="module")
def task_shapes(tmp_path_factory):
    """Each built-in task's labels and text fields, from its definition (the data files are stubs)."""
    root = tmp_path_factory.mktemp("stub-data")
    with bz2.open(root / "rotten_tomatoes_corpus_full.csv.bz2", "wt") as f:
        f.write("category,text\nfresh,a fine film\nrotten,a dull film\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("prompting.core.data.load_examples", lambda *args, **kwargs: [])
        tasks = {name: TASKS[name](data_dir=root) for name in TASKS}
    return {name: (task.labels, task.text_fields) for name, task in tasks.items()}


# prompt files of generation tasks hold patterns only: tests/test_generation.py checks them
PROMPT_FILES = sorted(p for p in (ROOT / "templates").glob("*.yaml") if p.stem not in TEXT_TASKS)


@pytest.mark.parametrize("path", PROMPT_FILES, ids=lambda p: p.stem)
def test_shipped_prompt_files_fit_their_task(path, task_shapes):
    import yaml

    assert yaml.safe_load(path.read_text())["task"] == path.stem
    labels, text_fields = task_shapes[path.stem]
    patterns, verbalizers = load_prompt_file(path)
    assert load_prompt_file(path.stem) == (patterns, verbalizers)  # found by task name too
    for pattern in patterns:
        template = Template(pattern)
        template.check_fields(text_fields)
        assert template.fields and set(template.fields) <= set(text_fields)
    for verbalizer in verbalizers:
        assert sorted(verbalizer) == sorted(labels)
        assert all(words and all(isinstance(w, str) and w for w in words) for words in verbalizer.values())


def test_shipped_yes_no_and_true_false_words_keep_their_spelling():
    assert load_prompt_file("boolq")[1][0] == {"false": ["No"], "true": ["Yes"]}
    assert load_prompt_file("cb")[1] == [{"entailment": ["True"], "contradiction": ["False"], "neutral": ["Neither"]},
                                        {"entailment": ["Yes"], "contradiction": ["No"], "neutral": ["Maybe"]}]
    assert load_prompt_file("rte")[1][1] == {"entailment": ["Yes"], "not_entailment": ["No"]}


# fact-probing configs (task: lama) have a schema of their own: tests/test_lama.py checks them
# and generation configs (their task writes text) tests/test_generation.py
EXPERIMENTS = sorted(p for p in (ROOT / "experiments").glob("*.yaml")
                     if "name: lama\n" not in p.read_text() and not any(is_generation(d.get("task"))
                                                                         for d in load_yaml(p.read_text())))


def shape_of(cfg, task_shapes):
    """A config's task's labels and text fields: a built-in task's, or a task section's (no file read)."""
    from prompting.tasks.spec import task_shape

    return task_shape(cfg.task) if "train" in cfg.task else task_shapes[cfg.task["name"]]


@pytest.mark.skipif(not EXPERIMENTS, reason="no experiments/*.yaml")
@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_shipped_experiment_configs_parse_and_fit_their_tasks(path, task_shapes):
    load = getattr(config_module, "load_configs", None)
    configs = load(path) if load else [load_config(path)]
    for cfg in configs:
        labels, text_fields = shape_of(cfg, task_shapes)
        assert cfg.prompts and cfg.methods
        for pattern, verbalizer in cfg.prompts + [(m.template, m.verbalizer) for m in cfg.methods]:
            if pattern:
                Template(pattern).check_fields(text_fields)
            if verbalizer:
                assert sorted(verbalizer) == sorted(labels)


@pytest.mark.skipif(not EXPERIMENTS, reason="no experiments/*.yaml")
@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_shipped_experiment_methods_build_and_encode(path, task_shapes, tiny_causal_lm):
    """Every method of a shipped config builds with its parameters and encodes an example of its task."""
    from prompting.core.data import Example
    from prompting.methods import build_method
    from prompting.methods.choices import make_verbalizer

    for cfg in config_module.load_configs(path):
        labels, text_fields = shape_of(cfg, task_shapes)
        example = Example({name: "a short text" for name in text_fields}, labels[0])
        for spec in cfg.methods:
            template = spec.template or cfg.prompts[0][0]
            verbalizer = make_verbalizer(spec.verbalizer or cfg.prompts[0][1])
            method = build_method(spec.name, tiny_causal_lm, template, verbalizer, labels=labels, **spec.params)
            # demonstrations (icl, "+ demos") come from the run's training split (up to 4 per class here)
            method.set_demonstration_pool([Example(example.fields, label) for label in labels for _ in range(4)], 1)
            encoded = method.encode([example])
            assert len(encoded) == 1, (cfg.name, spec.label)


def test_a_method_may_run_its_own_training_seeds(tiny_causal_lm, tmp_path):
    from prompting.experiment.harness import Experiment
    from prompting.core.settings import Protocol
    from tests.test_harness import PATTERNS, VERBALIZER, toy_task

    cfg = parse_config(config_with(methods=[{"name": "manual", "train": False},
                                            {"name": "soft", "train_seeds": [7], "calibration": "contextual"},
                                            {"name": "ptuning"}]))
    assert [m.train_seeds for m in cfg.methods] == [None, [7], None]
    assert [m.calibration for m in cfg.methods] == [(), ("contextual",), ()]  # both keys on one method
    exp = Experiment(tiny_causal_lm, toy_task(), cfg.methods, [(PATTERNS[0], VERBALIZER)],
                     Protocol(k=4, data_seeds=(13, 21), train_seeds=(1, 2)), output_dir=tmp_path)
    seeds = {}
    for run in exp.plan():
        seeds.setdefault(run.spec.name, set()).add(run.train_seed)
    assert seeds == {"manual": {None}, "soft": {7}, "ptuning": {1, 2}}
    assert "methods[0]: train_seeds=[1] is given but train is false" in error(
        config_with(methods=[{"name": "manual", "train": False, "train_seeds": [1]}]))
    assert "methods[0].train_seeds: 'x' is not valid; give a non-empty list of integers" in error(
        config_with(methods=[{"name": "soft", "train_seeds": "x"}]))
