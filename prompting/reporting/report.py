"""Tables (markdown, CSV) and plots (PNG) from run records.

``write_report(DIR)`` reads ``DIR/results.jsonl`` and writes ``report.md``, ``summary.csv``,
``runs.csv`` and ``plots/*.png``: accuracy by method with error bars, one point per run, dev vs
test of every run (does selecting by dev help?) and the confusion matrix of each setting's
dev-selected runs. Per class, each setting's recall and precision; a run that gives one class >= 90%
of its test predictions (while that class is under 90% of the gold labels) has *collapsed*, is
counted in the "collapsed" column and named under the per-class table. Runs that found a prompt
(AutoPrompt's ``found_template`` in the record's ``describe``) are listed with it under "Found prompts".
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from prompting.core.data import COLLAPSE_SHARE
from prompting.core.paths import atomic_path, atomic_write, inside, slug
from prompting.experiment.results import (
    ResultsStore,
    aggregate,
    bootstrap_interval,
    gold_indices,
    run_classes,
    score,
    select_runs,
)
from prompting.reporting.probing import is_probe_record, probe_report
from prompting.reporting.significance import paired_bootstrap, variance_split

__all__ = ["summary_table", "zero_shot_table", "found_prompts_table", "write_report", "short", "paired_test",
           "paired_table", "variance_line"]

SIGNIFICANCE = 0.05


def short(text: str, width: int = 48) -> str:
    text = text.replace("\n", "⏎").replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1"}


def _verbalizer(v) -> str:
    if isinstance(v, dict):
        return " / ".join(",".join(ws) for ws in v.values())
    return str(v)


def _row_verbalizer(r: dict) -> str:
    """The verbalizer as a table shows it; a multiple-choice task's with how its choices are scored."""
    return _verbalizer(r["verbalizer"]) + (f" ({r['choice_score']})" if r.get("choice_score") else "")


def _row_label(r: dict) -> str:
    """The method's label; a multiple-choice task's with how its choices are scored (tables without a
    verbalizer column)."""
    return r["label"] + (f" ({r['choice_score']})" if r.get("choice_score") else "")


def _cell(x: float):
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


def _params(n) -> str:
    if not n:
        return "0"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _mean_std(spread: dict, splits: int) -> str:
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
            f"| {r['label']} | `{short(r['template'])}` | {short(_row_verbalizer(r), 28)} | "
            f"{_params(r['trainable_params'])} | {pct(r['dev_selected'])} | "
            f"{_mean_std(sel, r['data_seeds'])} | {f'{pct(ci[0])}–{pct(ci[1])}' if ci else '–'} | "
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
        lines.append(f"| {i} | `{short(r['template'], 70)}` | {_verbalizer(r['verbalizer'])} | "
                     f"{pct(score(r, 'test', 'accuracy'))} | {pct(score(r, 'test', 'macro_f1'))} |")
    return "\n".join(lines)


def _stability_table(rows: Sequence[dict]) -> str:
    lines = ["| method | template | std across data seeds | std across train seeds | collapsed runs | "
             "test of dev-selected − mean of all runs |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        across_splits = pct(r["std_data_seeds"]) if r["data_seeds"] > 1 else "–"
        lines.append(f"| {_row_label(r)} | `{short(r['template'])}` | {across_splits} | "
                     f"{pct(r['std_train_seeds'])} | {r['collapsed']}/{r['runs']} | "
                     f"{'–' if math.isnan(r['selection_gain']) else format(100 * r['selection_gain'], '+.1f')} |")
    return "\n".join(lines)


def _code(text: str) -> str:
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
                     f"{_code(found_template(r))} | {pct(score(r, 'dev', metric))} | "
                     f"{pct(score(r, 'test', metric))} | {'✓' if r['run_id'] in selected else ''} |")
    return "\n".join(lines)


