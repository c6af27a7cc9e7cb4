"""Data kept with Hugging Face `datasets`: a folder saved with save_to_disk, a parquet file and a dataset in
the local Hugging Face cache load by the same task description as a CSV file and give the same records; a
dataset that is not in the cache fails at once, offline, saying how to get it."""

import csv
import socket

import pytest

from conftest import NEGATIVE, POSITIVE, SUBJECTS
from prompting.cli import main
from prompting.config.experiment import ConfigError, parse_config
from prompting.config.schema import json_schema
from prompting.core.data import DataError
from prompting.experiment.results import ResultsStore
from prompting.tasks.spec import load_task_spec

datasets = pytest.importorskip("datasets")

ROWS = [{"sentence": f"{s} was {adjective} .", "label": label, "idx": i}
        for i, (s, (adjective, label)) in enumerate((s, pair) for s in SUBJECTS[:6]
                                                     for pair in ((POSITIVE[0], 1), (NEGATIVE[0], 0)))]
DESCRIBED = {"fields": {"text_a": "sentence"}, "labels": {0: "negative", 1: "positive"}}
TEMPLATES = """templates: {patterns: ["{text_a} It was {mask}."], verbalizers: [{negative: [bad], positive: [good]}]}
methods: [{name: manual, train: false}]
fewshot: {k: 2, data_seeds: [13]}
device: cpu
"""


def dataset_dict():
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"]),
                                  "idx": datasets.Value("int32")})
    return datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS, features=features),
                                 "validation": datasets.Dataset.from_list(ROWS[:6], features=features)})


