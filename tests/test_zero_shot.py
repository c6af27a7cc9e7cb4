"""Zero-shot evaluation: every pattern x verbalizer, scored once per template, table sorted by accuracy."""

from __future__ import annotations

import pytest
import torch

from prompting.core.data import Example, Task
from prompting.experiment.harness import Experiment, MethodSpec, Protocol
from prompting.methods import ManualPrompt
from prompting.methods.scores import SCORES, score_key
from prompting.reporting.tables import zero_shot_table
from prompting.core.verbalizer import Verbalizer

POS = ["the movie was great and fun", "a good film with a lovely story", "the acting was brilliant",
       "it was wonderful", "the music was nice and the ending funny", "this film is fine"]
NEG = ["the movie was terrible and dull", "a bad film with a boring story", "the acting was awful",
       "it was poor", "the music was sad and the ending slow", "this film is weak"]


def toy_task() -> Task:
    train = [Example({"text_a": t}, "1") for t in POS] + [Example({"text_a": t}, "0") for t in NEG]
    test = [Example({"text_a": t + " indeed"}, "1") for t in POS] + \
           [Example({"text_a": t + " indeed"}, "0") for t in NEG]
    return Task("toy", ("0", "1"), ("text_a",), train, test)


PROMPTS = [(t, v) for t in ("{text_a} It was {mask}.", "Review: {text_a}\nSentiment: {mask}")
           for v in ({0: ["bad"], 1: ["good"]}, {0: ["terrible", "awful"], 1: ["great", "greatest"]})]


@pytest.mark.parametrize("fixture", ["tiny_causal_lm", "tiny_bert_lm"])
def test_shared_pass_scores_equal_scoring_each_verbalizer_alone(fixture, request, tmp_path):
    lm = request.getfixturevalue(fixture)
    task = toy_task()
    experiment = Experiment(lm, task, [MethodSpec("manual", train=False)], PROMPTS,
                            Protocol(k=2, data_seeds=[13]), output_dir=tmp_path)
    records = experiment.run(progress=False)
    assert len(records) == len(PROMPTS)
    for template, verbalizer in PROMPTS:
        alone = ManualPrompt(lm, template, Verbalizer(verbalizer), labels=task.labels)
        data = alone.encode(task.test)
        expected = alone.predict_scores(data, batch_size=5, cached=False)
        kept = SCORES.get(score_key(alone, data), lambda: pytest.fail(f"{template!r} {verbalizer} was not scored"))
        assert torch.allclose(kept, expected, atol=1e-5), (template, verbalizer)


def test_zero_shot_table_lists_each_prompt_once_best_first():
    records = [
        {"template": "a {text_a} {mask}", "verbalizer": {"0": ["bad"], "1": ["good"]},
         "test": {"accuracy": 0.6, "macro_f1": 0.5}},
        {"template": "b {text_a} {mask}", "verbalizer": {"0": ["bad"], "1": ["good"]},
         "test": {"accuracy": 0.8, "macro_f1": 0.79}},
        {"template": "a {text_a} {mask}", "verbalizer": {"0": ["bad"], "1": ["good"]},
         "test": {"accuracy": 0.6, "macro_f1": 0.5}},  # the same prompt on another data seed
    ]
    table = zero_shot_table(records).splitlines()
    assert len(table) == 4
    assert "`b {text_a} {mask}`" in table[2] and "80.0" in table[2]
    assert "`a {text_a} {mask}`" in table[3] and "60.0" in table[3]
