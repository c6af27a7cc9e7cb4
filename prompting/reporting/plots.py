"""The report's plots (PNG): test score by method with error bars, every run, dev against test, and
the confusion matrices of each setting's dev-selected runs; a generation task's BLEU, chrF and ROUGE-L by
row."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from prompting.core.paths import atomic_path, inside, slug
from prompting.reporting.aggregate import pooled_confusion, score, select_runs
from prompting.reporting.tables import majority_rows, row_verbalizer, short

__all__ = ["task_plots", "bar_errors", "TaskPlots", "setting_name", "save_figure", "generation_plot"]


def _template_name(template: str) -> str:
    template = template.replace("\n", "\\n")
    return template if len(template) <= 44 else template[:43] + "…"


def setting_name(r: dict) -> str:
    return f"{r['label']}  ·  {_template_name(r['template'])}  ·  {row_verbalizer(r)}"


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


def task_plots(records: list[dict], rows: list[dict], task: str, folder: Path, metric: str,
           classes: dict | None = None) -> list[Path]:
    """The task's plots: dev-selected score by method, every run, dev against test, and the confusion
    matrices of the settings' dev-selected runs (when their predictions are saved)."""
    plots = TaskPlots(records, rows, task, folder, metric)
    out = [plots.by_method(), plots.runs(), plots.dev_vs_test()]
    matrices = [pooled_confusion(r, classes or {}) for r in rows]
    if any(m is not None for m in matrices):
        out.append(plots.confusion(matrices))
    return out


def save_figure(plt, fig, folder: Path, task: str, name: str) -> Path:
    """``fig`` as ``folder/TASK_NAME.png``, written whole, and closed."""
    # the task name is user text: "../x" must not put a plot outside the folder
    path = inside(folder, f"{slug(task)}_{name}.png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def generation_plot(rows: Sequence[dict], task: str, folder: Path) -> Path:
    """A generation task's rows (best BLEU on top): test BLEU, chrF and ROUGE-L of the dev-selected runs, BLEU's
    bars its 95% test-sample interval (where every row has one), the others' the std over data seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(13, max(2.6, 0.42 * len(rows) + 1.4)), sharey=True)
    intervals = [r.get("bleu_interval") for r in rows]
    for ax, (metric, name) in zip(axes, (("bleu", "BLEU"), ("chrf", "chrF"), ("rouge_l", "ROUGE-L"))):
        means = [r["metrics"][metric]["mean"] for r in rows]
        means = [m if m == m else 0.0 for m in means]  # a row without scores: no bar
        if metric == "bleu" and all(intervals):
            below, above = [max(0.0, m - lo) for m, (lo, _) in zip(means, intervals)], \
                [max(0.0, hi - m) for m, (_, hi) in zip(means, intervals)]
            labels = [f" {m:.1f} [{lo:.1f}–{hi:.1f}]" for m, (lo, hi) in zip(means, intervals)]
        else:
            below = above = [r["metrics"][metric]["std"] if r["data_seeds"] > 1 else 0.0 for r in rows]
            labels = [f" {m:.1f}" for m in means]
        ax.barh(range(len(rows)), means, xerr=[below, above], capsize=3, color="#4c72b0", height=0.6)
        for i, (m, up, text) in enumerate(zip(means, above, labels)):
            ax.text(m + up, i, text, va="center", fontsize=7)
        ax.set_xlim(0, max(1.0, max(m + up for m, up in zip(means, above))) * 1.35)
        ax.set_xlabel(f"test {name} (0-100)")
        ax.grid(axis="x", alpha=0.3)
    names = [f"{r['label']}  ·  {_template_name(r['template'])}" for r in rows]
    axes[0].set_yticks(range(len(rows)), names, fontsize=8)
    axes[0].invert_yaxis()  # best on top
    fig.suptitle(f"{task}: test scores of the dev-selected runs (BLEU: 95% test-sample interval; "
                 "chrF, ROUGE-L: std over data seeds)", fontsize=10)
    fig.tight_layout()
    return save_figure(plt, fig, folder, task, "text_scores")


class TaskPlots:
    """One task's plots, sharing its rows (one per setting, best first), names and chance level."""

    def __init__(self, records: list[dict], rows: list[dict], task: str, folder: Path, metric: str):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        folder.mkdir(parents=True, exist_ok=True)
        self.plt, self.records, self.rows, self.task, self.folder, self.metric = plt, records, rows, task, folder, metric
        self.index = {self.key(r): i for i, r in enumerate(rows)}
        self.names = [setting_name(r) for r in rows]
        self.height = max(2.6, 0.42 * len(rows) + 1.4)
        verbalizer = rows[0]["verbalizer"]
        self.chance = 100 / max(1, len(verbalizer)) if isinstance(verbalizer, dict) else None
        majorities = majority_rows(rows) if metric == "accuracy" else []
        self.majority = majorities[0] if len(majorities) == 1 else None

    @staticmethod
    def key(rec: dict) -> tuple:
        return rec["label"], rec["template"], str(rec["verbalizer"])

    def save(self, fig, name: str) -> Path:
        return save_figure(self.plt, fig, self.folder, self.task, name)

    def finish(self, fig, ax, title: str, name: str) -> Path:
        ax.set_yticks(range(len(self.rows)), self.names, fontsize=8)
        ax.invert_yaxis()  # best on top
        if self.majority:  # what always answering the commonest class of the test sample scores
            share = 100 * self.majority["share"]
            ax.axvline(share, color="#c44e52", lw=0.9, ls="--",
                       label=f"majority class, always {short(str(self.majority['label']), 16)} ({share:.1f}%)")
            ax.legend(fontsize=7, loc="lower right")
        elif self.chance:
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
            named = ticks + ["no label"] * (len(matrix[0]) - len(labels))  # written answers' unmatched column
            ax.set_xticks(range(len(named)), named, fontsize=6, rotation=45 if len(named) > 3 else 0)
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
