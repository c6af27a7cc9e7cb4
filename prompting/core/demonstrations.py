"""Demonstrations: labelled training examples put in front of a query, rendered with its template.

In-context learning (the ``icl`` method) and prompt-based fine-tuning with demonstrations (LM-BFF's
"+ demos": ``demonstrations: {k: 1}`` on ``manual`` and the learned prompts) both prepend, to every
query, ``k`` training examples per class, each rendered with the same template with its label's
(first) word where ``{mask}`` is:

    great fun, and moving. It was great.

    a dull, lifeless film. It was terrible.

    the query's text. It was {mask}.

Learned slots show in a demonstration as their starting words (``{soft:"It was"}``) or not at all
(``{soft:4}``, ``{trigger:3}``); the query keeps them. Which examples, and in which order, depends on
the seed the method is given (the run's training seed), so the spread over training seeds covers
the choice of demonstrations:

- ``random``: one set drawn per class for all queries (Brown et al., Zhao et al.); a query that is
  itself in the pool (a training example, when fine-tuning) gets a draw of its own without itself;
- ``similarity``: per query, the examples of each class most similar to it by TF-IDF cosine
  (scikit-learn); with several ``sets`` each draws its ``k`` from the more similar half (LM-BFF).

The query is never cut to make room: demonstrations are kept nearest-to-the-query first, the one
that does not fit whole is shortened (its text fields cut from the end) and those before it are
dropped. Only a query longer than the model's length on its own is cut, as without demonstrations.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Sequence

from prompting.core.data import Example
from prompting.core.template import Encoding, Field, Mask, Soft, Text, TemplateEncoder

__all__ = ["SELECTIONS", "Demonstrations", "render", "fit_demonstrations"]

SELECTIONS = ("random", "similarity")  # one random set for every query, or per query the most similar


def render(template, example: Example, word: str, limit: int | None = None, tokenizer=None) -> str:
    """``example`` written with ``template``, ``word`` where ``{mask}`` is (soft slots as their words,
    triggers left out). ``limit``: every text field cut to its first ``limit`` tokens."""
    out = []
    for part in template.parts:
        if isinstance(part, Text):
            out.append(part.text)
        elif isinstance(part, Field):
            text = str(example.fields[part.name]).strip()
            if limit is not None:
                text = tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:limit]).strip()
            out.append(text)
        elif isinstance(part, Mask):
            out.append(word)
        elif isinstance(part, Soft) and part.init_text:
            out.append(part.init_text)
    return re.sub(" {2,}", " ", "".join(out)).strip()  # a left-out slot leaves no double space


def fit_demonstrations(pieces: Sequence, room: int, shorten) -> list[list[int]]:
    """The demonstrations' token ids that fit ``room`` tokens: kept from the last (nearest the query)
    backwards; the first that does not fit whole is shortened by ``shorten(piece, room)`` (ids or
    None) and the ones before it are dropped."""
    kept: list[list[int]] = []
    for piece in reversed(pieces):
        ids = piece.ids
        if len(ids) > room:
            ids = shorten(piece, room)
            if ids:
                kept.insert(0, ids)
            break
        kept.insert(0, ids)
        room -= len(ids)
    return kept


@dataclass
class _Piece:
    index: int  # in the pool
    ids: list[int]


class Demonstrations:
    """Selects, renders and prepends demonstrations from a pool of labelled examples.

    ``words``: the word shown for each label (its verbalizer's first), or None for a generation task: each
    example shows its own target text, and ``k`` counts demonstrations, not per class; ``seed``: which sets
    and orders (the run's training seed).
    """

    def __init__(self, encoder: TemplateEncoder, pool: Sequence[Example], words: dict[str, str] | None, k: int = 1,
                 selection: str = "random", separator: str = "\n\n", seed: int = 0, sets: int = 1):
        if selection not in SELECTIONS:
            raise ValueError(f"selection={selection!r} is not valid; choose one of {', '.join(SELECTIONS)}")
        self.encoder, self.words, self.k, self.selection = encoder, words, k, selection
        self.separator, self.seed, self.sets = separator, seed, sets
        if words is None:  # texts: every example with a target, one group
            self.pool = [ex for ex in pool if getattr(ex, "references", None)]
            self.by_class = {"": list(range(len(self.pool)))}
        else:
            self.pool = [ex for ex in pool if ex.label in words]
            self.by_class = {label: [i for i, ex in enumerate(self.pool) if ex.label == label] for label in words}
        if not self.pool:
            raise ValueError("demonstrations need labelled training examples; the pool has none with a known label")
        fewest = min(self.by_class, key=lambda label: len(self.by_class[label]))
        if len(self.by_class[fewest]) < k:
            held = f"of label {fewest!r}" if words is not None else "examples"
            raise ValueError(f"demonstrations: k={k} per class, but the training examples hold "
                             f"{len(self.by_class[fewest])} {held}; give k <= {len(self.by_class[fewest])}")
        self._ids: dict[tuple[int, int | None], list[int]] = {}
        self._similarity = None

    # ------------------------------------------------------------------ selection
    def choose(self, query: Example, set_index: int = 0) -> list[int]:
        """Pool indices of the demonstrations for ``query``, in order (the same for the same query text)."""
        own = self._own_index(query)
        if self.selection == "random" and own is None:
            rng = random.Random(f"{self.seed}:{set_index}")
        else:  # seeded by the query's text: the same choice wherever the query comes in a batch
            rng = random.Random(f"{self.seed}:{set_index}:{own}:{sorted(query.fields.items())}")
        chosen = []
        for label, members in self.by_class.items():
            members = [i for i in members if i != own]
            if self.selection == "similarity":
                members = self._nearest(query, members)
            chosen += rng.sample(members, min(self.k, len(members)))
        rng.shuffle(chosen)
        return chosen

    def _own_index(self, query: Example) -> int | None:
        for i, ex in enumerate(self.pool):
            if ex is query or (ex.fields == query.fields and ex.label == query.label):
                return i
        return None

    def _nearest(self, query: Example, members: list[int]) -> list[int]:
        """The members most similar to the query: the ``k`` best with one set, the better half with several."""
        if not members:
            return members
        similarity = self._similarities(query)
        ranked = sorted(members, key=lambda i: -similarity[i])
        return ranked[:self.k] if self.sets == 1 else ranked[:max(self.k, (len(ranked) + 1) // 2)]

    def _similarities(self, query: Example):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.metrics.pairwise import cosine_similarity

        text = lambda ex: " ".join(str(ex.fields[f]) for f in self.encoder.template.fields)
        if self._similarity is None:
            vectorizer = TfidfVectorizer().fit([text(ex) for ex in self.pool])
            self._similarity = (vectorizer, vectorizer.transform([text(ex) for ex in self.pool]))
        vectorizer, matrix = self._similarity
        return cosine_similarity(vectorizer.transform([text(query)]), matrix)[0]

    # ------------------------------------------------------------------ rendering
    def render_ids(self, index: int, limit: int | None = None) -> list[int]:
        key = (index, limit)
        if key not in self._ids:
            example = self.pool[index]
            text = render(self.encoder.template, example, self.shown(example), limit, self.encoder.tokenizer)
            self._ids[key] = self.encoder._tokenize(text + self.separator)
        return self._ids[key]

    def shown(self, example: Example) -> str:
        """What a demonstration shows at ``{mask}``: its label's word, or its target text."""
        return example.references[0] if self.words is None else self.words[example.label]

    def _shorten(self, piece: _Piece, room: int) -> list[int] | None:
        """The demonstration with its fields cut to the most tokens that fit ``room``; None if none do."""
        low, high, best = 1, len(piece.ids), None
        while low <= high:
            middle = (low + high) // 2
            ids = self.render_ids(piece.index, middle)
            if len(ids) <= room:
                best, low = ids, middle + 1
            else:
                high = middle - 1
        return best

    def prepend(self, encoding: Encoding, chosen: Sequence[int]) -> Encoding:
        """The query's encoding with the chosen demonstrations after its leading special tokens."""
        room = self.encoder.max_length - self.encoder.reserve - len(encoding.input_ids)
        pieces = [_Piece(i, self.render_ids(i)) for i in chosen]
        ids = [t for piece in fit_demonstrations(pieces, room, self._shorten) for t in piece]
        start, shift = len(self.encoder.prefix_ids), len(ids)
        moved = lambda positions: [p + shift for p in positions]
        return Encoding(encoding.input_ids[:start] + ids + encoding.input_ids[start:],
                        moved(encoding.mask_positions), moved(encoding.soft_positions),
                        moved(encoding.trigger_positions))

    def add(self, encodings: Sequence[Encoding], examples: Sequence[Example], set_index: int = 0) -> list[Encoding]:
        """Every query's encoding with its demonstrations (set ``set_index`` of ``sets``)."""
        return [self.prepend(enc, self.choose(ex, set_index)) for enc, ex in zip(encodings, examples)]
