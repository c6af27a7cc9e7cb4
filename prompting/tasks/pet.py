"""PET's full recipe on a classification task (Schick and Schütze 2021): unlabelled examples, the pattern
ensemble distilled into one model, and iPET's generations.

- **Unlabelled examples** (the task's ``unlabeled:``): N drawn per data seed from the training file without
  that seed's K-shot split and its dev (no text of theirs), or the examples of a file, for every data seed.
- **Distillation** (``distill:`` on a trained ``manual`` entry with ``ensemble:``): each pattern run of a
  (data seed, training seed) scores the unlabelled examples when it runs (its predictions file keeps them);
  the ensemble of those scores (``mean``, or ``wmean``: weighted by dev score), divided by PET's temperature,
  gives each example a soft label, and one model (the entry's ``distill.pattern``-th prompt, the LM tuned)
  is trained on them with PET's KL objective (:func:`prompting.training.loop.objective`), selected on the
  K-shot dev set and saved in the output folder's ``models/RUN_ID``.
- **iPET** (``name: ipet``): generation 0 is PET (the runs a ``manual`` entry with the same settings and
  label makes, run once). In generation j each pattern's model is trained anew on the K-shot examples and
  ``|T| (growth^j - 1)`` unlabelled ones in the K-shot label distribution, labelled by the ensemble of a
  random ``ensemble_share`` (at least one) of the other patterns' generation j-1 models of the same
  training seed, each label's examples drawn in proportion to the ensemble's confidence (as PET's code
  does; a label with too few examples has them repeated). The last generation is distilled as above.

Each stage is a planned run whose settings name the runs it learns from (:attr:`PlannedRun.needs`): they
are recorded, with their scores on the unlabelled examples, before it runs, so resuming after a kill and
sharing runs among workers work as for every run; nothing a later stage needs is held in memory.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
import zlib
from collections import Counter
from dataclasses import replace
from typing import Callable, Sequence

import torch

from prompting.core.data import DataError, Example, Task
from prompting.core.ids import run_id
from prompting.core.settings import MethodSpec, Protocol, TrainConfig, default_of
from prompting.methods import METHODS, PromptMethod
from prompting.methods.batches import EncodedExamples
from prompting.tasks.base import PlannedRun

__all__ = ["POOL_KEY", "RecipeError", "draw_pool", "pool_identity", "recipe_runs", "training_data", "score_pool",
           "record_fields", "check_recipe"]

#: where a run's predictions file keeps its scores on the unlabelled examples
POOL_KEY = "unlabeled"


class RecipeError(DataError):
    """A stage of the recipe whose inputs are missing or were scored on other unlabelled examples."""


def _text(example: Example) -> tuple:
    return tuple(" ".join(str(v).split()) for v in example.fields.values())


def texts_digest(examples: Sequence[Example]) -> str:
    """A digest of examples' texts: which unlabelled examples a run's scores are of."""
    return hashlib.blake2b(json.dumps([_text(e) for e in examples]).encode(), digest_size=8).hexdigest()


def draw_pool(task: Task, train: Sequence[Example], dev: Sequence[Example], data_seed: int) -> list[Example]:
    """The unlabelled examples of a data split (see the module docstring); labels dropped."""
    source = task.unlabeled
    if source is None:
        raise DataError(f"task {task.name!r} has no unlabelled examples; give its section unlabeled: N (drawn "
                        "from the training file) or unlabeled: FILE")
    if not isinstance(source, int):
        return list(source)
    taken = {_text(e) for e in (*train, *dev)}
    rest = [e for e in task.train if _text(e) not in taken]
    if not rest:
        raise DataError(f"task {task.name!r}: unlabeled: {source} draws from the training file, but it holds no "
                        "example beside the split (a task with fixed files trains on the whole file); give a file "
                        "of unlabelled examples (unlabeled: FILE)")
    if source > len(rest):
        raise DataError(f"task {task.name!r}: unlabeled: {source} asks for more examples than the training file "
                        f"holds beside the K-shot split and its dev ({len(rest)}); give unlabeled: <= {len(rest)}, "
                        "or a file (unlabeled: FILE)")
    return [Example(e.fields, None, e.idx) for e in random.Random(data_seed).sample(rest, source)]


def pool_identity(task: Task) -> int | dict:
    """What the unlabelled examples are, as a stage's settings name them: the number drawn, or a file's size
    and the digest of its texts."""
    source = task.unlabeled
    if source is None or isinstance(source, int):
        return source
    return {"examples": len(source), "digest": texts_digest(source)}


def _pool_size(task: Task) -> int:
    return task.unlabeled if isinstance(task.unlabeled, int) else len(task.unlabeled or [])


def is_ipet(spec: MethodSpec) -> bool:
    return spec.name == "ipet"


def check_recipe(task: Task, spec: MethodSpec, prompts: Sequence[tuple[str, dict]]) -> None:
    """Before the model loads: a distilling entry has unlabelled examples and the prompt it names; iPET has
    at least two patterns."""
    if spec.distill is None:
        return
    if task.unlabeled is None:
        what = "ipet labels" if is_ipet(spec) else "distill trains on"
        raise ValueError(f"method {spec.label!r}: {what} unlabelled examples; give the task section unlabeled: N "
                         "(drawn from the training file) or unlabeled: FILE")
    if spec.distill.pattern >= len(prompts):
        raise ValueError(f"method {spec.label!r}: distill: pattern={spec.distill.pattern} but the entry has "
                         f"{len(prompts)} prompt{'s' if len(prompts) != 1 else ''}; give pattern: 0 to "
                         f"{len(prompts) - 1}")
    if is_ipet(spec) and len(prompts) < 2:
        raise ValueError(f"method {spec.label!r}: iPET labels each pattern's examples with the other patterns' "
                         "models; give it at least two patterns")


# ------------------------------------------------------------------------------------ planning
Made = Callable[[MethodSpec, str, dict, int], PlannedRun]


def recipe_runs(task: Task, methods: Sequence[MethodSpec], prompts_of, protocol: Protocol, made: Made
                ) -> tuple[list[PlannedRun], set[str]]:
    """One data seed's distilled models and iPET generations (``made(spec, template, verbalizer, train_seed)``
    plans a run as the task type does; ``prompts_of(spec)`` are an entry's prompts), and the ids of the runs
    that must score the unlabelled examples."""
    runs, scoring = [], set()
    for spec in methods:
        if spec.distill is None:
            continue
        pairs = prompts_of(spec)
        for train_seed in spec.train_seeds or protocol.train_seeds:
            if is_ipet(spec):
                every, last = _generations(task, spec, pairs, train_seed, protocol, made)
                runs += every
            else:
                last = [made(spec, t, v, train_seed) for t, v in pairs]
            scoring |= {r.run_id for r in last} | {i for r in runs for i in r.needs}
            runs.append(_distilled(task, spec, last, pairs, train_seed, protocol, made))
    return runs, scoring


def _derived(run: PlannedRun, settings: dict, needs: list[PlannedRun], context: dict) -> PlannedRun:
    settings = {**run.settings, **settings}
    return replace(run, settings=settings, run_id=run_id(settings), needs=tuple(n.run_id for n in needs),
                   context={**run.context, **context})


def generation_zero(spec: MethodSpec) -> MethodSpec:
    """The ``manual`` entry whose runs are iPET's generation 0 (PET, with the same settings and label)."""
    own = METHODS.config("manual").keys()
    return MethodSpec("manual", train=True, template=spec.template, verbalizer=spec.verbalizer,
                      params={k: v for k, v in spec.params.items() if k in own}, train_config=dict(spec.train_config),
                      ensemble=spec.ensemble, train_seeds=spec.train_seeds, chat=spec.chat)


