"""In-context learning: labelled training examples before each input, and nothing trained.

Each input is preceded by ``k`` demonstrations per class from the run's training split, rendered
with the same template with their label word in place of ``{mask}`` (see
:mod:`prompting.core.demonstrations`); the label scores are then the template's, as for the manual
prompt. The training seed picks the demonstrations and their order, so a run's seeds measure how
much the choice of demonstrations matters. With ``sets: N`` every input is scored under N
demonstration sets and the label probabilities are averaged (LM-BFF averages 16).

With random selection and one set, every input gets the same demonstrations: on a causal LM with
relative (rotary) positions their keys and values are computed once and every input attends to
them as a prefix, which gives the scores of the whole prompt (up to float rounding) at about the
cost of the input alone. Inputs that do not all fit beside the whole block are scored the plain way,
with the demonstrations shortened for each (see :mod:`prompting.core.demonstrations`).

    >>> method = InContext(lm, "Review: {text_a}\\nSentiment: {mask}", verbalizer, labels=task.labels,
    ...                    k=4, selection="similarity")                           # doctest: +SKIP
    >>> method.set_demonstration_pool(train_examples, seed=1)                     # doctest: +SKIP
    >>> method.predict(test_examples)                                             # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from prompting.core.data import Example
from prompting.core.demonstrations import Demonstrations, render
from prompting.core.template import Encoding
from prompting.methods.evaluation import TrainResult
from prompting.methods.base import PromptMethod, SearchMethod
from prompting.methods.batches import EncodedExamples
from prompting.methods.configs import ICLConfig
from prompting.methods.prefix import forward_with_prefix

__all__ = ["InContext"]


@dataclass
class _Encoded(EncodedExamples):
    shared: bool = False  # the inputs alone: the shared demonstrations come as a key/value prefix


class InContext(PromptMethod, SearchMethod):
    """In-context learning (Brown et al. 2020); a search method whose search only takes the pool."""

    name = "icl"
    config_class = ICLConfig

    def set_demonstration_pool(self, examples: Sequence[Example], seed: int = 0) -> None:
        c = self.config
        self.demonstrations = Demonstrations(self.encoder, examples, self.shown_words(), c.k, c.selection,
                                             c.separator, seed, c.sets)
        self._shared_next, self._prefix_on, self._block = False, False, None

    def encode(self, examples: Sequence[Example]) -> EncodedExamples:
        data = super().encode(examples)
        return _Encoded(data.encodings, data.labels, shared=self._shared_next)

    def with_demonstrations(self, encodings: dict[int, list[Encoding]], examples: Sequence[Example]):
        """Every input once per demonstration set, set after set (``predict_scores`` averages them); or
        the inputs alone when they all fit beside the one shared block (see the module docstring)."""
        if self.demonstrations is None:
            super().with_demonstrations(encodings, examples)  # says what is missing
        block, start = self._shared_block(), len(self.encoder.prefix_ids)
        longest = max((len(e.input_ids) for encs in encodings.values() for e in encs), default=0)
        self._shared_next = block is not None and \
            len(block) - start + longest <= self.encoder.max_length - self.encoder.reserve
        if self._shared_next:
            return {n: [e.after(start) for e in encs] for n, encs in encodings.items()}
        return {n: [e for s in range(self.config.sets) for e in self.demonstrations.add(encs, examples, s)]
                for n, encs in encodings.items()}

    def _shared_block(self) -> list[int] | None:
        """The token ids every input shares (leading specials and demonstrations), when they can be a
        key/value prefix: random selection, one set, a causal LM with relative positions."""
        c, demos = self.config, self.demonstrations
        if c.selection != "random" or c.sets != 1 or not self.lm.causal or not self.lm.relative_positions:
            return None
        outside = Example({name: "\0" for name in self.template.fields})  # in no pool
        return list(self.encoder.prefix_ids) + [t for i in demos.choose(outside) for t in demos.render_ids(i)]

    def forward_lm(self, lm, inputs_embeds, attention_mask, position_ids, logits_to_keep, **spans):
        if not self._prefix_on:
            return super().forward_lm(lm, inputs_embeds, attention_mask, position_ids, logits_to_keep, **spans)
        ids = self._shared_block()
        if self._block is None or self._block[0] != ids:  # keys and values of the block, numbered before 0
            self._block = (ids, lm.key_values(torch.tensor([ids]), start=-len(ids)))
        return forward_with_prefix(lm, self._block[1], inputs_embeds, attention_mask, position_ids, logits_to_keep)

    @torch.no_grad()
    def predict_scores(self, data: EncodedExamples, batch_size: int = 32, progress: bool | str = False,
                       max_tokens: int | None = None, cached: bool = True) -> torch.Tensor:
        """Label scores, the label probabilities averaged over the demonstration sets (with one set the
        label scores as they are)."""
        sets = self.config.sets
        if getattr(data, "shared", False):
            self._prefix_on = True
            try:
                return super().predict_scores(data, batch_size, progress, max_tokens, cached)
            finally:
                self._prefix_on = False
        if sets == 1:
            return super().predict_scores(data, batch_size, progress, max_tokens, cached)
        every = EncodedExamples(data.encodings, data.labels.repeat(sets))
        scores = super().predict_scores(every, batch_size, progress, max_tokens, cached).view(sets, len(data), -1)
        return scores.log_softmax(-1).exp().mean(0).log()

    def search(self, train_data: EncodedExamples, dev_data: EncodedExamples | None, config, progress: bool = True):
        """Nothing to learn: the demonstrations came with the pool (see :meth:`set_demonstration_pool`)."""
        if self.demonstrations is None:
            raise ValueError("icl needs its training examples: call set_demonstration_pool(train_examples, seed)")
        return TrainResult(steps=0, best_step=0, best_dev={})

    def learned(self) -> dict:
        """With random selection, the demonstrations every input gets (one list per set), as text."""
        demos = self.demonstrations
        if demos is None or self.config.selection != "random":
            return {}
        outside = Example({name: "\0" for name in self.template.fields})  # in no pool
        shown = lambda i: render(self.template, demos.pool[i], demos.words[demos.pool[i].label])
        return {"demonstrations": [[shown(i) for i in demos.choose(outside, s)] for s in range(self.config.sets)]}
