"""Multiple-choice scoring: each example brings its own label words, its choices.

A verbalizer whose every word is an example field, ``{0: ["{choice1}"], 1: ["{choice2}"]}``, says that
label 0 is "the text of the example's field ``choice1``" (COPA: two choices per premise; any 2-4
choice task). Each choice's text is put at the template's ``{mask}`` and scored by the LM as a label
word is (causal LM: the teacher-forced log-probability of all its tokens after the prompt; masked
LM: one ``[MASK]`` per token), summed over its tokens (``score: sum``, the full log-likelihood) or
averaged (``mean``, length-normalised, which does not favour the shorter choice). The template's
other slots (``{soft}``, prefixes) work as for any task, through the same method hooks; AutoPrompt,
whose search scores fixed label words, does not take such a verbalizer.

    task:  {name: copa, train: train.jsonl, test: val.jsonl, fields: {premise: premise, question: question},
            choices: [choice1, choice2]}
    templates: {patterns: ["{premise} What was the {question}? {mask}"]}   # verbalizer: the choices
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

from prompting.core.verbalizer import Verbalizer, VerbalizerError

if TYPE_CHECKING:
    import torch

    from prompting.methods.base import PromptMethod

__all__ = ["ChoiceVerbalizer", "ChoiceScorer", "make_verbalizer", "choice_fields", "SCORES"]

SCORES = ("sum", "mean")
_FIELD_WORD = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def choice_fields(label_words: Mapping) -> dict[str, str] | None:
    """Label -> the field its one word names, when every word is a field slot; None when none is.
    A verbalizer that mixes words and field slots is an error."""
    words = {str(label): [ws] if isinstance(ws, str) else list(ws) for label, ws in label_words.items()}
    slots = {label: [_FIELD_WORD.match(str(w).strip()) for w in ws] for label, ws in words.items()}
    if not any(m for ms in slots.values() for m in ms):
        return None
    for label, matches in slots.items():
        if len(matches) != 1 or matches[0] is None:
            raise VerbalizerError(
                f"label {label!r} has the words {words[label]!r}; in a multiple-choice verbalizer every label "
                "has exactly one word, the field that holds its choice, e.g. {0: ['{choice1}'], 1: ['{choice2}']}")
    return {label: matches[0].group(1) for label, matches in slots.items()}


class ChoiceVerbalizer(Verbalizer):
    """A verbalizer whose words are the examples' own choices (see the module docstring)."""

    def __init__(self, label_words: Mapping, score: str = "sum"):
        super().__init__(label_words)
        fields = choice_fields(self.label_words)
        if fields is None:
            raise VerbalizerError(f"{dict(self.label_words)!r} names no field; a multiple-choice verbalizer "
                                  "maps each label to its choice's field, e.g. {0: ['{choice1}']}")
        if score not in SCORES:
            raise VerbalizerError(f"choice score {score!r} is not valid; choose one of {', '.join(SCORES)}")
        self.fields, self.score = fields, score

    def ordered(self, labels: Sequence[str]) -> "ChoiceVerbalizer":
        self.check_labels(labels)
        return ChoiceVerbalizer({str(label): self.label_words[str(label)] for label in labels}, self.score)

    def check_fields(self, available: Sequence[str]) -> None:
        missing = [f for f in self.fields.values() if f not in available]
        if missing:
            raise VerbalizerError(f"the verbalizer's word {{{missing[0]}}} names a field the examples do not "
                                  f"have; their fields: {', '.join(available)}")

    def tokenize(self, tokenizer, leading_space: bool):
        raise VerbalizerError("a multiple-choice verbalizer's words are each example's choices; they are "
                              "tokenised with the examples (ChoiceScorer), not once")


def make_verbalizer(label_words: Mapping, score: str = "sum") -> Verbalizer:
    """A :class:`ChoiceVerbalizer` when the words are field slots, else a plain :class:`Verbalizer`."""
    if isinstance(label_words, Verbalizer):
        return label_words
    return ChoiceVerbalizer(label_words, score) if choice_fields(label_words) else Verbalizer(label_words)


@dataclass
class ChoiceRows:
    """Examples encoded once per choice: ``rows[i][c]`` is example i's prompt with choice c in place
    (causal LM: the context and the choice's tokens but the last; masked LM: one mask per token),
    ``targets[i][c]`` the choice's token ids."""

    rows: list[list]
    targets: list[list[tuple[int, ...]]]


