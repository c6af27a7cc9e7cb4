"""What fitting a method gives, and how a state is scored on labelled examples: the metrics, the gold
labels' cross-entropy and the one dev-selection key that training steps, searches and the seed
search share (:func:`prompting.core.data.dev_key`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from prompting.core.data import compute_metrics, dev_key
from prompting.methods.base import PromptMethod
from prompting.methods.batches import EncodedExamples

__all__ = ["TrainResult", "evaluate", "dev_score", "gold_cross_entropy"]


@dataclass
class TrainResult:
    steps: int
    best_step: int
    best_dev: dict[str, float]
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    # the dev examples' label scores under the returned state (scored with the config's
    # eval_batch_size), so the caller need not score dev again; None when that state was never scored
    dev_scores: torch.Tensor | None = None


def evaluate(method: PromptMethod, data: EncodedExamples, batch_size: int = 32,
             progress: bool | str = False) -> tuple[dict[str, float], list[str]]:
    """Metrics (accuracy, macro-F1) and predicted labels on encoded, labelled examples."""
    return _metrics(method, data, method.predict_scores(data, batch_size, progress=progress))


def _metrics(method: PromptMethod, data: EncodedExamples, scores: torch.Tensor) -> tuple[dict[str, float], list[str]]:
    predicted = [method.labels[i] for i in scores.argmax(1).tolist()]
    gold = [method.labels[i] for i in data.labels.tolist()]
    return compute_metrics(gold, predicted, method.labels), predicted


def gold_cross_entropy(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Mean cross-entropy of the gold labels under the label scores (examples with a known label;
    None when no example has one)."""
    known = labels >= 0
    if not known.any():
        return None
    return torch.nn.functional.cross_entropy(scores[known].float(), labels[known]).item()


def dev_score(method: PromptMethod, data: EncodedExamples, batch_size: int, metric: str
              ) -> tuple[dict[str, float], float, tuple[float, float], torch.Tensor]:
    """Dev metrics, the gold labels' mean cross-entropy, the selection key (see
    :func:`prompting.experiment.results.dev_key`, the one rule for training, search and seed selection) and the
    label scores. Data that scores its own dev (target texts, :mod:`prompting.methods.targets`) is asked."""
    own = getattr(data, "dev_score", None)
    if own is not None:
        return own(method, batch_size, metric)
    scores = method.predict_scores(data, batch_size)
    metrics, _ = _metrics(method, data, scores)
    loss = gold_cross_entropy(scores, data.labels)
    return metrics, (0.0 if loss is None else loss), dev_key(metrics, loss, metric), scores
