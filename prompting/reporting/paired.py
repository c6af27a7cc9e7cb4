"""Which row is better, and by how much that is more than luck: the best row against the runner-up,
paired bootstrap tests between rows over data seeds and test examples, and where each method's
spread comes from."""

from __future__ import annotations

import math
from typing import Sequence

from prompting.experiment.results import ResultsStore, gold_indices
from prompting.reporting.aggregate import predicted_columns, score
from prompting.reporting.significance import paired_bootstrap, variance_split
from prompting.reporting.tables import above_majority, majority_rows, pct, row_label, short

__all__ = ["SIGNIFICANCE", "winner_line", "verdict", "paired_test", "paired_table", "paired_rows_table",
           "paired_sections", "variance_line", "pairing_problem", "recipe_sections"]


SIGNIFICANCE = 0.05


def winner_line(rows: Sequence[dict], test: dict | None = None) -> str:
    """The best row against the runner-up: the gap, the spread, the test-sample interval, and the paired
    test (``test``: :func:`paired_test` of the two, when they can be paired)."""
    if len(rows) < 2 or any(math.isnan(r["test_selected"]["mean"]) for r in rows[:2]):
        return ""
    best, second = rows[0], rows[1]
    gain = above_majority(best, majority_rows(rows))
    if gain is not None and gain <= 0:
        label, share = best["sample"]["majority"]
        return (f"No setting scores above the majority class of its test sample (always `{label}`: "
                f"{pct(share)}%); the highest, **{best['label']}** (`{short(best['template'])}`), is at "
                f"{pct(best['test_selected']['mean'])}.")
    gap = best["test_selected"]["mean"] - second["test_selected"]["mean"]
    text = (f"Best: **{best['label']}** (`{short(best['template'])}`) at {pct(best['test_selected']['mean'])}; "
            f"{100 * gap:.1f} points above {second['label']} ({pct(second['test_selected']['mean'])})")
    spread = _spread_said(best, second, gap)
    if spread:
        text += ", " + spread
    ci = best.get("test_interval")
    if ci:
        inside = "inside" if ci[0] <= second["test_selected"]["mean"] <= ci[1] else "outside"
        text += f"; the runner-up is {inside} the best's 95% test-sample interval ({pct(ci[0])}–{pct(ci[1])})"
    if test:
        text += f"; paired test: {verdict(test, second['label'])}"
    return text + "."


def _spread_said(best: dict, second: dict, gap: float) -> str:
    """The gap against the spread the runs measured: across data seeds, or with one fixed split across
    training seeds; nothing where neither was measured (one run of each)."""
    if min(best["data_seeds"], second["data_seeds"]) > 1:
        spread, across = max(best["std_data_seeds"], second["std_data_seeds"]), "data seeds"
    elif max(best["runs"] / best["data_seeds"], second["runs"] / second["data_seeds"]) > 1:
        # one fixed split: the luck left to measure is the training seed's
        spread, across = max(best["std_train_seeds"], second["std_train_seeds"]), "training seeds (one data split)"
    else:
        return ""
    return ("larger than" if gap > spread else "within") + f" the spread across {across} (std {pct(spread)})"


def verdict(test: dict, other: str) -> str:
    """A paired test of the best row against ``other`` in words, with its p-value."""
    better = test["p"] < SIGNIFICANCE and test["difference"] > 0
    what = "significantly better than" if better else "not distinguishable from"
    return f"{what} {other} (p = {_p(test['p'])})"


def _p(p: float) -> str:
    return f"{p:.3f}"  # 2,000 draws: never below 2/2001, shown as 0.001


def correct(store: ResultsStore, rid: str):
    """A run's test gold labels (as column indices of its scores; -1: unknown) and whether it got each
    right (None without saved predictions; a written answer that named no label is wrong). Gold labels are
    saved by name beside the label order, or, in files written before that, as the indices themselves."""
    import numpy as np

    saved = store.load_predictions(rid)
    predicted = predicted_columns(saved, "test", saved.get("labels") or []) if saved else None
    if not predicted or "test_gold" not in saved:
        return None
    gold = np.asarray(gold_indices(saved, "test"))
    return gold, (np.asarray(predicted) == gold).astype(float)


def paired_test(store: ResultsStore, a: dict, b: dict) -> dict | None:
    """:func:`prompting.reporting.significance.paired_bootstrap` of rows ``a`` and ``b`` (accuracy of the
    dev-selected runs) over the data seeds both have and their shared test examples; None when they
    cannot be paired (no common data seed, missing predictions, other test examples)."""
    seeds = sorted(set(a["selected_by_seed"]) & set(b["selected_by_seed"]), key=str)
    pairs = [(correct(store, a["selected_by_seed"][s]), correct(store, b["selected_by_seed"][s])) for s in seeds]
    if not pairs or any(x is None or y is None or len(x[0]) != len(y[0]) or (x[0] != y[0]).any() for x, y in pairs):
        return None
    return paired_bootstrap([x[1] for x, _ in pairs], [y[1] for _, y in pairs])


