"""LAMA experiments: every relation x method x protocol, one record per (relation, method, protocol).

Config (``experiments/lama.yaml``)::

    name: lama
    model: smollm2-135m
    task: {name: lama, data_dir: ../shared/data/lama, relations: [P101, P103]}
    limits: {train: 64, dev: 50, test: 40, vocab_test: 150}   # facts per split (seeded sample; null: all)
    protocols: [candidates, vocab]
    methods:
      - {name: majority}
      - {name: manual, train: false}
      - {name: soft, prompt_tokens: 5, epochs: 5}
      - {name: autoprompt, template: "{sub_label} {trigger:3} {mask}", iterations: 10}

Learned prompts train with the library's one loop (:func:`prompting.training.loop.train`) on the relation's
train facts, with a cross-entropy over the candidates' distinct *first tokens*: one forward pass per
fact (the whole candidate set would cost a trie pass with gradients per fact), the gold object's first
token against every other candidate's. Dev facts select the state (P@1 of that first token); test is
ranked exactly over whole candidates (and over the vocabulary for the ``vocab`` protocol).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Sequence

from prompting.config.experiment import ConfigError, ProbeConfig, parse_config
from prompting.config.schema import Limits
from prompting.core.data import DataError, Example
from prompting.tasks.lama import (Relation, candidate_ranks, load_relation, majority_scores, ranking_metrics, ranks,
                                  vocab_facts, vocab_ranks)
from prompting.experiment.results import ResultsStore, run_id

__all__ = ["LIMIT_KEYS", "ProbeConfig", "parse_probe_config", "run_probe", "first_tokens", "first_token_method"]

LIMIT_KEYS = Limits.keys()


def parse_probe_config(data: dict, base: Path | None = None) -> ProbeConfig:
    """A LAMA config checked by the one config schema (see :mod:`prompting.config.schema`)."""
    cfg = parse_config(data, base)
    if not isinstance(cfg, ProbeConfig):
        raise ConfigError("task: a fact-probing config has task: {name: lama, data_dir: ..., relations: [...]}")
    return cfg


def _cap(facts: Sequence[Example], limit: int | None) -> list[Example]:
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
    import torch

    from prompting.core.verbalizer import LabelWordIds

    first_word = {}
    for cand in candidates:  # a verbalizer to build with: each label worded by a candidate of its own
        first_word.setdefault(owner[cand], [cand])
    labels = [str(i) for i in ids]
    method = build({label: first_word[label] for label in labels}, labels)
    method.words = LabelWordIds(tuple((i,) for i in ids), torch.arange(len(ids)), len(ids))
    method.encoder.reserve = 0
    return method


class _RelationRun:
    """One relation's runs: facts capped, the store, and one record per method and protocol."""

    def __init__(self, cfg: ProbeConfig, lm, relation: Relation, store: ResultsStore, progress: bool):
        self.cfg, self.lm, self.rel, self.store, self.progress = cfg, lm, relation, store, progress
        lim = cfg.limits
        self.train, self.dev = _cap(relation.train, lim.get("train")), _cap(relation.dev, lim.get("dev"))
        self.test = _cap(relation.test, lim.get("test"))

    def settings(self, method: str, label: str, protocol: str, template: str, spec=None) -> dict:
        return {"experiment": self.cfg.name, "task": "lama", "relation": self.rel.name, "model": self.lm.name,
                "method": method, "label": label, "protocol": protocol, "template": template,
                "params": getattr(spec, "params", {}), "train_config": getattr(spec, "train_config", {}),
                "limits": self.cfg.limits, "n_candidates": len(self.rel.candidates),
                # the fields every run record has: the candidates are the labels, each worded by itself;
                # facts are capped with seed 0; a trained prompt trains with seed 1
                "verbalizer": f"each of the {len(self.rel.candidates)} candidate objects", "k": None,
                "data_seed": 0, "train_seed": 1 if getattr(spec, "train", False) else None}

    def record(self, settings: dict, test_ranks, started: float, extra: dict | None = None) -> dict:
        rid = run_id(settings)
        record = {**settings, "run_id": rid, "test": ranking_metrics(test_ranks), "n_test": len(test_ranks), "dev": {},
                  "seconds": round(time.perf_counter() - started, 3), **(extra or {})}
        self.store.save_predictions(rid, {"test_ranks": [int(r) for r in test_ranks]})
        self.store.append(record)
        return record

    def done(self, settings: dict) -> bool:
        return run_id(settings) in self.store.done()

    def majority(self, label: str) -> list[dict]:
        settings = self.settings("majority", label, "candidates", "")
        if self.done(settings):
            return []
        started = time.perf_counter()
        gold = [self.rel.candidates.index(ex.label) for ex in self.test]
        import torch

        scores = majority_scores(self.rel.train, self.rel.candidates, len(self.test))
        return [self.record(settings, ranks(scores, torch.tensor(gold)), started, {"n_train": len(self.rel.train)})]

    def method(self, spec) -> list[dict]:
        """Every protocol of one method: trained first when the spec trains."""
        template = spec.template or self.cfg.template or self.rel.template
        todo = [p for p in self.cfg.protocols if not self.done(self.settings(spec.name, spec.label, p, template, spec))]
        if not todo:
            return []
        started = time.perf_counter()
        method, extra = self._fit(spec, template) if spec.train else (self._build(spec, template), {})
        out = []
        for protocol in todo:
            begun = time.perf_counter()
            test_ranks, counts = self._ranks(method, protocol)
            settings = self.settings(spec.name, spec.label, protocol, template, spec)
            out.append(self.record(settings, test_ranks, begun, {**extra, **counts,
                                                                 "describe": method.describe() | {"verbalizer": None},
                                                                 "train_seconds": extra.get("train_seconds", 0.0)}))
        if self.progress:
            print(f"{self.rel.name} {spec.label}: {time.perf_counter() - started:.0f} s", flush=True)
        return out

    def _build(self, spec, template: str, verbalizer: dict | None = None, labels=None):
        from prompting.methods import build_method
        from prompting.core.verbalizer import Verbalizer

        verbalizer = verbalizer or {c: [c] for c in self.rel.candidates}
        return build_method(spec.name, self.lm, template, Verbalizer(verbalizer),
                            labels=labels or self.rel.candidates, **spec.params)

    def _fit(self, spec, template: str):
        """Train on first-token labels, then move the learned state onto the whole-candidate method."""
        import torch

        from prompting.core.settings import TrainConfig
        from prompting.training.loop import train

        torch.manual_seed(1)
        probe = self._build(spec, template)
        ids, owner = first_tokens(self.rel.candidates, self.lm.tokenizer, probe.encoder.mask_leading_space)
        relabel = lambda facts: [Example(ex.fields, owner[ex.label], ex.idx) for ex in facts]
        torch.manual_seed(1)
        learner = first_token_method(lambda words, labels: self._build(spec, template, words, labels), ids,
                                     self.rel.candidates, owner)
        config = TrainConfig(**{**learner.config_class.train_defaults, **spec.train_config, "seed": 1,
                                "select_metric": "accuracy"})
        began = time.perf_counter()
        result = train(learner, learner.encode(relabel(self.train)), learner.encode(relabel(self.dev)), config,
                       progress=self.progress)
        probe.load_state_dict(learner.state_dict())
        curve = [[h["step"], h["dev"].get("accuracy"), h.get("dev_loss"), h.get("loss")]
                 for h in result.history if "dev" in h]
        return probe, {"train_seconds": round(time.perf_counter() - began, 3), "n_train": len(self.train),
                       "n_dev": len(self.dev), "n_first_tokens": len(ids), "steps": result.steps,
                       "best_step": result.best_step, "dev": {"first_token_p_at_1": result.best_dev.get("accuracy")},
                       "dev_curve": curve, "train_config_used": config.to_dict()}

    def _ranks(self, method, protocol: str):
        if protocol == "candidates":
            return candidate_ranks(method, self.test, progress=self.progress), {}
        kept, ids = vocab_facts(self.rel.test, self.lm.tokenizer, method.encoder.mask_leading_space)
        capped = _cap(list(zip(kept, ids)), self.cfg.limits.get("vocab_test"))
        if not capped:
            raise DataError(f"relation {self.rel.name}: no test fact has a one-token object; the vocab protocol "
                            "has nothing to rank")
        ranks_, _ = vocab_ranks(method, [f for f, _ in capped], [i for _, i in capped])
        return ranks_, {"n_vocab_facts": len(kept), "n_test_all": len(self.rel.test)}


def run_probe(cfg: ProbeConfig, output_dir, lm=None, progress: bool = True) -> list[dict]:
    """Run (or resume) every relation x method x protocol of ``cfg`` into ``output_dir``."""
    from prompting.lm.model import LanguageModel

    relations = [load_relation(cfg.data_dir, r, template=cfg.template) for r in cfg.relations]  # fail early
    lm = lm or LanguageModel.load(cfg.model, device=cfg.device)
    store = ResultsStore(output_dir)
    records = []
    for relation in relations:
        run = _RelationRun(cfg, lm, relation, store, progress)
        for spec in cfg.methods:
            records += run.majority(spec[1]) if isinstance(spec, tuple) else run.method(spec)
    return records
