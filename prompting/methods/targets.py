"""Text the model writes, as a prompt method's objective: training pairs tokenised after their prompts, a
loss that is the target's mean token negative log-likelihood under teacher forcing (through the method's
hooks, so every method trains the same way on text as on labels), dev selection by that loss, and
decoding with transformers' ``generate``.

    data = encode_targets(method, train_pairs)                 # EncodedTargets: prompts + target ids
    train(method, data, encode_targets(method, dev_pairs), TrainConfig(max_steps=100))
    texts = write(method, test_inputs, Decoding(num_beams=1, max_new_tokens=64))

A target is its text as it follows ``{mask}`` (after a space where the template has one before the
slot) and the end-of-text token: a model taught on it learns where to stop. What a method wrote on some
inputs is kept (:data:`WRITTEN`), so a state that writes again on the same inputs (a zero-shot prompt
that every data seed shares) does not decode twice.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

import torch

from prompting.core.data import dev_key
from prompting.lm.generating import Decoding, generate_ids, target_logprobs, written_text
from prompting.methods.batches import Batch, EncodedExamples
from prompting.methods.scores import digest

__all__ = ["EncodedTargets", "TargetBatch", "encode_targets", "target_nll", "write", "WRITTEN", "Decoding"]


@dataclass
class TargetBatch(Batch):
    """A batch of prompts and their target ids [B, T] (padded on the right; ``known`` marks tokens)."""

    targets: torch.Tensor = None
    known: torch.Tensor = None

    def token_logprobs(self, method) -> torch.Tensor:
        return target_logprobs(method.lm, self.prompts[min(self.prompts)], self.targets, self.known, hooks=method)

    def loss(self, method) -> torch.Tensor:
        """The mean negative log-likelihood of the batch's target tokens."""
        return -self.token_logprobs(method).sum() / self.known.sum()


@dataclass
class EncodedTargets(EncodedExamples):
    """Prompts encoded as for labels, and each example's target token ids."""

    target_ids: list[list[int]] = field(default_factory=list)

    def batch(self, prompts, rows: Sequence[int], device) -> TargetBatch:
        picked = [self.target_ids[i] for i in rows]
        width = max(len(t) for t in picked)
        ids = torch.full((len(picked), width), 0, dtype=torch.long)
        known = torch.zeros(len(picked), width, dtype=torch.bool)
        for r, target in enumerate(picked):
            ids[r, :len(target)] = torch.tensor(target)
            known[r, :len(target)] = True
        return TargetBatch(prompts, self.labels[list(rows)].to(device), ids.to(device), known.to(device))

    def dev_score(self, method, batch_size: int, metric: str):
        """Dev metrics ``{nll}`` (the mean negative log-likelihood per target token), that loss, the
        selection key (the lowest loss wins) and each example's mean token NLL."""
        each, tokens = target_nll(method, self, batch_size)
        loss = float((each * tokens).sum() / tokens.sum())
        return {"nll": round(loss, 6)}, loss, dev_key({}, loss, metric), each


def encode_targets(method, examples: Sequence) -> EncodedTargets:
    """Training (or dev) pairs: the method's prompts, with room kept for the targets on a causal LM, and
    each target's ids (its text as it follows ``{mask}``, then the end-of-text token)."""
    lm = _writer(method)
    lead = method.encoder.mask_leading_space and not lm.seq2seq
    texts = [(" " if lead else "") + ex.target.strip() for ex in examples]
    ids = lm.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    eos = lm.tokenizer.eos_token_id
    targets = [list(t) + ([eos] if eos is not None else []) for t in ids]
    data = _encoded(method, examples, max((len(t) for t in targets), default=1) - 1, whole=True)
    return EncodedTargets(data.encodings, torch.zeros(len(examples), dtype=torch.long), target_ids=targets)


def _writer(method):
    lm = method.lm
    if not (lm.causal or lm.seq2seq):
        raise ValueError(f"model {lm.name!r} is a masked LM: it fills slots but does not write text; a generation "
                         "task needs a causal LM (SmolLM2, GPT-2, Llama) or an encoder-decoder LM (T5, BART)")
    return lm


