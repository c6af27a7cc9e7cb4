"""What a classification run's label scores say: its metrics on dev and test (:class:`Outcome`) and the
scores it saves in ``predictions/RUN_ID.json`` (:class:`Predictions`), for its own record and for the
records derived from it (a calibrated run, a pattern ensemble)."""

from __future__ import annotations

import resource
import sys
from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from prompting.core.data import Example, class_results, compute_metrics
from prompting.methods.evaluation import TrainResult, gold_cross_entropy

__all__ = ["Outcome", "Predictions", "cross_entropy", "peak_memory_mb", "predicted_labels", "training_fields"]


@dataclass
class Outcome:
    """What a run's label scores say on dev and test."""

    dev: dict
    dev_loss: float | None
    test: dict
    collapsed: bool
    test_majority: list | None

    @classmethod
    def of(cls, labels: Sequence[str], dev_gold: Sequence[str | None], dev_scores: torch.Tensor,
           test_gold: Sequence[str | None], test_scores: torch.Tensor, dev_index: torch.Tensor) -> "Outcome":
        """Metrics of the scores' argmax (dev metrics only where there are dev examples), the dev
        cross-entropy of the gold labels (``dev_index``: their columns, -1 unknown), and the
        collapse flag of the test predictions."""
        dev_pred, test_pred = predicted_labels(dev_scores, labels), predicted_labels(test_scores, labels)
        found = class_results(list(test_gold), test_pred, labels)
        return cls(dev=compute_metrics(list(dev_gold), dev_pred, labels) if len(dev_gold) else {},
                   dev_loss=cross_entropy(dev_scores, dev_index),
                   test=compute_metrics(list(test_gold), test_pred, labels) if len(test_gold) else {},
                   collapsed=found["collapsed"], test_majority=found["majority"])

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Predictions:
    """A run's saved label scores (``predictions/RUN_ID.json``): dev and test scores in the labels'
    column order, the gold labels by name, per-class results of the test predictions, and the
    content-free scores that calibration needs."""

    dev: list
    test: list
    labels: list[str]
    dev_gold: list
    test_gold: list
    content_free: dict | None = None

    def to_dict(self) -> dict:
        found = class_results(self.test_gold, predicted_labels(torch.tensor(self.test), self.labels), self.labels) \
            if len(self.test) else class_results(self.test_gold, [], self.labels)
        out = {"dev": self.dev, "test": self.test, "labels": self.labels, "dev_gold": self.dev_gold,
               "test_gold": self.test_gold, "test_per_class": found["per_class"], "test_confusion": found["confusion"]}
        if self.content_free is not None:
            out["content_free"] = self.content_free
        return out

    @classmethod
    def of(cls, labels: Sequence[str], dev: Sequence[Example], test: Sequence[Example], dev_scores, test_scores,
           content_free: dict | None = None) -> "Predictions":
        tolist = lambda s: s.tolist() if hasattr(s, "tolist") else list(s)  # noqa: E731
        return cls(tolist(dev_scores), tolist(test_scores), list(labels), [e.label for e in dev],
                   [e.label for e in test], content_free)


def predicted_labels(scores: torch.Tensor, labels: Sequence[str]) -> list[str]:
    """Each row's best-scoring label."""
    labels = list(labels)
    return [labels[i] for i in scores.argmax(1).tolist()] if len(scores) else []


def cross_entropy(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    """The gold labels' mean cross-entropy, rounded as records keep it (None without a known label)."""
    loss = gold_cross_entropy(scores, labels)
    return None if loss is None else round(loss, 6)


def peak_memory_mb() -> float:
    """Peak memory: the GPU's allocator peak for this run, else the process's peak resident set."""
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def training_fields(result: TrainResult | None, config, trainable: int, model_params: int, select_metric: str) -> dict:
    """What a run's training says: parameters trained, steps, the dev curve and the settings used."""
    history = result.history if result else []
    return {
        "trainable_params": trainable, "model_params": model_params,
        "steps": result.steps if result else 0, "best_step": result.best_step if result else 0,
        # how dev went while training: [step, selection metric, dev cross-entropy or None (a search)]
        "dev_curve": [[h["step"], h["dev"].get(select_metric), h.get("dev_loss")] for h in history if "dev" in h],
        "train_config_used": config.to_dict() if config else None,
    }