def _generations(task, spec, pairs, train_seed, protocol, made) -> tuple[list[PlannedRun], list[PlannedRun]]:
    """iPET's generations 0 to G of one training seed: every run, and the last generation's."""
    config = METHODS.config(spec.name).from_mapping(spec.params)
    first = generation_zero(spec)
    gen = []
    for t, v in pairs:
        run = made(first, t, v, train_seed)
        gen.append(replace(run, context={**run.context, "entry": spec, "generation": 0}))
    every = list(gen)
    gold = sum(_gold_counts(task, protocol).values())
    for j in range(1, config.generations + 1):
        size = gold + sum(_new_counts(_gold_counts(task, protocol), j, config.growth).values())
        made_j = []
        for i, (t, v) in enumerate(pairs):
            others = [r for n, r in enumerate(gen) if n != i]
            count = max(1, min(len(others), round(len(others) * config.ensemble_share)))
            chosen = random.Random(f"ipet {gen[0].data_seed} {train_seed} {j} {i}").sample(range(len(others)), count)
            labellers = [others[n] for n in sorted(chosen)]
            settings = {"label": f"{spec.label} gen {j} ({size} examples)", "generation": j,
                        "ipet": {"labelled_by": [r.run_id for r in labellers], "ensemble": spec.ensemble,
                                 "unlabeled": pool_identity(task)}}
            made_j.append(_derived(made(spec, t, v, train_seed), settings, labellers,
                                   {"stage": "generation", "generation": j, "entry": spec, "pattern": i,
                                    "patterns": len(pairs), "metric": protocol.select_metric}))
        gen = made_j
        every += gen
    return every, gen


