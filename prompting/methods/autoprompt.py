"""AutoPrompt (Shin et al. 2020): discrete trigger tokens found by gradient-guided search.

The template has ``{trigger:N}`` slots. Each iteration:

1. the gradient of the loss w.r.t. the trigger token embeddings, averaged over a training batch;
2. for one trigger position, the ``num_candidates`` tokens whose embedding has the largest dot
   product with minus that gradient (HotFlip: a first-order guess at which swap lowers the loss);
3. the current trigger and every one-token swap are scored exactly on *other* training examples,
   several candidate triggers per forward pass (the examples are stacked once per candidate);
4. the best swap is kept only if it scores better than the current trigger.

The trigger that scores best on dev over all iterations is kept. The LM stays frozen and nothing is
learned by gradient descent, so the method is a :class:`~prompting.methods.base.SearchMethod`: its
:meth:`AutoPrompt.search` is what :func:`prompting.train.train` calls instead of its optimiser loop.

>>> method = AutoPrompt(lm, "{text_a} {trigger:5} {mask}", Verbalizer({0: "negative", 1: "positive"}),
...                     labels=task.labels, iterations=20)                  # doctest: +SKIP
>>> train(method, method.encode(train), method.encode(dev), TrainConfig())  # doctest: +SKIP
>>> print(method.found_template())                                          # doctest: +SKIP
{text_a} atmosphere alot dialogue Clone totally {mask}
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import torch
import torch.nn.functional as F

from ..backbone import LanguageModel
from ..template import PromptBatch, Template
from ..vocab import label_word_token_ids, token_mask, token_strings
from .base import Batch, EncodedExamples, PromptMethod, SearchMethod
from .configs import AutoPromptConfig

__all__ = ["AutoPrompt", "hotflip_candidates"]


def hotflip_candidates(averaged_grad: torch.Tensor, embedding_matrix: torch.Tensor, num_candidates: int,
                       increase_loss: bool = False, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Token ids whose embedding most lowers the loss to first order, best first.

    Swapping the token at a position from embedding ``e`` to ``e'`` changes the loss by about
    ``(e' - e) · grad``; ``e`` is fixed, so candidates are ranked by ``-(e' · grad)``.
    ``averaged_grad`` is ``[H]`` (one position, gives ``[num_candidates]``) or ``[T, H]``
    (gives ``[T, num_candidates]``); ``allowed`` is a boolean ``[V]`` mask of tokens that may be chosen.
    """
    with torch.no_grad():
        scores = averaged_grad.to(embedding_matrix.dtype) @ embedding_matrix.T  # [V] or [T, V]
        if not increase_loss:
            scores = -scores
        if allowed is not None:
            scores = scores.masked_fill(~allowed.to(scores.device), -math.inf)
            num_candidates = min(num_candidates, int(allowed.sum()))
        return scores.topk(num_candidates, dim=-1).indices


