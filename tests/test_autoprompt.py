"""AutoPrompt on tiny *randomly initialised* LMs (causal Llama + BPE, masked BERT + WordPiece).

The models are random, so these tests check the search machinery, not that it finds good prompts.
"""

import pytest
import torch
import torch.nn.functional as F

from prompting.core.data import Example
from prompting.methods import AutoPrompt, PromptMethod, build_method, hotflip_candidates
from prompting.methods import autoprompt as autoprompt_module
from prompting.methods.triggers import gradient_after_shared_text, score_after_shared_text
from prompting.core.template import Template
from prompting.training.loop import TrainConfig, TrainResult, dev_score, train
from prompting.core.verbalizer import Verbalizer

pytestmark = pytest.mark.filterwarnings("ignore:template .* causal LM predicts:UserWarning")

WORDS = ["great", "bad", "fun", "dull", "nice", "awful", "good", "boring", "lovely", "weak", "funny", "poor"]
EXAMPLES = [Example({"text_a": f"The {s} was {w}."}, str(i % 2))
            for i, (s, w) in enumerate(zip(["movie", "film", "plot", "story"] * 3, WORDS))]
TEMPLATE = "{text_a} {trigger:3} {mask}"
SINGLE = Verbalizer({0: ["bad"], 1: ["good"]})
MULTI = Verbalizer({0: ["terrible", "horrible"], 1: ["great", "greatest"]})  # multi-token words


def make(lm, verbalizer=SINGLE, template=TEMPLATE, **params):
    params = {"iterations": 3, "num_candidates": 5, **params}
    return AutoPrompt(lm, template, verbalizer, labels=["0", "1"], **params)


@pytest.fixture(params=["tiny_causal_lm", "tiny_bert_lm"])
def lm(request):
    return request.getfixturevalue(request.param)


def test_hotflip_candidates_rank_by_minus_gradient_dot_embedding():
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [1.0, 1.0]])
    grad = torch.tensor([1.0, 2.0])
    # e · grad = [1, 2, -1, -2, 3]: the loss falls most for token 3, then token 2
    assert hotflip_candidates(grad, embeddings, 2).tolist() == [3, 2]
    assert hotflip_candidates(grad, embeddings, 2, increase_loss=True).tolist() == [4, 1]
    allowed = torch.tensor([True, True, True, False, True])
    assert hotflip_candidates(grad, embeddings, 2, allowed=allowed).tolist() == [2, 0]
    per_position = hotflip_candidates(torch.stack([grad, -grad]), embeddings, 1)
    assert per_position.tolist() == [[3], [4]]


def test_trigger_gradient_and_candidates_match_a_hand_computation(tiny_causal_lm):
    lm = tiny_causal_lm
    method = make(lm, init="random", seed=3)
    batch = next(method.batches(method.encode(EXAMPLES[:4]), 4))
    grad, loss = method.trigger_gradient(batch)  # a frozen LM's batch may leave the text before the trigger out

    # reference: a leaf over the whole input embedding, the LM called directly
    cap, lm.spans.cap = lm.spans.cap, 0  # the whole input in every row
    try:
        prompt = next(method.batches(method.encode(EXAMPLES[:4]), 4)).prompts[1]
    finally:
        lm.spans.cap = cap
    ids = prompt.input_ids.clone()
    ids[torch.arange(4).unsqueeze(1), prompt.trigger_positions] = method.trigger_ids
    embeds = lm.embed(ids).detach().requires_grad_(True)
    logits = lm.forward(embeds, prompt.attention_mask, prompt.position_ids, 1)[:, -1].log_softmax(-1)
    word_ids = [w[0] for w in method.words.word_ids]
    reference_loss = F.cross_entropy(logits[:, word_ids], batch.labels)
    embeds_grad, = torch.autograd.grad(reference_loss, embeds)  # never touches the shared LM's .grad
    reference = embeds_grad[torch.arange(4).unsqueeze(1), prompt.trigger_positions].sum(0)  # [T, H]
    assert loss == pytest.approx(reference_loss.item(), rel=1e-5)
    torch.testing.assert_close(grad, reference, rtol=1e-4, atol=1e-5)

    matrix = lm.embeddings.weight.detach()
    by_hand = (-(matrix @ reference[1])).masked_fill(~method.allowed, float("-inf")).topk(5).indices
    assert hotflip_candidates(grad[1], matrix, 5, allowed=method.allowed).tolist() == by_hand.tolist()


