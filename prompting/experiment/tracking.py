"""Live training curves: each run's training loss, learning rate and dev metric as it trains, then its final
metrics with its settings as hyper-parameters, in TensorBoard or MLflow.

``prompting run CONFIG --tensorboard DIR`` (or ``tensorboard: DIR`` in the config) writes one folder per
run, named by its run id (``DIR/RUN_ID/events.out.tfevents.*``): scalars ``train/loss``, ``train/lr`` (one
per parameter group when a method has several: ``train/lr/NAME``), ``dev/<metric>`` and ``dev/loss`` at
each dev evaluation, and at the end ``test/<metric>`` and ``dev_selected/<metric>`` (the kept state's
dev score) with the run's settings as TensorBoard's hyper-parameters (its HParams view). ``--mlflow URI``
(or ``mlflow: URI``) logs the same to MLflow with its own client: one MLflow run per run, named by the
run id, in an MLflow experiment named after the config's experiment. Both are optional packages
(``pip install prompting[tensorboard]``, ``prompting[mlflow]``); the report is written as always.

The executor opens a :class:`RunCurves` for each run it does and sets it around the run, so the one
training loop (:mod:`prompting.training.loop`) reports its steps to it; without a tracker, nothing is
opened and the loop reports to no one.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Mapping, Sequence

from prompting.core.flat import flatten
from prompting.tasks.base import PlannedRun
from prompting.training.curves import StepLogger

__all__ = ["RunCurves", "Tracker", "TensorBoardTracker", "MLflowTracker", "Trackers", "open_tracker",
           "check_packages", "hyper_parameters", "final_metrics"]


def _need(package: str, install: str, option: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise ValueError(f"{option} needs the {package} package, which is not installed: pip install {install} "
                         f"(or pip install 'prompting[{package}]')")


def check_packages(tensorboard, mlflow) -> None:
    """Refuse, before anything runs, curves whose package is not installed."""
    if tensorboard:
        _need("tensorboard", "tensorboard", "--tensorboard (tensorboard:)")
    if mlflow:
        _need("mlflow", "mlflow-skinny", "--mlflow (mlflow:)")


def hyper_parameters(run: PlannedRun) -> dict:
    """A run's settings (what its id digests) and tags, one level deep, as TensorBoard's and MLflow's
    hyper-parameters take them: text, numbers and true / false; no value where a setting is None."""
    out = {}
    for name, value in flatten({**run.settings, **run.spec.tags}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = str(value).lower()
        elif not isinstance(value, (int, float, str)):
            value = json.dumps(value)
        out[name] = value
    return out


def final_metrics(record: Mapping) -> dict[str, float]:
    """A record's test metrics (``test/accuracy`` ...) and the kept state's dev metrics
    (``dev_selected/accuracy`` ...)."""
    out = {}
    for split, prefix in (("test", "test"), ("dev", "dev_selected")):
        for metric, value in (record.get(split) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{prefix}/{metric}"] = float(value)
    return out


def _lr_tags(lrs: Mapping[str, float]) -> dict[str, float]:
    return {("train/lr" if len(lrs) == 1 else f"train/lr/{name}"): lr for name, lr in lrs.items()}


class RunCurves(StepLogger):
    """One run's curves: its steps and dev evaluations as they come, then its record (or its failure)."""

    def finish(self, record: Mapping) -> None:
        """The run ended: its final metrics and settings."""

    def fail(self) -> None:
        """The run stopped with an error: what was written stays."""


class Tracker:
    """Where the curves of an experiment's runs go: one :class:`RunCurves` per run."""

    def open(self, run: PlannedRun, experiment: str) -> RunCurves:
        raise NotImplementedError


class _TensorBoardCurves(RunCurves):
    def __init__(self, folder: Path, hparams: dict):
        from torch.utils.tensorboard import SummaryWriter

        for stale in folder.glob("events.out.tfevents.*"):  # a run done again (it was cut off) starts again
            stale.unlink()
        self.writer, self.hparams, self.last = SummaryWriter(log_dir=str(folder), flush_secs=5), hparams, 0

    def step(self, step: int, loss: float, lrs: Mapping[str, float]) -> None:
        self.writer.add_scalar("train/loss", loss, step)
        for tag, lr in _lr_tags(lrs).items():
            self.writer.add_scalar(tag, lr, step)
        self.last = step

    def evaluation(self, step: int, dev: Mapping[str, float], dev_loss: float | None) -> None:
        for metric, value in dev.items():
            self.writer.add_scalar(f"dev/{metric}", value, step)
        if dev_loss is not None:
            self.writer.add_scalar("dev/loss", dev_loss, step)
        self.writer.flush()

    def finish(self, record: Mapping) -> None:
        from torch.utils.tensorboard.summary import hparams

        metrics = final_metrics(record)
        for summary in hparams(self.hparams, metrics):  # the HParams view's experiment, session start and end
            self.writer.file_writer.add_summary(summary)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, record.get("steps") or self.last)
        self.writer.close()

    def fail(self) -> None:
        self.writer.close()


