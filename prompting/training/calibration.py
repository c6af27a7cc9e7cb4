"""Calibration of label scores: what a prompt scores for each label when there is no input to judge.

Small LMs lean towards some label words whatever the input (Zhao et al. 2021, "Calibrate Before
Use"). Every run saves, beside its dev and test label scores, the scores of content-free inputs
(every text field of the template filled with ``N/A``, with nothing, or with the mask token alone;
scored through the same method, demonstrations and all), so that a calibrated row needs no second
training:

- ``contextual`` (Zhao et al.): the label probabilities of the content-free inputs, averaged, divide
  each input's label probabilities (``W = diag(p_cf)^-1``, ``b = 0``), renormalised;
- ``domain`` (domain-conditional PMI, Holtzman et al. 2021): each label's log-score minus its
  log-score on the template without the input (every field empty).

    >>> import numpy as np
    >>> contextual(np.log([[0.6, 0.4]]), np.log([[0.8, 0.2], [0.6, 0.4]])).round(3)  # p_cf = (0.7, 0.3)
    array([[-0.938, -0.496]])
"""

from __future__ import annotations

import numpy as np

from prompting.core.data import Example
from prompting.core.settings import CALIBRATIONS

__all__ = ["CALIBRATIONS", "CONTENT_FREE", "EMPTY", "content_free_texts", "content_free_scores", "contextual",
           "domain", "calibrate"]

EMPTY = ""
CONTENT_FREE = ("N/A", EMPTY, None)  # None: the tokenizer's mask token ("[MASK]" where it has none)


def content_free_texts(mask_token: str | None) -> list[str]:
    """The content-free inputs, in the order their scores are saved."""
    return [mask_token or "[MASK]" if text is None else text for text in CONTENT_FREE]


def content_free_scores(method, batch_size: int = 32) -> dict | None:
    """A method's label scores of the content-free inputs (every field of its template filled with
    each), as saved beside a run's scores: ``{"inputs": [...], "scores": [[...], ...]}``. None for a
    multiple-choice method: its label words are each example's own choices, so no input is without
    content."""
    if getattr(method, "choices", None) is not None:
        return None
    texts = content_free_texts(getattr(method.lm.tokenizer, "mask_token", None))
    examples = [Example({name: text for name in method.template.fields}) for text in texts]
    return {"inputs": texts, "scores": method.predict_scores(method.encode(examples), batch_size).tolist()}


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def contextual(scores, free_scores) -> np.ndarray:
    """Contextual calibration: [N, L] label log-scores given [M, L] content-free label log-scores; returns
    calibrated label log-probabilities (each row sums to one as probabilities)."""
    scores, free = np.asarray(scores, dtype=float), np.asarray(free_scores, dtype=float)
    p_cf = np.exp(_log_softmax(free)).mean(0)
    return _log_softmax(_log_softmax(scores) - np.log(p_cf / p_cf.sum()))


def domain(scores, domain_scores) -> np.ndarray:
    """Domain-conditional PMI: [N, L] label log-scores minus the [L] label log-scores of the template
    without the input."""
    return np.asarray(scores, dtype=float) - np.asarray(domain_scores, dtype=float)


def calibrate(how: str, scores, content_free: dict) -> np.ndarray:
    """``scores`` calibrated by ``how`` (one of :data:`CALIBRATIONS`) from a run's saved
    ``content_free`` (``{"inputs": [...], "scores": [[...], ...]}``)."""
    if how not in CALIBRATIONS:
        raise ValueError(f"calibration={how!r} is not valid; choose one of {', '.join(CALIBRATIONS)}")
    if how == "none" or not len(scores):
        return np.asarray(scores, dtype=float)
    if how == "contextual":
        return contextual(scores, content_free["scores"])
    return domain(scores, content_free["scores"][content_free["inputs"].index(EMPTY)])
