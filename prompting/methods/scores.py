"""Label scores computed once: a prompt state scored on the same examples is not scored again.

Every pass that scores (dev evaluation, test scoring, content-free inputs, a zero-shot prompt that
every data seed shares, the untrained start that every training seed shares) goes through
:data:`SCORES`. A key names the method's class, template, label words and settings, a digest of
everything it learned (parameters and buffers), the LM (and the version of its weights), the
demonstrations' pool and seed, and a digest of the encoded examples; the oldest scores are dropped
beyond :attr:`ScoreCache.max_bytes`.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Hashable, Iterable

import torch

if TYPE_CHECKING:
    from prompting.methods.base import PromptMethod
    from prompting.methods.batches import EncodedExamples

__all__ = ["ScoreCache", "SCORES", "digest", "score_key"]


def digest(tensors: Iterable[torch.Tensor]) -> str:
    """A digest of tensors' dtypes, shapes and bytes (what a method learned, or encoded examples)."""
    found = hashlib.blake2b(digest_size=16)
    for t in tensors:
        t = t.detach().cpu().contiguous()
        found.update(str((t.dtype, tuple(t.shape))).encode())
        found.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return found.hexdigest()


def score_key(method: "PromptMethod", data: "EncodedExamples") -> tuple:
    """What a method's label scores on ``data`` depend on (see the module docstring)."""
    encodings = data.encodings[min(data.encodings)]
    examples = digest([torch.tensor([t for e in encodings for t in (len(e.input_ids), *e.input_ids,
                                                                     *e.soft_positions, *e.trigger_positions)])])
    # a multiple-choice method's label words are each example's choices (prompting.methods.choices)
    words = method.words.word_ids if method.choices is None else (data.choices.targets, method.verbalizer.score)
    return (type(method).__name__, method.template.text, repr(words), tuple(method.labels),
            repr(method.config), digest(method.state_dict().values()), method.lm.serial,
            method.lm.weights_version(), examples, method.demonstration_key())


class ScoreCache:
    """Scores by key, the least recently used dropped beyond ``max_bytes``."""

    def __init__(self, max_bytes: int = 256 * 2**20):
        self.max_bytes = max_bytes
        self._scores: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._scores)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._scores

    def get(self, key: Hashable, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The scores under ``key`` (a copy), computed with ``compute()`` the first time."""
        if key not in self._scores:
            self.put(key, compute())
        self._scores.move_to_end(key)
        return self._scores[key].clone()

    def put(self, key: Hashable, scores: torch.Tensor) -> None:
        if key in self._scores:
            self.bytes -= self._size(self._scores.pop(key))
        self._scores[key] = scores.detach().cpu()
        self.bytes += self._size(scores)
        while self.bytes > self.max_bytes and len(self._scores) > 1:
            self.bytes -= self._size(self._scores.popitem(last=False)[1])

    def clear(self) -> None:
        self._scores.clear()
        self.bytes = 0

    @staticmethod
    def _size(scores: torch.Tensor) -> int:
        return scores.numel() * scores.element_size()


#: the process's one score cache
SCORES = ScoreCache()
