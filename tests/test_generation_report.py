"""report.md, summary.csv and runs.csv of a generation experiment (E2E's layout, a tiny random Llama, K = 4, two
data seeds, two training seeds): the table's rows and columns, the seed search by dev NLL, BLEU's test-sample
interval, the paired tests, the example outputs, and what a missing or damaged predictions file does."""

import csv
import json
import shutil

import pytest

from prompting.cli import main
from prompting.core.textmetrics import corpus_score
from prompting.experiment.results import ResultsStore
from prompting.reporting.generation import InputDraws, dev_nll, generation_rows
from prompting.reporting.generation_report import markdown_text

# E2E's files: the pool of training and dev pairs, and test pairs that share an input (its references)
POOL = [(f"name[{name}], eatType[{kind}], area[{area}]", text)
        for name, kind, area in (("Aromi", "coffee shop", "riverside"), ("Bibimbap", "restaurant", "city centre"),
                                 ("Cotto", "pub", "riverside"), ("Zizzi", "pub", "city centre"),
                                 ("Loch Fyne", "restaurant", "riverside"), ("Wildwood", "coffee shop", "city centre"))
        for text in (f"{name} is a {kind} in the {area}.", f"In the {area} there is a {kind} called {name}.")]
# references in the words the tiny model's tokenizer learnt (film reviews), so that its outputs score above 0
TEST = [("name[The *Mill* | Inn], eatType[pub]", "The *Mill* | Inn is a great pub with a lovely garden.\nIt is good."),
        ("name[The *Mill* | Inn], eatType[pub]", "A pub with great food, the Mill Inn, seen as good."),
        ("name[Alimentum], area[riverside]", "Alimentum is by the river, with a great ending to the walk."),
        ("name[Alimentum], area[riverside]", "By the riverside you find Alimentum, a good and lovely place."),
        ("name[Alimentum], area[riverside]", "Alimentum, riverside: poor but great."),
        ("name[Strada], eatType[restaurant]", "Strada is a restaurant with the best writing on its menu."),
        ("name[Giraffe], food[French]", "Giraffe serves French food, a great film of a place."),
        ("name[Giraffe], food[French]", "French food at Giraffe, with the good, the bad and the empty.")]
LABELS = {"manual zero-shot", "soft", "prefix"}


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["mr", "ref"])
        w.writerows(rows)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tiny_llama_dir):
    """The results folder of ``prompting run`` (which writes the report at its end)."""
    root = tmp_path_factory.mktemp("generation")
    write_csv(root / "dev.csv", POOL)
    write_csv(root / "test.csv", TEST)
    config = root / "e2e.yaml"
    config.write_text(f"""
name: e2e
model: {tiny_llama_dir}
task: {{name: e2e, data_dir: {root}, decoding: {{max_new_tokens: 24}}}}
fewshot: {{k: 4, data_seeds: [13, 21], test_limit: 4}}
templates: {{patterns: ["Table: {{mr}}\\nText: {{mask}}"]}}
seeds: {{train_seeds: [1, 2]}}
methods:
  - {{name: manual, train: false}}
  - {{name: soft, max_steps: 1, lr: 0.3}}
  - {{name: prefix, max_steps: 1, lr: 0.3}}
""")
    assert main(["run", str(config), "--output-dir", str(root / "out"), "-q"]) == 0
    return root / "out"


@pytest.fixture(scope="module")
def report(folder):
    return (folder / "report.md").read_text()


@pytest.fixture(scope="module")
def rows(folder):
    return generation_rows(ResultsStore(folder), ResultsStore(folder).records())