def _distilled(task, spec, members, pairs, train_seed, protocol, made) -> PlannedRun:
    """The final model of one training seed's ensemble ``members``."""
    distill = spec.distill
    template, verbalizer = pairs[distill.pattern]
    own = replace(spec, train_config={**spec.train_config, "max_steps": distill_steps(task, spec)})
    generation = members[0].context.get("generation", 0)
    said = f"{len(pairs)} patterns, {_pool_size(task)} unlabelled"
    label = (f"{spec.label} ({generation} generations, {said})" if is_ipet(spec) else f"{spec.label} distilled ({said})")
    settings = {"label": label, "distill": {"from": sorted(m.run_id for m in members), "ensemble": spec.ensemble,
                                            "temperature": distill.temperature, "unlabeled": pool_identity(task)}}
    return _derived(made(own, template, verbalizer, train_seed), settings, members,
                    {"stage": "distill", "generation": generation, "entry": spec, "patterns": len(pairs),
                     "save": distill.save, "metric": protocol.select_metric})


def distill_steps(task: Task, spec: MethodSpec) -> int:
    """The final model's optimiser steps: ``distill.max_steps``, or one pass over the unlabelled examples at the
    entry's batch size, at least the entry's ``max_steps`` (steps sized for K examples would show the final
    model a fraction of a pool many times larger)."""
    if spec.distill.max_steps:
        return spec.distill.max_steps
    batch = spec.train_config.get("batch_size") or default_of(TrainConfig, "batch_size")
    return max(math.ceil(_pool_size(task) / batch), spec.train_config.get("max_steps") or 1)


def _gold_counts(task: Task, protocol: Protocol) -> Counter:
    """How many K-shot training examples each label has."""
    if task.fixed_split:
        return Counter(e.label for e in task.train)
    return Counter({label: protocol.k for label in task.labels})


def _new_counts(gold: Counter, generation: int, growth: float) -> dict[str, int]:
    """The labelled unlabelled examples each label gets in a generation: the training set grows to
    ``|T| growth^j`` in the K-shot label distribution (PET's ``generate_ipet_train_sets``)."""
    total = sum(gold.values())
    new = int(total * growth ** generation - total)
    return {label: int(count * new / total) for label, count in gold.items()}


# ------------------------------------------------------------------------------------ running
def _ensemble(run: PlannedRun, pool: Sequence[Example]) -> torch.Tensor:
    """The mean (or dev-weighted mean) of the inputs' normalised label scores on the unlabelled examples."""
    digest, scores, weights = texts_digest(pool), [], []
    how = (run.settings.get("distill") or run.settings.get("ipet"))["ensemble"]
    for rid in run.needs:
        found = run.inputs.get(rid) or {}
        record, saved = found.get("record") or {}, (found.get("predictions") or {}).get(POOL_KEY)
        if not saved or saved.get("digest") != digest:
            what = ("was scored on other unlabelled examples" if saved else
                    "was recorded without scores on the unlabelled examples")
            raise RecipeError(f"run {rid} ({record.get('label', '?')}, data seed {run.data_seed}) {what}, which "
                              f"{run.settings['label']} learns from; delete its line in results.jsonl and "
                              f"predictions/{rid}.json to run it again")
        scores.append(torch.tensor(saved["scores"], dtype=torch.float64).log_softmax(-1))
        weights.append(record["dev"].get(run.context["metric"], 0.0) if how == "wmean" else 1.0)
    total = sum(weights) or 1.0
    return sum(w * s for w, s in zip(weights, scores)) / total


