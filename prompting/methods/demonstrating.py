"""Demonstrations in front of each input (LM-BFF's "+ demos"): the part of a prompt method that draws
them from the run's training split and puts them into every encoding."""

from __future__ import annotations

from typing import Sequence

from prompting.core.data import Example
from prompting.core.demonstrations import Demonstrations
from prompting.core.template import Encoding

__all__ = ["WithDemonstrations"]


class WithDemonstrations:
    """Demonstrations for a prompt method (mixed into :class:`prompting.methods.base.PromptMethod`): the
    method's settings say whether it shows any (``demonstrations: {k, selection, separator}``)."""

    demonstrations: Demonstrations | None = None  # set by set_demonstration_pool when the settings ask

    def demonstration_settings(self):
        """What the settings ask for (``demonstrations: {k, selection, separator}``), or None."""
        return self.config.demonstration_settings()

    def set_demonstration_pool(self, examples: Sequence[Example], seed: int = 0) -> None:
        """The labelled examples demonstrations are drawn from (the run's training split) and the seed
        that picks them and their order; nothing for a method without demonstrations."""
        wanted = self.demonstration_settings()
        if wanted is not None:
            self.demonstrations = Demonstrations(self.encoder, examples, self.shown_words(), wanted.k,
                                                 wanted.selection, wanted.separator, seed)
    def demonstration_key(self) -> str:
        """What the demonstrations depend on (pool, seed, settings): part of a score cache's key."""
        demos = self.demonstrations
        if demos is None:
            return ""
        return repr((demos.seed, demos.k, demos.selection, demos.sets, demos.separator,
                     [(sorted(ex.fields.items()), ex.label) for ex in demos.pool]))
    def shown_words(self) -> dict[str, str] | None:
        """The word a demonstration shows for each label: its verbalizer's first (None without a verbalizer: a
        demonstration shows its own target text)."""
        if self.verbalizer is None:
            return None
        if self.choices is not None:
            raise ValueError(f"method {self.name!r}: demonstrations show each label's word, but a multiple-choice "
                             "verbalizer's words are each example's own choices; leave demonstrations (and the "
                             "icl method) out for a multiple-choice task")
        return {label: words[0] for label, words in self.verbalizer.label_words.items()}
    def with_demonstrations(self, encodings: dict[int, list[Encoding]], examples: Sequence[Example]):
        """Every encoding with its demonstrations in front (as they are without demonstrations)."""
        if self.demonstrations is None:
            if self.demonstration_settings() is not None:
                raise ValueError(f"method {self.name!r} has demonstrations but nothing to draw them from; call "
                                 "set_demonstration_pool(train_examples, seed) first (the harness does)")
            return encodings
        return {n: self.demonstrations.add(encs, examples) for n, encs in encodings.items()}
