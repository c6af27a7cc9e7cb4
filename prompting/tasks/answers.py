"""Answers the model writes, for classification: a method entry's ``answer: generate``.

In place of comparing the label words' scores at ``{mask}``, the model writes a short answer after the prompt
(greedy, at most :data:`ANSWER_DECODING`'s 8 new tokens, stopping at a newline or the end-of-text token:
:func:`prompting.methods.targets.write`), and the answer is read as a label by the verbalizer's words
(:func:`answer_label`): the label whose word comes first in the answer, as a whole word and in any case.
An answer that names no label word is *unmatched*, and counts as wrong:

    Review: a fine, moving film  Sentiment: {mask}       verbalizer {0: [negative], 1: [positive]}
    "Positive."          -> 1
    "It is positive, not negative" -> 1  (the earliest word)
    "I liked it"         -> unmatched

A record's ``dev`` and ``test`` metrics then hold ``unmatched`` (the share of answers that named no label)
beside accuracy and macro-F1, and its predictions file each answer (``test_answers``) and the label read
from it (``test_predicted``, null where unmatched) in place of label scores. Training, where a method
trains, is as ever on the label words' scores (and so is its selection of a state on dev); only the
record's dev and test predictions are written answers. What combines label scores (calibration, pattern
ensembles, PET's distillation and iPET, in-context learning's averaged demonstration sets) and multiple
choice (each example's choices are its label words) do not apply, nor a masked LM, which writes nothing.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

from prompting.core.data import class_results, compute_metrics
from prompting.core.settings import MethodSpec
from prompting.lm.chat import chat_turn
from prompting.methods import METHODS
from prompting.methods.targets import Decoding, write
from prompting.tasks.outcome import Outcome

__all__ = ["ANSWER_DECODING", "UNMATCHED", "answer_label", "answer_metrics", "answer_outcome", "answer_predictions",
           "answer_confusion", "written_answers", "check_answer_entry", "check_model", "check_lm"]

#: how an answer is written: greedy, a few words at most
ANSWER_DECODING = Decoding(num_beams=1, max_new_tokens=8)
#: what an unmatched answer counts as where a label is needed (accuracy, F1, confusion): none of the labels
UNMATCHED = "(no label word)"


def _word_pattern(word: str) -> re.Pattern:
    """``word`` as a whole word (no letter, digit or _ either side), in any case, any spaces between its parts."""
    parts = [re.escape(part) for part in word.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(parts) + r"(?!\w)", re.IGNORECASE)


def answer_label(answer: str, label_words: Mapping[str, Sequence[str]]) -> str | None:
    """The label whose word comes first in ``answer`` (a whole word, in any case), or None: no label word.

    Two words found at the same place (``not good`` and ``not``) go to the longer; words of the same
    length at the same place (two labels' words that differ only in case) to the label listed first.

    >>> answer_label("Positive, not negative.", {"0": ["negative"], "1": ["positive"]})
    '1'
    """
    best = None
    for order, (label, words) in enumerate(label_words.items()):
        for word in words:
            found = _word_pattern(word).search(answer) if word.strip() else None
            key = None if found is None else (found.start(), -(found.end() - found.start()), order)
            if key is not None and (best is None or key < best[0]):
                best = (key, label)
    return None if best is None else best[1]


def answer_metrics(gold: Sequence[str], predicted: Sequence[str | None], labels: Sequence[str]) -> dict:
    """Accuracy and macro-F1 with every unmatched answer wrong, and ``unmatched``: their share."""
    if not gold:
        return {}
    shown = [UNMATCHED if p is None else p for p in predicted]
    return {**compute_metrics(list(gold), shown, labels), "unmatched": sum(p is None for p in predicted) / len(gold)}


def answer_outcome(labels: Sequence[str], dev_gold: Sequence[str], dev_predicted: Sequence[str | None],
                   test_gold: Sequence[str], test_predicted: Sequence[str | None]) -> Outcome:
    """A run's metrics from the labels its answers named (no label scores: no dev cross-entropy)."""
    found = class_results(list(test_gold), [UNMATCHED if p is None else p for p in test_predicted], labels)
    return Outcome(dev=answer_metrics(dev_gold, dev_predicted, labels), dev_loss=None,
                   test=answer_metrics(test_gold, test_predicted, labels), collapsed=found["collapsed"],
                   test_majority=found["majority"])


def answer_confusion(gold: Sequence[str], predicted: Sequence[str | None], labels: Sequence[str]) -> list[list[int]]:
    """The confusion matrix of written answers: a row per gold label, a column per label named and a last
    column of the unmatched answers (so that each row still sums to its label's examples)."""
    from sklearn.metrics import confusion_matrix

    if not gold:
        return []
    every = list(labels) + [UNMATCHED]
    shown = [UNMATCHED if p is None else p for p in predicted]
    return confusion_matrix(list(gold), shown, labels=every)[:len(labels)].tolist()


def answer_predictions(labels: Sequence[str], dev: Sequence, test: Sequence, dev_written: tuple[list, list],
                       test_written: tuple[list, list]) -> dict:
    """A run's predictions file: gold labels, each answer and the label it named (None: unmatched), and the
    per-class results of the test answers (the confusion matrix with a last column of the unmatched)."""
    test_gold = [e.label for e in test]
    found = class_results(test_gold, [UNMATCHED if p is None else p for p in test_written[1]], labels)
    return {"labels": list(labels), "dev_gold": [e.label for e in dev], "test_gold": test_gold,
            "dev_answers": dev_written[0], "dev_predicted": dev_written[1], "test_answers": test_written[0],
            "test_predicted": test_written[1], "test_per_class": found["per_class"],
            "test_confusion": answer_confusion(test_gold, test_written[1], labels)}


def written_answers(method, examples: Sequence, batch_size: int, progress: bool | str = False
                    ) -> tuple[list[str], list[str | None]]:
    """What the method writes after each example's prompt, and the label each answer names (None: none)."""
    if not examples:
        return [], []
    answers = write(method, examples, ANSWER_DECODING, batch_size, progress)
    return answers, [answer_label(a, method.verbalizer.label_words) for a in answers]


# ------------------------------------------------------------------------------------ checks
def check_answer_entry(spec: MethodSpec) -> None:
    """Before the model loads: ``answer: generate`` without what combines label scores."""
    if spec.answer != "generate":
        return
    where = f"method {spec.label!r}: answer: generate"
    given = [key for key, value in (("calibration", spec.calibration), ("ensemble", spec.ensemble),
                                    ("distill", spec.distill)) if value]
    if given:
        what = " and ".join(f"{key} (the {spec.name} method's)" if key == "distill" and spec.name == "ipet" else key
                            for key in given)
        raise ValueError(f"{where} reads a label from a written answer and leaves no label scores, which {what} "
                         f"{'combine' if len(given) > 1 else 'combines'}; leave {what} out, or answer: score")
    sets = getattr(METHODS.config(spec.name).from_mapping(spec.params), "sets", 1)
    if sets > 1:
        raise ValueError(f"{where}: sets={sets} averages the label probabilities of several demonstration sets, "
                         "but a written answer is one text; give sets: 1 (or answer: score)")


def check_model(methods: Sequence[MethodSpec], kind: str | None, model: str) -> None:
    """``answer: generate`` needs an LM that writes (causal or encoder-decoder), ``chat`` a causal LM. ``kind``:
    ``causal``, ``masked`` or ``seq2seq``, or None when it is not known before the model loads."""
    for spec in methods:
        if spec.answer == "generate" and kind == "masked":
            raise ValueError(f"method {spec.label!r}: answer: generate has the model write its answer, but model "
                             f"{model!r} is a masked LM, which fills {{mask}} and writes nothing; use a causal LM "
                             "(SmolLM2, GPT-2, Llama) or an encoder-decoder LM (T5, BART), or answer: score")
        if spec.chat and kind not in (None, "causal"):
            raise ValueError(f"method {spec.label!r}: chat: true makes the prompt a user turn that a causal LM "
                             f"continues with the assistant's reply, but model {model!r} is "
                             f"{'a masked' if kind == 'masked' else 'an encoder-decoder'} LM; leave chat out for it")


def check_lm(methods: Sequence[MethodSpec], lm) -> None:
    """Before any run: :func:`check_model` on the loaded LM, and its chat template where an entry has ``chat``."""
    wanted = [spec for spec in methods if spec.answer != "score" or spec.chat]
    if wanted:
        check_model(wanted, lm.kind, lm.name)
    if any(spec.chat for spec in wanted):
        chat_turn(lm)