def training_data(task: Task, run: PlannedRun, method: PromptMethod, train: list[Example], dev: list[Example]
                  ) -> EncodedExamples | None:
    """What a stage of the recipe trains on (None: an ordinary run, its K-shot examples): the unlabelled
    examples with the ensemble's soft labels (a distilled model), or the K-shot examples with unlabelled
    ones the labelling ensemble labelled (an iPET generation)."""
    stage = run.context.get("stage")
    if stage is None:
        return None
    pool = draw_pool(task, train, dev, run.data_seed)
    combined = _ensemble(run, pool)
    if stage == "distill":
        temperature = run.settings["distill"]["temperature"]
        data = method.encode(pool)
        data.targets, data.temperature = (combined / temperature).softmax(-1).float(), temperature
    else:
        data = method.encode(list(train) + _labelled(run, method, train, pool, combined))
    run.context["n_train"] = len(data)
    return data


def _labelled(run: PlannedRun, method: PromptMethod, train, pool, combined: torch.Tensor) -> list[Example]:
    """An iPET generation's new examples: per label, drawn without replacement in proportion to the
    ensemble's confidence among the examples it gives that label (the likeliest for that label when it
    gives it none; repeated when too few)."""
    probs = combined.softmax(-1)
    predicted, confidence = probs.argmax(-1), probs.max(-1).values
    wanted = _new_counts(Counter(e.label for e in train), run.context["generation"], method.config.growth)
    seed = zlib.crc32(f"ipet {run.data_seed} {run.train_seed} {run.context['generation']} {run.context['pattern']}"
                      .encode())
    generator, out = torch.Generator().manual_seed(seed), []
    for column, label in enumerate(method.labels):
        need = wanted.get(label, 0)
        if need <= 0:
            continue
        rows = (predicted == column).nonzero().flatten()
        weights = confidence[rows]
        if len(rows) == 0:
            rows = probs[:, column].argsort(descending=True)[:need]
            weights = probs[rows, column]
        times = math.ceil(need / len(rows))
        picked = torch.multinomial(weights.repeat(times), need, replacement=False, generator=generator)
        out += [Example(pool[i].fields, label, pool[i].idx) for i in rows.repeat(times)[picked].tolist()]
    return out


def score_pool(task: Task, run: PlannedRun, method: PromptMethod, train, dev, batch_size: int,
               progress: bool) -> tuple[dict, dict]:
    """The labelling pass of a run that a later stage learns from: its scores on the unlabelled examples
    (batched and length-bucketed as every scoring pass), as record fields and a predictions entry."""
    if not run.context.get("pool"):
        return {}, {}
    started = time.perf_counter()
    pool = draw_pool(task, train, dev, run.data_seed)
    scores = method.predict_scores(method.encode(pool), batch_size, progress="unlabelled" if progress else False,
                                   cached=False)
    fields = {"unlabeled_scored": len(pool), "labelling_seconds": round(time.perf_counter() - started, 3)}
    return fields, {POOL_KEY: {"digest": texts_digest(pool), "scores": scores.tolist()}}


def record_fields(task: Task, run: PlannedRun, seconds: float) -> dict:
    """What a stage's record says besides its scores: its stage, generation, patterns, unlabelled examples,
    training examples, the runs it learned from and the seconds of every run its recipe took to it."""
    stage = run.context.get("stage")
    if stage is None:
        return {}
    earlier = {}
    for rid in run.needs:
        record = run.inputs[rid]["record"]
        earlier.update({rid: record.get("seconds", 0.0), **(record.get("recipe_runs") or {})})
    return {"stage": "distilled" if stage == "distill" else "generation", "generation": run.context["generation"],
            "patterns": run.context["patterns"], "unlabeled": _pool_size(task), "learned_from": list(run.needs),
            "n_train": run.context.get("n_train"), "recipe_runs": earlier,
            "recipe_seconds": round(seconds + sum(earlier.values()), 3)}