@pytest.mark.parametrize("verbalizer", [SINGLE, MULTI], ids=["one-token", "multi-token"])
def test_batched_candidate_scoring_equals_one_by_one(lm, verbalizer):
    method = make(lm, verbalizer)
    data = method.encode(EXAMPLES[:6])
    pool = method.allowed.nonzero().squeeze(1)
    candidates = pool[torch.randint(len(pool), (7, 3), generator=torch.Generator().manual_seed(0))]
    batched = method.score_triggers(candidates, data, rows_per_forward=1000)  # all 7 in one forward
    separately = torch.stack([method.score_triggers(c[None], data, rows_per_forward=6)[0] for c in candidates])
    torch.testing.assert_close(batched, separately, rtol=1e-4, atol=1e-5)
    # and both equal the method's ordinary forward with each trigger set in turn
    for c, score in zip(candidates, batched):
        method.trigger_ids.copy_(c)
        scores = method.predict_scores(data).log_softmax(-1)
        assert score.item() == pytest.approx(scores.gather(1, data.labels[:, None]).mean().item(), abs=1e-4)


@pytest.mark.parametrize("better", [None, 2], ids=["no-candidate-better", "candidate-2-better"])
def test_a_swap_is_kept_only_when_it_improves(tiny_causal_lm, better, monkeypatch):
    method = make(tiny_causal_lm, iterations=1, num_candidates=4)
    before = method.trigger_ids.clone()

    def fake_scores(candidates, data, rows_per_forward=None):  # row 0 is the current trigger
        scores = torch.full((len(candidates),), -2.0)
        scores[0] = -1.0
        if better is not None:
            scores[better] = -0.5
        fake_scores.candidates = candidates.clone()
        return scores

    method.score_triggers = fake_scores
    monkeypatch.setattr(autoprompt_module, "score_after_shared_text", lambda *args: None)  # the search then asks score_triggers
    result = method.search(method.encode(EXAMPLES[:8]), None, TrainConfig(batch_size=4), progress=False)
    record = result.history[0]
    assert record["swapped"] is (better is not None)
    if better is None:
        assert torch.equal(method.trigger_ids, before)
    else:
        assert torch.equal(method.trigger_ids, fake_scores.candidates[better])
        assert not torch.equal(method.trigger_ids, before)


def test_excluded_tokens_never_appear(lm):
    tokenizer = lm.tokenizer
    method = make(lm, num_candidates=60, iterations=4)
    specials = set(tokenizer.all_special_ids)
    label_ids = {i for w in ("bad", "good", " bad", " good") for i in tokenizer(w, add_special_tokens=False)["input_ids"]}
    allowed = method.allowed
    assert not any(allowed[i] for i in specials | label_ids)
    tokens = tokenizer.convert_ids_to_tokens(allowed.nonzero().squeeze(1).tolist())
    if lm.causal:  # byte-level BPE: a word starts with its space
        assert all(t.startswith("Ġ") for t in tokens)
    else:  # WordPiece: ## pieces continue a word
        assert not any(t.startswith("##") for t in tokens)
    result = method.search(method.encode(EXAMPLES[:8]), method.encode(EXAMPLES[8:]), TrainConfig(batch_size=4),
                        progress=False)
    proposed = {t for record in result.history for t in record["candidates"]}
    assert proposed and all(allowed[t] for t in proposed)
    assert all(allowed[t] for t in method.trigger_ids.tolist())


