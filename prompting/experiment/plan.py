"""What an experiment runs: every (data seed, method entry, prompt, training seed), each with the
settings its result depends on and the id they give it; the examples of each data split; the
prompts checked against the task before any model loads."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Sequence

import torch

from prompting.core.data import Example, Task, sample_kshot
from prompting.core.settings import MethodSpec, Protocol
from prompting.core.template import Template
from prompting.core.verbalizer import VerbalizerError
from prompting.experiment.results import run_id
from prompting.methods import METHODS
from prompting.methods.choices import ChoiceVerbalizer, make_verbalizer

__all__ = ["PlannedRun", "plan_runs", "run_settings", "prompts_for", "check_prompts", "split_examples",
           "test_examples", "protocol_name", "describe_protocol", "describe_run", "calibrated_id",
           "jsonable_verbalizer"]


@dataclass
class PlannedRun:
    """One run of the plan: a method entry on one prompt, data seed and training seed; ``settings`` are
    what its result depends on, and its id is their digest."""

    spec: MethodSpec
    template: str
    verbalizer: dict
    data_seed: int
    train_seed: int | None
    settings: dict
    run_id: str


def jsonable_verbalizer(verbalizer: dict) -> dict:
    return {str(k): ([v] if isinstance(v, str) else list(v)) for k, v in verbalizer.items()}


def prompts_for(spec: MethodSpec, prompts: Sequence[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The prompts a method runs on: every prompt of the experiment, unless it brings its own template
    (then with each distinct verbalizer) or verbalizer (then with each distinct template)."""
    if spec.template and spec.verbalizer:
        return [(spec.template, jsonable_verbalizer(spec.verbalizer))]
    if spec.template:
        verbalizers = {json.dumps(v, sort_keys=True): v for _, v in prompts}
        return [(spec.template, v) for v in verbalizers.values()]
    if spec.verbalizer:
        return [(t, jsonable_verbalizer(spec.verbalizer)) for t in dict.fromkeys(t for t, _ in prompts)]
    return list(prompts)


def check_prompts(task: Task, methods: Sequence[MethodSpec], prompts: Sequence[tuple[str, dict]],
                  templates: Sequence[str] = ()) -> None:
    """Every template a run will use has only fields the task has, and every verbalizer words for
    exactly the task's labels; checked before any model loads. ``templates``: more to check (a
    sweep's template choices)."""
    prompts = [(t, jsonable_verbalizer(v)) for t, v in prompts]
    for spec, (template, verbalizer) in [(spec, p) for spec in methods for p in prompts_for(spec, prompts)]:
        Template(template).check_fields(task.text_fields)
        verbalizer = make_verbalizer(verbalizer, task.choice_score)
        verbalizer.check_labels(task.labels)
        if isinstance(verbalizer, ChoiceVerbalizer):
            verbalizer.check_fields(task.text_fields)
            _check_choice_method(spec)
    for template in templates:
        Template(template).check_fields(task.text_fields)


def _check_choice_method(spec: MethodSpec) -> None:
    """Calibration and demonstrations need label words shared by every input; a multiple-choice
    verbalizer's words are each example's own choices."""
    wanted = [f"calibration={list(spec.calibration)!r}"] if spec.calibration else []
    config = METHODS.config(spec.name)
    if config.demonstrations_always or spec.params.get("demonstrations") is not None:
        wanted.append(f"the {spec.name} method" if config.demonstrations_always else "demonstrations")
    if wanted:
        raise VerbalizerError(f"method {spec.label!r}: {' and '.join(wanted)} is not valid with a multiple-choice "
                              "verbalizer (its words are each example's own choices); leave it out for this task")


def protocol_name(task: Task) -> str:
    """How a task's train and dev sets are made: ``kshot`` (K per class from train, a disjoint K per
    class as dev), ``kshot-dev-file`` (K per class from train, K per class from the dev file) or
    ``fixed`` (the train and dev files as given)."""
    if task.fixed_split:
        return "fixed"
    return "kshot-dev-file" if task.dev is not None else "kshot"


