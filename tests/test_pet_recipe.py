"""PET's full recipe on a tiny random causal LM and a toy task: unlabelled examples, the pattern ensemble
distilled into one saved model, iPET's generations, resume after a kill between stages, and PET's KL
objective in the one training loop."""

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from conftest import NEGATIVE, POSITIVE, SUBJECTS
from prompting.config.experiment import ConfigError, load_configs, parse_config
from prompting.core.data import DataError, Example, Task
from prompting.core.settings import DistillSettings, MethodSpec, TrainConfig
from prompting.core.verbalizer import Verbalizer
from prompting.experiment.executor import RunExecutor
from prompting.experiment.harness import Experiment, Protocol
from prompting.experiment.results import ResultsStore
from prompting.methods import build_method
from prompting.methods.saving import load_prompt
from prompting.tasks.classification import Classification
from prompting.tasks.pet import POOL_KEY, RecipeError, draw_pool
from prompting.tasks.spec import load_task_spec
from prompting.training.loop import objective, train
from test_harness import PATTERNS, TRAIN, VERBALIZER, toy_task

ROOT = Path(__file__).resolve().parents[1]

FAST = {"lr": 1e-3, "max_steps": 2, "batch_size": 4}
PROMPTS = [(PATTERNS[0], VERBALIZER), (PATTERNS[1], VERBALIZER)]
PROTOCOL = Protocol(k=4, data_seeds=(13,), train_seeds=(1,))
DOCS_CONFIG = {"task": {"name": "sst2", "data_dir": "../shared/data/sst2", "unlabeled": 1000},
               "templates": {"file": "sst2", "patterns": [0, 3], "verbalizers": [0]},
               "methods": [{"name": "manual", "train": True, "lr": 1.0e-5, "max_steps": 32, "ensemble": "mean",
                            "distill": True},
                           {"name": "ipet", "lr": 1.0e-5, "max_steps": 32, "generations": 2}]}


def recipe(**ipet):
    return [MethodSpec("manual", train=True, train_config=FAST, ensemble="mean", distill=True),
            MethodSpec("ipet", train_config=FAST, params={"generations": 2, "growth": 2.0, **ipet})]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, bpe_tokenizer):
    """The docs' recipe on the toy task: its records, and its output folder."""
    from conftest import build_tiny_lm

    out = tmp_path_factory.mktemp("recipe")
    exp = Experiment(build_tiny_lm("llama", bpe_tokenizer), toy_task(unlabeled=24), recipe(), PROMPTS, PROTOCOL,
                     output_dir=out)
    return exp.run(progress=False), out


def labelled(records, label):
    return [r for r in records if r["label"] == label]


# ------------------------------------------------------------------------------------ configs and data
def test_the_documented_config_parses_into_pet_distilled_and_ipet():
    manual, ipet = parse_config(DOCS_CONFIG).methods
    assert manual.distill.temperature == ipet.distill.temperature == 2.0 and manual.ensemble == "mean"
    assert (ipet.name, ipet.label, ipet.params, ipet.ensemble) == ("ipet", "iPET", {"generations": 2}, "mean")


def test_the_docs_show_the_check_config_and_every_distill_setting():
    page = (ROOT / "docs" / "pet.md").read_text()
    shown = yaml.safe_load(re.search(r"```yaml\n(.*?)```", page, re.S).group(1))
    check = yaml.safe_load((ROOT / "experiments" / "pet_recipe_check.yaml").read_text())
    assert shown == DOCS_CONFIG == {key: check[key] for key in shown}
    assert all(f"| `{key}` |" in page for key in DistillSettings.keys())


