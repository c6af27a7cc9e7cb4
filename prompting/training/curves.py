"""What the training loop tells a watcher while it trains: each optimiser step's loss and learning rates, and
each dev evaluation's metrics.

The loop reports to the :class:`StepLogger` it is given, else to the one a caller set around it with
:func:`reporting_to` (the executor does, around each run, so that a task type that trains needs to pass
nothing on); with neither, it reports nothing and costs nothing.

    with reporting_to(my_logger):
        train(method, train_data, dev_data, config)      # my_logger.step(...) after every step
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator, Mapping

__all__ = ["StepLogger", "reporting_to", "current_logger"]


class StepLogger:
    """A watcher of one run's training (override what you need; the defaults do nothing)."""

    def step(self, step: int, loss: float, lrs: Mapping[str, float]) -> None:
        """After optimiser step ``step`` (1 first): its training loss and each parameter group's learning
        rate during the step, by group name (one group: the method's own parameters)."""

    def evaluation(self, step: int, dev: Mapping[str, float], dev_loss: float | None) -> None:
        """After the dev evaluation at ``step``: its metrics and the gold labels' cross-entropy."""


_CURRENT: ContextVar[StepLogger | None] = ContextVar("prompting_step_logger", default=None)


@contextmanager
def reporting_to(logger: StepLogger | None) -> Iterator[None]:
    """Training inside the block reports to ``logger`` (None: to no one)."""
    token = _CURRENT.set(logger)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current_logger() -> StepLogger | None:
    """The logger set by the innermost :func:`reporting_to`, or None."""
    return _CURRENT.get()
