"""Tables (markdown, CSV) and plots (PNG) from run records.

``write_report(DIR)`` reads ``DIR/results.jsonl`` and writes ``report.md``, ``summary.csv``,
``runs.csv`` and ``plots/*.png``: accuracy by method with error bars, one point per run, dev vs
test of every run (does selecting by dev help?) and the confusion matrix of each setting's
dev-selected runs. Per class, each setting's recall and precision; a run that gives one class >= 90%
of its test predictions (while that class is under 90% of the gold labels) has *collapsed*, is
counted in the "collapsed" column and named under the per-class table. Runs that found a prompt
(AutoPrompt's ``found_template`` in the record's ``describe``) are listed with it under "Found prompts".
Fact-probing records have a section of their own (:mod:`prompting.reporting.probing`), and so has each
generation task (:mod:`prompting.reporting.generation_report`: BLEU, chrF and ROUGE-L, rows and columns of
their own in the CSV files).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from prompting.core.data import COLLAPSE_SHARE
from prompting.core.paths import atomic_path, atomic_write
from prompting.experiment.results import ResultsStore
from prompting.reporting import generation_report as text
from prompting.reporting.aggregate import aggregate, bootstrap_interval, run_classes, score, select_runs, test_sample
from prompting.reporting.generation import is_generation_record, select_generation_runs
from prompting.reporting.paired import paired_sections, paired_test, variance_line, winner_line
from prompting.reporting.plots import task_plots
from prompting.reporting.probing import is_probe_record, probe_report
from prompting.reporting.tables import (METRIC_NAMES, above_majority, csv_cell, found_prompts_table, majority_rows,
                                        pct, per_class_table, row_verbalizer, short, stability_table,
                                        summary_table, verbalizer_text)

__all__ = ["write_report", "summary_rows"]


def _other_metrics(rows: Sequence[dict], metric: str) -> list[str]:
    """A line per metric other than the table's (any row's: written answers' ``unmatched`` share too): each
    row's dev-selected test mean, in the table's order."""
    lines = []
    found = dict.fromkeys(m for r in rows for m in r.get("test_selected_metrics", {}))
    for other in [m for m in found if m != metric]:
        means = [(r["label"], r["test_selected_metrics"].get(other)) for r in rows]
        labels = [label for label, _ in means]
        cells = [f"{label} (`{short(r['template'], 24)}`)" if labels.count(label) > 1 else label
                 for (label, _), r in zip(means, rows)]
        lines += [f"Test {METRIC_NAMES.get(other, other)} of the dev-selected runs: "
                  + "; ".join(f"{cell} {pct(value)}" for cell, (_, value) in zip(cells, means)) + ".", ""]
    return lines


def summary_rows(store: ResultsStore, records: list[dict], metric: str = "accuracy") -> list[dict]:
    """The aggregate rows of one task's records, each with the bootstrap interval of its test mean."""
    rows = aggregate(records, metric)
    by_id = {r["run_id"]: r for r in records}
    for row in rows:
        row["test_interval"] = bootstrap_interval(store, row["selected_run_ids"], metric)
        row["sample"] = test_sample(store, [by_id[rid] for rid in row["selected_run_ids"]])
    return rows