class ChoiceScorer:
    """Encodes, batches and scores the choices of a method whose verbalizer is a :class:`ChoiceVerbalizer`."""

    def __init__(self, method: "PromptMethod"):
        self.method = method
        self.fields = [method.verbalizer.fields[label] for label in method.verbalizer.labels]
        self.mean = method.verbalizer.score == "mean"

    def _choice_ids(self, fields: Sequence[Mapping[str, str]]) -> list[list[tuple[int, ...]]]:
        lm, lead = self.method.lm, self.method.encoder.mask_leading_space
        texts = [(" " if lead else "") + str(ex[name]).strip() for ex in fields for name in self.fields]
        ids = lm.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        empty = [t for t, i in zip(texts, ids) if not i]
        if empty:
            raise VerbalizerError(f"a choice tokenises to nothing ({empty[0]!r}); every choice needs text")
        n = len(self.fields)
        return [[tuple(i) for i in ids[k * n:(k + 1) * n]] for k in range(len(fields))]

    def encode(self, examples):
        from prompting.methods.batches import EncodedExamples
        from prompting.core.template import Encoding

        fields = [ex.fields if hasattr(ex, "fields") else ex for ex in examples]
        for ex in fields:
            self.method.verbalizer.check_fields(list(ex))
            break
        targets = self._choice_ids(fields)
        encoder = self.method.encoder
        if self.method.lm.causal:
            longest = max((len(t) for row in targets for t in row), default=1)
            kept, encoder.reserve = encoder.reserve, longest - 1  # room for the choice after the context
            try:
                contexts = encoder.encode(fields, n_mask=1)
            finally:
                encoder.reserve = kept
            rows = [[Encoding(ctx.input_ids + list(t[:-1]), [], ctx.soft_positions, ctx.trigger_positions)
                     for t in choices] for ctx, choices in zip(contexts, targets)]
        else:
            rows = [[encoder.encode([ex], n_mask=len(t))[0] for t in choices] for ex, choices in zip(fields, targets)]
            contexts = [choices[0] for choices in rows]
        index = {label: i for i, label in enumerate(self.method.labels)}
        import torch

        labels = torch.tensor([index.get(getattr(ex, "label", None), -1) for ex in examples], dtype=torch.long)
        data = EncodedExamples({1: contexts}, labels)
        data.choices = ChoiceRows(rows, targets)
        return data

    def batches(self, data, rows: Sequence[Sequence[int]]) -> Iterator:
        """A batch per chunk of ``rows``: every choice of its examples (one row each)."""
        from prompting.methods.batches import Batch
        from prompting.core.template import collate

        lm, n = self.method.lm, len(self.fields)
        for picked in rows:
            picked = list(picked)
            flat = [(data.choices.rows[i][c], data.choices.targets[i][c]) for i in picked for c in range(n)]
            groups = {}
            for r, (_, target) in enumerate(flat):  # a masked LM: one batch per choice length
                groups.setdefault(0 if lm.causal else len(target), []).append(r)
            prompts = {key: collate([flat[r][0] for r in rows], lm.pad_id, left=lm.causal).to(lm.device)
                       for key, rows in groups.items()}
            batch = Batch(prompts, data.labels[picked].to(lm.device))
            batch.choice_groups = {key: (rows, [flat[r][1] for r in rows]) for key, rows in groups.items()}
            yield batch

    def scores(self, batch) -> "torch.Tensor":
        """[B, n_choices]: each choice's summed (or mean) token log-probability."""
        import torch

        size = len(batch) * len(self.fields)
        out = None
        for key, (rows, targets) in batch.choice_groups.items():
            values = self._group_scores(batch.prompts[key], targets)
            if out is None:
                out = values.new_zeros(size)
            out = out.index_put((torch.tensor(rows, device=values.device),), values)
        return out.view(len(batch), len(self.fields))

    def _group_scores(self, prompt, targets: list[tuple[int, ...]]) -> "torch.Tensor":
        import torch

        method, lm = self.method, self.method.lm
        width = max(len(t) for t in targets)
        ids = torch.zeros(len(targets), width, dtype=torch.long)
        known = torch.zeros(len(targets), width, dtype=torch.bool)
        for r, target in enumerate(targets):  # right-aligned: a causal row's choice ends every row
            ids[r, width - len(target):] = torch.tensor(target)
            known[r, width - len(target):] = True
        ids, known = ids.to(lm.device), known.to(lm.device)
        embeds = method.embed(lm, prompt.input_ids, prompt)
        if lm.causal:
            logits = method.forward_lm(lm, embeds, prompt.attention_mask, prompt.position_ids, width)[:, -width:]
        else:
            logits = method.forward_lm(lm, embeds, prompt.attention_mask, prompt.position_ids, 0)
            logits = logits[torch.arange(len(targets), device=logits.device).unsqueeze(1), prompt.mask_positions]
        from prompting.lm.logprobs import log_softmax

        token = log_softmax(logits).gather(2, ids.unsqueeze(-1)).squeeze(-1)
        total = (token * known).sum(1)
        return total / known.sum(1) if self.mean else total