def _winner(rows: Sequence[dict], test: dict | None = None) -> str:
    """The best row against the runner-up: the gap, the spread, the test-sample interval, and the paired
    test (``test``: :func:`paired_test` of the two, when they can be paired)."""
    if len(rows) < 2 or any(math.isnan(r["test_selected"]["mean"]) for r in rows[:2]):
        return ""
    best, second = rows[0], rows[1]
    gap = best["test_selected"]["mean"] - second["test_selected"]["mean"]
    if min(best["data_seeds"], second["data_seeds"]) > 1:
        spread, across = max(best["std_data_seeds"], second["std_data_seeds"]), "data seeds"
    else:  # one fixed split: the luck left to measure is the training seed's
        spread, across = max(best["std_train_seeds"], second["std_train_seeds"]), "training seeds (one data split)"
    verdict = ("larger than" if gap > spread else "within") + f" the spread across {across}"
    text = (f"Best: **{best['label']}** (`{short(best['template'])}`) at {pct(best['test_selected']['mean'])}; "
            f"{100 * gap:.1f} points above {second['label']} ({pct(second['test_selected']['mean'])}), "
            f"{verdict} (std {pct(spread)})")
    ci = best.get("test_interval")
    if ci:
        inside = "inside" if ci[0] <= second["test_selected"]["mean"] <= ci[1] else "outside"
        text += f"; the runner-up is {inside} the best's 95% test-sample interval ({pct(ci[0])}–{pct(ci[1])})"
    if test:
        text += f"; paired test: {_verdict(test, second['label'])}"
    return text + "."


def _verdict(test: dict, other: str) -> str:
    better = test["p"] < SIGNIFICANCE and test["difference"] > 0
    what = "significantly better than" if better else "not distinguishable from"
    return f"{what} {other} (p = {_p(test['p'])})"


def _p(p: float) -> str:
    return f"{p:.3f}"  # 2,000 draws: never below 2/2001, shown as 0.001


def _correct(store: ResultsStore, rid: str):
    """A run's test gold labels (as column indices of its scores; -1: unknown) and whether it got each
    right (None without saved predictions). Gold labels are saved by name beside the label order, or,
    in files written before that, as the indices themselves."""
    import numpy as np

    saved = store.load_predictions(rid)
    if not saved or not saved.get("test") or "test_gold" not in saved:
        return None
    gold = np.asarray(gold_indices(saved, "test"))
    return gold, (np.asarray(saved["test"]).argmax(1) == gold).astype(float)


def paired_test(store: ResultsStore, a: dict, b: dict) -> dict | None:
    """:func:`prompting.reporting.significance.paired_bootstrap` of rows ``a`` and ``b`` (accuracy of the
    dev-selected runs) over the data seeds both have and their shared test examples; None when they
    cannot be paired (no common data seed, missing predictions, other test examples)."""
    seeds = sorted(set(a["selected_by_seed"]) & set(b["selected_by_seed"]), key=str)
    pairs = [(_correct(store, a["selected_by_seed"][s]), _correct(store, b["selected_by_seed"][s])) for s in seeds]
    if not pairs or any(x is None or y is None or len(x[0]) != len(y[0]) or (x[0] != y[0]).any() for x, y in pairs):
        return None
    return paired_bootstrap([x[1] for x, _ in pairs], [y[1] for _, y in pairs])


def paired_table(store: ResultsStore, reference: dict, others: Sequence[dict], above: bool = False) -> str:
    """Markdown: each of ``others`` paired with ``reference`` (see :func:`paired_test`); the difference is
    reference − other, or other − reference when ``above`` (how far each row is above the reference)."""
    name = f"{_row_label(reference)} (`{short(reference['template'], 32)}`)"
    header = f"row − {name}" if above else f"{name} − row"
    lines = [f"| row | template | {header} (points) | 95% CI | p | |", "|---|---|---:|---:|---:|---|"]
    for other in others:
        test = paired_test(store, other, reference) if above else paired_test(store, reference, other)
        if test is None:
            lines.append(f"| {_row_label(other)} | `{short(other['template'])}` | – | – | – | not paired (other test "
                         "examples or data seeds) |")
            continue
        verdict = ("higher" if test["difference"] > 0 else "lower") if test["p"] < SIGNIFICANCE else "not distinguishable"
        lines.append(f"| {_row_label(other)} | `{short(other['template'])}` | {100 * test['difference']:+.1f} | "
                     f"{100 * test['low']:+.1f} to {100 * test['high']:+.1f} | {_p(test['p'])} | {verdict} |")
    return "\n".join(lines)


