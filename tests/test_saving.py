"""Saving and loading learned prompts, on tiny *randomly initialised* LMs (see conftest)."""

import json

import pytest
import torch
import transformers

from prompting.lm.model import LanguageModel
from prompting.core.data import Example
from prompting.methods import PromptMethod, build_method, load_prompt, save_prompt
from prompting.methods.saving import PromptLoadError
from prompting.core.verbalizer import Verbalizer

pytestmark = pytest.mark.filterwarnings("ignore:template .* causal LM predicts:UserWarning")

VERBALIZER = Verbalizer({"neg": ["bad", "terrible"], "pos": ["great", "greatest"]}, aggregate="max")
EXAMPLES = [Example({"text_a": t}, label) for t, label in [
    ("I loved every minute of this movie.", "pos"), ("Bad writing and a very bad ending.", "neg"),
    ("A small film with a big heart.", "pos"), ("Nobody in the theatre laughed.", "neg")]]
METHODS = {
    "soft": ("{text_a} It was {mask}.", {"prompt_tokens": 3, "init": "vocab"}),
    "ptuning": ("{soft:2} {text_a} {soft:2} It was {mask}.", {"encoder": "lstm", "hidden_size": 16}),
    "prefix": ("{text_a} It was {mask}.", {"prefix_length": 3, "prefix_hidden_size": 16}),
    "manual": ("{text_a} It was {mask}.", {}),
}


def trained_like(method):
    """Move every learned tensor away from its initial value, as training would."""
    with torch.no_grad():
        for p in method.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return method


@pytest.mark.parametrize("fixture", ["tiny_causal_lm", "tiny_roberta_lm"])
@pytest.mark.parametrize("name", list(METHODS))
def test_loaded_prompt_predicts_the_same_scores(name, fixture, request, tmp_path):
    lm = request.getfixturevalue(fixture)
    template, params = METHODS[name]
    torch.manual_seed(0)
    method = trained_like(build_method(name, lm, template, VERBALIZER, labels=["pos", "neg"], **params))
    before = method.predict_scores(method.encode(EXAMPLES))
    method.save(tmp_path / "prompt")
    loaded = PromptMethod.load(tmp_path / "prompt", lm)
    assert type(loaded) is type(method) and loaded.labels == ("pos", "neg")
    assert loaded.template == method.template and loaded.verbalizer == method.verbalizer
    torch.testing.assert_close(loaded.predict_scores(loaded.encode(EXAMPLES)), before, atol=1e-5, rtol=0)


def test_encoders_are_folded_into_their_output(tiny_causal_lm, tmp_path):
    torch.manual_seed(0)
    for name in ("ptuning", "prefix"):
        template, params = METHODS[name]
        method = trained_like(build_method(name, tiny_causal_lm, template, VERBALIZER, **params))
        save_prompt(method, tmp_path / name)
        meta = json.loads((tmp_path / name / "prompt.json").read_text())
        loaded = load_prompt(tmp_path / name, tiny_causal_lm)
        if name == "ptuning":
            assert meta["tensors"] == {"soft_prompt": {"shape": [4, 32], "dtype": "float32"}}
            assert loaded.prompt_encoder is None
            assert [n for n, _ in loaded.named_parameters()] == ["folded"]
        else:
            assert meta["tensors"]["prefix_keys"]["shape"] == [2, 2, 3, 8]  # layers, kv heads, length, head size
            assert not hasattr(loaded, "prefix_mlp")
            assert [n for n, _ in loaded.named_parameters()] == ["prefix"]


def test_prompt_json_says_what_was_saved(tiny_causal_lm, tmp_path):
    template, params = METHODS["ptuning"]
    method = build_method("ptuning", tiny_causal_lm, template, VERBALIZER, labels=["neg", "pos"], **params)
    save_prompt(method, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompt.json", "prompt.safetensors"]
    meta = json.loads((tmp_path / "prompt.json").read_text())
    assert meta["method"] == "ptuning" and meta["template"] == template
    assert meta["params"] == {"demonstrations": None, "encoder": "lstm", "hidden_size": 16, "residual": True}
    assert meta["verbalizer"] == {"neg": ["bad", "terrible"], "pos": ["great", "greatest"]}
    assert meta["aggregate"] == "max" and meta["labels"] == ["neg", "pos"]
    assert meta["model"]["name"] == "tiny-random-llama" and meta["model"]["hidden_size"] == 32


def other_llama(tokenizer, hidden_size: int, name: str) -> LanguageModel:
    config = transformers.LlamaConfig(hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=64, vocab_size=len(tokenizer),
                                      pad_token_id=tokenizer.pad_token_id, max_position_embeddings=128)
    torch.manual_seed(5)
    return LanguageModel(transformers.LlamaForCausalLM(config), tokenizer, name=name, device="cpu")


def test_another_model_is_refused_naming_both(tiny_causal_lm, bpe_tokenizer, tmp_path):
    template, params = METHODS["soft"]
    save_prompt(build_method("soft", tiny_causal_lm, template, VERBALIZER, **params), tmp_path)
    wider = other_llama(bpe_tokenizer, 48, "wide-llama")
    with pytest.raises(PromptLoadError, match="'tiny-random-llama' \\(hidden size 32\\).*'wide-llama' \\(hidden size 48\\)"):
        load_prompt(tmp_path, wider)
    same_shape = other_llama(bpe_tokenizer, 32, "renamed-llama")
    with pytest.raises(PromptLoadError, match="'tiny-random-llama', not 'renamed-llama'.*strict=False"):
        load_prompt(tmp_path, same_shape)
    with pytest.warns(UserWarning, match="weights of model 'renamed-llama' differ"):
        assert load_prompt(tmp_path, same_shape, strict=False).name == "soft"


def test_masked_prompt_on_a_causal_model_is_refused(tiny_bert_lm, tiny_causal_lm, tmp_path):
    save_prompt(build_method("prefix", tiny_bert_lm, "{text_a} It was {mask}.", VERBALIZER, prefix_length=2,
                             prefix_hidden_size=8), tmp_path)
    with pytest.raises(PromptLoadError, match="kind masked.*kind causal"):
        load_prompt(tmp_path, tiny_causal_lm, strict=False)


def test_missing_or_broken_prompt_folders(tiny_causal_lm, tmp_path):
    with pytest.raises(PromptLoadError, match="prompt.json is missing"):
        load_prompt(tmp_path, tiny_causal_lm)
    save_prompt(build_method("soft", tiny_causal_lm, "{text_a} {mask}", VERBALIZER, init="uniform"), tmp_path)
    (tmp_path / "prompt.json").write_text("{not json")
    with pytest.raises(PromptLoadError, match="not a valid prompt description"):
        load_prompt(tmp_path, tiny_causal_lm)


def test_loading_leaves_the_global_random_state_alone(tiny_causal_lm, tmp_path):
    template, params = METHODS["ptuning"]
    save_prompt(build_method("ptuning", tiny_causal_lm, template, VERBALIZER, **params), tmp_path)
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    load_prompt(tmp_path, tiny_causal_lm)
    assert torch.equal(torch.rand(3), expected)