class _TriggerHooks:
    """Forward hooks that put triggers into the input.

    ``rows`` is ``[B, T]`` trigger ids (a different trigger per row: candidate scoring); or
    ``embeds`` is ``[T, H]`` trigger embeddings shared by all rows (a leaf, for the gradient).
    """

    def __init__(self, rows: torch.Tensor | None = None, embeds: torch.Tensor | None = None):
        self.rows, self.embeds = rows, embeds

    def embed(self, lm: LanguageModel, input_ids: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
        rows = torch.arange(len(batch), device=input_ids.device).unsqueeze(1)
        positions = batch.trigger_positions
        if self.rows is not None:
            input_ids = input_ids.clone()
            input_ids[rows, positions] = self.rows.to(input_ids.device)
        embeds = lm.embed(input_ids)
        if self.embeds is not None:
            values = self.embeds.to(embeds.dtype).expand(len(batch), -1, -1)
            embeds = embeds.index_put((rows.expand_as(positions), positions), values)
        return embeds

    def forward_lm(self, lm: LanguageModel, inputs_embeds, attention_mask, position_ids, logits_to_keep):
        return lm.forward(inputs_embeds, attention_mask, position_ids, logits_to_keep)


def _repeat(batch: PromptBatch, times: int) -> PromptBatch:
    return PromptBatch(*(t.repeat(times, 1) for t in batch.__dict__.values()))


def _subset(data: EncodedExamples, rows: Sequence[int]) -> EncodedExamples:
    return EncodedExamples({n: [encs[i] for i in rows] for n, encs in data.encodings.items()},
                           data.labels[list(rows)])


class AutoPrompt(PromptMethod, SearchMethod):
    """Discrete trigger tokens in ``{trigger:N}`` slots, searched with HotFlip candidates.

    ``init`` is the word every trigger starts as (``"mask"``: the mask token of a masked LM, as in
    the paper; ``"random"``: random allowed tokens drawn with ``seed``). ``score_examples`` training
    examples, outside the gradient batch, score the candidates; ``score_rows`` caps the rows of one
    forward pass during scoring (candidates x examples). ``exclude_*`` keep special tokens, pieces
    that do not start a word, and the label words out of the candidates.
    """

    name = "autoprompt"
    config_class = AutoPromptConfig

    def adapt(self, template: Template, config: AutoPromptConfig) -> tuple[Template, AutoPromptConfig]:
        if template.n_trigger == 0:
            raise ValueError(f"method 'autoprompt' needs {{trigger:N}} slots in its template; "
                             f"{template.text!r} has none, e.g. \"{{text_a}} {{trigger:5}} {{mask}}\"")
        return template, config

    def setup(self) -> None:
        config, lm = self.config, self.lm
        words = [w for ws in self.verbalizer.label_words.values() for w in ws]
        excluded = label_word_token_ids(lm.tokenizer, words) if config.exclude_label_words else set()
        self.allowed = token_mask(lm.tokenizer, lm.embeddings.num_embeddings, exclude_special=config.exclude_special,
                                  exclude_subwords=config.exclude_subwords, exclude_ids=excluded)
        if not self.allowed.any():
            raise ValueError("autoprompt: every token of the vocabulary is excluded; relax exclude_*")
        # a buffer, so it is saved with state_dict and restored with the best state
        self.register_buffer("trigger_ids", self._initial_triggers(config.init, config.seed))

    @property
    def iterations(self) -> int:
        return self.config.iterations

    @property
    def num_candidates(self) -> int:
        return self.config.num_candidates

    def embed(self, lm: LanguageModel, input_ids: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
        return _TriggerHooks(rows=self.trigger_ids.expand(len(batch), -1)).embed(lm, input_ids, batch)

    def _initial_triggers(self, init: str, seed: int) -> torch.Tensor:
        n, tokenizer = self.template.n_trigger, self.lm.tokenizer
        if init == "random":
            pool = self.allowed.nonzero().squeeze(1)
            pick = torch.randint(len(pool), (n,), generator=torch.Generator().manual_seed(seed))
            return pool[pick].to(self.lm.device)
        if init == "mask":
            if tokenizer.mask_token_id is None:
                raise ValueError("autoprompt: init='mask' needs a tokenizer with a mask token; "
                                 "use a word such as init='the', or init='random'")
            token = tokenizer.mask_token_id
        else:
            ids = tokenizer(" " + init.strip(), add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise ValueError(f"autoprompt: init={init!r} is {len(ids)} tokens for this tokenizer; "
                                 "give a one-token word (e.g. 'the'), 'mask' or 'random'")
            token = ids[0]
        return torch.full((n,), token, dtype=torch.long, device=self.lm.device)

    # ------------------------------------------------------------------ the readable result
    def trigger_tokens(self, trigger_ids: torch.Tensor | None = None) -> list[str]:
        ids = self.trigger_ids if trigger_ids is None else trigger_ids
        return token_strings(self.lm.tokenizer, ids.tolist())

    def found_template(self) -> Template:
        """The template with the current triggers written in: an ordinary manual template."""
        return self.template.with_triggers(self.trigger_tokens())

    def set_random_triggers(self, seed: int) -> None:
        """Replace the triggers by random allowed tokens (the baseline AutoPrompt must beat)."""
        self.trigger_ids.copy_(self._initial_triggers("random", seed))

    def learned(self) -> dict:
        return {"trigger_ids": self.trigger_ids.tolist(), "trigger_tokens": self.trigger_tokens(),
                "found_template": self.found_template().text}

    # ------------------------------------------------------------------ the two search steps
    def trigger_gradient(self, batch: Batch) -> tuple[torch.Tensor, float]:
        """``[T, H]`` gradient of the batch's mean loss w.r.t. each trigger token embedding, and the loss."""
        embeds = self.lm.embeddings.weight[self.trigger_ids].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            words = self.lm.word_logprobs(batch.prompts, self.words, hooks=_TriggerHooks(embeds=embeds))
            loss = F.cross_entropy(self.words.aggregate_scores(words), batch.labels)
            grad, = torch.autograd.grad(loss, embeds)
        return grad, loss.item()

    @torch.no_grad()
    def score_triggers(self, candidates: torch.Tensor, data: EncodedExamples,
                       rows_per_forward: int | None = None) -> torch.Tensor:
        """``[C]`` mean log-likelihood of the gold labels of ``data`` under each ``[C, T]`` trigger.

        The examples are stacked once per candidate, so one forward pass scores
        ``rows_per_forward // len(examples)`` candidates (at least one).
        """
        rows_per_forward = rows_per_forward or self.config.score_rows
        candidates = candidates.to(self.lm.device)
        total = torch.zeros(len(candidates), dtype=torch.float64)
        per_batch = max(1, min(len(data), rows_per_forward))
        for batch in self.batches(data, per_batch):
            size = len(batch)
            step = max(1, rows_per_forward // size)
            for start in range(0, len(candidates), step):
                chunk = candidates[start:start + step]
                prompts = {n: _repeat(p, len(chunk)) for n, p in batch.prompts.items()}
                hooks = _TriggerHooks(rows=chunk.repeat_interleave(size, 0))
                scores = self.words.aggregate_scores(self.lm.word_logprobs(prompts, self.words, hooks=hooks))
                gold = scores.float().log_softmax(-1).gather(1, batch.labels.repeat(len(chunk)).unsqueeze(1))
                total[start:start + len(chunk)] += gold.view(len(chunk), size).sum(1).double().cpu()
        return (total / len(data)).float()

    # ------------------------------------------------------------------ the search
    def search(self, train_data: EncodedExamples, dev_data: EncodedExamples | None, config, progress: bool = True):
        """Search the triggers for ``iterations`` iterations; keep the best on dev (or on training scores).

        Uses ``config.batch_size`` (gradient batch), ``config.seed``, ``config.select_metric``;
        the LM stays frozen. Returns a :class:`prompting.train.TrainResult` whose ``history`` has
        one record per iteration.
        """
        from tqdm.auto import tqdm

        from ..train import TrainResult, dev_score

        if config.tune_lm:
            raise ValueError("method 'autoprompt' keeps the LM frozen; set tune_lm: false")
        started = time.perf_counter()
        for p in self.lm.model.parameters():
            p.requires_grad_(False)
        self.eval()
        self.lm.model.eval()
        generator = torch.Generator().manual_seed(config.seed)
        embedding_matrix = self.lm.embeddings.weight.detach()
        n, size = len(train_data), min(config.batch_size, len(train_data))
        use_dev = dev_data is not None and len(dev_data) > 0
        if use_dev:
            best_dev, _, best_key, best_scores = dev_score(self, dev_data, config.eval_batch_size,
                                                           config.select_metric)
        else:
            best_key, best_dev, best_scores = None, {}, None
        best_ids, best_step, history = self.trigger_ids.clone(), 0, []
        order, cursor = torch.randperm(n, generator=generator).tolist(), 0
        bar = tqdm(range(1, self.iterations + 1), desc=f"{self.name} search", disable=not progress, leave=False)
        for step in bar:
            if cursor + size > n:
                order, cursor = torch.randperm(n, generator=generator).tolist(), 0
            grad_rows = order[cursor:cursor + size]
            # candidates are scored on the examples that follow, which the gradient did not see
            rest = order[cursor + size:] + order[:cursor]
            score_rows = rest[:self.config.score_examples] or grad_rows
            cursor += size
            batch = next(self.batches(_subset(train_data, grad_rows), size))
            grad, loss = self.trigger_gradient(batch)
            position = int(torch.randint(len(self.trigger_ids), (1,), generator=generator))
            tokens = hotflip_candidates(grad[position], embedding_matrix, self.num_candidates,
                                        allowed=self.allowed)
            tokens = tokens[tokens != self.trigger_ids[position]]
            candidates = self.trigger_ids.repeat(len(tokens) + 1, 1)
            candidates[1:, position] = tokens  # row 0 is the current trigger
            scores = self.score_triggers(candidates, _subset(train_data, score_rows))
            best = int(scores[1:].argmax()) + 1 if len(tokens) else 0
            swapped = len(tokens) > 0 and bool(scores[best] > scores[0])
            record = {"step": step, "loss": round(loss, 6), "position": position,
                      "candidates": tokens.tolist(), "current_score": round(scores[0].item(), 6),
                      "best_candidate_score": round(scores[best].item(), 6), "swapped": swapped}
            if swapped:
                self.trigger_ids[position] = candidates[best, position]
            record["trigger"] = self.trigger_tokens()
            if use_dev and swapped:
                dev, _, key, scores = dev_score(self, dev_data, config.eval_batch_size, config.select_metric)
                record["dev"] = dev
                if key > best_key:
                    best_key, best_dev, best_ids, best_step = key, dev, self.trigger_ids.clone(), step
                    best_scores = scores
            elif swapped:  # no dev set: keep the latest accepted swap
                best_ids, best_step = self.trigger_ids.clone(), step
            history.append(record)
            bar.set_postfix(loss=f"{loss:.3f}", trigger=" ".join(record["trigger"])[:40])
        bar.close()
        self.trigger_ids.copy_(best_ids)
        if progress:
            print(f"autoprompt: {self.found_template().text!r}")
        return TrainResult(self.iterations, best_step, best_dev, history, time.perf_counter() - started,
                           best_scores)
