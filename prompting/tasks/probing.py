"""Fact probing (LAMA): one relation as a task type. Its labels are the relation's candidate objects;
a run is scored by the rank of each fact's object (``candidates``: among every candidate, each scored
with all its tokens; ``vocab``: the one-token objects over the whole vocabulary), with P@1, P@10 and
MRR; ``majority`` is its baseline (every fact ranked by the objects' training frequencies).

Learned prompts train with the library's one loop on the relation's train facts, with a
cross-entropy over the candidates' distinct *first tokens*: one forward pass per fact (the whole
candidate set would cost a trie pass with gradients per fact), the gold object's first token against
every other candidate's. Dev facts select the state (P@1 of that first token). A learned state serves
every protocol of its run: it is trained once per process.
"""

from __future__ import annotations

import json
import random
import time
from typing import Sequence

import torch

from prompting.core.data import DataError, Example
from prompting.core.ids import run_id
from prompting.core.settings import MethodSpec, Protocol, TrainConfig
from prompting.core.verbalizer import LabelWordIds, Verbalizer
from prompting.methods import PromptMethod, build_method
from prompting.methods.evaluation import TrainResult
from prompting.tasks.base import Evaluated, Fitted, PlannedRun, TaskType
from prompting.lm.ranking import Ranking
from prompting.tasks.lama import (Relation, candidate_ranking, majority_scores, ranking_metrics, ranks, vocab_facts,
                                  vocab_ranks)
from prompting.training.loop import train

__all__ = ["FactProbing", "first_tokens", "first_token_method", "predictions", "BASELINES"]

BASELINES = ("majority",)  # method entries that are the task type's own baselines, not prompt methods


def cap(facts: Sequence, limit: int | None) -> list:
    """A fixed random sample (seed 0) of at most ``limit`` facts (None: all)."""
    facts = list(facts)
    return facts if limit is None or limit >= len(facts) else random.Random(0).sample(facts, limit)


def first_tokens(candidates: Sequence[str], tokenizer, leading_space: bool) -> tuple[list[int], dict[str, str]]:
    """(the candidates' distinct first tokens, candidate -> training label): one label per distinct first
    token (named by its id), so that a prompt trains with one forward pass per fact."""
    ids, owner = [], {}
    for cand in candidates:
        token = tokenizer((" " if leading_space else "") + cand, add_special_tokens=False)["input_ids"][0]
        if token not in ids:
            ids.append(token)
        owner[cand] = str(token)
    return ids, owner


def first_token_method(build, ids: list[int], candidates: Sequence[str], owner: dict[str, str]):
    """A method whose labels are the first tokens ``ids``, each scored as exactly that token (a
    byte-level token need not read back from its text, so the words are set as ids)."""
    first_word = {}
    for cand in candidates:  # a verbalizer to build with: each label worded by a candidate of its own
        first_word.setdefault(owner[cand], [cand])
    labels = [str(i) for i in ids]
    method = build({label: first_word[label] for label in labels}, labels)
    method.words = LabelWordIds(tuple((i,) for i in ids), torch.arange(len(ids)), len(ids))
    method.encoder.reserve = 0
    return method