def variance_line(records: Sequence[dict], rows: Sequence[dict], metric: str) -> str:
    """Where each method's spread comes from: shares of the variance of its runs' test scores between
    templates, data seeds and training seeds (see :func:`prompting.reporting.significance.variance_split`)."""
    parts = []
    for label in dict.fromkeys(_row_label(r) for r in rows if not r["ensemble"] and not r["calibration"]):
        runs = [(r["template"], r["data_seed"], r["train_seed"], score(r, "test", metric)) for r in records
                if _row_label(r) == label and not r.get("ensemble_of") and not r.get("calibration")]
        split = variance_split(runs)
        if split:
            parts.append(f"{label} " + " / ".join(f"{100 * v:.0f}%" for v in split.values()))
    if not parts:
        return ""
    return (f"Variance split (share of the variance of test {metric} over every run of a method between templates / "
            "data seeds / training seeds): " + "; ".join(parts) + ".")


def _other_metrics(rows: Sequence[dict], metric: str) -> list[str]:
    """A line per metric other than the table's: each row's dev-selected test mean, in the table's order."""
    lines = []
    for other in [m for m in rows[0].get("test_selected_metrics", {}) if m != metric]:
        means = [(r["label"], r["test_selected_metrics"].get(other)) for r in rows]
        labels = [label for label, _ in means]
        cells = [f"{label} (`{short(r['template'], 24)}`)" if labels.count(label) > 1 else label
                 for (label, _), r in zip(means, rows)]
        lines += [f"Test {METRIC_NAMES.get(other, other)} of the dev-selected runs: "
                  + "; ".join(f"{cell} {pct(value)}" for cell, (_, value) in zip(cells, means)) + ".", ""]
    return lines


def _setting_name(r: dict) -> str:
    template = r["template"].replace("\n", "\\n")
    template = template if len(template) <= 44 else template[:43] + "…"
    return f"{r['label']}  ·  {template}  ·  {_row_verbalizer(r)}"


def bar_errors(rows: Sequence[dict]) -> tuple[list[float], tuple[list[float], list[float]], list[str], str]:
    """What the by-method plot draws (in %): each row's mean, its error bars below and above, their
    labels, and what the bars are. Over several data splits the bars are the std across them; with
    one data split (FewGLUE's fixed set) that std is 0 by construction, so the bars are the 95%
    test-sample interval instead, when every row has one."""
    means = [100 * r["test_selected"]["mean"] for r in rows]
    intervals = [r.get("test_interval") for r in rows]
    if all(r.get("data_seeds") == 1 for r in rows) and all(intervals):
        below = [max(0.0, m - 100 * lo) for m, (lo, _) in zip(means, intervals)]
        above = [max(0.0, 100 * hi - m) for m, (_, hi) in zip(means, intervals)]
        labels = [f"{m:.1f} [{100 * lo:.1f}–{100 * hi:.1f}]" for m, (lo, hi) in zip(means, intervals)]
        return means, (below, above), labels, "bars: 95% test-sample interval (one data split)"
    stds = [100 * r["test_selected"]["std"] for r in rows]
    return means, (stds, stds), [f"{m:.1f} ± {sd:.1f}" for m, sd in zip(means, stds)], "mean ± std over data seeds"


def _plots(records: list[dict], rows: list[dict], task: str, folder: Path, metric: str,
           classes: dict | None = None) -> list[Path]:
    """The task's plots: dev-selected score by method, every run, dev against test, and the confusion
    matrices of the settings' dev-selected runs (when their predictions are saved)."""
    plots = _TaskPlots(records, rows, task, folder, metric)
    out = [plots.by_method(), plots.runs(), plots.dev_vs_test()]
    matrices = [pooled_confusion(r, classes or {}) for r in rows]
    if any(m is not None for m in matrices):
        out.append(plots.confusion(matrices))
    return out