def _encoded(method, examples, room: int, whole: bool = False) -> EncodedExamples:
    """The method's encoding of ``examples`` with ``room`` tokens kept after a causal prompt; ``whole``: every
    prompt with its demonstrations written in (teacher forcing reads them whole; decoding attends to a shared
    block of demonstrations where it can, see :meth:`prompting.methods.base.PromptMethod.prefix_groups`)."""
    encoder, shares = method.encoder, getattr(method, "share_block", None)
    kept = encoder.reserve
    encoder.reserve = room if method.lm.causal else 0
    if whole and shares:
        method.share_block = False
    try:
        return method.encode(examples)
    finally:
        encoder.reserve = kept
        if whole and shares:
            method.share_block = shares


@torch.no_grad()
def target_nll(method, data: EncodedTargets, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Each example's mean negative log-likelihood per target token, and its target's token count."""
    was = method.training
    method.eval()
    each = torch.zeros(len(data))
    rows = method.scoring_batches(data, batch_size)
    for chunk, batch in zip(rows, method.batches(data, batch_size, rows=rows)):
        logprobs = batch.token_logprobs(method)
        each[torch.tensor(chunk)] = (-logprobs.sum(1) / batch.known.sum(1)).float().cpu()
    method.train(was)
    return each, torch.tensor([len(t) for t in data.target_ids], dtype=torch.float)


class WrittenCache:
    """What a method state wrote on some inputs, by key (see the module docstring); the oldest dropped."""

    def __init__(self, size: int = 64):
        self.size, self._texts = size, OrderedDict()

    def get(self, key, compute) -> list[str]:
        if key not in self._texts:
            self._texts[key] = compute()
            while len(self._texts) > self.size:
                self._texts.popitem(last=False)
        self._texts.move_to_end(key)
        return list(self._texts[key])

    def clear(self) -> None:
        self._texts.clear()


#: the process's texts written, by method state, inputs and decoding
WRITTEN = WrittenCache()


def write(method, examples: Sequence, decoding: Decoding = Decoding(), batch_size: int = 32,
          progress: bool | str = False) -> list[str]:
    """The text ``method`` writes after each example's prompt, in order (see :mod:`prompting.lm.generating`
    for where decoding stops)."""
    _writer(method)
    data = _encoded(method, examples, decoding.max_new_tokens)
    encodings = data.encodings[min(data.encodings)]
    inputs = digest([torch.tensor([t for e in encodings for t in (len(e.input_ids), *e.input_ids)])])
    key = (type(method).__name__, method.template.text, repr(method.config), digest(method.state_dict().values()),
           method.lm.serial, method.lm.weights_version(), inputs, method.demonstration_key(), decoding)
    return WRITTEN.get(key, lambda: _write(method, data, decoding, batch_size, progress))


@torch.no_grad()
def _write(method, data: EncodedExamples, decoding: Decoding, batch_size: int, progress) -> list[str]:
    from tqdm.auto import tqdm

    was = method.training
    method.eval()
    method.lm.model.eval()
    texts: list[str | None] = [None] * len(data)
    groups = [(rows, part, prefix, _by_length(method, part, batch_size)) for rows, part, prefix in method.prefix_groups(data)]
    bar = tqdm(total=sum(len(chunks) for *_, chunks in groups), desc=progress if isinstance(progress, str) else "writing",
               disable=not progress, leave=False)
    for rows, part, prefix, chunks in groups:
        for chunk, batch in zip(chunks, method.batches(part, batch_size, rows=chunks)):
            written = generate_ids(method.lm, batch.prompts[min(batch.prompts)], method, decoding, prefix)
            for i, ids in zip(chunk, written):
                texts[rows[i]] = written_text(method.lm, ids)
            bar.update(1)
    bar.close()
    method.train(was)
    return texts


def _by_length(method, data: EncodedExamples, batch_size: int) -> list[list[int]]:
    """Rows in batches of ``batch_size``, sorted by prompt length: decoding costs about the same per step
    whatever the padding, so batches are as full as they may be."""
    lengths = method.run_lengths(data)
    order = sorted(range(len(data)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