def test_found_template_reparses_and_scores_like_the_search(lm):
    method = make(lm, iterations=4)
    train(method, method.encode(EXAMPLES[:8]), method.encode(EXAMPLES[8:]), TrainConfig(batch_size=4),
          progress=False)
    found = method.found_template()
    assert isinstance(found, Template) and found.n_trigger == 0
    assert Template(found.text) == found and found.text.startswith("{text_a} ") and found.text.endswith(" {mask}")
    assert method.describe()["found_template"] == found.text
    assert method.learned()["trigger_tokens"] == method.trigger_tokens()
    manual = PromptMethod(lm, found, SINGLE, labels=["0", "1"])  # reused as an ordinary manual template
    data = EXAMPLES[:6]
    torch.testing.assert_close(manual.predict_scores(manual.encode(data)),
                               method.predict_scores(method.encode(data)), rtol=1e-4, atol=1e-4)


def test_train_delegates_to_search_and_keeps_the_best_trigger_on_dev(tiny_causal_lm):
    method = build_method("autoprompt", tiny_causal_lm, TEMPLATE, SINGLE, labels=["0", "1"], iterations=5,
                          num_candidates=5, select="dev")
    dev = method.encode(EXAMPLES[8:])
    _, _, initial, _ = dev_score(method, dev, 32, "accuracy")
    result = train(method, method.encode(EXAMPLES[:8]), dev, TrainConfig(batch_size=4), progress=False)
    assert isinstance(result, TrainResult) and len(result.history) == 5 and result.steps == 5
    _, _, final, final_scores = dev_score(method, dev, 32, "accuracy")
    assert final >= initial  # the kept trigger is the best seen on dev
    assert torch.equal(result.dev_scores, final_scores)  # handed back: the harness does not score dev again
    assert torch.equal(method.state_dict()["trigger_ids"], method.trigger_ids)
    assert not any(p.requires_grad for p in tiny_causal_lm.model.parameters())  # the LM stayed frozen


def test_bad_settings_name_the_problem(tiny_causal_lm):
    with pytest.raises(ValueError, match="trigger:N"):
        make(tiny_causal_lm, template="{text_a} It was {mask}")
    with pytest.raises(ValueError, match="num_candidates"):
        make(tiny_causal_lm, num_candidates=0)
    with pytest.raises(ValueError, match="one-token word"):
        make(tiny_causal_lm, init="horrible")
    method = make(tiny_causal_lm)
    with pytest.raises(ValueError, match="frozen"):
        method.search(method.encode(EXAMPLES[:4]), None, TrainConfig(tune_lm=True))
    with pytest.raises(ValueError, match="no parameter"):
        build_method("autoprompt", tiny_causal_lm, TEMPLATE, SINGLE, trigger_count=3)


def _plant_trigger(lm, token: int, label_word: int, other_word: int) -> None:
    """Make ``token`` a trigger that makes the label obvious: its input embedding becomes a long
    vector along the direction that, through the final norm, raises ``label_word`` over ``other_word``.
    Placed just before the prediction it dominates the residual stream there."""
    with torch.no_grad():
        out = lm.model.get_output_embeddings().weight
        direction = lm.model.model.norm.weight * (out[label_word] - out[other_word])
        embeddings = lm.embeddings.weight
        embeddings[token] = 50 * embeddings.norm(dim=1).mean() * direction / direction.norm()


def test_the_search_finds_a_planted_trigger(make_tiny_lm):
    lm = make_tiny_lm("llama")  # a private copy: its embeddings are changed
    method = make(lm, iterations=12, num_candidates=8)
    planted = lm.tokenizer(" story", add_special_tokens=False)["input_ids"][0]
    assert method.allowed[planted]
    bad, good = (w[0] for w in method.words.word_ids)
    _plant_trigger(lm, planted, label_word=bad, other_word=good)
    data = method.encode([Example(ex.fields, "0") for ex in EXAMPLES])  # every label 'bad'
    start_loss = -method.score_triggers(method.trigger_ids[None], data).item()
    assert start_loss > 3  # the random LM says 'good': the start is far from the label
    result = method.search(data, None, TrainConfig(batch_size=4, seed=1), progress=False)
    assert method.trigger_ids[-1].item() == planted  # next to the prediction, where it decides
    assert "story" in method.found_template().text
    assert result.history[-1]["train_loss"] < 1e-3
    assert all(p == "0" for p in method.predict(EXAMPLES))