def table(report, first_header):
    """The cells of the markdown table whose header starts with ``first_header``: a dict per line."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_header))
    body = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        body.append(line)
    header = cells(lines[start])
    return [dict(zip(header, cells(line))) for line in body]


def cells(line):
    return [c.strip() for c in line.strip().strip("|").split(" | ")]


def test_the_report_has_a_row_per_method_with_every_metric_column(report, rows):
    found = table(report, "| method | template | trainable")
    assert {r["method"] for r in found} == LABELS and len(found) == 3
    for name in ("BLEU (sel.) mean ± std", "95% CI (BLEU, test sample)", "chrF (sel.) mean ± std",
                 "ROUGE-L (sel.) mean ± std", "test inputs (refs)", "empty outputs", "trainable", "time (s)"):
        assert name in found[0], name
    by_label = {r["label"]: r for r in rows}
    for line in found:
        row = by_label[line["method"]]
        bleu = row["metrics"]["bleu"]
        assert line["BLEU (sel.) mean ± std"] == f"{bleu['mean']:.1f} ± {bleu['std']:.1f}"  # two data seeds
        assert line["test inputs (refs)"] == "4 (8)"
        assert line["empty outputs"] == f"{row['empty_outputs']}/8"
    assert "decoding: greedy (1 beam), at most 24 new tokens" in report
    assert [r["label"] for r in rows] == [line["method"] for line in found]  # best BLEU first
    assert all(a["metrics"]["bleu"]["mean"] >= b["metrics"]["bleu"]["mean"] for a, b in zip(rows, rows[1:]))


def test_each_data_seed_selects_the_training_seed_with_the_lowest_dev_nll(folder, rows):
    records = ResultsStore(folder).records()
    soft = next(r for r in rows if r["label"] == "soft")
    for seed, rid in soft["selected_by_seed"].items():
        runs = [r for r in records if r["label"] == "soft" and r["data_seed"] == seed]
        assert len(runs) == 2 and rid == min(runs, key=dev_nll)["run_id"]
    chosen = [r for r in records if r["run_id"] in soft["selected_run_ids"]]
    assert soft["metrics"]["bleu"]["mean"] == pytest.approx(sum(r["test"]["bleu"] for r in chosen) / 2)


def test_load_results_marks_the_runs_the_report_selects(folder, rows):
    import prompting

    runs = prompting.load_results(folder)
    picked = set(runs[runs.selected].run_id)
    assert picked == {rid for r in rows for rid in r["selected_run_ids"]}  # by dev NLL, as the report
    trained = runs[runs.label.isin(["soft", "prefix"])]
    assert len(trained) == 8 and trained.selected.sum() == 4  # one of two training seeds a data seed


def test_the_bleu_interval_holds_the_rows_bleu_and_is_the_table_s(report, folder, rows):
    store = ResultsStore(folder)
    for record in store.records():  # a corpus score is the one its summed per-input statistics give
        saved = store.load_predictions(record["run_id"])
        assert corpus_score("bleu", [s["bleu"] for s in saved["test_scores"]]) == record["test"]["bleu"]
    shown = {line["method"]: line["95% CI (BLEU, test sample)"] for line in table(report, "| method | template")}
    for row in rows:
        low, high = row["bleu_interval"]
        assert low <= row["metrics"]["bleu"]["mean"] <= high
        assert shown[row["label"]] == f"{low:.1f}–{high:.1f}"


def test_a_row_paired_with_an_identical_copy_differs_by_nothing(folder, rows):
    draws = InputDraws(ResultsStore(folder))
    same = draws.paired(rows[0], dict(rows[0], label="copy"))
    assert same["difference"] == 0 and same["low"] == same["high"] == 0 and same["p"] == 1.0
    assert same["seeds"] == 2 and same["examples"] == 4
    other = draws.paired(rows[0], rows[1])
    expected = rows[0]["metrics"]["bleu"]["mean"] - rows[1]["metrics"]["bleu"]["mean"]
    assert other["difference"] == pytest.approx(expected) and other["low"] <= other["high"]
    assert draws.paired(rows[1], rows[0])["difference"] == pytest.approx(-expected)


def test_the_paired_tests_compare_the_best_row_with_every_other(report, folder, rows):
    assert "Paired bootstrap of test BLEU over data seeds and test inputs (2,000 draws" in report
    draws = InputDraws(ResultsStore(folder))
    found = table(report, "| row | template |")
    assert [line["row"] for line in found] == [r["label"] for r in rows[1:]]
    for line, other in zip(found, rows[1:]):
        test = draws.paired(rows[0], other)
        assert list(line.values())[2:5] == [f"{test['difference']:+.1f}", f"{test['low']:+.1f} to "
                                            f"{test['high']:+.1f}", f"{test['p']:.3f}"]
    assert f"Best by BLEU: **{rows[0]['label']}**" in report


def test_the_example_outputs_are_what_the_predictions_files_hold(report, folder, rows):
    store = ResultsStore(folder)
    found = {line["row"]: line for line in table(report, "| row | template | input 1")}
    assert found["*input*"]["input 1"] == r"name\[The \*Mill\* \| Inn\], eatType\[pub\]"
    assert found["*first reference*"]["input 1"] == r"The \*Mill\* \| Inn is a great pub with a lovely garden.⏎It is good."
    for row in rows:
        saved = store.load_predictions(row["selected_by_seed"][13])
        assert [found[row["label"]][f"input {i}"] for i in (1, 2, 3)] == \
            [markdown_text(text) for text in saved["test_outputs"][:3]]
    assert "The first 3 test inputs of data seed 13" in report


def test_markdown_text_cuts_before_escaping_and_shows_control_characters():
    assert markdown_text("") == "*(empty)*"
    assert markdown_text("a|b\r\nc\x0ed") == r"a\|b⏎c␎d"
    # cut, then escaped: an escape is never cut in half (a lone backslash would swallow the cell's end)
    assert markdown_text("x" * 9 + "|y", width=10) == "x" * 9 + "…"
    assert markdown_text("x" * 8 + "|yy", width=10) == "x" * 8 + r"\|…"


def test_prompting_report_derives_the_run_s_files_again_byte_for_byte(folder, tmp_path, capsys):
    copy = shutil.copytree(folder, tmp_path / "out")
    for name in ("report.md", "summary.csv", "runs.csv"):
        (copy / name).unlink()
    assert main(["report", str(copy)]) == 0
    for name in ("report.md", "summary.csv", "runs.csv"):
        assert (copy / name).read_bytes() == (folder / name).read_bytes(), name
    assert (copy / "plots" / "e2e_text_scores.png").stat().st_size > 0


def test_summary_and_runs_csv_have_the_generation_columns(folder, rows):
    with open(folder / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert [r["label"] for r in summary] == [r["label"] for r in rows]
    assert float(summary[0]["test_bleu_mean"]) == pytest.approx(rows[0]["metrics"]["bleu"]["mean"])
    assert float(summary[0]["test_bleu_ci_low"]) == pytest.approx(rows[0]["bleu_interval"][0])
    assert json.loads(summary[0]["decoding"]) == {"max_new_tokens": 24, "num_beams": 1}
    with open(folder / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 10 and "accuracy" not in " ".join(runs[0])  # 2 data seeds x (1 + 2 + 2) runs
    assert {r["run_id"] for r in runs if r["selected"] == "True"} == \
        {rid for row in rows for rid in row["selected_run_ids"]}


@pytest.mark.parametrize("kept", [None, '{"test": []}'], ids=["deleted", "without per-input scores"])
def test_a_missing_predictions_file_leaves_its_row_without_interval_paired_test_or_examples(folder, tmp_path, kept):
    copy = shutil.copytree(folder, tmp_path / "out")
    records = ResultsStore(copy).records()
    manual = next(r for r in records if r["label"] == "manual zero-shot" and r["data_seed"] == 13)
    path = copy / "predictions" / f"{manual['run_id']}.json"
    if kept is None:
        path.unlink()
    else:
        path.write_text(kept)
    assert main(["report", str(copy)]) == 0
    report = (copy / "report.md").read_text()
    line = next(x for x in table(report, "| method | template") if x["method"] == "manual zero-shot")
    assert line["95% CI (BLEU, test sample)"] == "–" and line["BLEU (sel.) mean ± std"] != "–"
    assert f"1 of 10 runs have no saved outputs and per-input scores (`predictions/RUN_ID.json`, e.g. " \
           f"`predictions/{manual['run_id']}.json`)" in report
    paired = [x for x in table(report, "| row | template |") if "not paired" in x[""]]
    assert paired and all(x[""] == "not paired (saved predictions missing)" for x in paired)
    examples = {x["row"]: x for x in table(report, "| row | template | input 1")}
    assert [examples["manual zero-shot"][f"input {i}"] for i in (1, 2, 3)] == ["–"] * 3


def test_a_damaged_predictions_file_is_a_clear_error(folder, tmp_path, capsys):
    copy = shutil.copytree(folder, tmp_path / "out")
    rid = ResultsStore(copy).records()[0]["run_id"]
    (copy / "predictions" / f"{rid}.json").write_text('{"test_outputs": ["cut off')
    assert main(["report", str(copy)]) == 2
    err = capsys.readouterr().err
    assert f"predictions/{rid}.json is not complete JSON" in err and "Delete it" in err
