"""The one training loop every method uses.

Cross-entropy over label scores; parameter groups with their own learning rates; linear
warm-up and decay; gradient clipping; evaluation on dev every N steps (ties of the dev metric go
to the lower dev cross-entropy); the best-on-dev state is
kept and restored; early stopping; deterministic on CPU for a given seed.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch

from .data import compute_metrics
from .methods.base import EncodedExamples, PromptMethod

__all__ = ["TrainConfig", "TrainResult", "TrainingError", "train", "evaluate"]


class TrainingError(RuntimeError):
    """Training cannot go on (the loss became NaN or infinite)."""


@dataclass
class TrainConfig:
    """How to train. ``max_steps`` wins over ``epochs`` when both are given."""

    lr: float = 1e-5
    lm_lr: float | None = None  # the LM's own rate when ``tune_lm`` (P-tuning trains both)
    tune_lm: bool = False
    epochs: float = 8
    max_steps: int | None = None
    batch_size: int = 8
    eval_batch_size: int = 32
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    eval_every: int | None = None  # steps between dev evaluations; default once per epoch
    patience: int | None = None  # stop after this many evaluations without a better dev score
    select_metric: str = "accuracy"
    # the state before training is a candidate for the best-on-dev state; false: only trained states
    # (what PET fine-tuning wants: its untrained state is the zero-shot run, reported on its own)
    select_untrained: bool = True
    seed: int = 1

    def __post_init__(self):
        for name in ("lr", "lm_lr", "epochs", "max_steps", "batch_size", "eval_batch_size", "warmup_ratio",
                     "weight_decay", "max_grad_norm", "eval_every", "patience", "seed"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{name}={value!r} is not valid; give a number")
        for name in ("tune_lm", "select_untrained"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} is not valid; use true or false")
        for name in ("lr", "batch_size", "eval_batch_size"):
            if getattr(self, name) is None or getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)!r} is not valid; it must be > 0")
        if self.max_steps is None and (self.epochs is None or self.epochs <= 0):
            raise ValueError(f"epochs={self.epochs!r} is not valid; give epochs > 0 or max_steps > 0")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ValueError(f"max_steps={self.max_steps!r} is not valid; it must be > 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio={self.warmup_ratio!r} is not valid; use 0 <= ratio < 1")

    def to_dict(self) -> dict:
        return asdict(self)


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


def _dev_score(method: PromptMethod, data: EncodedExamples, batch_size: int, metric: str
               ) -> tuple[dict[str, float], float, tuple[float, float], torch.Tensor]:
    """Dev metrics, the gold labels' mean cross-entropy, the selection key (the metric, ties
    broken by the lower cross-entropy: with 32 dev examples accuracy moves in steps of 3%, and a
    tie must not keep the untrained state just because it came first) and the label scores."""
    scores = method.predict_scores(data, batch_size)
    metrics, _ = _metrics(method, data, scores)
    loss = gold_cross_entropy(scores, data.labels)
    loss = 0.0 if loss is None else loss
    return metrics, loss, (metrics[metric], -loss), scores


def _trainable_state(method: PromptMethod, tune_lm: bool) -> dict[str, torch.Tensor]:
    state = {f"method.{k}": v.detach().clone() for k, v in method.state_dict().items()}
    if tune_lm:
        state.update({f"lm.{k}": v.detach().clone() for k, v in method.lm.model.state_dict().items()})
    return state


def _restore(method: PromptMethod, state: dict[str, torch.Tensor]) -> None:
    own = {k[len("method."):]: v for k, v in state.items() if k.startswith("method.")}
    lm = {k[len("lm."):]: v for k, v in state.items() if k.startswith("lm.")}
    if own:
        method.load_state_dict(own)
    if lm:
        method.lm.model.load_state_dict(lm)


def train(method: PromptMethod, train_data: EncodedExamples, dev_data: EncodedExamples | None,
          config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train ``method`` in place; on return it holds the best-on-dev state."""
    from tqdm.auto import tqdm

    if len(train_data) == 0:
        raise ValueError("no training examples")
    if (train_data.labels < 0).any():
        raise ValueError("training examples need labels the verbalizer knows")
    if callable(getattr(method, "fit", None)):
        # a method that learns by search, not by gradient descent (AutoPrompt), brings its own loop
        return method.fit(train_data, dev_data, config, progress=progress)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    for p in method.lm.model.parameters():
        p.requires_grad_(config.tune_lm)
    groups = method.parameter_groups(config.lr, config.lm_lr, config.tune_lm)
    if not groups:
        raise ValueError(f"method {method.name!r} has nothing to train (frozen LM and no prompt "
                         "parameters); set tune_lm: true or use train: false")
    for group in groups:
        group.setdefault("weight_decay", config.weight_decay)
    optimizer = torch.optim.AdamW(groups)
    per_epoch = math.ceil(len(train_data) / config.batch_size)
    total = config.max_steps or max(1, math.ceil(config.epochs * per_epoch))
    warmup = int(config.warmup_ratio * total)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    eval_every = config.eval_every or per_epoch
    params = [p for g in groups for p in g["params"]]

    best_key, best_step, best_dev, best_state, best_scores = (-math.inf, -math.inf), 0, {}, None, None
    if config.select_untrained and dev_data is not None and len(dev_data):
        best_dev, _, best_key, best_scores = _dev_score(method, dev_data, config.eval_batch_size,
                                                        config.select_metric)
        best_state = _trainable_state(method, config.tune_lm)
    history, stale, step = [], 0, 0
    bar = tqdm(total=total, desc=f"train {method.name}", disable=not progress, leave=False)
    method.train()
    method.lm.model.train(config.tune_lm)  # a frozen LM stays deterministic (no dropout)
    while step < total:
        for batch in method.batches(train_data, config.batch_size, shuffle=True, generator=generator):
            loss = torch.nn.functional.cross_entropy(method(batch), batch.labels)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"loss became {loss.item()} at step {step} of {method.name} (lr={config.lr}); "
                    "lower the learning rate or check the inputs")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            schedule.step()
            step += 1
            record = {"step": step, "loss": round(loss.item(), 6)}
            bar.update(1)
            if dev_data is not None and len(dev_data) and (step % eval_every == 0 or step == total):
                dev, dev_loss, key, scores = _dev_score(method, dev_data, config.eval_batch_size,
                                                        config.select_metric)
                record["dev"], record["dev_loss"] = dev, round(dev_loss, 6)
                method.train()
                method.lm.model.train(config.tune_lm)
                if key > best_key:
                    best_key, best_step, best_dev, best_scores = key, step, dev, scores
                    best_state = _trainable_state(method, config.tune_lm)
                    stale = 0
                else:
                    stale += 1
                bar.set_postfix(loss=f"{loss.item():.3f}", dev=f"{dev[config.select_metric]:.3f}")
            history.append(record)
            if step >= total or (config.patience is not None and stale >= config.patience):
                break
        if config.patience is not None and stale >= config.patience:
            break
    bar.close()
    method.eval()
    method.lm.model.eval()
    for p in method.lm.model.parameters():
        p.requires_grad_(False)
    if best_state is None:  # no dev set: the last state stands, and it was not scored on dev
        best_scores = None
    else:
        _restore(method, best_state)
    return TrainResult(step, best_step, best_dev, history, time.perf_counter() - started, best_scores)