def _fake_scores(seed: int):
    """A score_triggers stand-in: random scores, the same for a candidate on every call."""
    def scores(candidates, data, rows_per_forward=None):
        values = [torch.Generator().manual_seed(seed * 7919 + hash(tuple(c.tolist())) % 100003) for c in candidates]
        return torch.stack([-torch.rand((), generator=g) for g in values])
    return scores


@pytest.mark.parametrize("positions", ["cycle", "random", "all"])
def test_the_accept_rule_never_takes_a_worse_candidate(tiny_causal_lm, positions, monkeypatch):
    method = make(tiny_causal_lm, iterations=15, num_candidates=6, positions=positions)
    method.score_triggers = _fake_scores(seed=3)
    monkeypatch.setattr(autoprompt_module, "score_after_shared_text", lambda *args: None)  # the search then asks score_triggers
    result = method.search(method.encode(EXAMPLES[:8]), None, TrainConfig(batch_size=4), progress=False)
    previous = None
    for record in result.history:
        if record["swapped"]:
            assert record["best_candidate_score"] > record["current_score"]
        else:
            assert record["best_candidate_score"] <= record["current_score"]
            assert previous is None or record["trigger"] == previous
        previous = record["trigger"]
    assert any(r["swapped"] for r in result.history)


def test_judged_on_every_training_example_the_training_loss_never_rises(lm):
    method = make(lm, iterations=8, num_candidates=6, score_examples=100, gradient_examples=100)
    result = method.search(method.encode(EXAMPLES[:8]), method.encode(EXAMPLES[8:]), TrainConfig(batch_size=4),
                        progress=False)
    losses = [record["train_loss"] for record in result.history]
    start = -result.history[0]["current_score"]
    assert all(b <= a for a, b in zip([start] + losses, losses))
    assert losses[-1] < start  # and it did fall


def test_the_search_is_deterministic_for_a_seed(lm):
    def search():
        method = make(lm, iterations=6, num_candidates=5, score_examples=4, gradient_examples=4)
        result = method.search(method.encode(EXAMPLES[:8]), method.encode(EXAMPLES[8:]),
                            TrainConfig(batch_size=4, seed=5), progress=False)
        strip = ("seconds", "gradient_seconds")
        return method.trigger_ids.tolist(), [{k: v for k, v in r.items() if k not in strip} for r in result.history]

    assert search() == search()


def test_word_vocabulary_is_printable_words_that_tokenise_back(lm):
    method = make(lm)
    ids = method.allowed.nonzero().squeeze(1).tolist()
    assert ids and make(lm, vocabulary="tokens").allowed[ids].all()
    for token, text in zip(ids, method.trigger_tokens(torch.tensor(ids))):
        assert text.isalpha()
        assert lm.tokenizer(" " + text, add_special_tokens=False)["input_ids"] == [token]


def test_bad_search_choices_name_the_setting_and_the_choices(tiny_causal_lm):
    with pytest.raises(ValueError, match=r"positions='diagonal' is not valid; give one of cycle, random, all"):
        make(tiny_causal_lm, positions="diagonal")
    with pytest.raises(ValueError, match=r"select='best' is not valid; give one of dev, last"):
        make(tiny_causal_lm, select="best")
    with pytest.raises(ValueError, match="gradient_examples"):
        make(tiny_causal_lm, gradient_examples=0)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("template", ["{text_a} {trigger:3} {mask}", "{text_a} It was {trigger:2} {mask}.",
                                      "{text_a} {trigger:2} so {mask}"])
def test_scoring_with_the_text_computed_once_equals_plain_scoring(make_tiny_lm, kind, template):
    method = make(make_tiny_lm(kind), template=template)
    data = method.encode(EXAMPLES[:6])
    pool = method.allowed.nonzero().squeeze(1)
    candidates = pool[torch.randint(len(pool), (7, method.template.n_trigger), generator=torch.Generator().manual_seed(0))]
    shared = score_after_shared_text(method, candidates, data)
    assert shared is not None  # a causal LM, one-token label words, the trigger after the text
    torch.testing.assert_close(shared, method.score_triggers(candidates, data), rtol=1e-4, atol=1e-5)
    assert score_after_shared_text(make(make_tiny_lm(kind), MULTI, template=template), candidates, data) is None


