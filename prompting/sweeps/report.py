"""The report of a sweep: a markdown table of its trials, a CSV, and PNG plots.

``write_sweep_report(study, DIR, NAME)`` writes ``DIR/sweep_NAME.md``, ``DIR/sweep_NAME_trials.csv`` and
``DIR/plots/sweep_NAME_{history,importance,intermediate,seeds}.png`` (importance needs two completed
trials; the seeds plot is for seed sweeps), then the ordinary report of ``DIR`` (every run, grouped by
trial parameters) when it has run records.
"""

from __future__ import annotations

import csv
import math
import statistics
import warnings
from pathlib import Path

from prompting.core.paths import atomic_path, atomic_write, inside
from prompting.core.paths import slug as safe_slug
from prompting.reporting.report import write_report
from prompting.reporting.tables import fmt, pct

__all__ = ["write_sweep_report"]


def _save(fig, path: Path) -> Path:
    path = inside(path.parent, path.name)  # the study name in it is user text
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _optuna_plots(study, folder: Path, slug: str, seed_param: str) -> tuple[dict[str, Path], list[str]]:
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    from optuna.visualization import matplotlib as vis

    out, notes = {}, []
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's matplotlib plots are "experimental"
        if complete:
            ax = vis.plot_optimization_history(study, target_name="dev objective")
            out["history"] = _save(ax.figure, folder / f"sweep_{slug}_history.png")
        seed_sweep = any(seed_param in t.params for t in complete)
        params = {k for t in complete for k in t.params if k != seed_param}
        varied = [k for k in params if len({repr(t.params.get(k)) for t in complete}) > 1]
        if len(complete) >= 2 and varied:
            try:
                ax = vis.plot_param_importances(study, target_name="dev objective")
                out["importance"] = _save(ax.figure, folder / f"sweep_{slug}_importance.png")
            except (ValueError, RuntimeError) as err:
                notes.append(f"parameter importance not computed: {err}")
        elif not seed_sweep:
            notes.append("parameter importance needs two completed trials with different parameters")
        if any(t.intermediate_values for t in study.get_trials(deepcopy=False)) and not seed_sweep:
            ax = vis.plot_intermediate_values(study)
            ax.set_ylabel("dev objective after each data seed")
            out["intermediate"] = _save(ax.figure, folder / f"sweep_{slug}_intermediate.png")
    return out, notes


