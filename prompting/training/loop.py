"""The one training loop every method uses.

Cross-entropy over label scores (or, for examples with soft labels, PET's distillation objective);
parameter groups with their own learning rates; linear
warm-up and decay; gradient clipping; evaluation on dev every N steps (ties of the dev metric go
to the lower dev cross-entropy); the best-on-dev state is
kept and restored; early stopping; deterministic on CPU for a given seed. Each step and dev
evaluation is reported to a :class:`prompting.training.curves.StepLogger` when one is given
(``logger=``) or set around the call with ``reporting_to`` (live curves in TensorBoard or MLflow);
without one, nothing is. A search (AutoPrompt) reports its iterations when it ends.
"""

from __future__ import annotations

import math
import time

import torch

from prompting.methods.base import PromptMethod, SearchMethod
from prompting.methods.batches import EncodedExamples
from prompting.methods.evaluation import TrainResult, dev_score, evaluate, gold_cross_entropy
from prompting.core.settings import TrainConfig, TrainingError
from prompting.training.curves import StepLogger, current_logger

__all__ = ["TrainConfig", "TrainResult", "TrainingError", "train", "evaluate", "dev_score", "gold_cross_entropy",
           "objective"]


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


def _optimiser(method: PromptMethod, config: TrainConfig, total: int):
    """AdamW over the method's parameter groups, and its warm-up then linear-decay schedule."""
    groups = method.parameter_groups(config.lr, config.lm_lr, config.tune_lm)
    if not groups:
        raise ValueError(f"method {method.name!r} has nothing to train (frozen LM and no prompt "
                         "parameters); set tune_lm: true or use train: false")
    for group in groups:
        group.setdefault("weight_decay", config.weight_decay)
    optimizer = torch.optim.AdamW(groups)
    warmup = int(config.warmup_ratio * total)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    return optimizer, schedule, [p for g in groups for p in g["params"]]


class _Best:
    """The best-on-dev state so far: its selection key, step, dev metrics, dev scores and tensors."""

    def __init__(self):
        self.key, self.step, self.dev, self.state, self.scores = (-math.inf, -math.inf), 0, {}, None, None

    def offer(self, method: PromptMethod, dev_data: EncodedExamples, config: TrainConfig, step: int) -> dict:
        """Score dev; keep this state if it is better. Returns the history fields of the evaluation."""
        dev, loss, key, scores = dev_score(method, dev_data, config.eval_batch_size, config.select_metric)
        self.improved = key > self.key
        if self.improved:
            self.key, self.step, self.dev, self.scores = key, step, dev, scores
            self.state = _trainable_state(method, config.tune_lm)
        return {"dev": dev, "dev_loss": round(loss, 6)}


def objective(scores: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None,
              temperature: float = 1.0) -> torch.Tensor:
    """The gold labels' cross-entropy; with soft labels ``targets`` (distributions made at ``temperature``),
    PET's distillation loss instead: the KL divergence of the scores at that temperature from the targets,
    times the temperature squared (so that its gradients keep their scale)."""
    if targets is None:
        return torch.nn.functional.cross_entropy(scores, labels)
    student = torch.log_softmax(scores.float() / temperature, dim=-1)
    return torch.nn.functional.kl_div(student, targets.to(student), reduction="batchmean") * temperature ** 2


def _step(method: PromptMethod, batch, optimizer, schedule, params, config: TrainConfig, step: int,
          soft: tuple | None = None) -> float:
    """One optimiser step on a batch (``soft``: its soft labels and their temperature); the loss, or an error
    naming the step where it is not finite."""
    loss = objective(method(batch), batch.labels, *soft) if soft else batch.loss(method)
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
    return loss.item()


def _set_mode(method: PromptMethod, training: bool, tune_lm: bool) -> None:
    method.train(training)
    method.lm.model.train(training and tune_lm)  # a frozen LM stays deterministic (no dropout)


