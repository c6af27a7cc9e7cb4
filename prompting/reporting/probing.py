"""Fact-probing tables: relation x method, P@1 (and P@10, MRR), with the macro-average over relations; its
95% interval and each learned prompt against the manual template, per relation and macro-averaged (paired
bootstrap over the relation's test facts); a plot of P@1 per relation."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from prompting.experiment.results import ResultsStore
from prompting.reporting.significance import paired_bootstrap, stratified_bootstrap
from prompting.tasks.lama import macro_average

__all__ = ["probe_table", "is_probe_record", "fact_scores", "probe_baseline", "paired_probe_tables", "probe_plot"]

#: a difference counts below this p-value
SIGNIFICANCE = 0.05
#: the per-fact scores paired: 1 or 0 (P@1, P@10), the reciprocal rank (MRR)
PER_FACT = {"p_at_1": lambda ranks: ranks <= 1, "p_at_10": lambda ranks: ranks <= 10, "mrr": lambda ranks: 1.0 / ranks}


def is_probe_record(record: dict) -> bool:
    return record.get("task") == "lama" and "protocol" in record


def _columns(records: Sequence[dict]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r["label"], r["protocol"]) for r in records))


def probe_table(records: Sequence[dict], metric: str = "p_at_1") -> str:
    """Markdown: one row per relation, one column per (method, protocol), ``metric`` in percent;
    a last row with each column's macro-average over the relations that have it."""
    records = [r for r in records if is_probe_record(r)]
    if not records:
        return "(no fact-probing records)"
    columns = _columns(records)
    cells: dict[str, dict] = defaultdict(dict)
    sizes: dict[str, dict] = defaultdict(dict)
    for r in records:
        cells[r["relation"]][(r["label"], r["protocol"])] = r["test"]
        sizes[r["relation"]][r["protocol"]] = r["n_test"]
    head = ["relation", "test facts (cand. / vocab)"] + [f"{label} ({protocol})" for label, protocol in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * len(columns)]
    for relation in cells:
        size = f"{sizes[relation].get('candidates', '-')} / {sizes[relation].get('vocab', '-')}"
        row = [relation, size] + [_pct(cells[relation].get(c), metric) for c in columns]
        lines.append("| " + " | ".join(row) + " |")
    macro = []
    for c in columns:
        have = {rel: cells[rel][c] for rel in cells if c in cells[rel]}
        macro.append(_pct(macro_average(have) if len(have) == len(cells) else None, metric))
    lines.append("| **macro-average** | | " + " | ".join(macro) + " |")
    return "\n".join(lines)


def _pct(metrics: dict | None, metric: str) -> str:
    return "-" if not metrics else f"{100 * metrics[metric]:.1f}"


