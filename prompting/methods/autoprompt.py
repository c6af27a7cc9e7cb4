"""AutoPrompt (Shin et al. 2020): discrete trigger tokens found by gradient-guided search.

The template has ``{trigger:N}`` slots. Each iteration:

1. the gradient of the label loss w.r.t. the trigger token embeddings, over ``gradient_examples``
   training examples (all of a K-shot set by default);
2. for one trigger position (``positions="cycle"``: each position in turn, in a seeded order; or
   every position at once, ``"all"``), the ``num_candidates`` tokens whose embedding has the
   largest dot product with minus that gradient (HotFlip: a first-order guess at which swap lowers
   the loss), from printable whole words (``vocabulary="words"``);
3. the current trigger and every one-token swap are scored exactly on ``score_examples`` training
   examples (all of them when there are no more: the search then lowers the training loss itself,
   never raises it), several candidate triggers per forward pass;
4. the best swap is kept only if it scores strictly better than the current trigger on the same
   examples.

When every position has been tried without a better swap, the next pass tries the next
``num_candidates`` HotFlip ranks, down to ``max_candidates``; then the search stops (the same
candidates would come back). ``select="last"`` (the default) keeps the search's final trigger, the
lowest training loss; ``select="dev"`` keeps the one that scores best on dev among the start and the
accepted swaps: with 32 dev examples, accuracy moves in steps of 3% and that kept the start or an
early swap where the last trigger scored better on test (``benchmarks/results/autoprompt_search_sst2*.md``). The LM stays
frozen and nothing is learned by gradient descent, so the method is a
:class:`~prompting.methods.base.SearchMethod`: its :meth:`AutoPrompt.search` is what
:func:`prompting.training.loop.train` calls instead of its optimiser loop.

>>> method = AutoPrompt(lm, "{text_a} {trigger:5} {mask}", Verbalizer({0: "negative", 1: "positive"}),
...                     labels=task.labels, iterations=20)                  # doctest: +SKIP
>>> train(method, method.encode(train), method.encode(dev), TrainConfig())  # doctest: +SKIP
>>> print(method.found_template())                                          # doctest: +SKIP
{text_a} atmosphere alot dialogue Clone totally {mask}
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from prompting.lm.model import LanguageModel
from prompting.core.template import PromptBatch, Template
from prompting.lm.vocab import label_word_token_ids, token_mask, token_strings
from prompting.methods.evaluation import TrainResult, dev_score
from prompting.methods.base import PromptMethod, SearchMethod
from prompting.methods.batches import Batch, EncodedExamples
from prompting.methods.configs import AutoPromptConfig
from prompting.methods.triggers import (TriggerHooks, by_length, gradient_after_shared_text, hotflip_candidates,
                                        score_after_shared_text, search_rows, subset,
                                        whole_word_tokens)

__all__ = ["AutoPrompt", "hotflip_candidates", "whole_word_tokens", "TEMPLATE_FILE"]

TEMPLATE_FILE = "template.yaml"  # the found template as a prompt file, beside a saved AutoPrompt


class AutoPrompt(PromptMethod, SearchMethod):
    """Discrete trigger tokens in ``{trigger:N}`` slots, searched with HotFlip candidates.

    ``init`` is the word every trigger starts as (``"mask"``: the mask token of a masked LM, as in
    the paper; ``"random"``: random allowed tokens drawn with ``seed``). ``score_examples`` training
    examples score the candidates (all of them when the training set is no larger; otherwise a new
    batch each iteration); ``gradient_examples`` training examples give the gradient;
    ``score_rows`` caps the rows of one forward pass during scoring (candidates x examples).
    ``positions``: ``"cycle"`` (one position per iteration, each in turn), ``"random"`` (one drawn
    per iteration) or ``"all"`` (candidates at every position, the best swap of all is taken).
    ``max_candidates``: when no position has a better swap among its ``num_candidates``, the next
    pass over the positions tries the next ``num_candidates`` HotFlip ranks, down to this rank
    (None: stop at once).
    ``vocabulary``: ``"words"`` (alphabetic whole words that tokenise back to themselves) or
    ``"tokens"`` (any token that starts a word). ``select``: ``"last"`` (the search's final trigger)
    or ``"dev"`` (the start or an accepted trigger, best on dev). ``exclude_*`` keep special
    tokens, pieces that do not start a word, and the label words out of the candidates.
    """

    name = "autoprompt"
    reuses_frozen_text = True
    config_class = AutoPromptConfig

    def adapt(self, template: Template, config: AutoPromptConfig) -> tuple[Template, AutoPromptConfig]:
        if template.n_trigger == 0:
            raise ValueError(f"method 'autoprompt' needs {{trigger:N}} slots in its template; "
                             f"{template.text!r} has none, e.g. \"{{text_a}} {{trigger:5}} {{mask}}\"")
        if config.max_candidates is not None and config.max_candidates < config.num_candidates:
            raise ValueError(f"autoprompt: max_candidates={config.max_candidates!r} is not valid; give an integer "
                             f">= num_candidates ({config.num_candidates}), or None (no widening)")
        return template, config

    def setup(self) -> None:
        config, lm = self.config, self.lm
        if self.choices is not None:
            raise ValueError("method 'autoprompt' searches triggers for fixed label words; a multiple-choice "
                             "verbalizer (each example's own choices) is not supported: use manual, soft, "
                             "ptuning or prefix")
        words = [w for ws in self.verbalizer.label_words.values() for w in ws]
        excluded = label_word_token_ids(lm.tokenizer, words) if config.exclude_label_words else set()
        self.allowed = token_mask(lm.tokenizer, lm.embeddings.num_embeddings, exclude_special=config.exclude_special,
                                  exclude_subwords=config.exclude_subwords, exclude_ids=excluded)
        if config.vocabulary == "words":
            self.allowed = whole_word_tokens(lm.tokenizer, self.allowed)
        if not self.allowed.any():
            raise ValueError(f"autoprompt: every token of the vocabulary is excluded (vocabulary={config.vocabulary!r}); "
                             "relax exclude_* or use vocabulary: tokens")
        # a buffer, so it is saved with state_dict and restored with the best state
        self.register_buffer("trigger_ids", self._initial_triggers(config.init, config.seed))

    @property
    def iterations(self) -> int:
        return self.config.iterations

    @property
    def num_candidates(self) -> int:
        return self.config.num_candidates

    def embed(self, lm: LanguageModel, input_ids: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
        return TriggerHooks(rows=self.trigger_ids.expand(len(batch), -1)).embed(lm, input_ids, batch)

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

    def save(self, directory) -> None:
        """Save as every learned prompt (``prompt.json``, ``prompt.safetensors``) and, beside them, the
        found template as a prompt file, ``template.yaml``, which ``prompting eval --templates`` scores
        as an ordinary manual prompt."""
        import yaml

        super().save(directory)
        prompt_file = {"patterns": [self.found_template().text], "verbalizers": [self.verbalizer.to_dict()]}
        (Path(directory) / TEMPLATE_FILE).write_text(yaml.safe_dump(prompt_file, sort_keys=False, allow_unicode=True),
                                                     encoding="utf-8")

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
            words = self.lm.word_logprobs(batch.prompts, self.words, hooks=TriggerHooks(embeds=embeds))
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
                prompts = {n: p.repeat(len(chunk)) for n, p in batch.prompts.items()}
                hooks = TriggerHooks(rows=chunk.repeat_interleave(size, 0))
                scores = self.words.aggregate_scores(self.lm.word_logprobs(prompts, self.words, hooks=hooks))
                gold = scores.float().log_softmax(-1).gather(1, batch.labels.repeat(len(chunk)).unsqueeze(1))
                total[start:start + len(chunk)] += gold.view(len(chunk), size).sum(1).double().cpu()
        return (total / len(data)).float()

    # ------------------------------------------------------------------ the search
    def _judge(self, candidates: torch.Tensor, data: EncodedExamples, rows: Sequence[int]) -> torch.Tensor:
        """:meth:`score_triggers` on ``rows`` in length-sorted chunks, each one forward pass for all
        candidates: one chunk of every length pads the short sentences to the longest."""
        rows = by_length(data, rows)
        chunk = max(1, self.config.score_rows // len(candidates))
        total = torch.zeros(len(candidates))
        for start in range(0, len(rows), chunk):
            part = subset(data, rows[start:start + chunk])
            scores = score_after_shared_text(self, candidates, part)
            if scores is None:
                scores = self.score_triggers(candidates, part)
            total += scores * len(part)
        return total / len(rows)

    def _gradient(self, data: EncodedExamples, rows: Sequence[int], chunk: int) -> tuple[torch.Tensor, float]:
        """:meth:`trigger_gradient` of the mean loss over ``rows``, in length-sorted chunks."""
        rows = by_length(data, rows)
        grad, loss = 0.0, 0.0
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            batch = next(self.batches(subset(data, part), len(part)))
            g, l = gradient_after_shared_text(self, batch) or self.trigger_gradient(batch)
            grad, loss = grad + g * len(part), loss + l * len(part)
        return grad / len(rows), loss / len(rows)

    def _proposals(self, grad: torch.Tensor, positions: list[int], skip: int = 0) -> torch.Tensor:
        """``[1 + C, T]``: the current trigger, then each HotFlip one-token swap at ``positions``
        (HotFlip ranks ``skip + 1`` to ``skip + num_candidates``)."""
        matrix = self.lm.embeddings.weight.detach()
        rows = [self.trigger_ids.clone()]
        for position in positions:
            ranked = hotflip_candidates(grad[position], matrix, skip + self.num_candidates, allowed=self.allowed)
            for token in ranked[skip:].tolist():
                if token != self.trigger_ids[position]:
                    row = self.trigger_ids.clone()
                    row[position] = token
                    rows.append(row)
        return torch.stack(rows)

    def search(self, train_data: EncodedExamples, dev_data: EncodedExamples | None, config, progress: bool = True):
        """Search the triggers for up to ``iterations`` iterations; keep the one ``select`` says.

        Uses ``config.batch_size`` (examples per gradient pass), ``config.seed``,
        ``config.select_metric``; the LM stays frozen. Returns a :class:`prompting.training.loop.TrainResult`
        whose ``history`` has one record per iteration: the position(s), the candidates, the judged
        log-likelihood of the current and the best candidate, whether it was swapped, the training
        loss after the step (``train_loss``: minus the judged log-likelihood of the kept trigger) and
        the step's seconds.
        """
        from tqdm.auto import tqdm

        if config.tune_lm:
            raise ValueError("method 'autoprompt' keeps the LM frozen; set tune_lm: false")
        started = time.perf_counter()
        for p in self.lm.model.parameters():
            p.requires_grad_(False)
        self.eval()
        self.lm.model.eval()
        state = _SearchState(self, train_data, dev_data, config)
        bar = tqdm(range(1, self.iterations + 1), desc=f"{self.name} search", disable=not progress, leave=False)
        for step in bar:
            record = self._search_step(state, step)
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", trigger=" ".join(record["trigger"])[:40])
            if state.skip is None:
                break  # every position tried from this trigger: the same candidates would come back
        bar.close()
        self.trigger_ids.copy_(state.best_ids)
        if progress:
            print(f"autoprompt: {self.found_template().text!r}")
        return TrainResult(len(state.history), state.best_step, state.best_dev, state.history,
                           time.perf_counter() - started, state.best_scores)

    def _search_step(self, state: "_SearchState", step: int) -> dict:
        """One iteration: gradient, HotFlip proposals at the chosen position(s), judged; the best kept
        only when strictly better on the same examples. Returns (and records) the iteration's record."""
        step_started = time.perf_counter()
        positions = state.next_positions()
        grad_rows, judge_rows = search_rows(self.config, state.n, state.generator)
        grad, loss = state.gradient(grad_rows)
        grad_seconds = time.perf_counter() - step_started
        candidates = self._proposals(grad, positions, state.skip)
        scores = self._judge(candidates, state.train_data, judge_rows)
        best = int(scores[1:].argmax()) + 1 if len(candidates) > 1 else 0
        # strictly better on the same examples, or nothing changes
        swapped = best > 0 and bool(scores[best] > scores[0])
        changed = [p for p in range(len(self.trigger_ids)) if candidates[best, p] != self.trigger_ids[p]]
        record = {"step": step, "loss": round(loss, 6), "position": changed[0] if swapped else positions[0],
                  "ranks": [state.skip + 1, state.skip + self.num_candidates],
                  "candidates": candidates[1:][candidates[1:] != candidates[0]].tolist(),
                  "current_score": round(scores[0].item(), 6),
                  "best_candidate_score": round(scores[best].item(), 6), "swapped": swapped}
        if swapped:
            self.trigger_ids.copy_(candidates[best])
        record["train_loss"] = round(-max(scores[0].item(), scores[best].item()), 6)
        record["trigger"], record["trigger_ids"] = self.trigger_tokens(), self.trigger_ids.tolist()
        state.after(swapped, len(positions))
        if swapped:
            state.keep(step, record)
        record["gradient_seconds"] = round(grad_seconds, 3)
        record["seconds"] = round(time.perf_counter() - step_started, 3)
        state.history.append(record)
        return record


class _SearchState:
    """What AutoPrompt's search carries from one iteration to the next: the position cycle, the cached
    gradient, how far down the HotFlip ranks it looks, and the best trigger so far (on dev, or the
    last accepted swap)."""

    def __init__(self, method: AutoPrompt, train_data: EncodedExamples, dev_data: EncodedExamples | None, config):
        self.method, self.train_data, self.dev_data, self.config = method, train_data, dev_data, config
        self.generator = torch.Generator().manual_seed(config.seed)
        self.n = len(train_data)
        self.judge_all = method.config.score_examples >= self.n
        self.grad_all = method.config.gradient_examples >= self.n
        self.use_dev = dev_data is not None and len(dev_data) > 0
        self.best_key, self.best_dev, self.best_scores = None, {}, None
        if self.use_dev:
            self.best_dev, _, self.best_key, self.best_scores = dev_score(method, dev_data, config.eval_batch_size,
                                                                          config.select_metric)
        self.best_ids, self.best_step, self.history = method.trigger_ids.clone(), 0, []
        self.cycle: list[int] = []
        self.cached = None  # (trigger, gradient, loss): a fixed gradient set gives the same gradient until a swap
        self.tried_without_swap = 0  # positions tried since the last swap at these ranks; all: a local optimum
        self.skip: int | None = 0  # HotFlip ranks passed over: widened after a pass without a swap (max_candidates)

    def next_positions(self) -> list[int]:
        n_trigger, how = len(self.method.trigger_ids), self.method.config.positions
        if how == "all":
            return list(range(n_trigger))
        if how == "random":
            return [int(torch.randint(n_trigger, (1,), generator=self.generator))]
        if not self.cycle:
            self.cycle = torch.randperm(n_trigger, generator=self.generator).tolist()
        return [self.cycle.pop(0)]

    def gradient(self, grad_rows: list[int]) -> tuple[torch.Tensor, float]:
        method = self.method
        if self.cached is not None and self.grad_all and torch.equal(self.cached[0], method.trigger_ids):
            return self.cached[1], self.cached[2]
        grad, loss = method._gradient(self.train_data, grad_rows, self.config.batch_size)
        self.cached = (method.trigger_ids.clone(), grad, loss)
        return grad, loss

    def after(self, swapped: bool, tried: int) -> None:
        """Count positions tried without a swap; after a whole pass, look further down the ranks or stop."""
        method = self.method
        self.tried_without_swap = 0 if swapped else self.tried_without_swap + tried
        if swapped:
            self.skip = 0
        elif method.config.positions != "random" and self.tried_without_swap >= len(method.trigger_ids) \
                and self.judge_all and self.grad_all:
            # no position has a better swap among these ranks: try the next ones, or stop
            self.skip, self.tried_without_swap = self.skip + method.num_candidates, 0
            if self.skip + method.num_candidates > (method.config.max_candidates or method.num_candidates):
                self.skip = None

    def keep(self, step: int, record: dict) -> None:
        """After a swap: keep it when dev says it is the best so far (or ``select: last``, or no dev)."""
        method, config = self.method, self.config
        if not self.use_dev:  # no dev set: keep the latest accepted swap
            self.best_ids, self.best_step = method.trigger_ids.clone(), step
            return
        dev, _, key, dev_scores = dev_score(method, self.dev_data, config.eval_batch_size, config.select_metric)
        record["dev"] = dev
        if method.config.select == "last" or key > self.best_key:
            self.best_key, self.best_dev, self.best_ids, self.best_step = key, dev, method.trigger_ids.clone(), step
            self.best_scores = dev_scores