def write_report(directory: str | Path, metric: str = "accuracy", plots: bool = True) -> dict[str, Path]:
    """Write report.md, summary.csv, runs.csv and plots for the records in ``directory``."""
    directory = Path(directory)
    store = ResultsStore(directory)
    records = store.records()
    if not records:
        raise FileNotFoundError(f"no run records in {directory / 'results.jsonl'}; run an experiment first")

    probes = [r for r in records if is_probe_record(r)]  # fact probing: ranks, not label accuracy
    texts = [r for r in records if is_generation_record(r)]  # generation: written text, BLEU and the like
    records = [r for r in records if not is_probe_record(r) and not is_generation_record(r)]
    classes = {r["run_id"]: run_classes(store, r) for r in records}
    for r in records:  # collapsed as documented, from the saved predictions where there are any
        if classes[r["run_id"]] is not None:
            r["collapsed"] = classes[r["run_id"]]["collapsed"]
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_task[r["task"]].append(r)
    out = {"report": directory / "report.md", "summary": directory / "summary.csv", "runs": directory / "runs.csv"}
    text_lines, text_rows, text_plots = text.generation_report(store, texts, directory / "plots" if plots else None)
    out.update((p.stem, p) for p in text_plots)
    probe_lines = probe_report(probes, store, directory / "plots" if plots else None) if probes else []
    if probes and plots:
        out["lama_p_at_1"] = directory / "plots" / "lama_p_at_1.png"
    lines = [f"# Results: {directory.name}", ""] + probe_lines + text_lines
    summary = []
    for task, recs in by_task.items():
        rows = summary_rows(store, recs, metric)
        summary += rows
        lines += _task_section(task, recs, rows, metric, store)
        lines += _classes_section(recs, rows, classes)
        if plots:
            for p in task_plots(recs, rows, task, directory / "plots", metric, classes):
                out[p.stem] = p
                lines += [f"![{p.stem}](plots/{p.name})", ""]
    # each file replaced whole: a process writing the same report at the same time, or a reader, never
    # meets half a file
    atomic_write(out["report"], "\n".join(lines))
    selected = select_runs(records, metric) | select_generation_runs(texts)
    _write_csv(out["summary"], [(SUMMARY_COLUMNS, [_summary_cells(r) for r in summary]),
                                (text.SUMMARY_COLUMNS, [text.summary_cells(r) for r in text_rows])])
    _write_csv(out["runs"], [(RUN_COLUMNS, [_run_cells(r, selected) for r in records]),
                             (text.RUN_COLUMNS, [text.run_cells(r, selected) for r in texts])])
    return out


def _task_section(task: str, recs: list[dict], rows: list[dict], metric: str, store: ResultsStore) -> list[str]:
    """One task's part of report.md: protocol, table, winner, other metric, stability, found prompts."""
    models = sorted({r["model"] for r in recs})
    splits = len({r["data_seed"] for r in recs})
    k, how = recs[0].get("k"), recs[0].get("protocol")
    given = "FewGLUE" if how is None or task in ("cb", "rte", "boolq") else "the train and dev files as given"
    protocol = (f"K = {k} per class; {splits} data seed{'s' if splits > 1 else ''}" if k is not None else
                f"fixed split of {recs[0].get('n_train', '?')} training and {recs[0].get('n_dev', '?')} "
                f"dev examples ({given}), so the spread is across training seeds")
    if how == "kshot-dev-file":
        protocol += "; the dev set K per class from the dev file"
    sizes = sorted({r["n_test"] for r in recs if r.get("n_test")})
    limits = {r.get("test_limit") for r in recs}
    if sizes:
        sample = "a fixed random sample (seed 0) of the test set" if limits != {None} else "the whole test set"
        protocol += f"; test: {' and '.join(map(str, sizes))} examples, {sample}"
    lines = [f"## {task}", "", f"Model: {', '.join(models)}; {protocol}; metric: {metric}. "
             "\"sel.\" = the run selected by dev in each data split; \"all\" = every run; "
             "95% CI: the mean of the selected runs when the test examples are drawn again "
             "(bootstrap, 1,000 draws), the part of a score that is the luck of the test sample.", "",
             summary_table(rows), ""] + _caveats(recs, rows, store)
    if len(rows) > 1:
        lines += [winner_line(rows, paired_test(store, rows[0], rows[1])), ""] + paired_sections(store, rows)
    variance = variance_line(recs, rows, metric)
    lines += [variance, ""] if variance else []
    lines += _other_metrics(rows, metric)
    lines += ["### Stability", "", stability_table(rows), ""]
    found = found_prompts_table(recs, metric)
    if found:
        lines += ["### Found prompts", "", "The prompt each run found, its triggers written into the "
                  "template; ✓ = the run selected by dev in its data split.", "", found, ""]
    return lines


def _classes_section(recs: list[dict], rows: list[dict], classes: dict) -> list[str]:
    """Per class: recall and precision of each setting, and every collapsed run by name."""
    table = per_class_table(rows, classes)
    if not table:
        return []
    lines = ["### Per class", "", "Recall / precision (%) of each class over the dev-selected runs of each "
             "setting (their test predictions pooled); the confusion matrices are in the `confusion` plot. "
             f"A run has collapsed when one class takes >= {100 * COLLAPSE_SHARE:.0f}% of its test predictions "
             "while it is under that share of the gold labels.", "", table, ""]
    collapsed = [r for r in recs if (classes.get(r["run_id"]) or {}).get("collapsed")]
    if collapsed:
        lines += [f"**Collapsed runs ({len(collapsed)} of {len(recs)}):**", ""]
        for r in collapsed:
            label, share = classes[r["run_id"]]["majority"]
            seeds = f"data seed {r['data_seed']}" + (f", train seed {r['train_seed']}" if r["train_seed"] is not None else "")
            lines.append(f"- {r['label']} `{short(r['template'])}` ({seeds}): predicts {label!r} for "
                         f"{pct(share)}% of test")
        lines.append("")
    else:
        lines += ["No run collapsed.", ""]
    return lines


