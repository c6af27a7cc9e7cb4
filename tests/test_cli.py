"""The `prompting` command line, in-process through ``main([...])``: report files, error exits, models."""

import csv
import json
from pathlib import Path

import pytest

from conftest import NEGATIVE, POSITIVE, SUBJECTS
from prompting.cli import main
from prompting.core.ids import run_id
from prompting.experiment.results import ResultsStore

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def record(task, label, template, data_seed, train_seed, dev, test, collapsed=False):
    settings = {"task": task, "method": "manual", "label": label, "template": template,
                "verbalizer": {"0": ["bad"], "1": ["good"]}, "model": "tiny", "k": 4,
                "data_seed": data_seed, "train_seed": train_seed}
    return {**settings, "run_id": run_id(settings), "dev": {"accuracy": dev, "macro_f1": dev},
            "test": {"accuracy": test, "macro_f1": test}, "collapsed": collapsed,
            "trainable_params": 1234 if train_seed else 0, "seconds": 3.0}


RECORDS = [
    # PET: selected test 0.7 (seed 13, dev 0.75 tie -> train seed 1) and 0.65 (seed 21): 67.5 ± 3.5
    record("toy", "PET", "{text_a} It was {mask}.", 13, 1, 0.75, 0.7),
    record("toy", "PET", "{text_a} It was {mask}.", 13, 2, 0.75, 0.8),
    record("toy", "PET", "{text_a} It was {mask}.", 21, 1, 0.9, 0.65),
    record("toy", "PET", "{text_a} It was {mask}.", 21, 2, 0.5, 0.9, collapsed=True),
    record("toy", "manual zero-shot", "{text_a} It was {mask}.", 13, None, 0.5, 0.5),
    record("toy", "manual zero-shot", "{text_a} It was {mask}.", 21, None, 0.5, 0.5),
    record("other", "PET", "Review: {text_a} {mask}", 13, 1, 0.6, 0.61),
]


def results_dir(tmp_path):
    store = ResultsStore(tmp_path / "runs")
    for r in RECORDS:
        store.append(r)
    return store.directory


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------------------- report
def test_report_writes_markdown_csv_and_png_plots(tmp_path, capsys):
    directory = results_dir(tmp_path)
    assert main(["report", str(directory)]) == 0
    report = (directory / "report.md").read_text()
    assert capsys.readouterr().out.startswith(report.rstrip("\n")[:200])

    assert "## toy" in report and "## other" in report
    pet = [line for line in report.splitlines() if line.startswith("| PET |") and "It was" in line]
    # selected runs: 0.7 and 0.65; all four: mean 0.7625, sample std sqrt(0.036875 / 3)
    assert pet and "67.5 ± 3.5" in pet[0] and "76.2 ± 11.1" in pet[0] and "65.0–90.0" in pet[0]
    zero = [line for line in report.splitlines() if line.startswith("| manual zero-shot |")]
    assert zero and "50.0 ± 0.0" in zero[0]

    for task in ("toy", "other"):
        for name in ("by_method", "runs", "dev_vs_test"):
            png = directory / "plots" / f"{task}_{name}.png"
            assert png.read_bytes()[:8] == PNG_MAGIC, png
            assert f"plots/{png.name}" in report

    summary = {(r["task"], r["label"]): r for r in rows(directory / "summary.csv")}
    assert set(summary) == {("toy", "PET"), ("toy", "manual zero-shot"), ("other", "PET")}
    assert float(summary[("toy", "PET")]["test_selected_mean"]) == pytest.approx(0.675)
    assert (summary[("toy", "PET")]["runs"], summary[("toy", "PET")]["collapsed"]) == ("4", "1")

    runs = rows(directory / "runs.csv")
    assert len(runs) == len(RECORDS)
    assert sorted(r["run_id"] for r in runs if r["selected"] == "True") == sorted(
        RECORDS[i]["run_id"] for i in (0, 2, 4, 5, 6))


