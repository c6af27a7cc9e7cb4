"""Export to PEFT's adapter format, on tiny *randomly initialised* causal LMs (see conftest).

Every exact case is checked the way a user would use the adapter: PEFT loads it onto a copy of the
base model, gets the token ids ``peft_input_ids`` gives (unpadded, and right-padded in one batch),
adds its own virtual tokens, and its label-word log-probabilities are compared with our method's
``forward`` on a left-padded batch.
"""

import copy
import json

import pytest
import torch
from peft import PeftConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file

from prompting.core.data import Example
from prompting.methods.export import INFO_FILE, PeftExportError, export_peft, peft_input_ids
from prompting.methods import PrefixTuning, PromptMethod, PTuning, SoftPrompt
from prompting.training.loop import TrainConfig, train
from prompting.core.verbalizer import Verbalizer

pytestmark = pytest.mark.filterwarnings("ignore:template .* causal LM predicts:UserWarning")

LABELS = ["neg", "pos"]
# " horrible" is three tokens: multi-token words must come out the same too
VERBALIZER = Verbalizer({"neg": ["bad", "horrible"], "pos": ["great"]})
EXAMPLES = [Example({"text_a": t}, label) for t, label in [
    ("I loved every minute of this movie and would watch it again.", "pos"), ("Bad writing.", "neg"),
    ("A small film with a big heart and a lot of charm.", "pos"), ("Nobody laughed.", "neg")]]


def our_scores(method):
    """Label scores from the method's own forward pass, all examples in one left-padded batch."""
    batch = next(method.batches(method.encode(EXAMPLES), batch_size=len(EXAMPLES)))
    with torch.no_grad():
        return method.eval()(batch)


def peft_scores(model, method, right_padded: bool):
    """Label scores from a PEFT model given ``peft_input_ids``: teacher-forced log-probabilities of
    every label word after the ids, one example at a time or right-padded in one batch."""
    ids = peft_input_ids(method, EXAMPLES)
    columns = []
    for word in method.words.word_ids:
        rows = [row + list(word[:-1]) for row in ids]
        groups = [rows] if right_padded else [[row] for row in rows]
        scores = []
        for group in groups:
            width = max(map(len, group))
            x = torch.tensor([row + [0] * (width - len(row)) for row in group])
            mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in group])
            with torch.no_grad():
                logits = model(input_ids=x, attention_mask=mask).logits.float()
            virtual = logits.shape[1] - width  # prompt tuning returns logits for its virtual tokens too
            for i, row in enumerate(group):
                at = virtual + len(row) - len(word) + torch.arange(len(word))
                scores.append(logits[i, at].log_softmax(-1)[torch.arange(len(word)), torch.tensor(word)].sum())
        columns.append(torch.stack(scores))
    return method.words.aggregate_scores(torch.stack(columns, 1))


def load(method, directory):
    model = copy.deepcopy(method.lm.model)  # PEFT freezes the base model's weights: keep ours as they are
    return PeftModel.from_pretrained(model, str(directory)).eval()


def load_for_training(method, directory):
    """The adapter as PEFT builds it to train on (from_pretrained refuses is_trainable for prompt learning)."""
    config = PeftConfig.from_pretrained(str(directory))
    config.inference_mode = False
    model = get_peft_model(copy.deepcopy(method.lm.model), config)
    set_peft_model_state_dict(model, load_file(str(directory / "adapter_model.safetensors")))
    return model.eval()


def randomised(method):
    with torch.no_grad():
        for p in method.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return method


CASES = {
    "soft": lambda lm: SoftPrompt(lm, "Review: {text_a} Sentiment: {mask}", VERBALIZER, LABELS,
                                  prompt_tokens=4, init="uniform"),
    "ptuning": lambda lm: PTuning(lm, '{soft:3}{soft:"Review:"} {text_a} It was {mask}', VERBALIZER, LABELS,
                                  hidden_size=16),
    "prefix": lambda lm: PrefixTuning(lm, "Review: {text_a} It was {mask}", VERBALIZER, LABELS,
                                      prefix_length=3, prefix_hidden_size=16),
}
EXACT = [("tiny_causal_lm", "soft"), ("tiny_causal_lm", "ptuning"), ("tiny_causal_lm", "prefix"),
         ("tiny_gpt2_lm", "soft"), ("tiny_gpt2_lm", "ptuning")]


