"""Multiple-choice tasks: each choice scored by the LM through the template at {mask}, as a hand
computation gives it (causal and masked LMs, summed and length-normalised), trained by PET and the
learned prompts, and run end to end from COPA-style JSONL files by a config."""

import json

import pytest
import torch

from prompting.methods.choices import ChoiceVerbalizer, make_verbalizer
from prompting.core.data import Example
from prompting.methods import build_method
from prompting.core.settings import TrainConfig
from prompting.core.template import Template
from prompting.training.loop import train
from prompting.core.verbalizer import Verbalizer, VerbalizerError

TEMPLATE = "{premise} What was the {question}? {mask}"
CHOICES = {"0": ["{choice1}"], "1": ["{choice2}"]}
EXAMPLES = [
    Example({"premise": "The movie ended.", "question": "effect", "choice1": "We went home.",
             "choice2": "The plot was a long and boring story about nothing."}, "0"),
    Example({"premise": "I laughed.", "question": "cause", "choice1": "The film was funny.",
             "choice2": "It rained."}, "0"),
    Example({"premise": "The cast was great.", "question": "effect", "choice1": "It was bad.",
             "choice2": "I liked the acting very much and so did my friends."}, "1"),
]


def hand_scores(lm, example: Example, mean: bool) -> list[float]:
    """Each choice's log-likelihood after the prompt, from one plain forward pass per choice."""
    encoder = Template(TEMPLATE).encoder(lm.tokenizer, lm.causal, 512)
    lead = " " if encoder.mask_leading_space else ""
    out = []
    for field in ("choice1", "choice2"):
        ids = lm.tokenizer(lead + example[field], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            if lm.causal:
                context = encoder.encode([example.fields])[0].input_ids
                logits = lm.model(torch.tensor([context + ids])).logits[0].log_softmax(-1)
                token = [logits[len(context) - 1 + j, t].item() for j, t in enumerate(ids)]
            else:
                enc = encoder.encode([example.fields], n_mask=len(ids))[0]
                logits = lm.model(torch.tensor([enc.input_ids])).logits[0].log_softmax(-1)
                token = [logits[p, t].item() for p, t in zip(enc.mask_positions, ids)]
        out.append(sum(token) / len(token) if mean else sum(token))
    return out


@pytest.mark.parametrize("score", ["sum", "mean"])
@pytest.mark.parametrize("lm_name", ["tiny_causal_lm", "tiny_roberta_lm"])
def test_each_choice_scores_its_log_likelihood_at_the_mask(lm_name, score, request):
    lm = request.getfixturevalue(lm_name)
    method = build_method("manual", lm, TEMPLATE, ChoiceVerbalizer(CHOICES, score), labels=["0", "1"])
    # choices of different lengths in one batch: padding must not change any score
    scores = method.predict_scores(method.encode(EXAMPLES), batch_size=3)
    expected = torch.tensor([hand_scores(lm, ex, score == "mean") for ex in EXAMPLES])
    assert torch.allclose(scores, expected, atol=1e-4)
    one_by_one = torch.cat([method.predict_scores(method.encode([ex]), batch_size=1) for ex in EXAMPLES])
    assert torch.allclose(scores, one_by_one, atol=1e-4)


def test_a_verbalizer_of_field_slots_is_a_choice_verbalizer_and_mixed_words_are_refused():
    assert isinstance(make_verbalizer(CHOICES), ChoiceVerbalizer)
    assert type(make_verbalizer({"0": ["bad"], "1": ["good"]})) is Verbalizer
    with pytest.raises(VerbalizerError, match="in a multiple-choice verbalizer every label has exactly one word"):
        make_verbalizer({"0": ["{choice1}"], "1": ["good"]})
    with pytest.raises(VerbalizerError, match="names a field the examples do not have"):
        ChoiceVerbalizer({"0": ["{choice1}"], "1": ["{option2}"]}).check_fields(["premise", "choice1", "choice2"])


def test_autoprompt_refuses_a_multiple_choice_verbalizer(tiny_causal_lm):
    with pytest.raises(ValueError, match="multiple-choice verbalizer .* is not supported"):
        build_method("autoprompt", tiny_causal_lm, "{premise} {trigger:2} {mask}", ChoiceVerbalizer(CHOICES),
                     labels=["0", "1"])


@pytest.mark.parametrize("name, params, tune_lm", [("manual", {}, True), ("soft", {"prompt_tokens": 2}, False),
                                                   ("prefix", {"prefix_length": 2}, False)])
def test_pet_and_learned_prompts_train_on_the_choices(make_tiny_lm, name, params, tune_lm):
    lm = make_tiny_lm("llama")
    method = build_method(name, lm, TEMPLATE, ChoiceVerbalizer(CHOICES), labels=["0", "1"], **params)
    data = method.encode(EXAMPLES * 2)
    before = torch.nn.functional.cross_entropy(method.predict_scores(data), data.labels).item()
    config = TrainConfig(lr=1e-2 if tune_lm else 0.1, tune_lm=tune_lm, max_steps=12, batch_size=6, seed=0)
    train(method, data, None, config, progress=False)
    after = torch.nn.functional.cross_entropy(method.predict_scores(data), data.labels).item()
    assert after < before


COPA_ROWS = [
    ("The man slid the razor across his chin.", "effect", "His beard grew.", "His stubble disappeared.", 1),
    ("The chandelier shattered on the floor.", "cause", "It dropped from the ceiling.", "Its lights flickered.", 0),
    ("The girl was tired.", "effect", "She went to bed.", "She ran a race.", 0),
    ("The boy cried.", "cause", "He laughed at a joke.", "He fell off his bike.", 1),
]


def copa_files(folder) -> None:
    """FewGLUE COPA's format: premise, choice1, choice2, question, label (0 or 1), idx."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", COPA_ROWS * 2), ("dev32", COPA_ROWS), ("val", COPA_ROWS[::-1])):
        lines = [json.dumps({"premise": p, "question": q, "choice1": a, "choice2": b, "label": y, "idx": i})
                 for i, (p, q, a, b, y) in enumerate(rows)]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")


def test_copa_style_jsonl_runs_zero_shot_and_pet_from_a_config(tiny_llama_dir, tmp_path, capsys):
    from prompting.cli import main
    from prompting.experiment.results import ResultsStore

    copa_files(tmp_path / "COPA")
    config = tmp_path / "copa.yaml"
    config.write_text(f"""
name: copa
model: {tiny_llama_dir}
task: {{name: copa, train: COPA/train.jsonl, dev: COPA/dev32.jsonl, test: COPA/val.jsonl, protocol: fixed,
        fields: {{premise: premise, question: question}}, choices: [choice1, choice2], choice_score: mean}}
templates: {{patterns: ["{{premise}} What was the {{question}}? {{mask}}"]}}
seeds: {{train_seeds: [1]}}
methods:
  - {{name: manual, train: false}}
  - {{name: manual, train: true, max_steps: 2, batch_size: 4}}
""")
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out"), "-q"]) == 0
    records = ResultsStore(tmp_path / "out").records()
    assert [r["train"] for r in records] == [False, True]
    for r in records:
        assert r["verbalizer"] == {"0": ["{choice1}"], "1": ["{choice2}"]} and r["choice_score"] == "mean"
        assert r["protocol"] == "fixed" and r["n_test"] == 4 and 0 <= r["test"]["accuracy"] <= 1
    saved = ResultsStore(tmp_path / "out").load_predictions(records[0]["run_id"])
    assert saved["test_gold"] == ["1", "0", "0", "1"] and len(saved["test"][0]) == 2
    assert "content_free" not in saved  # each example's choices are its label words: no content-free input
    assert "protocol fixed" in capsys.readouterr().err


@pytest.mark.parametrize("entry, named", [
    ("{name: manual, train: false, calibration: contextual}", "calibration=['contextual']"),
    ("{name: manual, train: false, demonstrations: {k: 1}}", "demonstrations"),
    ("{name: icl, k: 1}", "the icl method")])
def test_calibration_and_demonstrations_are_refused_for_a_multiple_choice_task(tiny_llama_dir, tmp_path, capsys,
                                                                               entry, named):
    from prompting.cli import main

    copa_files(tmp_path / "COPA")
    config = tmp_path / "copa.yaml"
    config.write_text(f"""
model: {tiny_llama_dir}
task: {{name: copa, train: COPA/train.jsonl, test: COPA/val.jsonl, fields: {{premise: premise, question: question}},
        choices: [choice1, choice2]}}
templates: {{patterns: ["{{premise}} What was the {{question}}? {{mask}}"]}}
methods: [{entry}]
""")
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"{named} is not valid with a multiple-choice verbalizer" in err, err
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_a_saved_multiple_choice_prompt_loads_with_its_choice_score(make_tiny_lm, tmp_path):
    from prompting.methods import load_prompt

    lm = make_tiny_lm("llama")
    method = build_method("soft", lm, TEMPLATE, ChoiceVerbalizer(CHOICES, "mean"), labels=["0", "1"], prompt_tokens=2)
    method.save(tmp_path / "prompt")
    loaded = load_prompt(tmp_path / "prompt", lm)
    assert isinstance(loaded.verbalizer, ChoiceVerbalizer) and loaded.verbalizer.score == "mean"
    assert torch.allclose(loaded.predict_scores(loaded.encode(EXAMPLES)), method.predict_scores(method.encode(EXAMPLES)))