@pytest.mark.parametrize("template", ["{text_a} {trigger:3} {mask}", "{text_a} It was {trigger:2} {mask}."])
def test_gradient_with_the_text_computed_once_equals_the_plain_gradient(make_tiny_lm, template):
    method = make(make_tiny_lm("llama"), template=template, init="random", seed=2)
    batch = next(method.batches(method.encode(EXAMPLES[:6]), 6))
    shared = gradient_after_shared_text(method, batch)
    assert shared is not None
    grad, loss = method.trigger_gradient(batch)
    torch.testing.assert_close(shared[0], grad, rtol=1e-4, atol=1e-6)
    assert shared[1] == pytest.approx(loss, rel=1e-5)


def test_a_saved_search_is_a_prompt_file_of_the_found_template(tiny_causal_lm, tmp_path):
    from prompting.config.experiment import load_prompt_file
    from prompting.methods import load_prompt

    method = make(tiny_causal_lm, iterations=4)
    train(method, method.encode(EXAMPLES[:8]), method.encode(EXAMPLES[8:]), TrainConfig(batch_size=4), progress=False)
    method.save(tmp_path / "found")
    patterns, verbalizers = load_prompt_file(tmp_path / "found" / "template.yaml")  # what `prompting eval` reads
    assert patterns == [method.found_template().text] and verbalizers == [SINGLE.to_dict()]
    manual = PromptMethod(tiny_causal_lm, patterns[0], Verbalizer(verbalizers[0]), labels=["0", "1"])
    loaded = load_prompt(tmp_path / "found", tiny_causal_lm)
    scores = method.predict_scores(method.encode(EXAMPLES))
    torch.testing.assert_close(manual.predict_scores(manual.encode(EXAMPLES)), scores, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(loaded.predict_scores(loaded.encode(EXAMPLES)), scores)


def test_a_pass_without_a_better_swap_widens_to_the_next_ranks_then_stops(tiny_causal_lm, monkeypatch):
    method = make(tiny_causal_lm, iterations=50, num_candidates=4, max_candidates=12)

    def current_always_wins(candidates, data, rows_per_forward=None):
        return torch.cat([torch.zeros(1), -torch.ones(len(candidates) - 1)])

    method.score_triggers = current_always_wins
    monkeypatch.setattr(autoprompt_module, "score_after_shared_text", lambda *args: None)
    result = method.search(method.encode(EXAMPLES[:8]), None, TrainConfig(batch_size=4), progress=False)
    # 3 positions x ranks 1-4, then 5-8, then 9-12; then nothing new to try
    assert [r["ranks"] for r in result.history] == [[1, 4]] * 3 + [[5, 8]] * 3 + [[9, 12]] * 3
    proposed = [set(r["candidates"]) for r in result.history]
    assert not proposed[0] & proposed[3]  # a wider pass brings new tokens
    with pytest.raises(ValueError, match="max_candidates=2"):
        make(tiny_causal_lm, num_candidates=4, max_candidates=2)


def test_select_last_keeps_the_search_s_lowest_training_loss(tiny_causal_lm):
    method = make(tiny_causal_lm, iterations=6, num_candidates=6)
    assert method.config.select == "last"  # the default: dev accuracy on 32 examples kept the start (see docs/methods.md)
    dev = method.encode(EXAMPLES[8:])
    result = method.search(method.encode(EXAMPLES[:8]), dev, TrainConfig(batch_size=4), progress=False)
    assert any(r["swapped"] for r in result.history)
    assert method.trigger_ids.tolist() == result.history[-1]["trigger_ids"]
    assert result.best_step == max(r["step"] for r in result.history if r["swapped"])
    torch.testing.assert_close(result.dev_scores, method.predict_scores(dev))
