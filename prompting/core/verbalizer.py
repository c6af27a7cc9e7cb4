"""Verbalizers: label -> label words, tokenised in context, scored exactly.

>>> v = Verbalizer({0: ["terrible"], 1: ["great", "good"]})
>>> v.labels
('0', '1')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:  # torch is imported where tensors are made: checking a verbalizer needs none
    import torch

__all__ = ["VerbalizerError", "Verbalizer", "LabelWordIds", "AGGREGATIONS"]

AGGREGATIONS = ("mean", "max", "logsumexp")


class VerbalizerError(ValueError):
    """A verbalizer that is empty, does not fit the task's labels, or the model's tokenizer."""


class Verbalizer:
    """Maps each label to one or more label words.

    ``aggregate`` says how the log-probabilities of several words of one label are combined:
    ``mean`` (default), ``max``, or ``logsumexp`` (the probability of any of the words).
    """

    def __init__(self, label_words: Mapping[object, str | Sequence[str]], aggregate: str = "mean"):
        if not isinstance(label_words, Mapping) or not label_words:
            raise VerbalizerError(
                f"a verbalizer maps each label to its words, e.g. {{0: [terrible], 1: [great]}}; "
                f"got {label_words!r}")
        if aggregate not in AGGREGATIONS:
            raise VerbalizerError(
                f"aggregate={aggregate!r} is not known; choose one of {', '.join(AGGREGATIONS)}")
        words: dict[str, tuple[str, ...]] = {}
        for label, value in label_words.items():
            items = [value] if isinstance(value, str) else [] if value is None else value
            is_list = isinstance(items, (list, tuple))
            booleans = isinstance(value, bool) or (is_list and any(isinstance(w, bool) for w in items))
            if not is_list or booleans or (is_list and any(w is None for w in items)):
                # YAML reads unquoted yes / no as booleans: say so instead of scoring the word "True"
                raise VerbalizerError(
                    f"label {label!r}: label words must be a string or a list of strings, got {value!r}"
                    + ("; quote yes / no in YAML" if booleans else "")
                    + ("; YAML reads an empty entry or null as nothing, not as a word" if is_list and None in items
                       else ""))
            items = [str(w).strip() for w in items]
            if not items or not all(items):
                raise VerbalizerError(f"label {label!r} has no label words ({value!r}); give at least one")
            if str(label) in words:  # e.g. 0 and "0"
                raise VerbalizerError(f"label {label!r} is given twice; labels are compared as strings")
            words[str(label)] = tuple(items)
        self.label_words = words
        self.labels = tuple(words)
        self.aggregate = aggregate

    def __repr__(self) -> str:
        return f"Verbalizer({dict(self.label_words)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Verbalizer) and (other.label_words, other.aggregate) == (
            self.label_words, self.aggregate)

    def __hash__(self) -> int:
        return hash((tuple(self.label_words.items()), self.aggregate))

    def to_dict(self) -> dict[str, list[str]]:
        return {label: list(ws) for label, ws in self.label_words.items()}

    def describe(self) -> str:
        """Short human form: ``0: terrible | 1: great, good``."""
        return " | ".join(f"{label}: {', '.join(ws)}" for label, ws in self.label_words.items())

    def check_labels(self, labels: Sequence[str]) -> None:
        """Raise if the task's labels and the verbalizer's labels differ, or two labels share a word."""
        labels = [str(label) for label in labels]
        missing = [label for label in labels if label not in self.label_words]
        if missing:
            raise VerbalizerError(
                f"the verbalizer has no words for label {missing[0]!r}; it knows labels "
                f"{', '.join(map(repr, self.labels))} and the task has {', '.join(map(repr, labels))}")
        extra = [label for label in self.labels if label not in labels]
        if extra:
            raise VerbalizerError(
                f"the verbalizer has words for label {extra[0]!r}, which the task does not have; "
                f"task labels: {', '.join(map(repr, labels))}")
        owners: dict[str, str] = {}
        for label, words in self.label_words.items():
            for word in words:
                if owners.setdefault(word, label) != label:
                    raise VerbalizerError(
                        f"label word {word!r} stands for both label {owners[word]!r} and label {label!r}; "
                        "the two labels would always score the same: give each label its own words")

    def ordered(self, labels: Sequence[str]) -> "Verbalizer":
        """The same verbalizer with its labels in the task's order."""
        self.check_labels(labels)
        return Verbalizer({str(label): self.label_words[str(label)] for label in labels}, self.aggregate)

    def tokenize(self, tokenizer, leading_space: bool) -> "LabelWordIds":
        """Token ids of every label word as the model sees it after the prompt."""
        import torch

        ids, owner = [], []
        unk = getattr(tokenizer, "unk_token_id", None)
        for index, (label, ws) in enumerate(self.label_words.items()):
            for word in ws:
                token_ids = tokenizer((" " if leading_space else "") + word,
                                      add_special_tokens=False)["input_ids"]
                if not token_ids or (unk is not None and unk in token_ids):
                    raise VerbalizerError(
                        f"label word {word!r} of label {label!r} cannot be represented by the "
                        f"tokenizer (ids {token_ids}); choose a word made of known tokens")
                ids.append(tuple(token_ids))
                owner.append(index)
        return LabelWordIds(tuple(ids), torch.tensor(owner), len(self.labels), self.aggregate)


@dataclass(frozen=True)
class LabelWordIds:
    """Label words as token-id tuples (flat over labels) and the label each belongs to."""

    word_ids: tuple[tuple[int, ...], ...]
    word_label: torch.Tensor  # [n_words] label index of each word
    n_labels: int
    aggregate: str = "mean"

    @property
    def lengths(self) -> list[int]:
        return sorted({len(w) for w in self.word_ids})

    def aggregate_scores(self, word_logprobs: torch.Tensor) -> torch.Tensor:
        """[B, n_words] log-probabilities of whole words -> [B, n_labels] label scores."""
        import torch

        owner = self.word_label.to(word_logprobs.device)
        columns = []
        for label in range(self.n_labels):
            scores = word_logprobs[:, owner == label]
            if self.aggregate == "mean":
                columns.append(scores.mean(1))
            elif self.aggregate == "max":
                columns.append(scores.max(1).values)
            else:
                columns.append(torch.logsumexp(scores, 1))
        return torch.stack(columns, 1)