def pooled_confusion(row: dict, classes: dict) -> tuple[list[str], list[list[int]]] | None:
    """The labels and the summed confusion matrix (rows: gold, columns: predicted) of a setting's
    dev-selected runs; None when a run's predictions are missing."""
    found = [classes.get(rid) for rid in row["selected_run_ids"]]
    if not found or any(f is None or f["labels"] != found[0]["labels"] for f in found):
        return None
    size = len(found[0]["labels"])
    matrix = [[sum(f["confusion"][i][j] for f in found) for j in range(size)] for i in range(size)]
    return found[0]["labels"], matrix


class _TaskPlots:
    """One task's plots, sharing its rows (one per setting, best first), names and chance level."""

    def __init__(self, records: list[dict], rows: list[dict], task: str, folder: Path, metric: str):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        folder.mkdir(parents=True, exist_ok=True)
        self.plt, self.records, self.rows, self.task, self.folder, self.metric = plt, records, rows, task, folder, metric
        self.index = {self.key(r): i for i, r in enumerate(rows)}
        self.names = [_setting_name(r) for r in rows]
        self.height = max(2.6, 0.42 * len(rows) + 1.4)
        verbalizer = rows[0]["verbalizer"]
        self.chance = 100 / max(1, len(verbalizer)) if isinstance(verbalizer, dict) else None

    @staticmethod
    def key(rec: dict) -> tuple:
        return rec["label"], rec["template"], str(rec["verbalizer"])

    def save(self, fig, name: str) -> Path:
        # the task name is user text: "../x" must not put a plot outside the folder
        path = inside(self.folder, f"{slug(self.task)}_{name}.png")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
        self.plt.close(fig)
        return path

    def finish(self, fig, ax, title: str, name: str) -> Path:
        ax.set_yticks(range(len(self.rows)), self.names, fontsize=8)
        ax.invert_yaxis()  # best on top
        if self.chance:
            ax.axvline(self.chance, color="grey", lw=0.8, ls=":", label=f"chance ({self.chance:.0f}%)")
        ax.set_xlabel(f"test {self.metric} (%)")
        fig.suptitle(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        return self.save(fig, name)

    def by_method(self) -> Path:
        fig, ax = self.plt.subplots(figsize=(10, self.height))
        means, (below, above), labels, spread = bar_errors(self.rows)
        ax.barh(range(len(self.rows)), means, xerr=[below, above], capsize=3, color="#4c72b0", height=0.6)
        for i, (m, up, text) in enumerate(zip(means, above, labels)):
            ax.text(m + up + 0.5, i, text, va="center", fontsize=7)
        ax.set_xlim(0, 105)
        return self.finish(fig, ax, f"{self.task}: test {self.metric} of the dev-selected run, {spread}", "by_method")

    def runs(self) -> Path:
        fig, ax = self.plt.subplots(figsize=(10, self.height))
        selected = select_runs(self.records, self.metric)
        for rec in self.records:
            i = self.index.get(self.key(rec))
            if i is None:
                continue
            jitter = ((int(rec["run_id"][:6], 16) % 1000) / 1000 - 0.5) * 0.35
            chosen = rec["run_id"] in selected
            ax.scatter(100 * score(rec, "test", self.metric), i + jitter, s=30 if chosen else 14,
                       color="#dd8452" if chosen else "#4c72b0", alpha=0.9 if chosen else 0.5,
                       edgecolors="black" if chosen else "none", linewidths=0.5, zorder=3)
        return self.finish(fig, ax, f"{self.task}: every run (orange: selected by dev in its data split)", "runs")

    def confusion(self, matrices: list) -> Path:
        """One small heat map per setting: its dev-selected runs' confusion matrix, each gold row as
        shares of that class (the diagonal is the recall), with the counts written in."""
        shown = [(name, m) for name, m in zip(self.names, matrices) if m is not None]
        cols = min(3, len(shown))
        rows = -(-len(shown) // cols)
        size = max(2.4, 0.45 * len(shown[0][1][0]) + 1.4)
        fig, axes = self.plt.subplots(rows, cols, figsize=(size * cols + 0.6, size * rows + 0.5), squeeze=False)
        for ax in axes.flat[len(shown):]:
            ax.axis("off")
        for ax, (name, (labels, matrix)) in zip(axes.flat, shown):
            totals = [max(1, sum(r)) for r in matrix]
            shares = [[v / t for v in r] for r, t in zip(matrix, totals)]
            ax.imshow(shares, vmin=0, vmax=1, cmap="Blues")
            for i, r in enumerate(matrix):
                for j, v in enumerate(r):
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                            color="white" if shares[i][j] > 0.6 else "black")
            ticks = [short(str(label), 10) for label in labels]
            ax.set_xticks(range(len(labels)), ticks, fontsize=6, rotation=45 if len(labels) > 3 else 0)
            ax.set_yticks(range(len(labels)), ticks, fontsize=6)
            ax.set_xlabel("predicted", fontsize=7)
            ax.set_ylabel("gold", fontsize=7)
            label, template, words = name.split("  ·  ", 2)
            ax.set_title(f"{short(label, 40)}\n{short(template, 40)}\n{short(words, 40)}", fontsize=6)
        fig.suptitle(f"{self.task}: confusion of the dev-selected runs (summed; colour: share of the gold class)",
                     fontsize=8)
        fig.tight_layout()
        return self.save(fig, "confusion")

    def dev_vs_test(self) -> Path:
        fig, ax = self.plt.subplots(figsize=(6.5, 5.5))
        cmap = self.plt.get_cmap("tab10")
        for i, r in enumerate(self.rows):
            pts = [(100 * score(rec, "dev", self.metric), 100 * score(rec, "test", self.metric))
                   for rec in self.records if self.key(rec) == self.key(r) and rec["dev"]]
            if pts:
                ax.scatter(*zip(*pts), s=18, color=cmap(i % 10), label=short(self.names[i], 60), alpha=0.8)
        lo = min(ax.get_xlim()[0], ax.get_ylim()[0])
        hi = max(ax.get_xlim()[1], ax.get_ylim()[1])
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--", label="dev = test")
        ax.set_xlabel(f"dev {self.metric} (%)")
        ax.set_ylabel(f"test {self.metric} (%)")
        ax.set_title(f"{self.task}: dev vs test of every run", fontsize=10)
        ax.legend(fontsize=6, loc="best")
        fig.tight_layout()
        return self.save(fig, "dev_vs_test")


def summary_rows(store: ResultsStore, records: list[dict], metric: str = "accuracy") -> list[dict]:
    """The aggregate rows of one task's records, each with the bootstrap interval of its test mean."""
    rows = aggregate(records, metric)
    for row in rows:
        row["test_interval"] = bootstrap_interval(store, row["selected_run_ids"], metric)
    return rows


def write_report(directory: str | Path, metric: str = "accuracy", plots: bool = True) -> dict[str, Path]:
    """Write report.md, summary.csv, runs.csv and plots for the records in ``directory``."""
    directory = Path(directory)
    store = ResultsStore(directory)
    records = store.records()
    if not records:
        raise FileNotFoundError(f"no run records in {directory / 'results.jsonl'}; run an experiment first")

    probes = [r for r in records if is_probe_record(r)]  # fact probing: ranks, not label accuracy
    records = [r for r in records if not is_probe_record(r)]
    classes = {r["run_id"]: run_classes(store, r) for r in records}
    for r in records:  # collapsed as documented, from the saved predictions where there are any
        if classes[r["run_id"]] is not None:
            r["collapsed"] = classes[r["run_id"]]["collapsed"]
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_task[r["task"]].append(r)
    out = {"report": directory / "report.md", "summary": directory / "summary.csv", "runs": directory / "runs.csv"}
    lines = [f"# Results: {directory.name}", ""] + (probe_report(probes) if probes else [])
    summary = []
    for task, recs in by_task.items():
        rows = summary_rows(store, recs, metric)
        summary += rows
        lines += _task_section(task, recs, rows, metric, store)
        lines += _classes_section(recs, rows, classes)
        if plots:
            for p in _plots(recs, rows, task, directory / "plots", metric, classes):
                out[p.stem] = p
                lines += [f"![{p.stem}](plots/{p.name})", ""]
    # each file replaced whole: a process writing the same report at the same time, or a reader, never
    # meets half a file
    atomic_write(out["report"], "\n".join(lines))
    _write_summary_csv(out["summary"], summary)
    _write_runs_csv(out["runs"], records, select_runs(records, metric))
    return out


def _paired_sections(store: ResultsStore, rows: list[dict]) -> list[str]:
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
        lines += [f"Against the best zero-shot prompt ({_row_label(zero[0])}, `{short(zero[0]['template'], 32)}`):", "",
                  paired_table(store, zero[0], others, above=True), ""]
    return lines


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
    lines = [f"## {task}", "", f"Model: {', '.join(models)}; {protocol}; metric: {metric}. "
             "\"sel.\" = the run selected by dev in each data split; \"all\" = every run; "
             "95% CI: the mean of the selected runs when the test examples are drawn again "
             "(bootstrap, 1,000 draws), the part of a score that is the luck of the test sample.", "",
             summary_table(rows), ""]
    if len(rows) > 1:
        lines += [_winner(rows, paired_test(store, rows[0], rows[1])), ""] + _paired_sections(store, rows)
    variance = variance_line(recs, rows, metric)
    lines += [variance, ""] if variance else []
    lines += _other_metrics(rows, metric)
    lines += ["### Stability", "", _stability_table(rows), ""]
    found = found_prompts_table(recs, metric)
    if found:
        lines += ["### Found prompts", "", "The prompt each run found, its triggers written into the "
                  "template; ✓ = the run selected by dev in its data split.", "", found, ""]
    return lines


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
        lines.append(f"| {_row_label(r)} | `{short(r['template'])}` | " + " | ".join(cells)
                     + f" | {short(str(labels[top]), 20)} ({pct(counts[top] / max(1, sum(counts)))}%) |")
    return "\n".join(lines)


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


def _write_summary_csv(path: Path, summary: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "method", "label", "template", "verbalizer", "model", "k", "trainable_params",
                    "runs", "dev_selected", "test_selected_mean", "test_selected_std", "test_all_mean",
                    "test_all_std", "test_min", "test_max", "std_data_seeds", "std_train_seeds",
                    "selection_gain", "collapsed", "seconds", "test_ci_low", "test_ci_high",
                    "test_selected_macro_f1"])
        for r in summary:
            w.writerow([r["task"], r["method"], r["label"], r["template"], _verbalizer(r["verbalizer"]), r["model"],
                        r["k"], r["trainable_params"], r["runs"], r["dev_selected"], r["test_selected"]["mean"],
                        r["test_selected"]["std"], r["test_all"]["mean"], r["test_all"]["std"], r["test_all"]["min"],
                        r["test_all"]["max"], r["std_data_seeds"], r["std_train_seeds"], r["selection_gain"],
                        r["collapsed"], r["seconds"], *(r["test_interval"] or (None, None)),
                        r["test_selected_metrics"].get("macro_f1")])


def _write_runs_csv(path: Path, records: list[dict], selected: set[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run_id", "task", "label", "template", "verbalizer", "data_seed", "train_seed", "selected",
                    "dev_accuracy", "test_accuracy", "test_macro_f1", "collapsed", "seconds"])
        for r in records:
            w.writerow([r["run_id"], r["task"], r["label"], r["template"], _verbalizer(r["verbalizer"]),
                        r["data_seed"], r["train_seed"], r["run_id"] in selected, _cell(score(r, "dev", "accuracy")),
                        _cell(score(r, "test", "accuracy")), _cell(score(r, "test", "macro_f1")), r.get("collapsed"),
                        r.get("seconds")])