def test_by_method_error_bars_are_the_test_interval_on_one_split_and_the_std_over_several():
    from prompting.reporting.plots import bar_errors

    def row(mean, std, splits, interval):
        return {"test_selected": {"mean": mean, "std": std}, "data_seeds": splits, "test_interval": interval}

    # FewGLUE: one fixed split, so the std over data splits is 0 and says nothing; the bars are the
    # asymmetric 95% test-sample interval
    means, (below, above), labels, what = bar_errors([row(0.556, 0.0, 1, (0.495, 0.614)),
                                                      row(0.5, 0.0, 1, (0.40, 0.62))])
    assert means == pytest.approx([55.6, 50.0])
    assert below == pytest.approx([6.1, 10.0]) and above == pytest.approx([5.8, 12.0])
    assert labels == ["55.6 [49.5–61.4]", "50.0 [40.0–62.0]"] and "interval" in what
    # several data splits: the std across them, symmetric
    means, (below, above), labels, what = bar_errors([row(0.8, 0.03, 5, (0.77, 0.83)), row(0.7, 0.0, 5, None)])
    assert below == above == pytest.approx([3.0, 0.0])
    assert labels == ["80.0 ± 3.0", "70.0 ± 0.0"] and "std over data seeds" in what
    # one split but a row without saved predictions (no interval): falls back to the std
    assert bar_errors([row(0.6, 0.0, 1, None)])[2] == ["60.0 ± 0.0"]


def test_report_without_plots_and_on_an_empty_directory(tmp_path, capsys):
    directory = results_dir(tmp_path)
    assert main(["report", str(directory), "--no-plots", "--metric", "macro_f1"]) == 0
    assert (directory / "report.md").exists() and not (directory / "plots").exists()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prompting report: error: no run records in") and err.count("\n") == 1


def test_report_on_a_corrupt_results_file_exits_2_naming_the_line(tmp_path, capsys):
    directory = results_dir(tmp_path)
    with open(directory / "results.jsonl", "a") as f:
        f.write('{"run_id": "x", ')
    assert main(["report", str(directory)]) == 2
    assert f"line {len(RECORDS) + 1} is not a complete JSON record" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ run and eval
@pytest.fixture
def tiny_model_dir(tiny_llama_dir):
    return tiny_llama_dir


@pytest.fixture
def sst2_dir(tmp_path):
    """A tiny stand-in for the GLUE SST-2 folder (train.tsv, test.tsv)."""
    folder = tmp_path / "sst2"
    folder.mkdir()
    lines = [f"{s} was {adjective} .\t{label}" for s in SUBJECTS[:4]
             for adjective, label in ((POSITIVE[0], 1), (NEGATIVE[0], 0))]
    (folder / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(lines) + "\n")
    (folder / "test.tsv").write_text("sentence\tlabel\n" + "\n".join(lines[:4]) + "\n")
    return folder


