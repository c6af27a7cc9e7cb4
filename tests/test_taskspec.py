"""Tasks described in a config: headerless files, label ids and names, one-file splits, nested JSON,
dev files and the protocol they get; every error names the file, row, column and what exists."""

import importlib.util
import json
from pathlib import Path

import pytest

from prompting.config.experiment import ConfigError, load_config
from prompting.core.data import DataError, Example, load_examples
from prompting.experiment.harness import Experiment
from prompting.tasks.classification import Classification, protocol_name
from prompting.core.settings import Protocol
from prompting.tasks.spec import load_task_spec

TREC_LABELS = {0: "ABBR", 1: "DESC", 2: "ENTY", 3: "HUM", 4: "LOC", 5: "NUM"}
SST5_NAMES = {1: "very negative", 2: "negative", 3: "neutral", 4: "positive", 5: "very positive"}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def trec_file(path: Path, per_class: int = 6) -> Path:
    """TREC-style: no header, the label id in column 0, the question in column 1 (tab-separated)."""
    rows = [f"{label}\tquestion {i} about class {label} ?" for label in TREC_LABELS for i in range(per_class)]
    return write(path, "\n".join(rows) + "\n")


def sst5_file(path: Path, per_class: int = 4) -> Path:
    """SST-5-style: no header, the sentence in column 0 (quoted, with commas), the rating 1..5 in column 1."""
    rows = [f'"a film, rated {label}, number {i}",{label}' for label in SST5_NAMES for i in range(per_class)]
    return write(path, "\n".join(rows) + "\n")


# ------------------------------------------------------------------------------------ headerless files
def test_a_headerless_trec_style_tsv_loads_with_a_config_alone(tmp_path):
    trec_file(tmp_path / "trec_train.tsv")
    trec_file(tmp_path / "trec_test.tsv", per_class=2)
    config = write(tmp_path / "trec.yaml", """
task: {name: trec, train: trec_train.tsv, test: trec_test.tsv, header: false, label_column: 0,
       text_columns: [1], labels: {0: ABBR, 1: DESC, 2: ENTY, 3: HUM, 4: LOC, 5: NUM}}
templates: {patterns: ["{text_a} The answer is a {mask}"],
            verbalizers: [{ABBR: [abbreviation], DESC: [description], ENTY: [thing], HUM: [person],
                           LOC: [place], NUM: [number]}]}
methods: [{name: manual, train: false}]
""")
    cfg = load_config(config)
    task = load_task_spec(cfg.task, cfg.base)
    assert task.labels == tuple(TREC_LABELS.values()) and task.text_fields == ("text_a",)
    assert len(task.train) == 36 and len(task.test) == 12
    first = task.train[0]
    assert first.fields == {"text_a": "question 0 about class 0 ?"} and first.label == "ABBR"


def test_a_headerless_sst5_style_csv_with_label_ids_1_to_5(tmp_path):
    path = sst5_file(tmp_path / "sst5.csv")
    examples = load_examples(path, {"text_a": 0}, label_column=1, header=False,
                             label_map=SST5_NAMES, labels=list(SST5_NAMES.values()))
    assert examples[0].fields == {"text_a": "a film, rated 1, number 0"}  # the quoted comma stays text
    assert [e.label for e in examples[::4]] == list(SST5_NAMES.values())