class TensorBoardTracker(Tracker):
    """Event files for TensorBoard, one folder per run id under ``directory``."""

    def __init__(self, directory: str | Path):
        _need("tensorboard", "tensorboard", "--tensorboard (tensorboard:)")
        self.directory = Path(directory).expanduser()
        self.directory.mkdir(parents=True, exist_ok=True)

    def open(self, run: PlannedRun, experiment: str) -> RunCurves:
        return _TensorBoardCurves(self.directory / run.run_id, hyper_parameters(run))


class _MLflowCurves(RunCurves):
    def __init__(self, client, experiment_id: str, run: PlannedRun, experiment: str):
        from mlflow.entities import Param

        self.client = client
        self.id = client.create_run(experiment_id, run_name=run.run_id, tags={
            "prompting.run_id": run.run_id, "prompting.experiment": experiment}).info.run_id
        params = [Param(k, str(v)) for k, v in hyper_parameters(run).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters a call
            client.log_batch(self.id, params=params[start:start + 100])
        self.last = 0

    def _log(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def step(self, step: int, loss: float, lrs: Mapping[str, float]) -> None:
        self._log({"train/loss": loss, **_lr_tags(lrs)}, step)
        self.last = step

    def evaluation(self, step: int, dev: Mapping[str, float], dev_loss: float | None) -> None:
        self._log({**{f"dev/{m}": v for m, v in dev.items()}, **({"dev/loss": dev_loss} if dev_loss is not None else {})},
                  step)

    def finish(self, record: Mapping) -> None:
        self._log(final_metrics(record), record.get("steps") or self.last)
        self.client.set_terminated(self.id, "FINISHED")

    def fail(self) -> None:
        self.client.set_terminated(self.id, "FAILED")


class MLflowTracker(Tracker):
    """MLflow runs through MLflow's own client, at ``uri`` (None: MLflow's default, a local store)."""

    def __init__(self, uri: str | None, experiment: str):
        _need("mlflow", "mlflow-skinny", "--mlflow (mlflow:)")
        from mlflow import MlflowClient

        try:  # a store that cannot be opened is found now, before the model loads
            self.client = MlflowClient(tracking_uri=uri)
            self.experiment_id = self._experiment(experiment)
        except Exception as err:  # MLflow's own errors (a refused file store, a server that does not answer)
            raise ValueError(f"--mlflow {uri or '(MLflow default)'}: MLflow cannot open the tracking store: "
                             f"{str(err).splitlines()[0]}") from None
        self.uri = uri

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except Exception:  # another worker created it meanwhile
            return self.client.get_experiment_by_name(name).experiment_id

    def open(self, run: PlannedRun, experiment: str) -> RunCurves:
        return _MLflowCurves(self.client, self.experiment_id, run, experiment)


class _AllCurves(RunCurves):
    def __init__(self, curves: Sequence[RunCurves]):
        self.curves = list(curves)

    def step(self, step: int, loss: float, lrs: Mapping[str, float]) -> None:
        for c in self.curves:
            c.step(step, loss, lrs)

    def evaluation(self, step: int, dev: Mapping[str, float], dev_loss: float | None) -> None:
        for c in self.curves:
            c.evaluation(step, dev, dev_loss)

    def finish(self, record: Mapping) -> None:
        for c in self.curves:
            c.finish(record)

    def fail(self) -> None:
        for c in self.curves:
            c.fail()


class Trackers(Tracker):
    """Several trackers at once (TensorBoard and MLflow)."""

    def __init__(self, trackers: Sequence[Tracker]):
        self.trackers = list(trackers)

    def open(self, run: PlannedRun, experiment: str) -> RunCurves:
        return _AllCurves([t.open(run, experiment) for t in self.trackers])


def open_tracker(tensorboard: str | Path | None, mlflow: str | bool | None, experiment: str) -> Tracker | None:
    """The tracker a config (or the command line) asks for: TensorBoard's folder, MLflow's tracking URI
    (``True``: MLflow's default), both, or None. Checks the packages and opens MLflow's store now."""
    trackers = ([TensorBoardTracker(tensorboard)] if tensorboard else []) + \
        ([MLflowTracker(None if mlflow is True else mlflow, experiment)] if mlflow else [])
    return trackers[0] if len(trackers) == 1 else Trackers(trackers) if trackers else None