@pytest.mark.parametrize("fixture,name", EXACT)
def test_peft_scores_the_labels_as_the_method_does(fixture, name, request, tmp_path):
    torch.manual_seed(0)
    method = randomised(CASES[name](request.getfixturevalue(fixture)))
    export_peft(method, tmp_path)
    ours = our_scores(method)
    model = load(method, tmp_path)
    torch.testing.assert_close(peft_scores(model, method, right_padded=False), ours, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(peft_scores(model, method, right_padded=True), ours, rtol=1e-4, atol=1e-4)
    # built for further training, PEFT adds no encoder in front of the exported vectors
    trainable = load_for_training(method, tmp_path)
    torch.testing.assert_close(peft_scores(trainable, method, right_padded=False), ours, rtol=1e-4, atol=1e-4)


def test_a_trained_ptuning_prompt_exports_what_it_learned(make_tiny_lm, tmp_path):
    lm = make_tiny_lm("llama", seed=3)
    torch.manual_seed(0)
    method = PTuning(lm, "{soft:4}{text_a} It was {mask}", VERBALIZER, LABELS, encoder="lstm", hidden_size=16)
    data = method.encode(EXAMPLES)
    before = our_scores(method)
    train(method, data, None, TrainConfig(lr=3e-2, max_steps=4, batch_size=2, seed=1), progress=False)
    after = our_scores(method)
    assert not torch.allclose(before, after, atol=1e-3)
    export_peft(method, tmp_path)
    torch.testing.assert_close(peft_scores(load(method, tmp_path), method, right_padded=True), after,
                               rtol=1e-4, atol=1e-4)


def test_the_adapter_folder_says_what_it_holds(tiny_causal_lm, tmp_path):
    """Our BOS becomes PEFT's first virtual token: the adapter has one more than our soft tokens,
    and the input it expects is the template's text after them, without special tokens."""
    method = CASES["soft"](tiny_causal_lm)
    export_peft(method, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["task_type"] == "CAUSAL_LM"
    assert config["num_virtual_tokens"] == 1 + 4 and config["token_dim"] == 32
    weights = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert list(weights) == ["prompt_embeddings"] and weights["prompt_embeddings"].shape == (5, 32)
    torch.testing.assert_close(weights["prompt_embeddings"][0], tiny_causal_lm.embeddings.weight[1])  # <s>
    torch.testing.assert_close(weights["prompt_embeddings"][1:], method.soft_prompt.detach())
    tokenizer = tiny_causal_lm.tokenizer
    expected = [tokenizer(f"Review: {e['text_a']} Sentiment:", add_special_tokens=False)["input_ids"]
                for e in EXAMPLES]
    assert peft_input_ids(method, EXAMPLES) == expected
    assert json.loads((tmp_path / INFO_FILE).read_text())["template"] == method.template.text


def test_prefix_keys_are_rotated_to_peft_positions_on_a_rope_model(tiny_causal_lm, tmp_path):
    """Values are exported as they are; keys are rotated by the prefix length (PEFT numbers the input
    from there), which is why the scores above agree. Layout: per token, layer, keys then values."""
    torch.manual_seed(0)
    method = CASES["prefix"](tiny_causal_lm)
    export_peft(method, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    layers, kv_heads, head_dim = tiny_causal_lm.kv_shape
    assert config["peft_type"] == "PREFIX_TUNING" and config["prefix_projection"] is False
    assert (config["num_virtual_tokens"], config["num_layers"]) == (3, layers)
    assert (config["num_attention_heads"], config["token_dim"]) == (kv_heads, kv_heads * head_dim)
    cache = load(method, tmp_path).get_prompt(batch_size=1)
    keys, values = method.prefix_key_values()
    for layer in range(layers):
        torch.testing.assert_close(cache.layers[layer].values[0], values[layer].detach())
        assert not torch.allclose(cache.layers[layer].keys[0], keys[layer].detach(), atol=1e-3)
        # a rotation keeps every key's length
        torch.testing.assert_close(cache.layers[layer].keys[0].norm(dim=-1), keys[layer].detach().norm(dim=-1))


def test_prefix_on_absolute_positions_is_refused_or_exported_as_is(tiny_gpt2_lm, tmp_path):
    """GPT-2 adds position vectors to its input: under PEFT the input is numbered from the prefix
    length, ours from 0, and no prefix can undo that. strict=False exports the tensors as they are;
    then only the numbering differs: the same cache with our positions gives our scores."""
    torch.manual_seed(0)
    method = CASES["prefix"](tiny_gpt2_lm)
    with pytest.raises(PeftExportError, match="absolute position embeddings"):
        export_peft(method, tmp_path)
    with pytest.warns(UserWarning, match="PEFT's scores will differ"):
        export_peft(method, tmp_path, strict=False)
    model = load(method, tmp_path)
    ours = our_scores(method)
    assert not torch.allclose(peft_scores(model, method, right_padded=False), ours, atol=1e-2)
    ids = torch.tensor([peft_input_ids(method, EXAMPLES[:1])[0]])
    (word,) = method.words.word_ids[-1]  # pos: [" great"], one token
    with torch.no_grad():
        logits = model.get_base_model()(input_ids=ids, attention_mask=torch.ones(1, 3 + ids.shape[1]),
                                        position_ids=torch.arange(ids.shape[1]).unsqueeze(0),
                                        cache=model.get_prompt(batch_size=1)).logits
    torch.testing.assert_close(logits[0, -1].log_softmax(-1)[word], ours[0, LABELS.index("pos")],
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("template", ["Review: {soft:4} {text_a} It was {mask}", "{soft:2} {text_a} {soft:2} {mask}"])
def test_soft_tokens_after_the_start_are_refused(template, tiny_causal_lm, tmp_path):
    method = PTuning(tiny_causal_lm, template, VERBALIZER, LABELS, hidden_size=16)
    with pytest.raises(PeftExportError, match="before the input"):
        export_peft(method, tmp_path)
    assert not (tmp_path / "adapter_config.json").exists()


def test_what_peft_cannot_hold_is_refused(tiny_causal_lm, tiny_bert_lm, tmp_path):
    with pytest.raises(PeftExportError, match="learns no continuous prompt"):
        export_peft(PromptMethod(tiny_causal_lm, "{text_a} It was {mask}", VERBALIZER, LABELS), tmp_path)
    with pytest.raises(PeftExportError, match="masked LM"):
        export_peft(SoftPrompt(tiny_bert_lm, "{text_a} It was {mask}", VERBALIZER, LABELS), tmp_path)