SUMMARY_COLUMNS = ("task", "method", "label", "template", "verbalizer", "model", "k", "trainable_params", "runs",
                   "dev_selected", "test_selected_mean", "test_selected_std", "test_all_mean", "test_all_std",
                   "test_min", "test_max", "std_data_seeds", "std_train_seeds", "selection_gain", "collapsed",
                   "seconds", "test_ci_low", "test_ci_high", "test_selected_macro_f1", "n_test", "majority_label",
                   "majority_share", "predicted_most", "predicted_most_share")
RUN_COLUMNS = ("run_id", "task", "label", "template", "verbalizer", "data_seed", "train_seed", "selected",
               "dev_accuracy", "test_accuracy", "test_macro_f1", "collapsed", "seconds", "n_test")


def _write_csv(path: Path, kinds: Sequence[tuple[Sequence[str], list[dict]]]) -> None:
    """One CSV of every kind of row (``(columns, rows of cells by column)``): the columns of each kind that has
    rows, a column named twice once (the first kind's alone when none has rows), each row's cells by name,
    empty where its kind has no such column."""
    header = list(dict.fromkeys(c for columns in ([cols for cols, rows in kinds if rows] or [kinds[0][0]])
                                for c in columns))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for _, rows in kinds:
            for cells in rows:
                w.writerow([cells.get(c) for c in header])


def _summary_cells(r: dict) -> dict:
    sample = r.get("sample") or {}
    majority, most = sample.get("majority") or (None, None), sample.get("predicted_most") or (None, None)
    return dict(zip(SUMMARY_COLUMNS, [
        r["task"], r["method"], r["label"], r["template"], row_verbalizer(r), r["model"], r["k"], r["trainable_params"],
        r["runs"], r["dev_selected"], r["test_selected"]["mean"], r["test_selected"]["std"], r["test_all"]["mean"],
        r["test_all"]["std"], r["test_all"]["min"], r["test_all"]["max"], r["std_data_seeds"], r["std_train_seeds"],
        r["selection_gain"], r["collapsed"], r["seconds"], *(r["test_interval"] or (None, None)),
        r["test_selected_metrics"].get("macro_f1"), r.get("n_test"), *majority, *most]))


def _run_cells(r: dict, selected: set[str]) -> dict:
    return dict(zip(RUN_COLUMNS, [
        r["run_id"], r["task"], r["label"], r["template"], verbalizer_text(r["verbalizer"]), r["data_seed"],
        r["train_seed"], r["run_id"] in selected, csv_cell(score(r, "dev", "accuracy")),
        csv_cell(score(r, "test", "accuracy")), csv_cell(score(r, "test", "macro_f1")), r.get("collapsed"),
        r.get("seconds"), r.get("n_test")]))


def _caveats(recs: list[dict], rows: list[dict], store: ResultsStore) -> list[str]:
    """What a reader must know under the table: the settings not above the majority class, and runs
    whose saved predictions are missing (their rows lack intervals, paired tests and per-class results)."""
    lines = []
    majorities = majority_rows(rows)
    below = [r for r in rows if (gain := above_majority(r, majorities)) is not None and gain <= 0]
    if below:
        names = "; ".join(f"{r['label']} (`{short(r['template'], 32)}`)" for r in below)
        lines += [f"† not above the majority class of its test sample: {names}.", ""]
    missing = [r for r in recs if store.load_predictions(r["run_id"]) is None]
    if missing:
        lines += [f"{len(missing)} of {len(recs)} runs have no saved predictions (`predictions/RUN_ID.json`, e.g. "
                  f"`predictions/{missing[0]['run_id']}.json`): their rows have no test-sample interval, majority "
                  "class, paired test or per-class results. Delete those runs' records and run the config again "
                  "to have them.", ""]
    return lines
