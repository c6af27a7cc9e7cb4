"""report.md from hand-written run records: the "Found prompts" section of AutoPrompt runs, the test-sample
interval, and how a fixed (FewGLUE) split is reported."""

from prompting.reporting.report import write_report
from prompting.reporting.tables import found_prompts_table
from prompting.core.ids import run_id
from prompting.experiment.results import ResultsStore

START = "{text_a} {trigger:3} {mask}"
VERBALIZER = {"0": ["bad"], "1": ["good"]}


def record(task, label, method, template, data_seed, train_seed, dev, test, found=None, k=4):
    settings = {"task": task, "method": method, "label": label, "template": template, "verbalizer": VERBALIZER,
                "model": "tiny", "k": k, "data_seed": data_seed, "train_seed": train_seed}
    describe = {"method": method, "template": template, "verbalizer": VERBALIZER}
    if found is not None:
        describe.update(iterations=5, trigger_tokens=found.split(), found_template=found)
    return {**settings, "run_id": run_id(settings), "describe": describe,
            "dev": {"accuracy": dev, "macro_f1": dev}, "test": {"accuracy": test, "macro_f1": test},
            "collapsed": False, "trainable_params": 0, "seconds": 2.0}


AUTOPROMPT = [
    # data seed 13: train seed 2 has the better dev score; data seed 21: a tie, the first seed wins
    record("sst2", "AutoPrompt", "autoprompt", START, 13, 1, 0.6, 0.55, found="{text_a} noqa the to {mask}"),
    record("sst2", "AutoPrompt", "autoprompt", START, 13, 2, 0.8, 0.70,
           found="{text_a}\nschooling | torchvision {mask}"),
    record("sst2", "AutoPrompt", "autoprompt", START, 21, 2, 0.7, 0.61, found="{text_a} a `b` c {mask}"),
    record("sst2", "AutoPrompt", "autoprompt", START, 21, 1, 0.7, 0.64, found="{text_a} Clone totally yes {mask}"),
]
OTHERS = [
    record("sst2", "manual zero-shot", "manual", "{text_a} It was {mask}.", 13, None, 0.5, 0.52),
    record("sst2", "manual zero-shot", "manual", "{text_a} It was {mask}.", 21, None, 0.5, 0.50),
    record("other", "PET", "manual", "Review: {text_a} {mask}", 13, 1, 0.6, 0.61),
]


def write(tmp_path, records):
    store = ResultsStore(tmp_path / "runs")
    for r in records:
        store.append(r)
    write_report(store.directory, plots=False)
    return (store.directory / "report.md").read_text()


def section(report, task, title):
    """The lines of ``### title`` under ``## task``, up to the next heading."""
    lines = report.split(f"## {task}\n", 1)[1].split("\n## ", 1)[0].splitlines()
    if f"### {title}" not in lines:
        return None
    body = lines[lines.index(f"### {title}") + 1:]
    return [line for line in body[:next((i for i, l in enumerate(body) if l.startswith("#")), len(body))] if line]


def cells(line):
    return [c.strip() for c in line.strip("|").split(" | ")]


def test_found_prompts_lists_every_autoprompt_run_with_its_template_and_marks_the_selected_ones(tmp_path):
    report = write(tmp_path, AUTOPROMPT + OTHERS)
    lines = section(report, "sst2", "Found prompts")
    assert lines is not None and lines[1].startswith("| method | data seed | train seed | found template |")
    rows = [cells(line) for line in lines[3:]]
    assert rows == [
        ["AutoPrompt", "13", "1", "`{text_a} noqa the to {mask}`", "60.0", "55.0", ""],
        ["AutoPrompt", "13", "2", "`{text_a}⏎schooling \\| torchvision {mask}`", "80.0", "70.0", "✓"],
        ["AutoPrompt", "21", "1", "`{text_a} Clone totally yes {mask}`", "70.0", "64.0", "✓"],
        ["AutoPrompt", "21", "2", "`` {text_a} a `b` c {mask} ``", "70.0", "61.0", ""],
    ]
    assert "manual zero-shot" not in "\n".join(lines)  # runs without a found template are not listed
    assert section(report, "other", "Found prompts") is None  # a task without one has no section
    assert section(report, "sst2", "Stability") is not None


