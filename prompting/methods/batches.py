"""Examples as a method holds them: tokenised once per run, and cut into padded batches. A batch knows
its training loss (label scores' cross-entropy here; a target text's token log-likelihood for text the
model writes, :mod:`prompting.methods.targets`), so the one training loop trains every objective."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from prompting.core.template import Encoding, PromptBatch

__all__ = ["EncodedExamples", "Batch"]


@dataclass
class EncodedExamples:
    """Examples tokenised once per run: one Encoding per mask count, and label indices."""

    encodings: dict[int, list[Encoding]]
    labels: torch.Tensor  # [N] label index, -1 where unknown
    # soft labels to learn instead of ``labels`` (PET's distillation): [N, n_labels] distributions, and the
    # temperature they were made at, which the model's own scores are divided by too
    targets: torch.Tensor | None = None
    temperature: float = 1.0

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, prompts: dict[int, PromptBatch], rows: Sequence[int], device) -> "Batch":
        """The batch of ``rows`` whose prompts are ``prompts``."""
        return Batch(prompts, self.labels[list(rows)].to(device))


@dataclass
class Batch:
    prompts: dict[int, PromptBatch]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def loss(self, method) -> torch.Tensor:
        """The training loss of ``method`` on this batch: the cross-entropy of the gold labels' scores."""
        return torch.nn.functional.cross_entropy(method(self), self.labels)