class FactProbing(TaskType):
    """One LAMA relation (see the module docstring). ``limits`` cap its facts per split (``train``,
    ``dev``, ``test``, ``vocab_test``; seeded samples); ``template`` replaces the relation's own."""

    def __init__(self, relation: Relation, limits: dict | None = None, protocols: Sequence[str] = ("candidates", "vocab"),
                 template: str | None = None, experiment: str = "lama"):
        self.relation, self.name = relation, relation.name
        self.limits, self.protocols, self.template = dict(limits or {}), list(protocols), template
        self.experiment = experiment
        self._trained: dict[tuple, tuple[dict, TrainResult]] = {}

    def check(self, methods: Sequence[MethodSpec], prompts, templates=(), protocol: Protocol | None = None) -> None:
        for spec in methods:
            unused = [what for what, given in (("calibration", spec.calibration), ("ensemble", spec.ensemble))
                      if given]
            if unused:
                raise ValueError(f"method {spec.label!r}: {' and '.join(unused)} is not valid for fact probing "
                                 "(its runs rank objects; there are no label scores to calibrate or combine)")
            if spec.answer != "score" or spec.chat:
                raise ValueError(f"method {spec.label!r}: {'chat' if spec.chat else 'answer: ' + spec.answer} is "
                                 "not valid for fact probing (its runs rank every candidate object after the "
                                 "template as written); leave it out")

    def describe(self, protocol: Protocol) -> str:
        rel, lim = self.relation, self.limits
        return (f"relation {rel.name!r}: {len(rel.candidates)} candidate objects; train {len(cap(rel.train, lim.get('train')))}"
                f" and dev {len(cap(rel.dev, lim.get('dev')))} facts; test {len(self.test_examples(protocol))} facts; "
                f"protocols {', '.join(self.protocols)}")

    def template_of(self, spec: MethodSpec) -> str:
        return spec.template or self.template or self.relation.template

    def plan(self, methods, prompts, protocol: Protocol, model: str, dtype, max_length) -> list[PlannedRun]:
        """Per method entry, one run per protocol (a baseline: the candidates protocol only)."""
        runs = []
        for spec in methods:
            baseline = spec.name in BASELINES
            template = "" if baseline else self.template_of(spec)
            for evaluation in (["candidates"] if baseline else self.protocols):
                settings = self.settings(spec, evaluation, template, model, baseline)
                runs.append(PlannedRun(spec, template, settings["verbalizer"], 0, settings["train_seed"], settings,
                                       run_id(settings), evaluation=evaluation, baseline=baseline))
        return runs

    def settings(self, spec: MethodSpec, evaluation: str, template: str, model: str, baseline: bool) -> dict:
        rel = self.relation
        return {"experiment": self.experiment, "task": "lama", "relation": rel.name, "model": model,
                "method": spec.name, "label": spec.label, "protocol": evaluation, "template": template,
                "params": {} if baseline else spec.params, "train_config": {} if baseline else spec.train_config,
                "limits": self.limits, "n_candidates": len(rel.candidates),
                # the fields every run record has: the candidates are the labels, each worded by itself;
                # facts are capped with seed 0; a trained prompt trains with seed 1
                "verbalizer": f"each of the {len(rel.candidates)} candidate objects", "k": None,
                "data_seed": 0, "train_seed": 1 if spec.train and not baseline else None}

    def split(self, protocol: Protocol, data_seed: int) -> tuple[list[Example], list[Example]]:
        return cap(self.relation.train, self.limits.get("train")), cap(self.relation.dev, self.limits.get("dev"))

    def test_examples(self, protocol: Protocol) -> list[Example]:
        return cap(self.relation.test, self.limits.get("test"))

    def method_labels(self) -> Sequence[str]:
        return self.relation.candidates

    def verbalizer(self, run: PlannedRun) -> Verbalizer:
        return Verbalizer({c: [c] for c in self.relation.candidates})

    # ------------------------------------------------------------------------------ fitting
    def fit(self, run: PlannedRun, method: PromptMethod, config: TrainConfig, train_examples, dev_examples,
            progress: bool) -> TrainResult:
        """Train on first-token labels, then move the learned state onto the whole-candidate method; a
        state learned for another protocol of the same run is taken as it is (the LM's own weights,
        when tuned, are not kept: such a run trains again)."""
        key = (method.lm.serial, method.lm.weights_version(), type(method).__name__, method.template.text,
               repr(method.config), json.dumps(config.to_dict(), sort_keys=True))
        if key in self._trained:
            state, result = self._trained[key]
            method.load_state_dict(state)
            return result
        rel = self.relation
        ids, owner = first_tokens(rel.candidates, method.lm.tokenizer, method.encoder.mask_leading_space)
        relabel = lambda facts: [Example(ex.fields, owner[ex.label], ex.idx) for ex in facts]  # noqa: E731
        torch.manual_seed(1)
        build = lambda words, labels: build_method(run.spec.name, method.lm, run.template, Verbalizer(words),  # noqa: E731
                                                   labels=labels, **run.spec.params)
        learner = first_token_method(build, ids, rel.candidates, owner)
        began = time.perf_counter()
        result = train(learner, learner.encode(relabel(train_examples)), learner.encode(relabel(dev_examples)),
                       config, progress=progress)
        result.seconds = time.perf_counter() - began
        method.load_state_dict(learner.state_dict())
        if not config.tune_lm:
            self._trained[key] = ({k: v.detach().clone() for k, v in method.state_dict().items()}, result)
        return result

    # ------------------------------------------------------------------------------ scoring
    def evaluate(self, run: PlannedRun, method: PromptMethod, fitted: Fitted, protocol: Protocol,
                 progress: bool) -> Evaluated:
        begun = time.perf_counter()
        ranking, facts, names, counts = self._ranks(method, run.evaluation, protocol, progress)
        fields = {**self._outcome(ranking.ranks, begun), **self._training(fitted, method), **counts,
                  "template_used": method.template.text, "describe": method.describe() | {"verbalizer": None}}
        return Evaluated(fields, predictions(ranking, facts, names))

    def baseline(self, run: PlannedRun, fitted: Fitted) -> Evaluated:
        """The majority object: every fact ranks the candidates by their frequency in the relation's
        whole train split (the most frequent first; ties in candidate order)."""
        begun, rel = time.perf_counter(), self.relation
        test = self.test_examples(Protocol())
        gold = torch.tensor([rel.candidates.index(ex.label) for ex in test])
        test_ranks = ranks(majority_scores(rel.train, rel.candidates, len(test)), gold)
        return Evaluated({**self._outcome(test_ranks, begun), "n_train": len(rel.train)},
                         {"test_ranks": [int(r) for r in test_ranks]})

    @staticmethod
    def _outcome(test_ranks, begun: float) -> dict:
        return {"test": ranking_metrics(test_ranks), "n_test": len(test_ranks), "dev": {},
                "seconds": round(time.perf_counter() - begun, 3)}

    def _training(self, fitted: Fitted, method: PromptMethod) -> dict:
        result = fitted.result
        if result is None:
            return {"train_seconds": 0.0}
        curve = [[h["step"], h["dev"].get("accuracy"), h.get("dev_loss"), h.get("loss")]
                 for h in result.history if "dev" in h]
        return {"train_seconds": round(result.seconds, 3), "n_train": len(fitted.train), "n_dev": len(fitted.dev),
                "n_first_tokens": len(first_tokens(self.relation.candidates, method.lm.tokenizer,
                                                   method.encoder.mask_leading_space)[0]),
                "steps": result.steps, "best_step": result.best_step,
                "dev": {"first_token_p_at_1": result.best_dev.get("accuracy")}, "dev_curve": curve,
                "train_config_used": fitted.config.to_dict()}

    def _ranks(self, method: PromptMethod, protocol_name: str, protocol: Protocol, progress: bool):
        """(the ranking, its facts, the name of each ranked index, the record's counts) of a protocol."""
        rel = self.relation
        if protocol_name == "candidates":
            facts = self.test_examples(protocol)
            return candidate_ranking(method, facts, progress=progress), facts, list(method.labels), {}
        kept, ids = vocab_facts(rel.test, method.lm.tokenizer, method.encoder.mask_leading_space)
        capped = cap(list(zip(kept, ids)), self.limits.get("vocab_test"))
        if not capped:
            raise DataError(f"relation {rel.name}: no test fact has a one-token object; the vocab protocol "
                            "has nothing to rank")
        facts = [f for f, _ in capped]
        found = vocab_ranks(method, facts, [i for _, i in capped])
        names = token_names(method.lm.tokenizer, found.top)
        return found, facts, names, {"n_vocab_facts": len(kept), "n_test_all": len(rel.test)}


def token_names(tokenizer, ids: torch.Tensor) -> dict[int, str]:
    """The text of every token id in ``ids`` (as it reads after the prompt, leading space stripped)."""
    return {i: tokenizer.decode([i]).strip() for i in sorted(set(ids.flatten().tolist()))}


def predictions(ranking: Ranking, facts: Sequence[Example], names) -> dict:
    """A probing run's saved predictions: per test fact, its subject, its object, the object's rank and
    the ``TOP`` best objects (or tokens) with their log-probabilities, best first."""
    return {"test_ranks": [int(r) for r in ranking.ranks],
            "test_subjects": [ex["sub_label"] for ex in facts], "test_objects": [ex.label for ex in facts],
            "test_top": [[[names[i], round(float(score), 6)] for i, score in zip(top.tolist(), scores.tolist())]
                         for top, scores in zip(ranking.top, ranking.top_scores)]}