def pairing_problem(store: ResultsStore, a: dict, b: dict) -> str:
    """Why rows ``a`` and ``b`` cannot be paired, in a few words."""
    seeds = sorted(set(a["selected_by_seed"]) & set(b["selected_by_seed"]), key=str)
    if not seeds:
        return "no data seed in common"
    found = [correct(store, row["selected_by_seed"][s]) for s in seeds for row in (a, b)]
    if any(f is None for f in found):
        return "saved predictions missing"
    return "other test examples"


def paired_table(store: ResultsStore, reference: dict, others: Sequence[dict], above: bool = False) -> str:
    """Markdown: each of ``others`` paired with ``reference`` (see :func:`paired_test`); the difference is
    reference − other, or other − reference when ``above`` (how far each row is above the reference)."""
    found = []
    for other in others:
        test = paired_test(store, other, reference) if above else paired_test(store, reference, other)
        found.append((other, test, None if test else pairing_problem(store, reference, other)))
    return paired_rows_table(reference, found, above)


def paired_rows_table(reference: dict, found: Sequence[tuple[dict, dict | None, str | None]], above: bool = False,
                      points: float = 100.0) -> str:
    """Markdown: a row per ``(other row, its paired test with reference or None, why not paired)``; the
    tests' differences times ``points`` are the points shown (100 for a share, 1 for a 0-100 score)."""
    name = f"{row_label(reference)} (`{short(reference['template'], 32)}`)"
    header = f"row − {name}" if above else f"{name} − row"
    lines = [f"| row | template | {header} (points) | 95% CI | p | |", "|---|---|---:|---:|---:|---|"]
    for other, test, why in found:
        if test is None:
            lines.append(f"| {row_label(other)} | `{short(other['template'])}` | – | – | – | not paired ({why}) |")
            continue
        said = ("higher" if test["difference"] > 0 else "lower") if test["p"] < SIGNIFICANCE else "not distinguishable"
        lines.append(f"| {row_label(other)} | `{short(other['template'])}` | {points * test['difference']:+.1f} | "
                     f"{points * test['low']:+.1f} to {points * test['high']:+.1f} | {_p(test['p'])} | {said} |")
    return "\n".join(lines)


def variance_line(records: Sequence[dict], rows: Sequence[dict], metric: str) -> str:
    """Where each method's spread comes from: shares of the variance of its runs' test scores between
    templates, data seeds and training seeds (see :func:`prompting.reporting.significance.variance_split`)."""
    parts = []
    for label in dict.fromkeys(row_label(r) for r in rows if not r["ensemble"] and not r["calibration"]):
        runs = [(r["template"], r["data_seed"], r["train_seed"], score(r, "test", metric)) for r in records
                if row_label(r) == label and not r.get("ensemble_of") and not r.get("calibration")]
        split = variance_split(runs)
        if split:
            parts.append(f"{label} " + " / ".join(f"{100 * v:.0f}%" for v in split.values()))
    if not parts:
        return ""
    return (f"Variance split (share of the variance of test {metric} over every run of a method between templates / "
            "data seeds / training seeds): " + "; ".join(parts) + ".")


def paired_sections(store: ResultsStore, rows: list[dict]) -> list[str]:
    """The best row against every other, and the best zero-shot row against every row that is not
    zero-shot: paired bootstrap over data seeds and test examples."""
    how = ("Paired bootstrap of test accuracy over data seeds and test examples (2,000 draws; the dev-selected "
           f"run of each data seed); p < {SIGNIFICANCE} counts as a difference.")
    lines = ["### Paired tests", "", how, "", "The best row against every other:", "",
             paired_table(store, rows[0], rows[1:]), ""]
    zero = [r for r in rows if r["method"] == "manual" and r["train"] is False and not r["calibration"]
            and not r["ensemble"]]
    others = [r for r in rows if r["train"] is not False or r["calibration"]]
    if zero and others:
        lines += [f"Against the best zero-shot prompt ({row_label(zero[0])}, `{short(zero[0]['template'], 32)}`):", "",
                  paired_table(store, zero[0], others, above=True), ""]
    return lines + recipe_sections(store, rows)


def recipe_sections(store: ResultsStore, rows: list[dict]) -> list[str]:
    """Where PET's recipe has rows (a distilled model, an iPET generation): its ensembles, distilled models
    and generations against each single-pattern PET row, and they and PET against the best learned prompt."""
    if not any(r.get("stage") for r in rows):
        return []
    plain = [r for r in rows if not r["calibration"] and r["train"] is not False]
    single = [r for r in plain if r["method"] == "manual" and not r["ensemble"] and not r.get("stage")]
    recipe = [r for r in plain if r.get("stage") or (r["ensemble"] and r["method"] in ("manual", "ipet"))]
    learned = [r for r in plain if r["method"] not in ("manual", "ipet", "icl") and not r["ensemble"]]
    lines = []
    for reference in single:
        lines += [f"PET's recipe against single-pattern {row_label(reference)} (`{short(reference['template'], 32)}`):",
                  "", paired_table(store, reference, recipe, above=True), ""]
    if learned:
        lines += [f"Against the best learned prompt ({row_label(learned[0])}, `{short(learned[0]['template'], 32)}`):",
                  "", paired_table(store, learned[0], single + recipe, above=True), ""]
    return lines