def test_label_names_in_the_file_are_checked_against_the_labels_list(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\na,pos\nb,neg\nc,neutral\n")
    assert [e.label for e in load_examples(path, {"text_a": "text"}, labels=["neg", "pos", "neutral"])] == \
        ["pos", "neg", "neutral"]
    with pytest.raises(DataError) as err:
        load_examples(path, {"text_a": "text"}, labels=["neg", "pos"])
    message = str(err.value)
    assert str(path) in message and "row 2" in message and "column 'label'" in message
    assert "label 'neutral' is not one of the task's labels (neg, pos)" in message and "line 4" in message


def test_headerless_errors_name_the_position_and_the_columns_there(tmp_path):
    path = trec_file(tmp_path / "trec.tsv", per_class=1)
    with pytest.raises(DataError) as err:
        load_examples(path, {"text_a": 3}, label_column=0, header=False)
    assert f"{path}: row 0 has no value in column 3 (by position); the row has 2 columns: 0 to 1 by position" \
        in str(err.value)
    with pytest.raises(DataError) as err:
        load_examples(path, {"text_a": "question"}, label_column=0, header=False)
    assert "has no column 'question'" in str(err.value) and "name columns by position" in str(err.value)


def test_a_header_file_takes_columns_by_position_too(tmp_path):
    path = write(tmp_path / "data.tsv", "label\tsentence\n1\tgood\n")
    assert load_examples(path, {"text_a": 1}, label_column=0)[0].fields == {"text_a": "good"}


# ------------------------------------------------------------------------------------ one-file split
def test_one_file_is_split_into_train_and_a_stratified_seeded_test_set(tmp_path):
    trec_file(tmp_path / "trec.tsv", per_class=10)
    spec = {"name": "trec", "train": str(tmp_path / "trec.tsv"), "header": False, "label_column": 0,
            "text_columns": [1], "labels": TREC_LABELS, "split": {"test": 0.2, "seed": 3}}
    task = load_task_spec(spec)
    assert (len(task.train), len(task.test)) == (48, 12)
    assert sorted(e.label for e in task.test) == sorted(list(TREC_LABELS.values()) * 2)  # 2 per class
    assert not {e["text_a"] for e in task.train} & {e["text_a"] for e in task.test}
    again = load_task_spec(spec)
    assert [e["text_a"] for e in again.test] == [e["text_a"] for e in task.test]
    other = load_task_spec({**spec, "split": {"test": 12, "seed": 4}})
    assert len(other.test) == 12 and [e["text_a"] for e in other.test] != [e["text_a"] for e in task.test]


def test_a_split_too_small_for_every_class_says_so(tmp_path):
    trec_file(tmp_path / "trec.tsv", per_class=2)
    spec = {"name": "trec", "train": str(tmp_path / "trec.tsv"), "header": False, "label_column": 0,
            "text_columns": [1], "labels": TREC_LABELS, "split": {"test": 0.1}}
    with pytest.raises(DataError, match="cannot carve a stratified test set from 12 examples"):
        load_task_spec(spec)


# ------------------------------------------------------------------------------------ nested JSON
def test_jsonl_nested_fields_and_list_positions(tmp_path):
    rows = [{"meta": {"text": "first", "tags": ["x", "y"]}, "gold": {"id": 1}},
            {"meta": {"text": "second", "tags": ["z", "w"]}, "gold": {"id": 0}}]
    path = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    examples = load_examples(path, {"text_a": "meta.text", "text_b": "meta.tags.1"}, label_column="gold.id")
    assert [(e.fields, e.label) for e in examples] == [({"text_a": "first", "text_b": "y"}, "1"),
                                                       ({"text_a": "second", "text_b": "w"}, "0")]
    with pytest.raises(DataError) as err:
        load_examples(path, {"text_a": "meta.txt"}, label_column="gold.id")
    assert f"{path}: row 0 has no column 'meta.txt'; 'meta' has keys: text, tags" in str(err.value)


def test_a_field_can_put_words_for_a_columns_values(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"p": "It broke.", "q": "cause", "label": 0}\n{"p": "x", "q": "why", "label": 1}\n')
    fields = {"premise": "p", "because": {"column": "q", "map": {"cause": "because", "effect": "so"}}}
    with pytest.raises(DataError) as err:
        load_examples(path, fields)
    assert "row 1" in str(err.value) and "'why'" in str(err.value) and "mapped values: cause, effect" in str(err.value)
    rows = load_examples(write(tmp_path / "ok.jsonl", '{"p": "It broke.", "q": "cause", "label": 0}\n'), fields)
    assert rows[0].fields == {"premise": "It broke.", "because": "because"}


@pytest.mark.skipif(importlib.util.find_spec("datasets") is None, reason="the datasets package is not installed")
def test_parquet_reads_by_the_same_column_names(tmp_path):
    import datasets

    path = tmp_path / "d.parquet"
    datasets.Dataset.from_list([{"sentence": "good", "label": 1}, {"sentence": "bad", "label": 0}]).to_parquet(str(path))
    assert [(e["text_a"], e.label) for e in load_examples(path, {"text_a": "sentence"})] == [("good", "1"), ("bad", "0")]


def test_parquet_without_datasets_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "datasets" else object())
    with pytest.raises(DataError, match=r"read with the `datasets` package, which is not installed"):
        load_examples(write(tmp_path / "d.parquet", "x"))