def templates_table(records: Sequence[dict]) -> str | None:
    """Markdown: the template each (method, protocol) ran on each relation, learned slots included
    (``template_used``; records written before it have none: None when no record has it)."""
    records = [r for r in records if is_probe_record(r) and r.get("template_used")]
    if not records:
        return None
    relations = list(dict.fromkeys(r["relation"] for r in records))
    used = {(r["label"], r["protocol"], r["relation"]): r["template_used"] for r in records}
    lines = ["| method | " + " | ".join(relations) + " |", "|---|" + "---|" * len(relations)]
    for label, protocol in _columns(records):
        cells = [used.get((label, protocol, rel)) for rel in relations]
        shown = ["-" if c is None else "`" + c.replace("\n", "⏎").replace("|", "\\|") + "`" for c in cells]
        lines.append(f"| {label} ({protocol}) | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def fact_scores(store: ResultsStore | None, record: dict, metric: str) -> tuple[np.ndarray, list | None] | None:
    """A probing run's per-fact ``metric`` (from the saved ranks) and its facts' subjects (None in files
    written before they were saved); None without saved ranks."""
    saved = store.load_predictions(record["run_id"]) if store is not None else None
    if not saved or not saved.get("test_ranks"):
        return None
    ranks = np.asarray(saved["test_ranks"], dtype=float)
    return PER_FACT[metric](ranks).astype(float), saved.get("test_subjects")


def probe_baseline(records: Sequence[dict]) -> dict[tuple[str, str], dict]:
    """Per (relation, protocol): the manual template's zero-shot run (the first, if there are several)."""
    found: dict[tuple[str, str], dict] = {}
    for r in records:
        if is_probe_record(r) and r["method"] == "manual" and r.get("train_seed") is None:
            found.setdefault((r["relation"], r["protocol"]), r)
    return found


def _paired(store, a: dict, b: dict, metric: str):
    """(``a``'s, ``b``'s per-fact scores) on the same facts, or the reason they cannot be paired."""
    x, y = fact_scores(store, a, metric), fact_scores(store, b, metric)
    if x is None or y is None:
        return "saved ranks missing"
    if len(x[0]) != len(y[0]) or (x[1] is not None and y[1] is not None and x[1] != y[1]):
        return "other test facts"
    return x[0], y[0]


def paired_probe_tables(store: ResultsStore | None, records: Sequence[dict], metric: str = "p_at_1") -> list[str]:
    """report.md's lines: per protocol, every learned prompt (a trained run: not the baseline, not the
    majority object) against the manual template on each relation, and the macro-average over the relations
    where both ran, each with its 95% interval and p-value (paired bootstrap over the relation's test facts,
    2,000 draws; the macro-average resamples each relation's facts on its own). Empty without a manual run
    to pair with."""
    records = [r for r in records if is_probe_record(r)]
    baselines = probe_baseline(records)
    order = {rel: i for i, rel in enumerate(dict.fromkeys(r["relation"] for r in records))}
    name = {"p_at_1": "P@1", "p_at_10": "P@10", "mrr": "MRR (x100)"}[metric]
    lines = []
    for protocol in dict.fromkeys(r["protocol"] for r in records):
        learned = [r for r in records if r["protocol"] == protocol and r.get("train_seed") is not None
                   and (r["relation"], protocol) in baselines]
        rows, verdicts = [], []
        for label in dict.fromkeys(r["label"] for r in learned):
            runs = sorted((r for r in learned if r["label"] == label), key=lambda r: order[r["relation"]])
            found, verdict = _against_manual(store, label, [(r, baselines[(r["relation"], protocol)]) for r in runs],
                                             metric)
            rows += found
            verdicts.append(verdict)
        if rows:
            lines += [f"#### {protocol}: {name}, learned prompt − manual template", "",
                      "| relation | learned prompt | test facts | manual | learned | difference (points, 95% interval) "
                      "| p | |", "|---|---|---:|---:|---:|---|---:|---|", *rows, "", " ".join(verdicts), ""]
    return lines


def _against_manual(store, label: str, pairs: Sequence[tuple[dict, dict]], metric: str) -> tuple[list[str], str]:
    """One learned prompt's (run, manual run) of each relation: the table's rows (the macro-average last)
    and the sentence that sums them up."""
    rows, groups, unpaired = [], [], []
    said: dict[str, list[str]] = {"higher": [], "lower": [], "not distinguishable": []}
    for run, base in pairs:
        pair = _paired(store, run, base, metric)
        if isinstance(pair, str):
            unpaired.append(f"{run['relation']} ({pair})")
            rows.append(f"| {run['relation']} | {label} | – | – | – | – | – | not paired ({pair}) |")
            continue
        test = paired_bootstrap(pair[0][None], pair[1][None])
        groups.append(pair)
        said[_said(test)].append(run["relation"])
        rows.append(f"| {run['relation']} | {label} | {len(pair[0])} | {100 * pair[1].mean():.1f} | "
                    f"{100 * pair[0].mean():.1f} | {_diff(test)} | {test['p']:.3f} | {_said(test)} |")
    if len(groups) > 1:
        test = stratified_bootstrap(groups)
        rows.append(f"| **macro-average** ({len(groups)} relations) | {label} | {test['examples']} | "
                    f"{100 * np.mean([b.mean() for _, b in groups]):.1f} | {100 * np.mean([a.mean() for a, _ in groups]):.1f}"
                    f" | {_diff(test)} | {test['p']:.3f} | {_said(test)} |")
    if not groups:
        return rows, f"**{label}** is not paired with the manual template on any relation (not paired: {', '.join(unpaired)})."
    better, worse, same = said["higher"], said["lower"], said["not distinguishable"]
    return rows, (f"**{label}** is above the manual template with p < {SIGNIFICANCE} on {len(better)} of {len(groups)} "
                  "relations" + (f" ({', '.join(better)})" if better else "")
                  + (f", below it on {', '.join(worse)}" if worse else "")
                  + (f"; not distinguishable on {', '.join(same)}" if same else "")
                  + (f"; not paired: {', '.join(unpaired)}" if unpaired else "") + ".")


def _said(test: dict) -> str:
    if test["p"] >= SIGNIFICANCE:
        return "not distinguishable"
    return "higher" if test["difference"] > 0 else "lower"


def _diff(test: dict) -> str:
    return f"{100 * test['difference']:+.1f} ({100 * test['low']:+.1f} to {100 * test['high']:+.1f})"


def macro_intervals(store: ResultsStore | None, records: Sequence[dict], metric: str = "p_at_1") -> str | None:
    """Markdown: each (method, protocol)'s macro-average of ``metric`` over the relations it ran, with its
    95% interval (each relation's test facts resampled on their own); None without saved ranks."""
    records = [r for r in records if is_probe_record(r)]
    lines = []
    for label, protocol in _columns(records):
        found = [fact_scores(store, r, metric) for r in records if (r["label"], r["protocol"]) == (label, protocol)]
        if not found or any(f is None for f in found):
            continue
        test = stratified_bootstrap([(f[0], np.zeros_like(f[0])) for f in found])
        lines.append(f"| {label} ({protocol}) | {len(found)} | {test['examples']} | {100 * test['difference']:.1f} | "
                     f"{100 * test['low']:.1f}–{100 * test['high']:.1f} |")
    if not lines:
        return None
    return "\n".join(["| method | relations | test facts | macro-average | 95% interval |", "|---|---:|---:|---:|---|",
                      *lines])


def _interval(store, runs: Sequence[dict]) -> tuple[float, float, float] | None:
    """The macro-average P@1 of ``runs`` (one a relation) and its 95% interval, from their saved ranks."""
    found = [fact_scores(store, r, "p_at_1") for r in runs]
    if not found or any(f is None for f in found):
        return None
    test = stratified_bootstrap([(f[0], np.zeros_like(f[0])) for f in found])
    return test["difference"], test["low"], test["high"]


def probe_plot(store: ResultsStore | None, records: Sequence[dict], folder) -> "Path | None":
    """P@1 per relation, a bar per (method, protocol), each with its 95% interval over the relation's test
    facts (bootstrap; none where the ranks are not saved), the macro-average last."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prompting.reporting.plots import save_figure

    records = [r for r in records if is_probe_record(r)]
    if not records:
        return None
    relations = list(dict.fromkeys(r["relation"] for r in records))
    columns = _columns(records)
    Path(folder).mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(min(14.0, max(7.0, 1.1 * len(relations) + 5)), 4.6))
    width = 0.8 / len(columns)
    for j, column in enumerate(columns):
        mine = {r["relation"]: r for r in records if (r["label"], r["protocol"]) == column}
        bars = []
        for relation in relations:
            run = mine.get(relation)
            bars.append(_interval(store, [run]) or (run["test"]["p_at_1"],) * 3 if run else (np.nan,) * 3)
        every = len(mine) == len(relations)
        bars.append((_interval(store, list(mine.values())) or (macro_average({k: r["test"] for k, r in mine.items()})
                     ["p_at_1"],) * 3) if every else (np.nan,) * 3)
        mean, low, high = (100 * np.array(x) for x in zip(*bars))
        xs = np.arange(len(bars)) + (j - (len(columns) - 1) / 2) * width
        ax.bar(xs, np.nan_to_num(mean), width, yerr=[np.nan_to_num(np.maximum(mean - low, 0)),
                                                      np.nan_to_num(np.maximum(high - mean, 0))],
               capsize=2, label=f"{column[0]} ({column[1]})")
    ax.set_xticks(range(len(relations) + 1), relations + ["macro-average"])
    ax.set_ylabel("test P@1 (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Fact probing: P@1 per relation (bars: 95% interval over the relation's test facts)", fontsize=10)
    fig.tight_layout()
    return save_figure(plt, fig, folder, "lama", "p_at_1")


def probe_report(records: Sequence[dict], store: ResultsStore | None = None, plots_folder=None) -> list[str]:
    """report.md's lines for fact-probing records (the paired tests, intervals and plot need ``store``, the
    folder's saved ranks; the plot is drawn into ``plots_folder`` when given)."""
    lines = ["## Fact probing (LAMA)", ""]
    for metric, name in (("p_at_1", "P@1"), ("p_at_10", "P@10"), ("mrr", "MRR (x100)")):
        lines += [f"### {name}", "", probe_table(records, metric), ""]
    if store is not None:
        intervals = macro_intervals(store, records)
        if intervals:
            lines += ["### Macro-average P@1 with its interval", "",
                      "Each relation counts once; the 95% interval resamples each relation's test facts on their own "
                      "(bootstrap, 2,000 draws).", "", intervals, ""]
        paired = paired_probe_tables(store, records) + paired_probe_tables(store, records, "mrr")
        if paired:
            lines += ["### Learned prompts against the manual template", "",
                      f"Paired bootstrap over each relation's test facts (2,000 draws); the macro-average resamples "
                      f"every relation's facts on their own. p < {SIGNIFICANCE} counts as a difference.", "", *paired]
        if plots_folder is not None:
            plot = probe_plot(store, records, plots_folder)
            if plot is not None:
                lines += [f"![{plot.stem}](plots/{plot.name})", ""]
    templates = templates_table(records)
    if templates is not None:
        lines += ["### Templates used", "", "The template each row ran on each relation, its learned slots "
                  "included ({sub_label}: the subject, {mask}: the object).", "", templates, ""]
    return lines
