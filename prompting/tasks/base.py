"""A task type: how its data splits, what an experiment plans on it, how a method is fit to it and how
a fitted method is scored (the metrics its records carry). The harness runs every task type the same
way; it never asks which task type or which method it runs.

    task_type.plan(methods, prompts, protocol, model, dtype, max_length)  -> [PlannedRun, ...]
    task_type.split(protocol, data_seed)                                   -> (train, dev)
    task_type.fit(method, config, train, dev, progress)                    -> TrainResult
    task_type.evaluate(run, method, fitted, progress)                      -> Evaluated

Built in: :class:`prompting.tasks.classification.Classification` (labels, or each example's own
choices) and :class:`prompting.tasks.probing.FactProbing` (LAMA relations, ranked objects).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Sequence

from prompting.core.data import Example
from prompting.core.settings import MethodSpec, Protocol

if TYPE_CHECKING:
    import torch

    from prompting.methods.base import PromptMethod
    from prompting.methods.evaluation import TrainResult
    from prompting.core.settings import TrainConfig

__all__ = ["PlannedRun", "Fitted", "Evaluated", "RunRecord", "TaskType", "describe_run"]


@dataclass
class PlannedRun:
    """One run of the plan: a method entry on one prompt, data seed and training seed (and, for a task
    type scored several ways, one of them: ``evaluation``); ``settings`` are what its result depends
    on, and its id is their digest. A ``baseline`` run is the task type's own (no method is built). A run
    that learns from other runs (PET's distilled model, an iPET generation) ``needs`` them recorded first:
    their ids are in its settings, and the harness puts their records and saved scores in ``inputs``
    (``{run_id: {"record": ..., "predictions": ...}}``) before it runs."""

    spec: MethodSpec
    template: str
    verbalizer: dict | str
    data_seed: int
    train_seed: int | None
    settings: dict
    run_id: str
    evaluation: str | None = None
    baseline: bool = False
    #: what the task type keeps beside the run (e.g. the verbalizers that share its template)
    context: dict = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    inputs: dict = field(default_factory=dict)


@dataclass
class Fitted:
    """What a run's fit left: the training result (None: not trained), the settings it trained with,
    its trainable parameters, its examples and when the run started."""

    result: "TrainResult | None"
    config: "TrainConfig | None"
    trainable: int
    train: list[Example]
    dev: list[Example]
    started: float


@dataclass
class Evaluated:
    """A run's record fields after its settings and id, and the label scores or ranks it saves."""

    fields: dict
    predictions: dict = field(default_factory=dict)


@dataclass
class RunRecord:
    """One line of ``results.jsonl``: the run's settings (and ``tags``, which are not part of its id), its
    id and experiment, then what its task type's evaluation says."""

    settings: dict
    run_id: str
    experiment: str
    fields: dict
    tags: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**self.settings, **self.tags, "run_id": self.run_id, "experiment": self.experiment, **self.fields}


def describe_run(run: PlannedRun) -> str:
    """How progress lines name a run."""
    return f"{run.spec.label} seed {run.data_seed}/{run.train_seed}"


class TaskType:
    """The parts of an experiment that depend on what the task is (see the module docstring)."""

    #: whether records derived from saved label scores (calibration, pattern ensembles) apply
    derives_records: ClassVar[bool] = False

    name: str

    def check(self, methods: Sequence[MethodSpec], prompts: Sequence[tuple[str, dict]],
              templates: Sequence[str] = (), protocol: Protocol | None = None) -> None:
        """Refuse, before any model loads, a method entry or prompt that cannot run on this task (under
        ``protocol``, where it matters)."""

    def describe(self, protocol: Protocol) -> str:
        """One line saying how the task's runs get their train, dev and test examples."""
        raise NotImplementedError

    def plan(self, methods: Sequence[MethodSpec], prompts: Sequence[tuple[str, dict]], protocol: Protocol,
             model: str, dtype: "torch.dtype", max_length: int | None) -> list[PlannedRun]:
        raise NotImplementedError

    def split(self, protocol: Protocol, data_seed: int) -> tuple[list[Example], list[Example]]:
        raise NotImplementedError

    def test_examples(self, protocol: Protocol) -> list[Example]:
        raise NotImplementedError

    def method_labels(self) -> Sequence[str]:
        """The labels a method is built with (its scores' columns)."""
        raise NotImplementedError

    def verbalizer(self, run: PlannedRun):
        """The verbalizer a run's method is built with."""
        raise NotImplementedError

    def fit(self, run: PlannedRun, method: "PromptMethod", config: "TrainConfig", train: Sequence[Example],
            dev: Sequence[Example], progress: bool) -> "TrainResult":
        raise NotImplementedError

    def evaluate(self, run: PlannedRun, method: "PromptMethod", fitted: Fitted, protocol: Protocol,
                 progress: bool) -> Evaluated:
        raise NotImplementedError

    def baseline(self, run: PlannedRun, fitted: Fitted) -> Evaluated:
        """A baseline run of the task type's own (no method)."""
        raise NotImplementedError(f"task {self.name!r} has no baseline runs")
