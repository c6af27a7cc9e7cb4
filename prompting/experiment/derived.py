"""Records derived from runs' saved label scores, without a second training: each run calibrated as
its method entry asks (contextual or domain), and PET's pattern ensembles (the label distributions
of a method's runs over patterns, averaged or weighted by dev).
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

import torch

from prompting.core.data import Example, Task
from prompting.core.settings import MethodSpec, Protocol
from prompting.core.ids import run_id
from prompting.experiment.results import ResultsStore, gold_indices
from prompting.methods import PromptMethod
from prompting.tasks.base import PlannedRun, RunRecord, describe_run
from prompting.tasks.classification import protocol_name
from prompting.tasks.outcome import Outcome, Predictions
from prompting.training.calibration import calibrate, content_free_scores

__all__ = ["DerivedRecords", "calibrated_id"]


def calibrated_id(rid: str, how: str) -> str:
    """The id of run ``rid``'s record calibrated by ``how``."""
    return run_id({"calibrated": rid, "how": how})


class DerivedRecords:
    """Adds the calibrated and ensemble records of an experiment's planned runs to its store.

    ``build`` makes a planned run's method (to compute the content-free scores an untrained run was
    recorded without); ``split`` gives a data seed's (train, dev) examples.
    """

    def __init__(self, store: ResultsStore, task: Task, protocol: Protocol, test: Sequence[Example], name: str,
                 build: Callable[[PlannedRun], PromptMethod], split: Callable[[int], tuple[list, list]]):
        self.store, self.task, self.protocol, self.test, self.name = store, task, protocol, list(test), name
        self.build, self.split = build, split

    def add(self, planned: Sequence[PlannedRun], methods: Sequence[MethodSpec]) -> None:
        self.calibrated(planned)
        self.ensembles(planned, methods)

    # ------------------------------------------------------------------------------ calibration
    def calibrated(self, planned: Sequence[PlannedRun]) -> None:
        """A calibrated record beside each run whose method asks for calibration; runs recorded without
        content-free scores (by older versions) are named and left out."""
        by_run = {r["run_id"]: r for r in self.store.records()}
        for run in planned:
            for how in run.spec.calibration:
                rid, base = calibrated_id(run.run_id, how), by_run.get(run.run_id)
                if rid in by_run or base is None:
                    continue
                saved = self._with_content_free(run, self.store.load_predictions(run.run_id))
                if not saved or "content_free" not in saved:
                    print(f"{self.name}: run {run.run_id} ({describe_run(run)}) was recorded without content-free "
                          f"scores, so it has no {how}-calibrated record; delete its record to run it again",
                          file=sys.stderr)
                    continue
                by_run[rid] = self._calibrated_record(base, saved, how, rid)
                self.store.append(by_run[rid], once=True)

    def _with_content_free(self, run: PlannedRun, saved: dict | None) -> dict | None:
        """A run's saved scores with its content-free scores; an untrained run recorded without them (by
        an older version) has them computed now, as nothing it depends on was learned, and saved."""
        if not saved or "content_free" in saved or run.spec.train:
            return saved
        method = self.build(run)
        method.set_demonstration_pool(self.split(run.data_seed)[0], run.train_seed or 0)
        free = content_free_scores(method, self.protocol.eval_batch_size)
        if free is not None:
            saved["content_free"] = free
            self.store.save_predictions(run.run_id, saved)
        return saved

    def _calibrated_record(self, base: dict, saved: dict, how: str, rid: str) -> dict:
        """The record of run ``base`` calibrated by ``how``, and its predictions file, from the run's saved
        scores; gold labels by name (or, in files written before that, as column indices)."""
        labels = [str(x) for x in (saved.get("labels") or self.task.labels)]
        scores = {split: torch.tensor(calibrate(how, saved[split], saved["content_free"])) for split in ("dev", "test")}
        index = {split: gold_indices(saved, split) for split in ("dev", "test")}
        gold = {split: [labels[i] if i >= 0 else None for i in index[split]] for split in ("dev", "test")}
        self.store.save_predictions(rid, Predictions(scores["dev"].tolist(), scores["test"].tolist(), labels,
                                                     gold["dev"], gold["test"]).to_dict())
        dev_index = torch.tensor(index["dev"], dtype=torch.long) if index["dev"] else torch.zeros(0, dtype=torch.long)
        outcome = Outcome.of(labels, gold["dev"], scores["dev"], gold["test"], scores["test"], dev_index)
        return {**base, "run_id": rid, "label": f"{base['label']} + {how} calibration", "calibration": how,
                "calibrated_from": base["run_id"], "dev": outcome.dev,
                "dev_loss": outcome.dev_loss if index["dev"] else None, "test": outcome.test,
                "collapsed": outcome.collapsed, "test_majority": outcome.test_majority}

    # ------------------------------------------------------------------------------ ensembles
    def ensembles(self, planned: Sequence[PlannedRun], methods: Sequence[MethodSpec]) -> None:
        """PET pattern ensembles: combine label distributions of a method's runs over patterns; with
        calibration, also the ensemble of the calibrated runs."""
        by_run = {r["run_id"]: r for r in self.store.records()}
        for spec in methods:
            if not spec.ensemble:
                continue
            groups: dict[tuple, list[PlannedRun]] = {}
            for run in planned:  # an iPET generation is a group of its own; a distilled model is none
                if run.context.get("entry", run.spec) is spec and run.context.get("stage") != "distill":
                    groups.setdefault((run.data_seed, run.train_seed, run.context.get("generation")), []).append(run)
            for members in groups.values():
                for how in ("none", *spec.calibration):
                    ids = [m.run_id if how == "none" else calibrated_id(m.run_id, how) for m in members]
                    self._ensemble(spec, members, ids, how, by_run)

    def _ensemble(self, spec: MethodSpec, members: list[PlannedRun], ids: list[str], how: str, by_run: dict) -> None:
        """Record the ensemble of the runs ``ids`` (``members``' runs, calibrated by ``how``) unless it is
        recorded or a member is missing."""
        records = [by_run.get(i) for i in ids]
        scores = [self.store.load_predictions(i) for i in ids]
        if len(members) < 2 or any(r is None for r in records):
            return
        missing = [i for i, s in zip(ids, scores) if s is None]
        if missing:
            print(f"{self.name}: {spec.label} has no {spec.ensemble} ensemble of data seed {members[0].data_seed}: "
                  f"the label scores of {len(missing)} of its {len(ids)} runs are missing "
                  f"(predictions/{missing[0]}.json); delete those runs' records to run them again",
                  file=sys.stderr)
            return
        rid = run_id({"ensemble_of": sorted(ids), "how": spec.ensemble})
        if rid in by_run:
            return
        weights = [r["dev"].get(self.protocol.select_metric, 0.0) if spec.ensemble == "wmean" else 1.0
                   for r in records]
        record = self._ensemble_record(spec, members, ids, records, scores, weights, rid)
        if how != "none":
            record.update(label=f"{record['label']} + {how} calibration", calibration=how)
        self.store.append(record)
        by_run[rid] = record

    def _ensemble_record(self, spec, members, ids, records, scores, weights, rid) -> dict:
        labels = list(self.task.labels)
        total = sum(weights) or 1.0
        combined = {split: (sum(w * torch.tensor(s[split]).softmax(-1) for w, s in zip(weights, scores)) / total).log()
                    for split in ("dev", "test")}
        dev_examples = self.split(members[0].data_seed)[1]
        self.store.save_predictions(rid, Predictions.of(labels, dev_examples, self.test, combined["dev"],
                                                        combined["test"]).to_dict())
        dev_index = torch.tensor([labels.index(e.label) if e.label in labels else -1 for e in dev_examples],
                                 dtype=torch.long)
        outcome = Outcome.of(labels, [e.label for e in dev_examples],
                             combined["dev"].reshape(len(dev_examples), -1), [e.label for e in self.test],
                             combined["test"], dev_index)
        first = records[0]
        settings = {k: first[k] for k in ("task", "model", "method", "k", "data_seed", "train_seed", "test_limit",
                                          "choice_score") if k in first}
        settings.update(label=f"{members[0].settings['label']} ensemble ({spec.ensemble})",
                        template=f"ensemble of {len(members)} patterns",
                        verbalizer=first["verbalizer"], ensemble_of=list(ids), train=True)
        return RunRecord(settings, rid, self.name, {
            **outcome.to_dict(), "protocol": protocol_name(self.task),
            "n_train": first.get("n_train"), "n_dev": len(dev_examples), "n_test": len(self.test),
            "trainable_params": sum(r.get("trainable_params", 0) for r in records),
            "seconds": sum(r.get("seconds", 0.0) for r in records),
            "peak_memory_mb": max(r.get("peak_memory_mb") or 0 for r in records)}).to_dict()
