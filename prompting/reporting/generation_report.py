"""Generation tasks in report.md, summary.csv, runs.csv and the plots: a table per task (BLEU, chrF and
ROUGE-L of the dev-selected runs over data seeds, BLEU's test-sample interval, test size, empty outputs,
trainable parameters, time), the best row against the runner-up and paired tests against every other row,
and a table of what each row wrote on the first test inputs. The rows, selection, intervals and tests are
:mod:`prompting.reporting.generation`'s.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from prompting.core.textmetrics import TEXT_METRICS
from prompting.experiment.results import ResultsStore
from prompting.reporting.aggregate import score
from prompting.reporting.generation import InputDraws, dev_nll, generation_rows
from prompting.reporting.paired import SIGNIFICANCE, paired_rows_table, verdict
from prompting.reporting.plots import generation_plot
from prompting.reporting.tables import csv_cell, param_count, short

__all__ = ["generation_report", "generation_section", "generation_table", "examples_section", "markdown_text",
           "decoding_text", "SUMMARY_COLUMNS", "RUN_COLUMNS", "summary_cells", "run_cells"]


#: how many test inputs the example table shows, and where its cells are cut
EXAMPLES, EXAMPLE_WIDTH = 3, 80


def points(value: float | None) -> str:
    """A 0-100 score with one decimal; ``–`` when missing."""
    return "–" if value is None or math.isnan(value) else f"{value:.1f}"


def decoding_text(decoding: dict | None) -> str:
    """How a run decoded, in words (``greedy (1 beam), at most 64 new tokens``)."""
    if not decoding:
        return "not recorded"
    beams = decoding.get("num_beams", 1)
    how = "greedy (1 beam)" if beams == 1 else f"beam search ({beams} beams)"
    return f"{how}, at most {decoding.get('max_new_tokens', '?')} new tokens"


def markdown_text(text: str, width: int = EXAMPLE_WIDTH) -> str:
    """Written text for a table cell: new lines as ⏎, other control characters as their pictures (␉, ␎),
    cut at ``width`` characters (…), markdown's characters escaped; ``*(empty)*`` for nothing."""
    if not text:
        return "*(empty)*"
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "⏎")
    text = "".join(chr(0x2400 + ord(c)) if ord(c) < 0x20 else "␡" if c == "\x7f" else c for c in text)
    text = text if len(text) <= width else text[: width - 1] + "…"  # cut before escaping: never half an escape
    return "".join("\\" + c if c in "\\`*_[]<>|~&#" else c for c in text)


def _mean_std(row: dict, metric: str) -> str:
    found = row["metrics"][metric]
    return points(found["mean"]) if row["data_seeds"] < 2 else f"{points(found['mean'])} ± {points(found['std'])}"