def test_found_prompts_is_absent_without_found_templates(tmp_path):
    report = write(tmp_path, OTHERS + [record("sst2", "AutoPrompt", "autoprompt", START, 13, 1, 0.6, 0.5, found="")])
    assert "Found prompts" not in report
    assert found_prompts_table(OTHERS) == ""
    assert "### Stability" in report


def test_every_row_gets_a_test_sample_interval_even_a_deterministic_zero_shot_run(tmp_path):
    store = ResultsStore(tmp_path / "runs")
    gold = [0, 1] * 50
    for r, correct in zip(OTHERS[:2], (52, 50)):
        store.append(r)
        predicted = [g if i < correct else 1 - g for i, g in enumerate(gold)]
        store.save_predictions(r["run_id"], {"dev": [], "test": [[0.0, 1.0] if p else [1.0, 0.0] for p in predicted],
                                             "dev_gold": [], "test_gold": gold})
    store.append(OTHERS[2])  # no saved predictions: no interval, the rest of the row as before
    write_report(store.directory, plots=False)
    report = (store.directory / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| method | template"))
    column = cells(header).index("95% CI (test sample)")
    zero_shot = cells(next(line for line in report.split("## sst2")[1].splitlines() if line.startswith("| manual")))
    low, high = (float(x) for x in zero_shot[column].split("–"))
    assert low < 51.0 < high and 10 < high - low < 30  # 100 examples: about ±10 points
    pet = cells(next(line for line in report.split("## other")[1].splitlines() if line.startswith("| PET")))
    assert pet[column] == "–"
    summary = (store.directory / "summary.csv").read_text().splitlines()
    assert "test_ci_low,test_ci_high" in summary[0]


def test_a_fixed_split_reports_the_spread_across_training_seeds_not_a_zero_across_data_seeds(tmp_path):
    """FewGLUE: one fixed split (k is None), three training seeds per method. A std across data seeds
    would be 0.0 and every gap "larger than the spread"; the report says what the spread is."""
    fixed = [record("cb", "soft prompt", "soft", "{text_a} {soft:2} {mask}", 0, seed, dev, test, k=None)
             for seed, dev, test in ((1, 0.75, 0.625), (2, 0.78, 37 / 56), (3, 0.70, 0.589))]
    fixed += [record("cb", "PET", "manual", "{text_a} It was {mask}.", 0, seed, dev, test, k=None)
              for seed, dev, test in ((1, 0.69, 0.600), (2, 0.75, 36 / 56), (3, 0.69, 0.571))]
    store = ResultsStore(tmp_path / "runs")
    gold = [0, 1] * 28
    for r in fixed:
        r.update(n_train=32, n_dev=32)
        store.append(r)
        correct = round(r["test"]["accuracy"] * 56)
        predicted = [g if i < correct else 1 - g for i, g in enumerate(gold)]
        store.save_predictions(r["run_id"], {"dev": [], "test": [[0.0, 1.0] if p else [1.0, 0.0] for p in predicted],
                                             "dev_gold": [], "test_gold": gold})
    write_report(store.directory, plots=False)
    report = (store.directory / "report.md").read_text()
    assert "fixed split of 32 training and 32 dev examples (FewGLUE)" in report and "K = None" not in report
    rows = [cells(line) for line in report.splitlines() if line.startswith(("| soft prompt", "| PET"))]
    table = rows[:2]
    stability = [cells(line) for line in section(report, "cb", "Stability") if line.startswith(("| soft", "| PET"))]
    per_class = [cells(line) for line in section(report, "cb", "Per class") if line.startswith(("| soft", "| PET"))]
    # per class (gold alternates 0, 1): recall / precision of the selected runs, and the class predicted most
    assert [row[2:] for row in per_class] == [["67.9 / 65.5", "64.3 / 66.7", "0 (51.8%)"],
                                             ["64.3 / 64.3", "64.3 / 64.3", "0 (50.0%)"]]
    assert "No run collapsed." in report
    assert [row[6] for row in table] == ["66.1", "64.3"], "one split: the selected run's score, no '± 0.0'"
    assert [row[9] for row in table] == ["62.5 ± 3.6", "60.5 ± 3.6"]  # all runs: the training seeds' spread
    assert [row[2:4] for row in stability] == [["–", "3.6"], ["–", "3.6"]]
    low, high = (float(x) for x in table[0][7].split("–"))
    assert low < 64.3 < high  # 56 test examples: the runner-up is well inside the best's interval
    assert ("Best: **soft prompt** (`{text_a} {soft:2} {mask}`) at 66.1; 1.8 points above PET (64.3), "
            "within the spread across training seeds (one data split) (std 3.6); the runner-up is inside "
            f"the best's 95% test-sample interval ({low:.1f}–{high:.1f}); paired test: not distinguishable from "
            "PET (p = ") in report


def test_the_report_gives_the_selected_runs_macro_f1_beside_accuracy(tmp_path):
    """CB is read by accuracy and macro-F1: a run that predicts the majority class scores well on one only."""
    runs = [record("cb", "soft prompt", "soft", "{text_a} {soft:2} {mask}", 0, 1, 0.7, 0.6, k=None),
            record("cb", "soft prompt", "soft", "{text_a} {soft:2} {mask}", 0, 2, 0.8, 0.5, k=None),
            record("cb", "PET", "manual", "{text_a} It was {mask}.", 0, 1, 0.6, 0.55, k=None),
            record("cb", "PET", "manual", "Premise: {text_a} {mask}", 0, 1, 0.6, 0.52, k=None)]
    runs[1]["test"]["macro_f1"] = 0.25  # selected by dev: accuracy 50.0, macro-F1 25.0
    runs[2]["test"]["macro_f1"] = 0.4
    report = write(tmp_path, runs)
    assert ("Test macro-F1 of the dev-selected runs: PET (`{text_a} It was {mask}.`) 40.0; "
            "PET (`Premise: {text_a} {mask}`) 52.0; soft prompt 25.0.") in report
    import csv

    with open(tmp_path / "runs" / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert [row["test_selected_macro_f1"] for row in summary] == ["0.4", "0.52", "0.25"]


def test_a_run_that_answers_one_class_is_flagged_and_a_skewed_test_set_is_not(tmp_path):
    """Collapsed: one class >= 90% of the test predictions while it is under 90% of the gold labels.
    Gold labels are stored by name beside the label order; the per-class table and heat map follow."""
    store = ResultsStore(tmp_path / "runs")
    labels = ["neg", "neu", "pos"]
    verbalizer = {"neg": ["bad"], "neu": ["fine"], "pos": ["good"]}
    gold = ["neg", "neu", "pos"] * 10
    runs = {1: ["pos"] * 28 + ["neg", "neu"],  # 93% one class: collapsed
            2: ["neg" if g == "neg" and i < 12 else "pos" for i, g in enumerate(gold)]}  # 87%: not
    for seed, predicted in runs.items():
        r = record("three", "PET", "manual", "{text_a} It was {mask}.", 0, seed, 0.5 + seed / 10, 0.4, k=None)
        r["verbalizer"] = verbalizer
        store.append(r)
        scores = [[1.0 if label == p else 0.0 for label in labels] for p in predicted]
        store.save_predictions(r["run_id"], {"dev": [], "test": scores, "labels": labels, "dev_gold": [],
                                             "test_gold": gold})
    skewed = record("three", "manual zero-shot", "manual", "{text_a} {mask}", 0, None, 0.5, 0.95, k=None)
    skewed["verbalizer"] = verbalizer
    store.append(skewed)  # the test set itself is 95% "pos": answering "pos" is not a collapse
    store.save_predictions(skewed["run_id"], {"dev": [], "test": [[0.0, 0.0, 1.0]] * 20, "labels": labels,
                                              "dev_gold": [], "test_gold": ["pos"] * 19 + ["neg"]})
    paths = write_report(store.directory)
    report = (store.directory / "report.md").read_text()
    assert "**Collapsed runs (1 of 3):**" in report
    assert "- PET `{text_a} It was {mask}.` (data seed 0, train seed 1): predicts 'pos' for 93.3% of test" in report
    summary = {}
    for line in report.splitlines():  # the first table: the summary
        if line.startswith(("| PET", "| manual")):
            summary.setdefault(cells(line)[0].removesuffix(" †"), cells(line))
    assert summary["PET"][12] == "1" and summary["manual zero-shot"][12] == "0"  # the "collapsed" column
    # the selected PET run (train seed 2, better dev): recall of neg 4/10, precision 4/4; predicts pos most
    per_class = [cells(line) for line in report.splitlines() if line.startswith("| PET")][-1]
    assert per_class[2:] == ["40.0 / 100.0", "0.0 / –", "100.0 / 38.5", "pos (86.7%)"]
    assert paths["three_confusion"].is_file() and "![three_confusion](plots/three_confusion.png)" in report
