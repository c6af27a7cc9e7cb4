"""Examples as a method holds them: tokenised once per run, and cut into padded batches."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class Batch:
    prompts: dict[int, PromptBatch]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)