def generation_table(rows: Sequence[dict]) -> str:
    """Markdown: one row per setting, best BLEU first (see :func:`generation_rows`)."""
    lines = ["| method | template | trainable | test inputs (refs) | dev NLL (sel.) | BLEU (sel.) mean ± std | "
             "95% CI (BLEU, test sample) | chrF (sel.) mean ± std | ROUGE-L (sel.) mean ± std | empty outputs | "
             "runs | time (s) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ci = r.get("bleu_interval")
        lines.append(f"| {r['label']} | `{short(r['template'])}` | {param_count(r['trainable_params'])} | "
                     f"{r.get('n_test') or '–'} ({r.get('n_references') or '–'}) | "
                     f"{'–' if math.isnan(r['dev_nll']) else format(r['dev_nll'], '.3f')} | {_mean_std(r, 'bleu')} | "
                     f"{f'{points(ci[0])}–{points(ci[1])}' if ci else '–'} | {_mean_std(r, 'chrf')} | "
                     f"{_mean_std(r, 'rouge_l')} | {r['empty_outputs']}/{r['outputs']} | {r['runs']} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def generation_winner_line(rows: Sequence[dict], test: dict | None) -> str:
    """The best row by BLEU against the runner-up: the gap against the spread across data seeds (where there
    are several), the test-sample interval and the paired test (``test``, None where they cannot be paired)."""
    best, second = rows[0]["metrics"]["bleu"]["mean"], rows[1]["metrics"]["bleu"]["mean"]
    if math.isnan(best) or math.isnan(second):
        return ""
    text = (f"Best by BLEU: **{rows[0]['label']}** (`{short(rows[0]['template'])}`) at {points(best)}; "
            f"{best - second:.1f} points above {rows[1]['label']} ({points(second)})")
    if min(rows[0]["data_seeds"], rows[1]["data_seeds"]) > 1:
        spread = max(rows[0]["metrics"]["bleu"]["std"], rows[1]["metrics"]["bleu"]["std"])
        text += f", {'larger than' if best - second > spread else 'within'} the spread across data seeds " \
                f"(std {points(spread)})"
    ci = rows[0].get("bleu_interval")
    if ci:
        inside = "inside" if ci[0] <= second <= ci[1] else "outside"
        text += f"; the runner-up is {inside} the best's 95% test-sample interval ({points(ci[0])}–{points(ci[1])})"
    if test:
        text += f"; paired test: {verdict(test, rows[1]['label'])}"
    return text + "."


def paired_section(draws: InputDraws, rows: Sequence[dict]) -> list[str]:
    """The best row against every other: paired bootstrap of corpus BLEU over data seeds and test inputs."""
    how = ("Paired bootstrap of test BLEU over data seeds and test inputs (2,000 draws; each side's corpus BLEU "
           "from the drawn inputs' summed statistics; the dev-selected run of each data seed); "
           f"p < {SIGNIFICANCE} counts as a difference.")
    found = [(other, draws.paired(rows[0], other), draws.pairing_problem(rows[0], other)) for other in rows[1:]]
    return ["### Paired tests", "", how, "", "The best row against every other:", "",
            paired_rows_table(rows[0], found, points=1.0), ""]


def _input_text(fields: dict) -> str:
    """A test input as written: its one field's text, or every field by name."""
    values = list(fields.values())
    return str(values[0]) if len(values) == 1 else "; ".join(f"{k}: {v}" for k, v in fields.items())


def examples_section(draws: InputDraws, rows: Sequence[dict]) -> list[str]:
    """The first test inputs of the first data seed, their first reference, and what each row's dev-selected
    run of that seed wrote (– where it saved nothing, or was scored on other inputs). Empty when no run
    saved its outputs."""
    seed = min(s for r in rows for s in r["selected_by_seed"])
    written = [draws.saved(r["selected_by_seed"][seed]) if seed in r["selected_by_seed"] else None for r in rows]
    shown = next((saved for saved in written if saved is not None), None)
    if shown is None:
        return []
    inputs = shown["test_inputs"][:EXAMPLES]
    references = [markdown_text(str(x)) for x in (shown.get("test_first_reference") or [])[:len(inputs)]]
    lines = ["| row | template | " + " | ".join(f"input {i + 1}" for i in range(len(inputs))) + " |",
             "|---|---|" + "---|" * len(inputs),
             "| *input* | – | " + " | ".join(markdown_text(_input_text(x)) for x in inputs) + " |",
             "| *first reference* | – | " + " | ".join(references + ["–"] * (len(inputs) - len(references))) + " |"]
    for r, saved in zip(rows, written):
        cells = [markdown_text(saved["test_outputs"][i]) if saved and saved["test_inputs"][i:i + 1] == [x] else "–"
                 for i, x in enumerate(inputs)]
        lines.append(f"| {r['label']} | `{short(r['template'])}` | " + " | ".join(cells) + " |")
    return ["### Example outputs", "", f"The first {len(inputs)} test inputs of data seed {seed}, their first "
            "reference and what the dev-selected run of each row wrote (⏎: a new line; cells cut at "
            f"{EXAMPLE_WIDTH} characters; –: no saved outputs for these inputs).", "", *lines, ""]


def caption(recs: Sequence[dict]) -> str:
    """What a generation task's table is: model, split, test sample, decoding, and what its columns mean."""
    first, seeds = recs[0], len({r["data_seed"] for r in recs})
    split = (f"K = {first['k']}: {first.get('n_train', '?')} training and {first.get('n_dev', '?')} dev pairs; "
             f"{seeds} data seed{'s' if seeds > 1 else ''}" if first.get("k") is not None else
             f"fixed split of {first.get('n_train', '?')} training and {first.get('n_dev', '?')} dev pairs (the "
             "train and dev files as given)")
    sizes = sorted({f"{r['n_test']} inputs ({r.get('n_references', '?')} references)" for r in recs if r.get("n_test")})
    sample = ("a fixed random sample (seed 0) of the test set" if {r.get("test_limit") for r in recs} != {None}
              else "the whole test set")
    decodings = list(dict.fromkeys(json.dumps(r.get("decoding"), sort_keys=True) for r in recs))
    decoding = decoding_text(first.get("decoding")) if len(decodings) == 1 else "per row (in the method column)"
    return (f"Model: {', '.join(sorted({r['model'] for r in recs}))}; {split}; test: {' and '.join(sizes)}, {sample}; "
            f"decoding: {decoding}. Scores on a 0-100 scale: BLEU and chrF (sacreBLEU; corpus scores against all of "
            "an input's references) and ROUGE-L (F-measure against the closest reference, the mean over inputs). "
            "\"sel.\" = the run with the lowest dev NLL of its targets in each data seed (a zero-shot or in-context "
            "prompt has none: its first training seed), mean ± std over data seeds; 95% CI: their BLEU when the "
            "test inputs are drawn again (bootstrap, 1,000 draws; a draw's corpus BLEU from its inputs' summed "
            "statistics), the part of a score that is the luck of the test sample; empty outputs: of the "
            "selected runs' test outputs; time: every run of the row.")


def _missing(recs: Sequence[dict], draws: InputDraws) -> list[str]:
    """A line under the table naming runs without saved per-input scores (their rows lack what needs them)."""
    missing = [r for r in recs if draws.saved(r["run_id"]) is None]
    if not missing:
        return []
    return [f"{len(missing)} of {len(recs)} runs have no saved outputs and per-input scores "
            f"(`predictions/RUN_ID.json`, e.g. `predictions/{missing[0]['run_id']}.json`): their rows have no "
            "test-sample interval, paired test or example outputs. Delete those runs' records and run the config "
            "again to have them.", ""]


def generation_section(task: str, recs: Sequence[dict], rows: Sequence[dict], draws: InputDraws) -> list[str]:
    """One generation task's part of report.md: what was run, the table, the winner, paired tests, examples."""
    lines = [f"## {task}", "", caption(recs), "", generation_table(rows), ""] + _missing(recs, draws)
    if len(rows) > 1:
        winner = generation_winner_line(rows, draws.paired(rows[0], rows[1]))
        lines += ([winner, ""] if winner else []) + paired_section(draws, rows)
    return lines + examples_section(draws, rows)


def _label_decodings(rows: list[dict]) -> None:
    """Where a task's rows decoded in more than one way, each row's label says how."""
    if len({json.dumps(r.get("decoding"), sort_keys=True) for r in rows}) > 1:
        for r in rows:
            decoding = r.get("decoding") or {}
            r["label"] += f" ({decoding.get('num_beams', '?')} beams, {decoding.get('max_new_tokens', '?')} tokens)"


def generation_report(store: ResultsStore, records: Sequence[dict],
                      plots: Path | None) -> tuple[list[str], list[dict], list[Path]]:
    """report.md's lines for generation records (a section per task), their rows (for summary.csv) and the
    plots written into the folder ``plots`` (None: none)."""
    draws, by_task = InputDraws(store), {}
    for r in records:
        by_task.setdefault(r["task"], []).append(r)
    lines, rows, paths = [], [], []
    for task, recs in by_task.items():
        task_rows = generation_rows(store, recs, draws)
        _label_decodings(task_rows)
        rows += task_rows
        lines += generation_section(task, recs, task_rows, draws)
        if plots is not None:
            paths.append(generation_plot(task_rows, task, plots))
            lines += [f"![{paths[-1].stem}](plots/{paths[-1].name})", ""]
    return lines, rows, paths


# ---------------------------------------------------------------------------------------------- CSV files

SUMMARY_COLUMNS = ("task", "method", "label", "template", "model", "k", "trainable_params", "runs", "data_seeds",
                   "decoding", "dev_nll_selected", "test_bleu_mean", "test_bleu_std", "test_bleu_ci_low",
                   "test_bleu_ci_high", "test_chrf_mean", "test_chrf_std", "test_rouge_l_mean", "test_rouge_l_std",
                   "n_test", "n_references", "empty_outputs", "seconds")
RUN_COLUMNS = ("run_id", "task", "label", "template", "data_seed", "train_seed", "selected", "dev_nll", "test_bleu",
               "test_chrf", "test_rouge_l", "empty_outputs", "seconds", "n_test", "n_references")


def summary_cells(row: dict) -> dict:
    """A generation row's summary.csv cells by column (:data:`SUMMARY_COLUMNS`)."""
    ci = row.get("bleu_interval") or (None, None)
    cells = {k: row.get(k) for k in ("task", "method", "label", "template", "model", "k", "trainable_params", "runs",
                                      "data_seeds", "n_test", "n_references", "empty_outputs", "seconds")}
    cells.update(decoding=json.dumps(row.get("decoding"), sort_keys=True), dev_nll_selected=csv_cell(row["dev_nll"]),
                 test_bleu_ci_low=ci[0], test_bleu_ci_high=ci[1])
    for metric, found in row["metrics"].items():
        cells.update({f"test_{metric}_mean": csv_cell(found["mean"]), f"test_{metric}_std": csv_cell(found["std"])})
    return cells


def run_cells(record: dict, selected: set[str]) -> dict:
    """A generation run's runs.csv cells by column (:data:`RUN_COLUMNS`)."""
    nll = dev_nll(record)
    cells = {k: record.get(k) for k in ("run_id", "task", "label", "template", "data_seed", "train_seed",
                                         "empty_outputs", "seconds", "n_test", "n_references")}
    cells.update(selected=record["run_id"] in selected, dev_nll=nll if math.isfinite(nll) else None,
                 **{f"test_{m}": csv_cell(score(record, "test", m)) for m in TEXT_METRICS})
    return cells