# ------------------------------------------------------------------------------------ config checks
@pytest.mark.parametrize("task, message", [
    ({"name": "t", "train": "a.tsv", "test": "b.tsv", "labels": [0, 1], "header": "no"},
     "task.header: 'no' is not valid; use true or false"),
    ({"name": "t", "train": "a.tsv", "test": "b.tsv", "labels": [0, 1], "header": False, "text_columns": [1]},
     "header: false needs label_column"),
    ({"name": "t", "train": "a.tsv", "labels": [0, 1]}, "a custom task needs 'test' (a file), or split"),
    ({"name": "t", "train": "a.tsv", "test": "b.tsv", "labels": [0, 1], "split": {"test": 0.2}},
     "give a test file or split, not both"),
    ({"name": "t", "train": "a.tsv", "labels": [0, 1], "split": {"test": 1.5}}, "task.split.test: 1.5 is not valid"),
    ({"name": "t", "train": "a.tsv", "test": "b.tsv", "labels": [0, 1], "protocol": "fixed"},
     "protocol: fixed uses the train and dev files as given; give a dev file"),
    ({"name": "t", "train": "a.tsv", "test": "b.tsv", "labels": [0, 1], "protocol": "lmbff"},
     "task.protocol: 'lmbff' is not valid; choose one of kshot, fixed"),
    ({"name": "t", "train": "a.tsv", "test": "b.tsv", "labels": {0: "a"}, "label_map": {0: "a"}},
     "labels given as a map already map the file's values; drop label_map"),
    ({"name": "t", "train": "a.tsv", "test": "b.tsv", "labels": [0, 1], "text_columns": [-1]},
     "task.text_columns[0]: -1 is not a column"),
    ({"name": "t", "train": "a.tsv", "test": "b.tsv", "labels": [0, 1, 2], "choices": ["c1", "c2"]},
     "3 labels for 2 choices"),
    ({"name": "sst2", "data_dir": "x", "header": False}, "the built-in task 'sst2' takes only name, data_dir"),
])
def test_task_sections_that_do_not_fit_are_refused_before_any_file_is_read(task, message):
    from prompting.config.experiment import parse_config

    with pytest.raises(ConfigError) as err:
        parse_config({"task": task, "templates": {"patterns": ["{text_a} {mask}"], "verbalizers": [{0: "a", 1: "b"}]},
                      "methods": [{"name": "manual", "train": False}]})
    assert message in str(err.value)


# ------------------------------------------------------------------------------------ protocols
def _binary_files(tmp_path: Path) -> dict:
    for name, n in (("train", 20), ("dev", 12), ("test", 6)):
        write(tmp_path / f"{name}.tsv", "text\tlabel\n" + "".join(f"{name} {i}\t{i % 2}\n" for i in range(n)))
    return {"name": "toy", "train": str(tmp_path / "train.tsv"), "dev": str(tmp_path / "dev.tsv"),
            "test": str(tmp_path / "test.tsv"), "fields": {"text_a": "text"}, "labels": [0, 1]}


def test_a_dev_file_keeps_the_kshot_sampler_and_draws_dev_from_it(tiny_causal_lm, tmp_path, capsys):
    task = load_task_spec(_binary_files(tmp_path))
    assert not task.fixed_split and protocol_name(task) == "kshot-dev-file"
    exp = Experiment(tiny_causal_lm, task, [], [("{text_a} {mask}", {0: ["bad"], 1: ["good"]})],
                     Protocol(k=3, data_seeds=(13, 21)))
    train, dev = exp.split(13)
    assert len(train) == 6 and len(dev) == 6  # K per class from train, K per class from the dev file
    assert all(e["text_a"].startswith("train") for e in train) and all(e["text_a"].startswith("dev") for e in dev)
    assert sorted(e.label for e in train) == sorted(e.label for e in dev) == ["0"] * 3 + ["1"] * 3
    assert exp.split(21) != exp.split(13)
    said = Classification(task).describe(exp.protocol)
    assert "protocol kshot-dev-file: K = 3 per class from train (20 examples), dev K = 3 per class from the dev file (12" in said


def test_protocol_fixed_uses_the_files_as_given_and_is_recorded(tiny_causal_lm, tmp_path, capsys):
    from prompting.experiment.harness import MethodSpec

    task = load_task_spec({**_binary_files(tmp_path), "protocol": "fixed"})
    exp = Experiment(tiny_causal_lm, task, [MethodSpec("manual", train=False)],
                     [("{text_a} {mask}", {0: ["bad"], 1: ["good"]})], Protocol(k=3, data_seeds=(13, 21)),
                     output_dir=tmp_path / "out")
    assert [len(s) for s in exp.split(13)] == [20, 12]
    records = exp.run(progress=False)
    assert len(records) == 1 and records[0]["protocol"] == "fixed" and records[0]["k"] is None
    assert records[0]["n_train"] == 20 and records[0]["n_dev"] == 12 and records[0]["n_test"] == 6
    err = capsys.readouterr().err
    assert "task 'toy': protocol fixed: the train and dev sets as given (20 and 12 examples); k is not used" in err


def test_multiple_choice_choices_from_a_list_column(tmp_path):
    rows = [{"q": "Which?", "options": ["a", "b", "c"], "answer": "B"}, {"q": "Two?", "options": ["d", "e"], "answer": "A"}]
    path = write(tmp_path / "mc.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    spec = {"name": "mc", "train": str(path), "test": str(path), "fields": {"question": "q"},
            "choices": {"column": "options", "count": 3}, "label_column": "answer", "labels": ["A", "B", "C"]}
    with pytest.raises(DataError) as err:
        load_task_spec(spec)
    assert f"{path}: row 1: column 'options' has 2 choices; the task has 3" in str(err.value)
    write(path, json.dumps(rows[0]) + "\n")
    task = load_task_spec(spec)
    assert task.choices == ("choice1", "choice2", "choice3") and task.labels == ("A", "B", "C")
    assert task.train[0] == Example({"question": "Which?", "choice1": "a", "choice2": "b", "choice3": "c"}, "B", 0)