@pytest.mark.parametrize("entry, message", [
    ({"name": "manual", "train": True, "distill": True}, r"distill=True needs ensemble .*give ensemble: mean or wmean"),
    ({"name": "soft", "ensemble": "mean", "distill": True},
     r"distill=True is not valid with method 'soft'; distillation goes with name: manual and train: true"),
    ({"name": "manual", "train": False, "ensemble": "mean", "distill": {"save": False}},
     r"distill is not valid with train=False; it learns from trained pattern models: give train: true"),
    ({"name": "ipet", "train": False}, r"train=False is not valid for ipet"),
    ({"name": "ipet", "distill": False}, r"distill=False is not valid for ipet.*keys temperature, pattern"),
    ({"name": "manual", "train": True, "ensemble": "mean", "distill": "yes"},
     r"distill='yes' is not valid; give true, or a mapping with keys temperature, pattern, max_steps, save"),
    ({"name": "manual", "train": True, "ensemble": "mean", "distill": {"temperature": 0}},
     r"distill: temperature=0 is not valid; give a number > 0"),
    ({"name": "ipet", "ensemble_share": 1.5}, r"ensemble_share=1.5 is not valid; give a number > 0 and <= 1"),
    ({"name": "ipet", "generations": 0}, r"generations=0 is not valid; give an integer >= 1"),
    ({"name": "manual", "ensemble": "mean", "distill": {"temp": 2}}, "distill has no parameter 'temp'"),
    ({"name": "ipet", "growth": 0.5}, "growth=0.5 is not valid"),
])
def test_recipe_mistakes_are_config_errors(entry, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({**DOCS_CONFIG, "methods": [entry]})


def test_distilling_without_unlabelled_examples_is_refused_before_any_run(tiny_causal_lm):
    with pytest.raises(ValueError, match="unlabeled: N"):
        Experiment(tiny_causal_lm, toy_task(), recipe(), PROMPTS, PROTOCOL)
    with pytest.raises(DataError, match=r"unlabeled: <= 62"):
        Experiment(tiny_causal_lm, toy_task(unlabeled=500), recipe(), PROMPTS, PROTOCOL)


def test_the_pool_is_drawn_per_data_seed_apart_from_the_split_and_without_labels(tiny_causal_lm):
    task = toy_task(unlabeled=20)
    exp = Experiment(tiny_causal_lm, task, recipe(), PROMPTS, Protocol(k=4, data_seeds=(13, 21)))
    pools = {seed: draw_pool(task, *exp.split(seed), seed) for seed in (13, 21)}
    for seed, pool in pools.items():
        taken = {e["text_a"] for e in sum(exp.split(seed), [])}
        assert len(pool) == 20 and all(e.label is None and e["text_a"] not in taken for e in pool)
        assert pool == draw_pool(task, *exp.split(seed), seed)
    assert pools[13] != pools[21]


def test_an_unlabelled_file_has_the_task_s_columns_and_no_label(tmp_path):
    rows = [f"{s} was {w}.\t{label}" for s in SUBJECTS for w, label in ((POSITIVE[0], 1), (NEGATIVE[0], 0))]
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (tmp_path / "test.tsv").write_text("sentence\tlabel\nok .\t1\n")
    (tmp_path / "extra.tsv").write_text("sentence\nit was fine.\nit was dull.\n")
    task = load_task_spec({"name": "sst2", "data_dir": str(tmp_path), "unlabeled": "extra.tsv"}, tmp_path)
    assert [(e["text_a"], e.label) for e in task.unlabeled] == [("it was fine.", None), ("it was dull.", None)]
    custom = load_task_spec({"name": "mine", "train": "train.tsv", "test": "train.tsv", "labels": [0, 1],
                             "fields": {"text_a": "sentence"}, "unlabeled": "extra.tsv"}, tmp_path)
    assert draw_pool(custom, [], [], 13) == task.unlabeled


def test_an_unlabelled_file_that_is_not_there_is_named_as_the_task_s_unlabeled(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\nit was fine.\t1\n")
    (tmp_path / "test.tsv").write_text("sentence\tlabel\nok .\t1\n")
    with pytest.raises(DataError, match=r"task.unlabeled: 'extra.tsv': .*does not exist; give a file of unlabelled"):
        load_task_spec({"name": "sst2", "data_dir": str(tmp_path), "unlabeled": "extra.tsv"}, tmp_path)


def test_a_task_with_fixed_files_draws_no_pool_from_its_training_file_and_is_told_to_give_a_file():
    task = toy_task(unlabeled=10, fixed_split=True, dev=list(TRAIN[:4]))
    with pytest.raises(DataError, match=r"unlabeled: 10 draws from the training file, but it holds no example "
                                        r"beside the split .*unlabeled: FILE"):
        draw_pool(task, task.train, task.dev, 13)


def test_a_distilled_pattern_the_entry_does_not_have_is_refused_before_any_run(tiny_causal_lm):
    spec = MethodSpec("manual", train=True, train_config=FAST, ensemble="mean", distill={"pattern": 2})
    with pytest.raises(ValueError, match=r"distill: pattern=2 but the entry has 2 prompts; give pattern: 0 to 1"):
        Experiment(tiny_causal_lm, toy_task(unlabeled=8), [spec], PROMPTS, PROTOCOL)
    with pytest.raises(ValueError, match=r"iPET labels each pattern's examples .*at least two patterns"):
        Experiment(tiny_causal_lm, toy_task(unlabeled=8), recipe()[1:], PROMPTS[:1], PROTOCOL)


# ------------------------------------------------------------------------------------ planning
def test_ipet_generations_learn_from_the_other_patterns_models_of_the_generation_before(tiny_causal_lm):
    runs = Experiment(tiny_causal_lm, toy_task(unlabeled=24), recipe(), PROMPTS, PROTOCOL).plan()
    pets = [r for r in runs if r.settings["label"] == "PET"]
    # generation 0 is PET: the manual entry's runs, planned for both entries and run once
    assert len(pets) == 4 and [r.run_id for r in pets[:2]] == [r.run_id for r in pets[2:]]
    previous = pets[:2]
    for generation, size in ((1, 16), (2, 32)):
        gen = [r for r in runs if r.settings.get("generation") == generation]
        assert [r.settings["label"] for r in gen] == [f"iPET gen {generation} ({size} examples)"] * 2
        assert [r.needs for r in gen] == [(previous[1].run_id,), (previous[0].run_id,)]  # the other pattern's
        assert all(r.context["pool"] for r in previous)  # every labeller scores the unlabelled examples
        previous = gen
    distilled = [r for r in runs if r.context.get("stage") == "distill"]
    assert [sorted(r.needs) for r in distilled] == [sorted(r.run_id for r in pets[:2]),
                                                   sorted(r.run_id for r in previous)]
    assert not any(r.context.get("pool") for r in distilled)  # nothing learns from the final models
    assert runs[-1].settings["distill"]["temperature"] == 2.0 and runs[-1].template == PATTERNS[0]


def test_ipet_s_labelling_ensemble_is_a_share_of_the_other_patterns(tiny_causal_lm):
    prompts = PROMPTS + [("{text_a} All in all, {mask}.", VERBALIZER)]
    for share, labellers in ((0.25, 1), (0.5, 1), (1.0, 2)):
        runs = Experiment(tiny_causal_lm, toy_task(unlabeled=24), recipe(ensemble_share=share)[1:], prompts,
                          PROTOCOL).plan()
        gen = [r for r in runs if r.settings.get("generation") == 1]
        assert len(gen) == 3 and all(len(r.needs) == labellers for r in gen)
        assert all(r.needs[0] not in {p.run_id for p in runs if p.template == r.template} for r in gen)


def test_without_distill_the_plan_is_the_one_it_was_and_scores_no_unlabelled_examples(tiny_causal_lm):
    plain = [MethodSpec("manual", train=True, train_config=FAST, ensemble="mean")]
    with_pool = Experiment(tiny_causal_lm, toy_task(unlabeled=24), plain, PROMPTS, PROTOCOL).plan()
    without = Experiment(tiny_causal_lm, toy_task(), plain, PROMPTS, PROTOCOL).plan()
    assert [r.run_id for r in with_pool] == [r.run_id for r in without] and len(without) == 2
    assert not any(r.context.get("pool") or r.needs for r in with_pool)


@pytest.mark.parametrize("entry, distill, steps", [
    ({"max_steps": 2, "batch_size": 4}, True, 6),              # one pass over 24 unlabelled examples, 4 a step
    ({"max_steps": 2, "batch_size": 5}, True, 5),              # a last, shorter batch counts as a step
    ({"max_steps": 9, "batch_size": 4}, True, 9),              # never fewer steps than the entry's
    ({"max_steps": 2, "batch_size": 4}, {"max_steps": 3}, 3),  # distill.max_steps wins
])
def test_the_final_model_sees_every_unlabelled_example_unless_told_its_steps(tiny_causal_lm, entry, distill, steps):
    for spec in (MethodSpec("manual", train=True, train_config={"lr": 1e-3, **entry}, ensemble="mean",
                            distill=distill),
                 MethodSpec("ipet", train_config={"lr": 1e-3, **entry}, params={"generations": 1},
                            distill=None if distill is True else distill)):
        runs = Experiment(tiny_causal_lm, toy_task(unlabeled=24), [spec], PROMPTS, PROTOCOL).plan()
        [final] = [r for r in runs if r.context.get("stage") == "distill"]
        assert final.settings["train_config"]["max_steps"] == steps
        assert all(r.settings["train_config"]["max_steps"] == entry["max_steps"] for r in runs if r is not final)


@pytest.mark.parametrize("name", ["sst2_pet", "sst2_compare"])
def test_committed_configs_plan_the_run_ids_their_committed_results_hold(name):
    """Run ids depend only on what a run's result depends on: the recipe's settings leave every other
    config's ids as they were."""
    committed = {json.loads(line)["run_id"] for line in (ROOT / "experiments" / "results" / name /
                                                         "results.jsonl").read_text().splitlines() if line}
    planned = set()
    for cfg in load_configs(ROOT / "experiments" / f"{name}.yaml"):
        task = Classification(Task("sst2", ("0", "1"), ("text_a",), [], []))
        planned |= {r.run_id for r in task.plan(cfg.methods, cfg.prompts, cfg.protocol, cfg.model, torch.float32,
                                                cfg.max_length)}
    assert planned and planned <= committed


# ------------------------------------------------------------------------------------ the objective
def test_the_distillation_objective_is_pet_s_kl_at_a_temperature():
    scores, teacher = torch.tensor([[0.2, -1.0], [1.5, 0.3]]), torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    targets = (teacher / 2).softmax(-1)
    expected = (targets * (targets.log() - (scores / 2).log_softmax(-1))).sum(-1).mean() * 4
    assert torch.allclose(objective(scores, torch.tensor([-1, -1]), targets, 2.0), expected)
    one_hot = torch.eye(2)[[1, 0]]
    assert torch.allclose(objective(scores, torch.tensor([1, 0]), one_hot, 1.0), objective(scores, torch.tensor([1, 0])))


def test_the_training_loop_learns_soft_labels_of_unlabelled_examples(make_tiny_lm):
    lm = make_tiny_lm("llama")
    method = build_method("manual", lm, PATTERNS[0], Verbalizer(VERBALIZER), labels=("0", "1"))
    data = method.encode([Example({"text_a": f"{s} was fine."}) for s in SUBJECTS])
    data.targets, data.temperature = torch.tensor([[0.9, 0.1]]).repeat(len(SUBJECTS), 1), 2.0
    before = method.predict_scores(data).div(2).softmax(-1)[:, 0].mean()
    train(method, data, None, TrainConfig(lr=1e-2, tune_lm=True, max_steps=6, batch_size=13), progress=False)
    assert method.predict_scores(data, cached=False).div(2).softmax(-1)[:, 0].mean() > before


# ------------------------------------------------------------------------------------ the recipe
def test_distilled_and_ipet_records_say_what_they_learned_from(finished):
    records, _ = finished
    [distilled] = labelled(records, "PET distilled (2 patterns, 24 unlabelled)")
    pets = labelled(records, "PET")
    assert len(pets) == 2 and all(r["unlabeled_scored"] == 24 for r in pets)
    assert sorted(distilled["learned_from"]) == sorted(r["run_id"] for r in pets)
    assert (distilled["stage"], distilled["generation"], distilled["patterns"], distilled["unlabeled"],
            distilled["n_train"]) == ("distilled", 0, 2, 24, 24)
    # the training set grows by the factor each generation (8 K-shot examples, growth 2): 16, then 32
    for generation, size in ((1, 16), (2, 32)):
        gen = labelled(records, f"iPET gen {generation} ({size} examples)")
        assert len(gen) == 2 and all((r["generation"], r["n_train"], r["stage"]) == (generation, size, "generation")
                                     for r in gen)
        assert labelled(records, f"iPET gen {generation} ({size} examples) ensemble (mean)")
    [final] = labelled(records, "iPET (2 generations, 2 patterns, 24 unlabelled)")
    assert (final["generation"], final["n_train"]) == (2, 24)
    assert final["recipe_seconds"] > final["seconds"] and len(final["recipe_runs"]) == 6  # every earlier run


def test_the_distilled_model_is_saved_and_loads_with_its_tuned_lm(finished, make_tiny_lm):
    records, out = finished
    [record] = labelled(records, "PET distilled (2 patterns, 24 unlabelled)")
    method = load_prompt(out / record["saved_model"], make_tiny_lm("llama"))
    saved = ResultsStore(out).load_predictions(record["run_id"])
    scores = method.predict_scores(method.encode(toy_task().test))
    assert torch.allclose(scores, torch.tensor(saved["test"]), atol=1e-5)


def killed_then_resumed(monkeypatch, make_tiny_lm, out, specs, killed_at) -> tuple[list[str], list[dict]]:
    """The labels of the runs executed when a recipe is killed at the first run ``killed_at`` is true of and
    run again in the same folder (one list: every run in the order executed), and the second run's records."""
    original, executed = RunExecutor.execute, []

    def execute(self, run, *args, **kwargs):
        if killed_at is not None and killed_at(run):
            raise KeyboardInterrupt
        executed.append(run.settings["label"])
        return original(self, run, *args, **kwargs)

    monkeypatch.setattr(RunExecutor, "execute", execute)
    task, lm = toy_task(unlabeled=24), make_tiny_lm("llama")
    with pytest.raises(KeyboardInterrupt):
        Experiment(lm, task, specs, PROMPTS, PROTOCOL, output_dir=out).run(progress=False)
    killed_at = None
    records = Experiment(lm, task, specs, PROMPTS, PROTOCOL, output_dir=out).run(progress=False)
    return executed, records


def test_a_kill_between_stages_loses_nothing(tmp_path, make_tiny_lm, monkeypatch, finished):
    """Killed before its distilled models, a run resumes with them alone, from the saved scores."""
    executed, records = killed_then_resumed(monkeypatch, make_tiny_lm, tmp_path, recipe()[:1],
                                            lambda run: run.context.get("stage") == "distill")
    assert executed[:2] == ["PET", "PET"]  # before the kill
    assert executed[2:] == ["PET distilled (2 patterns, 24 unlabelled)"]
    [resumed] = labelled(records, "PET distilled (2 patterns, 24 unlabelled)")
    [uninterrupted] = labelled(finished[0], "PET distilled (2 patterns, 24 unlabelled)")
    assert resumed["run_id"] == uninterrupted["run_id"] and resumed["test"] == uninterrupted["test"]


def test_a_kill_between_ipet_generations_resumes_with_the_later_ones_alone(tmp_path, make_tiny_lm, monkeypatch,
                                                                          finished):
    executed, records = killed_then_resumed(monkeypatch, make_tiny_lm, tmp_path, recipe()[1:],
                                            lambda run: run.context.get("generation") == 2)
    assert executed[:4] == ["PET", "PET", "iPET gen 1 (16 examples)", "iPET gen 1 (16 examples)"]  # before the kill
    assert executed[4:] == ["iPET gen 2 (32 examples)"] * 2 + ["iPET (2 generations, 2 patterns, 24 unlabelled)"]
    final = {r["label"]: r for r in records}["iPET (2 generations, 2 patterns, 24 unlabelled)"]
    [uninterrupted] = labelled(finished[0], "iPET (2 generations, 2 patterns, 24 unlabelled)")
    assert final["run_id"] == uninterrupted["run_id"] and final["test"] == uninterrupted["test"]


def test_a_run_recorded_without_pool_scores_is_named_with_what_to_do(tmp_path, make_tiny_lm, finished):
    _, out = finished
    store = ResultsStore(tmp_path)
    for record in ResultsStore(out).records():
        if record["label"] == "PET":
            store.append(record)
            saved = ResultsStore(out).load_predictions(record["run_id"])
            store.save_predictions(record["run_id"], {k: v for k, v in saved.items() if k != POOL_KEY})
    exp = Experiment(make_tiny_lm("llama"), toy_task(unlabeled=24), recipe()[:1], PROMPTS, PROTOCOL,
                     output_dir=tmp_path)
    with pytest.raises(RecipeError, match=r"recorded without scores on the unlabelled examples.*delete its line"):
        exp.run(progress=False)

