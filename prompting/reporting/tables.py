"""The report's tables (markdown) and the cells they are made of."""

from __future__ import annotations

import math
from typing import Sequence

from prompting.reporting.aggregate import pooled_confusion, score, select_runs

__all__ = ["summary_table", "zero_shot_table", "stability_table", "found_prompts_table", "found_template",
           "per_class_table", "short", "pct", "fmt", "code", "row_label", "row_verbalizer", "verbalizer_text",
           "csv_cell", "param_count", "METRIC_NAMES", "majority_rows", "above_majority"]


def short(text: str, width: int = 48) -> str:
    text = text.replace("\n", "⏎").replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1",
                "unmatched": "unmatched share (written answers that named no label word)"}


def verbalizer_text(v, order: Sequence[str] | None = None) -> str:
    """A verbalizer's words, label by label in the task's order (``order``), else as recorded."""
    if isinstance(v, dict):
        labels = [label for label in order if label in v] if order and set(order) == set(v) else list(v)
        return " / ".join(",".join(v[label]) for label in labels)
    return str(v)


def row_verbalizer(r: dict) -> str:
    """The verbalizer as a table shows it (its labels in the task's order where the predictions say
    it); a multiple-choice task's with how its choices are scored."""
    order = (r.get("sample") or {}).get("labels")
    return verbalizer_text(r["verbalizer"], order) + (f" ({r['choice_score']})" if r.get("choice_score") else "")


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


def majority_rows(rows: Sequence[dict]) -> list[dict]:
    """One row per test sample of ``rows`` (they differ in size only when runs were scored on other test
    examples): what always answering the class that is most of its gold labels scores."""
    found = {}
    sized = any(r.get("n_test") for r in rows if r.get("sample"))
    for r in rows:
        sample = r.get("sample")
        if sample and r.get("n_test") not in found and (r.get("n_test") or not sized):
            label, share = sample["majority"]
            found[r.get("n_test")] = {"label": label, "share": share, "n_test": r.get("n_test")}
    return list(found.values())


def above_majority(row: dict, majorities: Sequence[dict]) -> float | None:
    """How far (a share) the row's dev-selected test mean is above its test sample's majority class."""
    same = [m for m in majorities if m["n_test"] == row.get("n_test")] or \
        (majorities if len(majorities) == 1 else [])  # a row whose records do not say their test size
    mean = row["test_selected"]["mean"]
    return None if not same or math.isnan(mean) or row.get("metric", "accuracy") != "accuracy" \
        else mean - same[0]["share"]


def summary_table(rows: Sequence[dict]) -> str:
    """Markdown: one row per setting, best first, with the majority class of each test sample as a row
    of its own; a setting that does not score above it is marked †."""
    majorities = majority_rows(rows) if all(r.get("metric", "accuracy") == "accuracy" for r in rows) else []
    lines = ["| method | template | verbalizer | trainable | test n | dev (sel.) | test (sel.) mean ± std | "
             "95% CI (test sample) | vs majority | test (all) mean ± std | min–max | predicted most | collapsed | "
             "runs | time (s) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    pending = sorted(majorities, key=lambda m: -m["share"])
    for r in rows:
        while pending and pending[0]["share"] > r["test_selected"]["mean"]:
            lines.append(_majority_line(pending.pop(0)))
        lines.append(_summary_line(r, above_majority(r, majorities)))
    lines += [_majority_line(m) for m in pending]
    return "\n".join(lines)


def _summary_line(r: dict, gain: float | None) -> str:
    sel, alls = r["test_selected"], r["test_all"]
    ci, sample = r.get("test_interval"), r.get("sample") or {}
    most = sample.get("predicted_most")
    return (f"| {r['label']}{' †' if gain is not None and gain <= 0 else ''} | `{short(r['template'])}` | "
            f"{short(row_verbalizer(r), 28)} | {param_count(r['trainable_params'])} | {r.get('n_test') or '–'} | "
            f"{pct(r['dev_selected'])} | {mean_std(sel, r['data_seeds'])} | "
            f"{f'{pct(ci[0])}–{pct(ci[1])}' if ci else '–'} | {'–' if gain is None else f'{100 * gain:+.1f}'} | "
            f"{pct(alls['mean'])} ± {pct(alls['std'])} | {pct(alls['min'])}–{pct(alls['max'])} | "
            f"{f'{short(str(most[0]), 12)} ({pct(most[1])}%)' if most else '–'} | {r['collapsed']} | {r['runs']} | "
            f"{r['seconds']:.0f} |")


def _majority_line(m: dict) -> str:
    return (f"| *majority class* (always `{short(str(m['label']), 20)}`) | – | – | 0 | {m['n_test'] or '–'} | – | "
            f"{pct(m['share'])} | – | – | – | – | {short(str(m['label']), 12)} (100.0%) | – | – | – |")


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
        every = sum(map(sum, matrix))  # with written answers' unmatched ones (a last column)
        lines.append(f"| {row_label(r)} | `{short(r['template'])}` | " + " | ".join(cells)
                     + f" | {short(str(labels[top]), 20)} ({pct(counts[top] / max(1, every))}%) |")
    return "\n".join(lines)