def _check_data(train_data: EncodedExamples) -> None:
    if len(train_data) == 0:
        raise ValueError("no training examples")
    if train_data.targets is None and (train_data.labels < 0).any():
        raise ValueError("training examples need labels the verbalizer knows")


def _report(logger: StepLogger, record: dict, optimizer, schedule) -> None:
    """A step's loss and each parameter group's learning rate during it (the schedule's factor at the
    step), then its dev evaluation if it had one."""
    factors = [rate(record["step"] - 1) for rate in schedule.lr_lambdas]
    lrs = {g.get("name", str(i)): base * factor
           for i, (g, base, factor) in enumerate(zip(optimizer.param_groups, schedule.base_lrs, factors))}
    logger.step(record["step"], record["loss"], lrs)
    if "dev" in record:
        logger.evaluation(record["step"], record["dev"], record["dev_loss"])


def _replay(logger: StepLogger | None, result: TrainResult) -> TrainResult:
    """A search's iterations as steps (its training loss; no learning rate), and its dev evaluations."""
    for h in result.history if logger is not None else ():
        logger.step(h["step"], h.get("train_loss", h.get("loss")), {})
        if "dev" in h:
            logger.evaluation(h["step"], h["dev"], h.get("dev_loss"))
    return result


def train(method: PromptMethod, train_data: EncodedExamples, dev_data: EncodedExamples | None,
          config: TrainConfig, progress: bool = True, logger: StepLogger | None = None) -> TrainResult:
    """Train ``method`` in place; on return it holds the best-on-dev state (steps reported: see the module)."""
    from tqdm.auto import tqdm

    _check_data(train_data)
    logger = logger if logger is not None else current_logger()
    if isinstance(method, SearchMethod):  # learns by search, not by gradient descent (AutoPrompt)
        return _replay(logger, method.search(train_data, dev_data, config, progress=progress))
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    method.lm.model.requires_grad_(config.tune_lm)
    per_epoch = math.ceil(len(train_data) / config.batch_size)
    total = config.max_steps or max(1, math.ceil(config.epochs * per_epoch))
    optimizer, schedule, params = _optimiser(method, config, total)
    eval_every = config.eval_every or per_epoch
    use_dev = dev_data is not None and len(dev_data) > 0
    best = _Best()
    if config.select_untrained and use_dev:
        best.offer(method, dev_data, config, 0)
    history, stale, step = [], 0, 0
    bar = tqdm(total=total, desc=f"train {method.name}", disable=not progress, leave=False)
    _set_mode(method, True, config.tune_lm)
    while step < total and (config.patience is None or stale < config.patience):
        rows = method.training_batches(train_data, config.batch_size, generator)
        for chunk, batch in zip(rows, method.batches(train_data, config.batch_size, rows=rows)):
            step += 1
            soft = None if train_data.targets is None else (train_data.targets[chunk], train_data.temperature)
            loss = _step(method, batch, optimizer, schedule, params, config, step - 1, soft)
            record = {"step": step, "loss": round(loss, 6)}
            bar.update(1)
            if use_dev and (step % eval_every == 0 or step == total):
                record.update(best.offer(method, dev_data, config, step))
                _set_mode(method, True, config.tune_lm)
                stale = 0 if best.improved else stale + 1
                bar.set_postfix(loss=f"{record['loss']:.3f}", dev=f"{record['dev'].get(config.select_metric, record['dev_loss']):.3f}")
            history.append(record)
            if logger is not None:
                _report(logger, record, optimizer, schedule)
            if step >= total or (config.patience is not None and stale >= config.patience):
                break
    bar.close()
    _set_mode(method, False, config.tune_lm)
    method.lm.model.requires_grad_(False)
    if best.state is None:  # no dev set: the last state stands, and it was not scored on dev
        best.scores = None
    else:
        _restore(method, best.state)
    return TrainResult(step, best.step, best.dev, history, time.perf_counter() - started, best.scores)
