"""The interface every prompt method implements, and the manual (PET) prompt.

A method is a ``torch.nn.Module`` that holds a template, a verbalizer, a LanguageModel and its typed
settings (``config``, an instance of its ``config_class``), and turns a batch of examples into label
scores. Subclasses change only these:

- ``adapt``: the template and settings the method runs with (a soft prompt adds its slots);
- ``setup``: what the method learns (a soft prompt's vectors, P-tuning's encoder, a prefix);
- ``embed``: the input embeddings (soft prompts, P-tuning's encoder, AutoPrompt's triggers);
- ``forward_lm``: the LM call (prefix-tuning's per-layer keys/values).

Everything else (tokenisation, padding, exact multi-token label-word scores, batching) is shared.
A method that learns by search instead of gradient descent (AutoPrompt) also implements
:class:`SearchMethod`, whose ``search`` the training loop calls instead of its optimiser steps.
"""

from __future__ import annotations

from typing import ClassVar, Iterator, Sequence

import torch

from prompting.core.data import Example
from prompting.core.template import PromptBatch, Template, collate
from prompting.core.verbalizer import Verbalizer
from prompting.lm.logprobs import MAX_BATCH_TOKENS, token_budget_batches
from prompting.lm.model import LanguageModel
from prompting.methods.batches import Batch, EncodedExamples
from prompting.methods.choices import ChoiceScorer, ChoiceVerbalizer
from prompting.methods.configs import IPetConfig, ManualConfig, MethodConfig
from prompting.methods.demonstrating import WithDemonstrations
from prompting.methods.saving import load_prompt, save_prompt
from prompting.methods.scores import SCORES, score_key

__all__ = ["PromptMethod", "ManualPrompt", "IPet", "SearchMethod", "EncodedExamples", "Batch"]