def describe_protocol(task: Task, protocol: Protocol) -> str:
    """One line saying how the task's runs get their train, dev and test examples."""
    name, k = protocol_name(task), protocol.k
    if name == "fixed":
        how = (f"the train and dev sets as given ({len(task.train)} and {len(task.dev or [])} examples); "
               "k is not used and the data seeds are one split")
    elif name == "kshot-dev-file":
        how = (f"K = {k} per class from train ({len(task.train)} examples), dev K = {k} per class from the "
               f"dev file ({len(task.dev)}; say protocol: fixed to use the files as given)")
    else:
        how = f"K = {k} per class from train ({len(task.train)} examples), a disjoint K per class from train as dev"
    return f"task {task.name!r}: protocol {name}: {how}; test: {len(task.test)} examples"


def describe_run(run: PlannedRun) -> str:
    """How progress lines name a run."""
    return f"{run.spec.label} seed {run.data_seed}/{run.train_seed}"


def calibrated_id(rid: str, how: str) -> str:
    """The id of run ``rid``'s record calibrated by ``how``."""
    return run_id({"calibrated": rid, "how": how})

def plan_runs(task: Task, methods: Sequence[MethodSpec], prompts: Sequence[tuple[str, dict]], protocol: Protocol,
              model: str, dtype: torch.dtype, max_length: int | None) -> list[PlannedRun]:
    """Every (data seed, method entry, prompt, training seed) of an experiment, in the order they run; a
    task with fixed train and dev files is one data split (its spread comes from training seeds)."""
    runs = []
    data_seeds = [protocol.data_seeds[0]] if task.fixed_split else protocol.data_seeds
    for data_seed in data_seeds:
        for spec in methods:
            for template, verbalizer in prompts_for(spec, prompts):
                for train_seed in ((spec.train_seeds or protocol.train_seeds) if spec.train else [None]):
                    settings = run_settings(task, spec, template, verbalizer, protocol, model, dtype, max_length)
                    settings.update(data_seed=data_seed, train_seed=train_seed)
                    settings = {**settings, "test_limit": protocol.test_limit, "max_length": max_length}
                    if task.choices:  # how choices are scored changes the result
                        settings["choice_score"] = task.choice_score
                    runs.append(PlannedRun(spec, template, verbalizer, data_seed, train_seed, settings,
                                           run_id(settings)))
    return runs


def run_settings(task: Task, spec: MethodSpec, template: str, verbalizer: dict, protocol: Protocol, model: str,
                 dtype: torch.dtype, max_length: int | None) -> dict:
    """The settings a run's result depends on, but its seeds (their order fixes the run ids)."""
    return {
        "task": task.name, "model": model, "method": spec.name, "label": spec.label, "train": spec.train,
        "params": spec.params, "train_config": spec.train_config if spec.train else {},
        "template": template, "verbalizer": verbalizer, "k": None if task.fixed_split else protocol.k,
        # low precision changes the numbers: its runs are others than float32's
        **({"dtype": str(dtype).replace("torch.", "")} if dtype != torch.float32 else {}),
    }


def split_examples(task: Task, protocol: Protocol, data_seed: int) -> tuple[list[Example], list[Example]]:
    """The (train, dev) examples of one data split."""
    if task.fixed_split:
        return list(task.train), list(task.dev or [])
    if task.dev is not None:  # a dev file: the dev set is drawn from it, K per class
        return (sample_kshot(task.train, protocol.k, data_seed, task.labels, with_dev=False)[0],
                sample_kshot(task.dev, protocol.k, data_seed, task.labels, with_dev=False)[0])
    return sample_kshot(task.train, protocol.k, data_seed, task.labels)


def test_examples(task: Task, protocol: Protocol) -> list[Example]:
    """The test examples every run is scored on: the task's test set, or a fixed random subset of it."""
    test = list(task.test)
    if protocol.test_limit is not None and protocol.test_limit < len(test):
        test = random.Random(0).sample(test, protocol.test_limit)
    return test