def _seeds_plot(trials, folder: Path, slug: str, seed_param: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted({t.params[seed_param]: (t.params[seed_param], t.value, t.user_attrs.get("test_mean"))
                     for t in reversed(trials) if t.value is not None and seed_param in t.params}.values())
    if not points:
        return None
    seeds, values, tests = zip(*points)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
    x = range(len(seeds))
    left.bar(x, [100 * v for v in values], color="#4c72b0", label="dev objective")
    if any(t is not None for t in tests):
        left.scatter(x, [100 * t if t is not None else math.nan for t in tests], color="#dd8452", zorder=3,
                     label="test (mean over data seeds)")
    left.set_xticks(list(x), [str(s) for s in seeds], fontsize=8)
    left.set_xlabel("training seed")
    left.set_ylabel("%")
    left.set_ylim(max(0, 100 * min(values + tuple(t for t in tests if t is not None)) - 10), None)
    left.legend(fontsize=8)
    left.set_title("objective per training seed")
    right.hist([100 * v for v in values], bins=min(10, max(3, len(values) // 2)), color="#4c72b0")
    mean = 100 * statistics.fmean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    right.yaxis.get_major_locator().set_params(integer=True)
    right.set_ylabel("seeds")
    right.axvline(mean, color="black", lw=1)
    for edge in (mean - std, mean + std):
        right.axvline(edge, color="grey", lw=0.8, ls="--")
    right.set_xlabel("dev objective (%)")
    right.set_title(f"mean {mean:.1f} ± {std:.1f} over {len(values)} seeds")
    return _save(fig, folder / f"sweep_{slug}_seeds.png")


def write_sweep_report(study, directory: str | Path, name: str | None = None,
                       seed_param: str = "train_seed") -> dict[str, Path]:
    """Write the sweep's markdown report, trial CSV and plots into ``directory``; returns their paths."""
    directory = Path(directory)
    folder = directory / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    name = name or study.study_name
    slug = safe_slug(name)
    trials = study.get_trials(deepcopy=False)
    out = {"sweep_report": inside(directory, f"sweep_{slug}.md"),
           "sweep_trials": inside(directory, f"sweep_{slug}_trials.csv")}
    plots, notes = _optuna_plots(study, folder, slug, seed_param)
    seeds = _seeds_plot(trials, folder, slug, seed_param) if study.user_attrs.get("mode") == "seeds" else None
    if seeds:
        plots["seeds"] = seeds
    lines = _summary_lines(study, name, trials, seed_param) + _trials_table(trials)
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    for key, path in plots.items():
        out[f"sweep_{key}"] = path
        lines += [f"![{key}](plots/{path.name})", ""]
    atomic_write(out["sweep_report"], "\n".join(lines))
    _write_trials_csv(out["sweep_trials"], trials)
    if (directory / "results.jsonl").exists():

        out.update(write_report(directory))
    return out


def _summary_lines(study, name: str, trials, seed_param: str) -> list[str]:
    """What was swept and how, the trial counts, the best trial, and (seed sweeps) the spread over seeds."""
    import optuna

    attrs = study.user_attrs
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    lines = [f"# Sweep {name}", "",
             f"Method {attrs.get('label')!r} ({attrs.get('method')}) of config {attrs.get('config')!r}; "
             f"{'training seeds' if attrs.get('mode') == 'seeds' else 'hyper-parameters'}; objective: dev "
             f"{attrs.get('objective')}" + (f" (mean − {attrs.get('stability_lambda')}·std over data seeds)"
                                           if attrs.get("objective") == "stable" else " over data seeds") + ".",
             "", "Trials: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + ".", ""]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = max(complete, key=lambda t: t.value)
        lines += [f"Best: trial {best.number}, dev objective {pct(best.value)}, test (mean) "
                  f"{pct(best.user_attrs.get('test_mean'))}; params: "
                  + ", ".join(f"`{k}={fmt(v)}`" for k, v in best.params.items()), ""]
    if attrs.get("mode") == "seeds" and len(complete) > 1:
        # two workers can draw the same seed (optuna's brute-force sampler): count each seed once
        values = list({t.params.get(seed_param): t.value for t in reversed(complete)}.values())
        lines += [f"Over {len(values)} training seeds the dev objective is {pct(statistics.fmean(values))} ± "
                  f"{pct(statistics.stdev(values))} (min {pct(min(values))}, max {pct(max(values))}).", ""]
    return lines


def _trials_table(trials) -> list[str]:
    lines = ["| trial | state | dev objective | dev by data seed | test (mean) | params | retry of | worker |",
             "|---:|---|---:|---|---:|---|---:|---|"]
    for t in trials:
        by_seed = ", ".join(f"{s}: {pct(v)}" for s, v in (t.user_attrs.get("dev_by_seed") or {}).items())
        lines.append(f"| {t.number} | {t.state.name.lower()} | {pct(t.value)} | {by_seed} | "
                     f"{pct(t.user_attrs.get('test_mean'))} | "
                     + ", ".join(f"{k}={fmt(v)}" for k, v in t.params.items())
                     + f" | {t.system_attrs.get('failed_trial', '')} | {t.user_attrs.get('worker', '')} |")
    return lines + [""]


def _write_trials_csv(path: Path, trials) -> None:
    params = sorted({k for t in trials for k in t.params})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", "state", "value", "test_mean", "retry_of", "worker", *params])
        for t in trials:
            w.writerow([t.number, t.state.name, t.value, t.user_attrs.get("test_mean"),
                        t.system_attrs.get("failed_trial"), t.user_attrs.get("worker"),
                        *[t.params.get(k) for k in params]])