def write_config(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_run_with_a_bad_config_key_exits_2_with_one_line(tmp_path, capsys):
    config = write_config(tmp_path, "task: sst2\nmethods: [{name: manual}]\nmodle: tiny\n")
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prompting run: error: ")
    assert "unknown key 'modle'" in err and "allowed keys:" in err
    assert not (tmp_path / "out").exists()


def test_run_with_a_missing_model_path_names_the_offline_alternatives(tmp_path, sst2_dir, capsys):
    missing = tmp_path / "no-such-model"
    config = write_config(tmp_path, f"model: {missing}\ntask: {{name: sst2, data_dir: {sst2_dir}}}\n"
                                    "fewshot: {k: 2, data_seeds: [13]}\nmethods: [{name: manual, train: false}]\n")
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith("prompting run: error: model ") and str(missing) in first
    assert "smollm2-135m" in err and "Traceback" not in err


def test_eval_with_a_missing_model_or_data_dir_exits_2(tmp_path, sst2_dir, capsys):
    assert main(["eval", "--task", "sst2", "--data-dir", str(sst2_dir), "--k", "2",
                 "--model", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prompting eval: error: model ") and "smollm2-135m" in err
    assert main(["eval", "--task", "sst2", "--data-dir", str(tmp_path / "missing"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "task 'sst2': data_dir" in err and "is not a folder" in err


def test_eval_scores_every_pattern_and_verbalizer_zero_shot(tmp_path, sst2_dir, tiny_model_dir, capsys):
    out = tmp_path / "out"
    assert main(["eval", "--task", "sst2", "--data-dir", str(sst2_dir), "--k", "2", "--model", str(tiny_model_dir),
                 "--output-dir", str(out), "-q"]) == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 4 * 3  # templates/sst2.yaml: 4 patterns x 3 verbalizers
    assert all(r["n_test"] == 4 and not r["train"] for r in records)
    stdout = capsys.readouterr().out
    assert "| # | template | verbalizer | accuracy | macro-F1 |" in stdout and "zero-shot on sst2 (4 test examples" in stdout


def test_run_writes_records_and_the_report(tmp_path, sst2_dir, tiny_model_dir, capsys):
    config = write_config(tmp_path, f"""
model: {tiny_model_dir}
device: cpu
task: {{name: sst2, data_dir: {sst2_dir}}}
fewshot: {{k: 2, data_seeds: [13, 21]}}
templates: {{file: sst2, patterns: [1], verbalizers: [1]}}
methods: [{{name: manual, train: false}}]
""")
    out = tmp_path / "out"
    assert main(["run", str(config), "--output-dir", str(out), "-q", "--test-limit", "3"]) == 0
    records = ResultsStore(out).records()
    assert len(records) == 2 and all(r["n_test"] == 3 and r["test_limit"] == 3 for r in records)
    assert (out / "report.md").exists() and (out / "summary.csv").exists()
    printed = capsys.readouterr().out
    assert "2 runs in" in printed
    # the printed table is report.md's: the test mean's bootstrap interval is filled in, not "–"
    row = next(line for line in printed.splitlines() if line.startswith("| manual zero-shot"))
    report_row = next(line for line in (out / "report.md").read_text().splitlines()
                      if line.startswith("| manual zero-shot"))
    assert row == report_row and "| – |" not in row


# ------------------------------------------------------------------------------------------ models
def test_models_lists_the_offline_aliases(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "gemma3-270m" in out
    assert "local checkpoint folder" in out


# ----------------------------------------------------------------------------------- search-labels
def printed_blocks(stdout):
    """``{label: [(word, score), ...]}`` from the per-label blocks that search-labels prints."""
    blocks = {}
    for chunk in stdout.split("\n\n"):
        lines = chunk.strip("\n").splitlines()
        if lines and lines[0].startswith("label ") and lines[0].endswith(":"):
            assert lines[1].split() == ["rank", "word", "score"]
            rows = [line.split() for line in lines[2:]]
            assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))
            blocks[lines[0][len("label "):-1]] = [(r[1], float(r[2])) for r in rows]
    return blocks


@pytest.mark.parametrize("method", ["classifier", "likelihood"])
def test_search_labels_prints_one_block_per_label_with_the_top_words(sst2_dir, tiny_model_dir, method, capsys):
    from prompting.config.experiment import builtin_templates, load_prompt_file

    assert main(["search-labels", "--task", "sst2", "--data-dir", str(sst2_dir), "--model", str(tiny_model_dir),
                 "--k", "2", "--method", method, "--top", "4", "-q"]) == 0
    out = capsys.readouterr().out
    blocks = printed_blocks(out)
    assert list(blocks) == ["0", "1"]
    for ranked in blocks.values():
        assert len(ranked) == 4 and all(w.isalpha() and len(w) >= 2 for w, _ in ranked)
        assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    assert f"by {method} ranking" in out and "4 train examples (K = 2 per class, data seed 13)" in out
    pattern0 = load_prompt_file(builtin_templates()["sst2"])[0][0]  # default: pattern 0 of the built-in file
    assert f"template: {pattern0.replace(chr(10), '⏎')}\n" in out
    assert f"verbalizer (1 per label): 0: {blocks['0'][0][0]} | 1: {blocks['1'][0][0]}" in out


def test_search_labels_write_adds_a_loadable_verbalizer_to_an_existing_templates_file(
        tmp_path, sst2_dir, tiny_model_dir, capsys):
    import shutil

    from prompting.config.experiment import builtin_templates, load_prompt_file, parse_config

    path = tmp_path / "my_sst2.yaml"
    shutil.copy(builtin_templates()["sst2"], path)
    before_patterns, before_verbalizers = load_prompt_file(path)
    template = "{text_a} Overall it was {mask}"
    assert main(["search-labels", "--task", "sst2", "--data-dir", str(sst2_dir), "--model", str(tiny_model_dir),
                 "--template", template, "--limit", "6", "--top", "3", "--words-per-label", "2",
                 "--write", str(path), "-q"]) == 0
    out = capsys.readouterr().out
    blocks = printed_blocks(out)
    assert {label: len(ranked) for label, ranked in blocks.items()} == {"0": 3, "1": 3}
    assert "6 train examples (random 6 of 8, data seed 13)" in out and f"written to: {path}" in out

    patterns, verbalizers = load_prompt_file(path)  # the loader configs use
    assert path.read_text().startswith("# SST-2 (GLUE)")  # the file's leading comments are kept
    assert patterns == before_patterns + [template]
    assert verbalizers[:-1] == before_verbalizers
    assert verbalizers[-1] == {label: [w for w, _ in ranked[:2]] for label, ranked in blocks.items()}
    # a config can use the new entries by index
    cfg = parse_config({"task": "sst2", "methods": [{"name": "manual", "train": False}],
                        "templates": {"file": str(path), "patterns": [len(patterns) - 1],
                                      "verbalizers": [len(verbalizers) - 1]}})
    assert cfg.prompts == [(template, verbalizers[-1])]

    # the same search again adds nothing twice; a new file is created loadable too
    assert main(["search-labels", "--task", "sst2", "--data-dir", str(sst2_dir), "--model", str(tiny_model_dir),
                 "--template", template, "--limit", "6", "--top", "3", "--words-per-label", "2",
                 "--write", str(path), "-q"]) == 0
    assert load_prompt_file(path) == (patterns, verbalizers)
    fresh = tmp_path / "new" / "templates.yaml"
    assert main(["search-labels", "--task", "sst2", "--data-dir", str(sst2_dir), "--model", str(tiny_model_dir),
                 "--k", "2", "--write", str(fresh), "-q"]) == 0
    new_patterns, new_verbalizers = load_prompt_file(fresh)
    assert new_patterns == [before_patterns[0]] and len(new_verbalizers) == 1


@pytest.mark.parametrize("options, expected", [
    (["--method", "best"], "--method 'best' is not valid; choose one of classifier, likelihood"),
    (["--task", "nope"], "--task 'nope' is not a built-in task; choose one of mr, sst2"),
    (["--template", "{text_a} It was great."], "--template: template '{text_a} It was great.' has 0 {mask} slots"),
    (["--template", "{premise} It was {mask}"], "uses the field {premise}, which task 'sst2' does not have"),
    (["--template", "{text_a} {trigger:3} {mask}"], "has trigger or soft slots"),
    (["--pattern", "9"], "--pattern 9 is out of range; sst2 has 4 patterns (0 to 3)"),
    (["--top", "0"], "--top 0 is not valid; give an integer >= 1"),
    (["--k", "2", "--limit", "5"], "--limit 5 is not valid together with --k 2"),
    (["--k", "5"], "label '0' has 4 examples; K=5 per class"),
])
def test_search_labels_bad_options_exit_2_with_one_line(tmp_path, sst2_dir, options, expected, capsys):
    # every one of these fails before a model is loaded: the model path does not even exist
    assert main(["search-labels", "--task", "sst2", "--data-dir", str(sst2_dir), "--model", str(tmp_path / "no-model"),
                 "--write", str(tmp_path / "out.yaml"), "-q", *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prompting search-labels: error: ") and err.count("\n") == 1, err
    assert expected in err
    assert not (tmp_path / "out.yaml").exists()


# ------------------------------------------------------------------------------------ any task
TREC = {0: "ABBR", 1: "DESC", 2: "NUM"}


def trec_task_file(tmp_path) -> Path:
    """A headerless TREC-style tsv (label id, question) and a task file that describes it."""
    rows = [f"{label}\t{words} question {i} ?" for label, words in ((0, "what does it stand for"),
            (1, "how is it done"), (2, "how many are there")) for i in range(6)]
    (tmp_path / "trec.tsv").write_text("\n".join(rows) + "\n")
    task = tmp_path / "trec_task.yaml"
    task.write_text("task: {name: trec, train: trec.tsv, header: false, label_column: 0, text_columns: [1],\n"
                    "       labels: {0: ABBR, 1: DESC, 2: NUM}, split: {test: 6, seed: 0}}\n")
    return task


def test_eval_takes_any_task_from_a_task_file_and_prints_the_pattern_by_verbalizer_table(
        tmp_path, tiny_model_dir, capsys):
    task = trec_task_file(tmp_path)
    templates = tmp_path / "trec_templates.yaml"
    templates.write_text("task: trec\npatterns: ['{text_a} Answer type: {mask}', 'Q: {text_a} A: {mask}']\n"
                         "verbalizers:\n  - {ABBR: [short], DESC: [good], NUM: [great]}\n"
                         "  - {ABBR: [bad], DESC: [fine], NUM: [terrible]}\n")
    out = tmp_path / "out"
    assert main(["eval", "--task-file", str(task), "--templates", str(templates), "--k", "2",
                 "--model", str(tiny_model_dir), "--output-dir", str(out), "-q"]) == 0
    stdout = capsys.readouterr().out
    assert "zero-shot on trec (6 test examples" in stdout
    table = [line for line in stdout.splitlines() if line.startswith("| ") and "`" in line]
    assert len(table) == 4  # 2 patterns x 2 verbalizers
    assert {line.split(" | ")[2] for line in table} == {"short / good / great", "bad / fine / terrible"}
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["protocol"] for r in records} == {"kshot"} and all(r["n_test"] == 6 for r in records)


def test_eval_takes_a_configs_task_section_and_its_templates(tmp_path, tiny_model_dir, capsys):
    trec_task_file(tmp_path)
    config = write_config(tmp_path, """
task: {name: trec, train: trec.tsv, header: false, label_column: 0, text_columns: [1],
       labels: {0: ABBR, 1: DESC, 2: NUM}, split: {test: 6, seed: 0}}
templates: {patterns: ["{text_a} It was {mask}"], verbalizers: [{ABBR: [bad], DESC: [good], NUM: [great]}]}
methods: [{name: manual, train: false}]
""")
    assert main(["eval", "--config", str(config), "--k", "2", "--model", str(tiny_model_dir),
                 "--output-dir", str(tmp_path / "out"), "-q"]) == 0
    assert "| 1 | `{text_a} It was {mask}` | bad / good / great |" in capsys.readouterr().out
    assert main(["eval", "--config", str(config), "--task", "sst2", "-q"]) == 2
    assert "--task and --config: give the task one way" in capsys.readouterr().err


def test_search_labels_takes_a_task_file(tmp_path, tiny_model_dir, capsys):
    task = trec_task_file(tmp_path)
    assert main(["search-labels", "--task-file", str(task), "--template", "{text_a} It is about {mask}",
                 "--model", str(tiny_model_dir), "--k", "2", "--top", "3", "-q"]) == 0
    out = capsys.readouterr().out
    assert list(printed_blocks(out)) == ["ABBR", "DESC", "NUM"] and "label words for trec" in out


def test_search_labels_refuses_a_multiple_choice_task(tmp_path, capsys):
    task = tmp_path / "mc.yaml"
    task.write_text("task: {name: copa, train: a.jsonl, test: b.jsonl, choices: [choice1, choice2]}\n")
    assert main(["search-labels", "--task-file", str(task), "--template", "{choice1} {mask}", "-q"]) == 2
    assert "is a multiple-choice task" in capsys.readouterr().err


def test_search_labels_for_a_chat_entry_and_a_model_without_a_chat_template(tmp_path, sst2_dir, tiny_model_dir,
                                                                            bpe_tokenizer, capsys):
    import copy

    from conftest import build_tiny_lm
    from test_answers import CHAT

    tokenizer = copy.deepcopy(bpe_tokenizer)
    tokenizer.chat_template = CHAT
    lm = build_tiny_lm("llama", tokenizer)
    folder = tmp_path / "chat-model"
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    common = ["search-labels", "--task", "sst2", "--data-dir", str(sst2_dir), "--k", "2", "--top", "3",
              "--method", "likelihood", "--chat", "-q"]
    assert main(common + ["--model", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "(the user turn of the chat template; the word starts the reply)" in out
    blocks = printed_blocks(out)
    assert list(blocks) == ["0", "1"] and all(len(ranked) == 3 for ranked in blocks.values())
    for ranked in blocks.values():  # each word is one token at the start of the reply, with no space before it
        assert all(len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1 for w, _ in ranked)
    assert main(common + ["--model", str(tiny_model_dir)]) == 2
    assert "its tokenizer has no chat template" in capsys.readouterr().err