@pytest.fixture
def sources(tmp_path):
    """The same train and test examples as CSV files, parquet files, a saved DatasetDict and its split folders."""
    data = dataset_dict()
    for split, rows in (("train", ROWS), ("validation", ROWS[:6])):
        with open(tmp_path / f"{split}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, ["sentence", "label", "idx"])
            writer.writeheader()
            writer.writerows(rows)
        data[split].to_parquet(str(tmp_path / f"{split}.parquet"))
    data.save_to_disk(str(tmp_path / "saved"))
    return tmp_path


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """A Hugging Face datasets cache holding `tiny_sst2` (subset sst2) laid out as load_dataset lays out a
    hub download; the library is pointed at it as HF_DATASETS_CACHE would."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    data, cache = dataset_dict(), tmp_path / "hf-cache"
    files = {}
    for split in data:
        files[split] = str(tmp_path / f"hub-{split}.parquet")
        data[split].to_parquet(files[split])
    Parquet(cache_dir=str(cache), dataset_name="tiny_sst2", config_name="sst2", config_id="sst2", hash="0" * 40,
            data_files=files, features=data["train"].features).download_and_prepare()
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    return cache


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to reach the network fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the library tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


SECTIONS = {
    "csv": {"train": "train.csv", "test": "validation.csv"},
    "parquet": {"train": "train.parquet", "test": "validation.parquet"},
    "saved split folders": {"train": "saved/train", "test": "saved/validation"},
    "saved DatasetDict": {"dataset": "saved", "test": "validation"},
    "hf cache": {"hf": "tiny_sst2", "subset": "sst2", "train": "train", "test": "validation"},
}


def test_every_source_gives_the_csv_files_examples(sources, hf_cache, offline):
    loaded = {name: load_task_spec({"name": "toy", **section, **DESCRIBED}, base=sources)
              for name, section in SECTIONS.items()}
    csv_task = loaded.pop("csv")
    assert len(csv_task.train) == 12 and csv_task.train[1].fields == {"text_a": "the movie was terrible ."}
    assert csv_task.train[1].label == "negative"
    for name, task in loaded.items():
        assert (task.train, task.test, task.labels) == (csv_task.train, csv_task.test, csv_task.labels), name
    assert loaded["hf cache"].description == "hf tiny_sst2 (sst2): train split 'train', test split 'validation'"


def test_a_saved_dataset_and_a_parquet_file_give_the_same_records_as_the_csv_file(
        sources, hf_cache, offline, tiny_llama_dir, capsys):
    records = {}
    for name in ("csv", "parquet", "saved DatasetDict", "hf cache"):
        section = {"name": "toy", **SECTIONS[name], **DESCRIBED}
        config = sources / "exp.yaml"
        config.write_text(f"model: {tiny_llama_dir}\ntask: {section}\n{TEMPLATES}")
        out = sources / f"out-{name.replace(' ', '-')}"
        assert main(["run", str(config), "--output-dir", str(out), "-q", "--no-summary"]) == 0
        records[name] = [{k: v for k, v in r.items() if k not in ("seconds", "peak_memory_mb")}
                         for r in ResultsStore(out).records()]
    assert len(records["csv"]) == 1 and records["csv"][0]["n_test"] == 6
    assert all(found == records["csv"] for found in records.values())


def test_the_dataset_column_can_be_mapped_like_a_files(sources):
    """Splits of a saved dataset take a slice, fields maps and a carved test set as a file does."""
    task = load_task_spec({"name": "toy", "dataset": "saved", "split": {"test": 4, "seed": 0},
                           "fields": {"text_a": "sentence", "mood": {"column": "label", "map": {0: "sad", 1: "glad"}}},
                           "labels": {0: "negative", 1: "positive"}}, base=sources)
    assert len(task.train) == 8 and len(task.test) == 4
    assert all(e.fields["mood"] == {"negative": "sad", "positive": "glad"}[e.label] for e in task.train)


def test_a_dataset_missing_from_the_cache_fails_at_once_saying_how_to_get_it(hf_cache, offline):
    with pytest.raises(DataError) as err:
        load_task_spec({"name": "sst2", "hf": "nyu-mll/glue", "subset": "sst2", "test": "validation", **DESCRIBED})
    message = str(err.value)
    assert message.startswith(f"hf nyu-mll/glue (subset sst2) is not in the Hugging Face datasets cache '{hf_cache}'")
    assert "cached there: tiny_sst2" in message and "never downloads" in message
    assert "datasets.load_dataset('nyu-mll/glue', 'sst2')" in message and "HF_DATASETS_CACHE" in message
    with pytest.raises(DataError, match="the cache holds its subsets sst2"):
        load_task_spec({"name": "t", "hf": "tiny_sst2", "subset": "cola", "test": "validation", **DESCRIBED})
    with pytest.raises(DataError, match="has no split 'test'; its splits: train, validation"):
        load_task_spec({"name": "t", "hf": "tiny_sst2", "subset": "sst2", "test": "test", **DESCRIBED})


def test_a_missing_split_of_a_saved_dataset_names_the_splits_it_has(sources, capsys, tiny_llama_dir):
    with pytest.raises(DataError, match="dataset folder '.*saved' has no split 'test'; its splits: train, validation"):
        load_task_spec({"name": "t", "dataset": "saved", "test": "test", **DESCRIBED}, base=sources)
    with pytest.raises(DataError, match=r"holds the splits train, validation \(a DatasetDict saved with save_to_disk\); "
                                        "give one split's folder"):
        load_task_spec({"name": "t", "train": "saved", "test": "validation.csv", **DESCRIBED}, base=sources)
    config = sources / "exp.yaml"  # a command: one line, before the model loads
    config.write_text(f"model: {sources / 'no-model'}\ntask: {{name: t, dataset: saved, test: test, "
                      f"fields: {{text_a: sentence}}, labels: {{0: negative, 1: positive}}}}\n{TEMPLATES}")
    assert main(["run", str(config), "--output-dir", str(sources / "out")]) == 2
    assert "has no split 'test'; its splits: train, validation" in capsys.readouterr().err


@pytest.mark.parametrize("section, expected", [
    ({"hf": "a/b", "dataset": "d", "test": "t"}, "task: give hf (a dataset in the Hugging Face cache) or dataset"),
    ({"subset": "sst2", "train": "a.csv", "test": "t.csv"}, "task.subset names a subset of an hf dataset; give hf"),
    ({"hf": "a/b", "test": "t", "header": False}, "task.header is for files; the splits of task.hf are read as"),
    ({"dataset": "d", "test": "t", "format": "csv"}, "task.format is for files; the splits of task.dataset"),
    ({"hf": "", "test": "t"}, "task.hf: '' is not valid; give a dataset's id, e.g. nyu-mll/glue"),
])
def test_the_dataset_keys_are_checked_with_the_configs_words(section, expected):
    config = {"task": {"name": "t", **section, **DESCRIBED}, "methods": [{"name": "manual"}],
              "templates": {"patterns": ["{text_a} {mask}"], "verbalizers": [{"negative": ["a"], "positive": ["b"]}]}}
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        parse_config(config)


def test_the_json_schema_has_the_dataset_keys():
    custom = json_schema()["$defs"]["CustomTask"]
    assert {"hf", "subset", "dataset"} <= set(custom["properties"])
    assert {"required": ["hf"]} in custom["anyOf"]
