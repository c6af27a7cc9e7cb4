"""The report's tables (markdown) and the cells they are made of."""

from __future__ import annotations

import math
from typing import Sequence

from prompting.reporting.aggregate import pooled_confusion, score, select_runs

__all__ = ["summary_table", "zero_shot_table", "stability_table", "found_prompts_table", "found_template",
           "per_class_table", "short", "pct", "fmt", "code", "row_label", "row_verbalizer", "verbalizer_text",
           "csv_cell", "METRIC_NAMES"]


def short(text: str, width: int = 48) -> str:
    text = text.replace("\n", "⏎").replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1"}


def verbalizer_text(v) -> str:
    if isinstance(v, dict):
        return " / ".join(",".join(ws) for ws in v.values())
    return str(v)


def row_verbalizer(r: dict) -> str:
    """The verbalizer as a table shows it; a multiple-choice task's with how its choices are scored."""
    return verbalizer_text(r["verbalizer"]) + (f" ({r['choice_score']})" if r.get("choice_score") else "")


def row_label(r: dict) -> str:
    """The method's label; a multiple-choice task's with how its choices are scored (tables without a
    verbalizer column)."""
    return r["label"] + (f" ({r['choice_score']})" if r.get("choice_score") else "")


def csv_cell(x: float):
    """A CSV cell: empty for a missing (NaN) score."""
    return None if isinstance(x, float) and math.isnan(x) else x


def pct(x: float | None) -> str:
    """A share as a percentage with one decimal (``0.8125`` -> ``81.2``); ``–`` when missing."""
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def fmt(value) -> str:
    """A setting's value for a table cell or a log line: floats with 4 significant digits, text on one line."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("\n", "⏎").replace("|", "\\|")


def param_count(n) -> str:
    if not n:
        return "0"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def mean_std(spread: dict, splits: int) -> str:
    """``mean ± std`` across data splits; the mean alone for one split (a fixed split has no such spread)."""
    return pct(spread["mean"]) if splits < 2 else f"{pct(spread['mean'])} ± {pct(spread['std'])}"


def summary_table(rows: Sequence[dict]) -> str:
    """Markdown: one row per setting, best first."""
    lines = ["| method | template | verbalizer | trainable | dev (sel.) | test (sel.) mean ± std | "
             "95% CI (test sample) | test (all) mean ± std | min–max | collapsed | runs | time (s) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        sel, alls = r["test_selected"], r["test_all"]
        ci = r.get("test_interval")
        lines.append(
            f"| {r['label']} | `{short(r['template'])}` | {short(row_verbalizer(r), 28)} | "
            f"{param_count(r['trainable_params'])} | {pct(r['dev_selected'])} | "
            f"{mean_std(sel, r['data_seeds'])} | {f'{pct(ci[0])}–{pct(ci[1])}' if ci else '–'} | "
            f"{pct(alls['mean'])} ± {pct(alls['std'])} | "
            f"{pct(alls['min'])}–{pct(alls['max'])} | {r['collapsed']} | {r['runs']} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def zero_shot_table(records: Sequence[dict]) -> str:
    """Markdown: every pattern x verbalizer, sorted by test accuracy (one data split)."""
    seen, rows = set(), []
    for r in sorted(records, key=lambda r: (math.isnan(score(r, "test", "accuracy")), -score(r, "test", "accuracy"))):
        key = (r["template"], str(r["verbalizer"]))
        if key not in seen:
            seen.add(key)
            rows.append(r)
    lines = ["| # | template | verbalizer | accuracy | macro-F1 |", "|---:|---|---|---:|---:|"]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | `{short(r['template'], 70)}` | {verbalizer_text(r['verbalizer'])} | "
                     f"{pct(score(r, 'test', 'accuracy'))} | {pct(score(r, 'test', 'macro_f1'))} |")
    return "\n".join(lines)


def stability_table(rows: Sequence[dict]) -> str:
    lines = ["| method | template | std across data seeds | std across train seeds | collapsed runs | "
             "test of dev-selected − mean of all runs |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        across_splits = pct(r["std_data_seeds"]) if r["data_seeds"] > 1 else "–"
        lines.append(f"| {row_label(r)} | `{short(r['template'])}` | {across_splits} | "
                     f"{pct(r['std_train_seeds'])} | {r['collapsed']}/{r['runs']} | "
                     f"{'–' if math.isnan(r['selection_gain']) else format(100 * r['selection_gain'], '+.1f')} |")
    return "\n".join(lines)


def code(text: str) -> str:
    """Inline code for a markdown table cell, whole (never cut): newlines as ⏎, pipes escaped."""
    text = text.replace("\n", "⏎").replace("|", "\\|")
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" or text.startswith(" ") or text.endswith(" ") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def found_template(record: dict) -> str | None:
    """The prompt a run found (AutoPrompt's triggers written into its template), if any."""
    describe = record.get("describe")
    found = describe.get("found_template") if isinstance(describe, dict) else None
    return found if isinstance(found, str) and found else None


def found_prompts_table(records: Sequence[dict], metric: str = "accuracy") -> str:
    """Markdown: every run whose method found a prompt, with dev and test scores; the run the seed
    search selects in each data split is marked. Empty when no run found one."""
    runs = [r for r in records if found_template(r)]
    if not runs:
        return ""
    selected = select_runs(records, metric)
    order = {}
    for r in runs:  # settings in order of first appearance, then data seed, then training seed
        order.setdefault((r["label"], r["template"], str(r["verbalizer"])), len(order))
    runs.sort(key=lambda r: (order[(r["label"], r["template"], str(r["verbalizer"]))], r["data_seed"],
                             r["train_seed"] is None, r["train_seed"] or 0))
    lines = [f"| method | data seed | train seed | found template | dev {metric} | test {metric} | dev-selected |",
             "|---|---:|---:|---|---:|---:|:---:|"]
    for r in runs:
        lines.append(f"| {r['label']} | {r['data_seed']} | {'–' if r['train_seed'] is None else r['train_seed']} | "
                     f"{code(found_template(r))} | {pct(score(r, 'dev', metric))} | "
                     f"{pct(score(r, 'test', metric))} | {'✓' if r['run_id'] in selected else ''} |")
    return "\n".join(lines)


def per_class_table(rows: Sequence[dict], classes: dict) -> str:
    """Markdown: per setting, each class's recall and precision over its dev-selected runs (their
    confusion matrices summed), and the class it predicts most. Empty when no setting has predictions."""
    found = [(r, pooled_confusion(r, classes)) for r in rows]
    found = [(r, m) for r, m in found if m is not None]
    if not found:
        return ""
    labels = found[0][1][0]
    lines = ["| method | template | " + " | ".join(f"{short(str(label), 20)} R / P" for label in labels)
             + " | predicted most |", "|---|---|" + "---:|" * len(labels) + "---|"]
    for r, (own, matrix) in found:
        if own != labels:
            continue
        cells = []
        for i in range(len(labels)):
            gold, predicted = sum(matrix[i]), sum(row[i] for row in matrix)
            cells.append(f"{pct(matrix[i][i] / gold if gold else None)} / "
                         f"{pct(matrix[i][i] / predicted if predicted else None)}")
        counts = [sum(row[j] for row in matrix) for j in range(len(labels))]
        top = max(range(len(labels)), key=counts.__getitem__)
        lines.append(f"| {row_label(r)} | `{short(r['template'])}` | " + " | ".join(cells)
                     + f" | {short(str(labels[top]), 20)} ({pct(counts[top] / max(1, sum(counts)))}%) |")
    return "\n".join(lines)