class PromptMethod(WithDemonstrations, torch.nn.Module):
    """A prompt over a frozen-or-tuned LM: template + verbalizer -> label scores.

    The LM is held, not registered as a sub-module, so ``state_dict()`` holds only what the
    method learns; ``parameter_groups`` says what the training loop updates.
    """

    name: ClassVar[str] = "base"
    #: whether the method changes nothing in the text before its first learned slot, so that on a
    #: causal LM that text's keys and values can be cached (prefix-tuning changes every layer: no)
    reuses_frozen_text: ClassVar[bool] = False
    #: the method's settings: fields with types, defaults, allowed values and sweep ranges, and the
    #: training settings that suit the method (see :mod:`prompting.core.settings`)
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    #: untrained, without demonstrations, the verbalizers of one template may be scored in one pass
    #: (one verbalizer over all their words): nothing but the label words depends on the verbalizer
    verbalizers_share_a_pass: ClassVar[bool] = False

    def __init__(self, lm: LanguageModel, template: Template | str, verbalizer: Verbalizer | None,
                 labels: Sequence[str] | None = None, max_length: int | None = None,
                 config: MethodConfig | None = None, chat: bool = False, **params):
        super().__init__()
        template = template if isinstance(template, Template) else Template(template)
        self.template, self.config = self.adapt(template, self.configure(config, params))
        self.template.check_slots(self.config_class.slots, self.name)
        self.lm = lm
        self.chat = chat  # the prompt is a user message in the tokenizer's chat template (prompting.lm.chat)
        # no verbalizer: the method writes text at {mask} (a generation task, prompting.methods.targets)
        self.verbalizer = verbalizer.ordered(labels) if labels is not None and verbalizer else verbalizer
        self.labels = self.verbalizer.labels if verbalizer is not None else ()
        self.encoder = lm.template_encoder(self.template, max_length or lm.max_length, chat=chat)
        # a multiple-choice verbalizer: each example's choices are its label words (prompting.methods.choices)
        self.choices = ChoiceScorer(self) if isinstance(self.verbalizer, ChoiceVerbalizer) else None
        self.words = None
        if self.choices is None and verbalizer is not None:
            self.words = self.verbalizer.tokenize(lm.tokenizer, self.encoder.mask_leading_space)
            if lm.causal:  # the label word is appended after a causal context: keep room for it
                self.encoder.reserve = max(len(w) for w in self.words.word_ids) - 1
        self.demonstrations = None  # set by set_demonstration_pool when the settings ask for them
        self.setup()

    # ----------------------------------------------------------------- what a subclass changes
    def adapt(self, template: Template, config: MethodConfig) -> tuple[Template, MethodConfig]:
        """The template and settings the method runs with (a soft prompt puts its slots in front of a
        template that has none); raise when the template does not suit the method."""
        return template, config

    def setup(self) -> None:
        """Create what the method learns; called at the end of ``__init__`` (template, LM and
        ``config`` are set)."""

    @classmethod
    def configure(cls, config: MethodConfig | None = None, params: dict | None = None) -> MethodConfig:
        """The method's settings: ``config`` as given, or built (and checked) from keyword ``params``."""
        if config is not None and params:
            raise ValueError(f"method {cls.name!r}: give its settings as config or as keywords, not both")
        if config is None:
            return cls.config_class.from_mapping(params or {})
        if not isinstance(config, cls.config_class):
            raise ValueError(f"method {cls.name!r} takes a {cls.config_class.__name__}, not a "
                             f"{type(config).__name__}")
        return config

    def embed(self, lm: LanguageModel, input_ids: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
        return lm.embed(input_ids)

    def forward_lm(self, lm: LanguageModel, inputs_embeds, attention_mask, position_ids, logits_to_keep, **spans):
        return lm.forward(inputs_embeds, attention_mask, position_ids, logits_to_keep, **spans)

    def lm_prefix(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The keys and values [layers, kv_heads, P, head_dim] that ``forward_lm`` puts before every row's
        input (prefix-tuning), or None: decoding (``generate``) puts them into its cache."""
        return None

    def prefix_groups(self, data: EncodedExamples) -> list[tuple[list[int], EncodedExamples, object]]:
        """The rows of ``data`` that share one :meth:`lm_prefix`: ``(rows, their data, prefix)`` each (one group
        but for in-context learning, whose inputs that fit beside the shared demonstrations attend to them)."""
        return [(list(range(len(data))), data, self.lm_prefix())]

    @property
    def plain_lm_call(self) -> bool:
        """Whether the method calls the LM as it is (it changes only the input embeddings): then
        many candidates after one query can share the query's keys and values."""
        return type(self).forward_lm is PromptMethod.forward_lm

    def parameter_groups(self, lr: float, lm_lr: float | None = None, tune_lm: bool = False) -> list[dict]:
        """Parameter groups for the optimiser: the method's own parameters, and the LM's if tuned."""
        groups = []
        own = [p for p in self.parameters() if p.requires_grad]
        if own:
            groups.append({"params": own, "lr": lr, "name": self.name})
        if tune_lm:
            groups.append({"params": [p for p in self.lm.model.parameters()], "lr": lm_lr or lr, "name": "lm"})
        return groups

    def learned(self) -> dict:
        """What the method found, in words, for records and reports (AutoPrompt: its triggers)."""
        return {}

    def prompt_state(self) -> dict[str, torch.Tensor]:
        """What a saved prompt stores: the learned tensors, with any reparameterisation (an LSTM or
        MLP encoder) folded into its output, so that loading needs no encoder."""
        return {k: v.detach() for k, v in self.state_dict().items()}

    def load_prompt_state(self, state: dict[str, torch.Tensor]) -> None:
        """Take back what :meth:`prompt_state` gave (the method then predicts as it did)."""
        self.load_state_dict(dict(state))

    def save(self, directory) -> None:
        """Save the learned prompt (see :func:`prompting.methods.saving.save_prompt`)."""
        save_prompt(self, directory)

    @staticmethod
    def load(directory, lm: LanguageModel, strict: bool = True) -> "PromptMethod":
        """Load a prompt saved with :meth:`save` onto ``lm`` (see :func:`prompting.methods.saving.load_prompt`)."""
        return load_prompt(directory, lm, strict=strict)

    # ----------------------------------------------------------------- shared machinery
    def encode(self, examples: Sequence[Example]) -> EncodedExamples:
        """Tokenise examples once (one pass per distinct label-word length for a masked LM)."""
        if self.choices is not None:
            return self.choices.encode(examples)
        examples = [ex if isinstance(ex, Example) else Example(ex) for ex in examples]
        fields = [ex.fields for ex in examples]
        counts = self.words.lengths if self.lm.masked and self.words is not None else [1]
        encodings = self.with_demonstrations({n: self.encoder.encode(fields, n_mask=n) for n in counts}, examples)
        index = {label: i for i, label in enumerate(self.labels)}
        labels = torch.tensor([index.get(getattr(ex, "label", None), -1) for ex in examples], dtype=torch.long)
        return EncodedExamples(encodings, labels)

    @property
    def frozen_text(self) -> bool:
        """Whether batches leave out each example's text before the first learned slot and attend to its
        cached keys and values instead (:class:`prompting.lm.model.SpanCache`): a causal LM that is not
        being tuned, a method that changes nothing before its learned slots, a template with the
        input before every learned slot (:attr:`prompting.core.template.Template.learned_after_input`), and
        a cache that may hold something."""
        return (self.reuses_frozen_text and self.lm.causal and self.template.learned_after_input
                and self.lm.spans.cap > 0 and self.lm.frozen)

    def batches(self, data: EncodedExamples, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None, order: Sequence[int] | None = None,
                rows: Sequence[Sequence[int]] | None = None) -> Iterator[Batch]:
        """Batches of ``batch_size`` examples in ``order`` (shuffled with ``generator``, or as given), or
        exactly the batches ``rows``."""
        if rows is None:
            if order is None:
                order = (torch.randperm(len(data), generator=generator) if shuffle
                         else torch.arange(len(data))).tolist()
            rows = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
        if self.choices is not None:  # every choice of the examples, in full (no frozen span)
            yield from self.choices.batches(data, rows)
            return
        left, frozen = self.lm.causal, self.frozen_text
        for chunk in rows:
            prompts = {}
            for n, encs in data.encodings.items():
                picked = [encs[i] for i in chunk]
                spans = [e.learned_start for e in picked] if frozen else None
                prompts[n] = collate(picked, self.lm.pad_id, left=left, frozen=spans).to(self.lm.device)
            yield data.batch(prompts, chunk, self.lm.device)

    def run_lengths(self, data: EncodedExamples) -> list[int]:
        """Each example's tokens that a forward pass runs: all of them, or with frozen text
        (:attr:`frozen_text`) those from the first learned slot on."""
        cut = self.frozen_text
        return [len(e.input_ids) - (e.learned_start if cut else 0) for e in data.encodings[min(data.encodings)]]

    def training_batches(self, data: EncodedExamples, batch_size: int, generator: torch.Generator,
                         group: int = 4) -> list[list[int]]:
        """One epoch's batches: shuffled with ``generator``, then within each run of ``group`` batches
        the rows sorted by length and cut again, and the batches shuffled (as Hugging Face's
        length-grouped sampler): similar lengths share a batch, so less of it is padding, and a seed
        gives the same batches every time.

        A training set that fits in one run of ``group`` batches (a few-shot split: 32 examples in
        batches of 8) is only shuffled: sorted by length, its batches would hold the same examples
        every epoch (the shortest quarter together, its labels as they fall), and there is little
        padding to save."""
        order = torch.randperm(len(data), generator=generator).tolist()
        span = batch_size * group
        if len(order) <= span:
            return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        lengths = self.run_lengths(data)
        batches = []
        for start in range(0, len(order), span):
            rows = sorted(order[start:start + span], key=lengths.__getitem__)
            batches += [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]

    def forward(self, batch: Batch) -> torch.Tensor:
        """Label scores [B, n_labels]: aggregated log-probabilities of each label's words."""
        if self.choices is not None:
            return self.choices.scores(batch)
        word_scores = self.lm.word_logprobs(batch.prompts, self.words, hooks=self)
        return self.words.aggregate_scores(word_scores)

    def scoring_batches(self, data: EncodedExamples, batch_size: int = 32,
                        max_tokens: int | None = None) -> list[list[int]]:
        """Rows of ``data`` in batches for scoring: sorted by length and cut where ``batch_size`` rows or
        ``max_tokens`` padded tokens would be exceeded, so that little of each batch is padding. With
        frozen text (:attr:`frozen_text`) only the tokens after it are counted."""
        encodings = data.encodings[min(data.encodings)]
        lengths = self.run_lengths(data)
        order = sorted(range(len(data)), key=lambda i: (lengths[i], len(encodings[i].input_ids)))
        batches = token_budget_batches([lengths[i] for i in order], max_tokens or MAX_BATCH_TOKENS, batch_size)
        return [[order[i] for i in rows] for rows in batches]

    @torch.no_grad()
    def predict_scores(self, data: EncodedExamples, batch_size: int = 32, progress: bool | str = False,
                       max_tokens: int | None = None, cached: bool = True) -> torch.Tensor:
        """Label scores for every example, in order, with an optional progress bar. A state already
        scored on the same examples is not scored again (see :mod:`prompting.methods.scores`), unless
        ``cached`` is false (then the scores are computed, and not kept)."""
        compute = lambda: self._predict_scores(data, batch_size, progress, max_tokens)  # noqa: E731
        if not cached or not data.encodings or not len(data):
            return compute()
        return SCORES.get(score_key(self, data), compute)

    def _predict_scores(self, data: EncodedExamples, batch_size: int, progress: bool | str,
                        max_tokens: int | None) -> torch.Tensor:
        from tqdm.auto import tqdm

        was_training = self.training
        self.eval()
        self.lm.model.eval()
        scores = torch.empty(len(data), len(self.labels))
        rows = self.scoring_batches(data, batch_size, max_tokens)
        desc = progress if isinstance(progress, str) else "scoring"
        for chunk, batch in zip(rows, tqdm(self.batches(data, batch_size, rows=rows), total=len(rows),
                                           desc=desc, disable=not progress, leave=False)):
            scores[torch.tensor(chunk, dtype=torch.long)] = self(batch).float().cpu()
        self.train(was_training)
        return scores

    def predict(self, examples: Sequence[Example], batch_size: int = 32) -> list[str]:
        """The predicted label of each example."""
        scores = self.predict_scores(self.encode(examples), batch_size)
        return [self.labels[i] for i in scores.argmax(1).tolist()]

    def describe(self) -> dict:
        """The method as a record shows it: name, template, verbalizer, settings and what it learned."""
        return {"method": self.name, "template": self.template.text,
                "verbalizer": self.verbalizer.to_dict() if self.verbalizer is not None else None,
                **self.config.saved(), **self.learned()}


class ManualPrompt(PromptMethod):
    """PET: the template and verbalizer as written. Zero-shot untrained; fine-tuning trains the LM."""

    name = "manual"
    config_class = ManualConfig
    verbalizers_share_a_pass = True


class IPet(ManualPrompt):
    """A model of iPET (see :mod:`prompting.tasks.pet`): a PET model; its settings add the recipe's."""

    name = "ipet"
    config_class = IPetConfig


class SearchMethod:
    """A method that learns by search, not by gradient descent: the training loop hands it the data."""

    def search(self, train_data: EncodedExamples, dev_data: EncodedExamples | None, config,
               progress: bool = True):
        """Search with the training settings ``config``; leave the method in its best state and
        return a :class:`prompting.training.loop.TrainResult`."""
        raise NotImplementedError


