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
from prompting.methods.triggers import subset

__all__ = ["InContext"]


@dataclass
class _Encoded(EncodedExamples):
    # per row: the input alone, the shared demonstrations coming as a key/value prefix (else the whole prompt)
    rows_shared: tuple[bool, ...] = ()

    @property
    def shared(self) -> bool:
        return any(self.rows_shared)


class InContext(PromptMethod, SearchMethod):
    """In-context learning (Brown et al. 2020); a search method whose search only takes the pool."""

    name = "icl"
    config_class = ICLConfig
    #: score inputs after one shared key/value block of demonstrations where that is exact (False: every
    #: prompt whole, the demonstrations written into it; the same scores, slower)
    share_block: bool = True

    def set_demonstration_pool(self, examples: Sequence[Example], seed: int = 0) -> None:
        c = self.config
        self.demonstrations = Demonstrations(self.encoder, examples, self.shown_words(), c.k, c.selection,
                                             c.separator, seed, c.sets)
        self._shared_next, self._prefix_on, self._block = (), False, None

    def encode(self, examples: Sequence[Example]) -> EncodedExamples:
        data = super().encode(examples)
        return _Encoded(data.encodings, data.labels, rows_shared=tuple(self._shared_next))

    def with_demonstrations(self, encodings: dict[int, list[Encoding]], examples: Sequence[Example]):
        """Every input once per demonstration set, set after set (``predict_scores`` averages them); with
        one shared block (see the module docstring), each input that fits beside it alone, and each that
        does not with its own (shortened) demonstrations."""
        if self.demonstrations is None:
            super().with_demonstrations(encodings, examples)  # says what is missing
        block, start = self.shared_block(), len(self.encoder.prefix_ids)
        if block is None:
            self._shared_next = ()
            return {n: [e for s in range(self.config.sets) for e in self.demonstrations.add(encs, examples, s)]
                    for n, encs in encodings.items()}
        room = self.encoder.max_length - self.encoder.reserve - (len(block) - start)
        first = encodings[min(encodings)]
        self._shared_next = tuple(len(e.input_ids) <= room for e in first)
        out = {}
        for n, encs in encodings.items():
            long_rows = [i for i, fits in enumerate(self._shared_next) if not fits]
            whole = iter(self.demonstrations.add([encs[i] for i in long_rows], [examples[i] for i in long_rows]))
            out[n] = [e.after(start) if fits else next(whole) for e, fits in zip(encs, self._shared_next)]
        return out

    def shared_block(self) -> list[int] | None:
        """The token ids every input shares (leading specials and demonstrations), when they can be a
        key/value prefix: random selection, one set, a causal LM with relative positions."""
        c, demos = self.config, self.demonstrations
        if not self.share_block or c.selection != "random" or c.sets != 1 or not self.lm.causal or not self.lm.relative_positions:
            return None
        outside = Example({name: "\0" for name in self.template.fields})  # in no pool
        return list(self.encoder.prefix_ids) + [t for i in demos.choose(outside) for t in demos.render_ids(i)]

    def _block_key_values(self):
        """The keys and values of the shared block, numbered just before the input (computed once)."""
        ids = self.shared_block()
        if self._block is None or self._block[0] != ids:
            self._block = (ids, self.lm.key_values(torch.tensor([ids]), start=-len(ids)))
        return self._block[1]

    def forward_lm(self, lm, inputs_embeds, attention_mask, position_ids, logits_to_keep, **spans):
        if not self._prefix_on:
            return super().forward_lm(lm, inputs_embeds, attention_mask, position_ids, logits_to_keep, **spans)
        return forward_with_prefix(lm, self._block_key_values(), inputs_embeds, attention_mask, position_ids,
                                   logits_to_keep)

    def prefix_groups(self, data: EncodedExamples):
        """The inputs that fit beside the shared demonstrations attend to their keys and values; the others
        carry their own (shortened) demonstrations."""
        if not getattr(data, "shared", False):
            return super().prefix_groups(data)
        beside = [i for i, shared in enumerate(data.rows_shared) if shared]
        whole = [i for i, shared in enumerate(data.rows_shared) if not shared]
        groups = [(beside, subset(data, beside), self._block_key_values())]
        return groups + ([(whole, subset(data, whole), None)] if whole else [])

    @torch.no_grad()
    def predict_scores(self, data: EncodedExamples, batch_size: int = 32, progress: bool | str = False,
                       max_tokens: int | None = None, cached: bool = True) -> torch.Tensor:
        """Label scores, the label probabilities averaged over the demonstration sets (with one set the
        label scores as they are)."""
        sets = self.config.sets
        if getattr(data, "shared", False):
            return self._scores_beside_the_block(data, batch_size, progress, max_tokens, cached)
        if sets == 1:
            return super().predict_scores(data, batch_size, progress, max_tokens, cached)
        every = EncodedExamples(data.encodings, data.labels.repeat(sets))
        scores = super().predict_scores(every, batch_size, progress, max_tokens, cached).view(sets, len(data), -1)
        return scores.log_softmax(-1).exp().mean(0).log()

    def _scores_beside_the_block(self, data: "_Encoded", batch_size: int, progress, max_tokens, cached) -> torch.Tensor:
        """The inputs that fit beside the shared block scored with its keys and values as a prefix, the
        others whole (their demonstrations in their prompts); rows in order."""
        beside = [i for i, shared in enumerate(data.rows_shared) if shared]
        whole = [i for i, shared in enumerate(data.rows_shared) if not shared]
        scores = torch.empty(len(data), len(self.labels))
        self._prefix_on = True
        try:
            scores[beside] = super().predict_scores(subset(data, beside), batch_size, progress, max_tokens, cached)
        finally:
            self._prefix_on = False
        if whole:
            scores[whole] = super().predict_scores(subset(data, whole), batch_size, progress, max_tokens, cached)
        return scores

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
        shown = lambda i: render(self.template, demos.pool[i], demos.shown(demos.pool[i]))
        return {"demonstrations": [[shown(i) for i in demos.choose(outside, s)] for s in range(self.config.sets)]}
