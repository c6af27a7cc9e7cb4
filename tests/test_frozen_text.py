"""The text before a learned slot computed once (causal LMs) and length-bucketed batches: the same
losses, gradients and scores as the plain path, on tiny random Llama (rotary) and GPT-2 (absolute
positions) models."""

import pytest
import torch

from prompting.lm.logprobs import token_budget_batches
from prompting.core.data import Example
from prompting.methods import AutoPrompt, PTuning, SoftPrompt
from prompting.methods.triggers import gradient_after_shared_text, score_after_shared_text
from prompting.methods.scores import SCORES
from prompting.training.loop import TrainConfig, train
from prompting.core.verbalizer import Verbalizer

pytestmark = pytest.mark.filterwarnings("ignore:template .* causal LM predicts:UserWarning")

# "greatest" is several tokens: the label word is appended after the frozen text too
VERBALIZER = Verbalizer({"0": ["bad"], "1": ["great", "greatest"]})
EXAMPLES = [Example({"text_a": a, "text_b": b}, label) for a, b, label in [
    ("I loved every minute of this movie.", "Yes.", "1"),
    ("Bad writing and a very bad ending, and nobody in the theatre laughed at any of it.", "No, not at all.", "0"),
    ("A small film with a big heart.", "It is.", "1"),
    ("Nobody laughed.", "Really not good, I am afraid to say.", "0"),
    ("Great performances from the whole cast.", "Sure.", "1"),
    ("I fell asleep twice.", "No.", "0")]]
SUFFIX = "Review: {text_a} {soft:3} It was {mask}."


@pytest.fixture(params=["llama", "gpt2"])
def lm(request, make_tiny_lm):
    lm = make_tiny_lm(request.param, seed=3)
    lm.model.requires_grad_(False)  # as training a prompt leaves it
    return lm


def plain(lm):
    """A context in which the LM keeps no frozen text: everything runs as one sequence."""
    class Plain:
        def __enter__(self):
            self.cap, lm.spans.cap = lm.spans.cap, 0

        def __exit__(self, *exc):
            lm.spans.cap = self.cap
    return Plain()


def loss_and_grad(method, data):
    method.zero_grad()
    batch = next(method.batches(data, len(data)))
    loss = torch.nn.functional.cross_entropy(method(batch), batch.labels)
    loss.backward()
    return loss.item(), [p.grad.clone() for p in method.parameters() if p.requires_grad]


@pytest.mark.parametrize("template", [SUFFIX, "{text_a} {soft:2} {text_b} {mask}"])
def test_soft_prompt_after_the_input_gives_the_plain_loss_gradient_and_scores(lm, template):
    method = SoftPrompt(lm, template, VERBALIZER, init="vocab")
    data = method.encode(EXAMPLES)
    assert method.frozen_text
    batch = next(method.batches(data, len(data))).prompts[1]
    assert batch.frozen is not None and len(set(batch.frozen.lengths)) > 1  # spans of several lengths
    fast_loss, fast_grad = loss_and_grad(method, data)
    fast_scores = method.predict_scores(data, 4, cached=False)
    assert len(lm.spans) == len(EXAMPLES)
    with plain(lm):
        assert not method.frozen_text
        assert next(method.batches(data, len(data))).prompts[1].frozen is None
        slow_loss, slow_grad = loss_and_grad(method, data)
        slow_scores = method.predict_scores(data, 4, cached=False)
    assert fast_loss == pytest.approx(slow_loss, abs=1e-5)
    for fast, slow in zip(fast_grad, slow_grad):
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fast_scores, slow_scores, atol=1e-5, rtol=0)


def test_ptuning_encoder_gradients_match_through_the_cached_text(lm):
    method = PTuning(lm, SUFFIX, VERBALIZER, hidden_size=8)
    data = method.encode(EXAMPLES)
    fast_loss, fast_grad = loss_and_grad(method, data)
    with plain(lm):
        slow_loss, slow_grad = loss_and_grad(method, data)
    assert fast_loss == pytest.approx(slow_loss, abs=1e-5)
    assert len(fast_grad) > 2  # the LSTM's weights, not only its inputs
    for fast, slow in zip(fast_grad, slow_grad):
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)


def test_each_span_is_computed_once_across_steps_and_scoring(lm):
    method = SoftPrompt(lm, SUFFIX, VERBALIZER, init="vocab")
    train_data, dev_data = method.encode(EXAMPLES[:4]), method.encode(EXAMPLES[4:])
    train(method, train_data, dev_data, TrainConfig(lr=0.01, batch_size=2, max_steps=6, eval_every=2, seed=1),
          progress=False)
    method.predict_scores(method.encode(EXAMPLES), 2)
    assert lm.spans.computed == len(EXAMPLES)  # 6 steps, 3 dev evaluations and test: each span once
    assert lm.spans.hits > len(EXAMPLES)


def test_over_the_memory_cap_spans_are_recomputed_with_the_same_scores(lm):
    method = SoftPrompt(lm, SUFFIX, VERBALIZER, init="vocab")
    data = method.encode(EXAMPLES)
    with plain(lm):
        expected = method.predict_scores(data, 3, cached=False)
    lm.spans.cap = 1  # one byte: nothing fits
    assert method.frozen_text
    scores = method.predict_scores(data, 3, cached=False)
    assert len(lm.spans) == 0 and lm.spans.computed == len(EXAMPLES)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)


def test_the_cache_empties_when_the_lm_weights_change(lm):
    method = SoftPrompt(lm, SUFFIX, VERBALIZER, init="vocab")
    data = method.encode(EXAMPLES)
    before = method.predict_scores(data, 8, cached=False)
    with torch.no_grad():
        for p in lm.model.parameters():
            p.mul_(1.5)
    after = method.predict_scores(data, 8, cached=False)
    with plain(lm):
        expected = method.predict_scores(data, 8, cached=False)
    assert not torch.allclose(before, after, atol=1e-3)
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=2e-6)
    assert lm.spans.computed == 2 * len(EXAMPLES)


def test_tuning_the_lm_runs_the_whole_sequence(lm):
    method = PTuning(lm, SUFFIX, VERBALIZER, hidden_size=8)
    assert method.frozen_text
    for p in lm.model.parameters():
        p.requires_grad_(True)
    try:
        assert not method.frozen_text
    finally:
        for p in lm.model.parameters():
            p.requires_grad_(False)


@pytest.mark.parametrize("template", ["{soft:2} {text_a} It was {mask}.", "Review: {soft:2} {text_a} {mask}"])
def test_learned_slots_before_the_input_keep_the_plain_path(lm, template):
    method = SoftPrompt(lm, template, VERBALIZER, init="vocab")
    assert not method.frozen_text
    assert next(method.batches(method.encode(EXAMPLES), 3)).prompts[1].frozen is None


def test_autoprompt_candidates_score_the_same_from_cached_text(lm):
    method = AutoPrompt(lm, "Review: {text_a} {trigger:3} It was {mask}.", Verbalizer({"0": "bad", "1": "great"}))
    data = method.encode(EXAMPLES)
    candidates = torch.tensor([[5, 6, 7], [50, 60, 70], [100, 200, 300]])
    fast = score_after_shared_text(method, candidates, data)
    assert lm.spans.computed == len(EXAMPLES)
    with plain(lm):
        per_batch = score_after_shared_text(method, candidates, data)  # the text before the trigger per batch
        whole = method.score_triggers(candidates, data)  # every row whole
    torch.testing.assert_close(fast, whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(per_batch, whole, atol=1e-5, rtol=0)
    grad = gradient_after_shared_text(method, next(method.batches(data, len(data))))
    with plain(lm):
        expected = method.trigger_gradient(next(method.batches(data, len(data))))
    torch.testing.assert_close(grad[0], expected[0], atol=1e-5, rtol=1e-4)
    assert grad[1] == pytest.approx(expected[1], abs=1e-5)


@pytest.mark.parametrize("kind", ["llama", "gpt2", "bert"])
def test_bucketed_scoring_gives_the_scores_of_fixed_batches(make_tiny_lm, kind):
    lm = make_tiny_lm(kind, seed=4)
    method = SoftPrompt(lm, "{soft:2} {text_a} It was {mask}.", VERBALIZER, init="vocab")
    data = method.encode(EXAMPLES * 3)
    one_by_one = method.predict_scores(data, 1, cached=False)
    for rows, tokens in [(32, 40), (32, 100_000), (4, None)]:
        torch.testing.assert_close(method.predict_scores(data, rows, max_tokens=tokens, cached=False), one_by_one, atol=1e-5, rtol=2e-6)


def test_token_budget_batches_keep_order_and_budget():
    lengths = [3, 3, 4, 5, 9, 10, 30, 31]
    batches = token_budget_batches(lengths, max_tokens=20, max_rows=3, max_padding=10)
    assert [i for b in batches for i in b] == list(range(len(lengths)))
    assert batches == [[0, 1, 2], [3, 4], [5], [6], [7]]
    for rows in batches:
        assert len(rows) == 1 or len(rows) * max(lengths[i] for i in rows) <= 20
    # padding: 3 rows of 3, 3, 4 pad 2 tokens (12 for 10); 4 with 5 would pad 7 of 22
    assert token_budget_batches(lengths, max_tokens=1000, max_padding=1.2) == [[0, 1, 2], [3], [4, 5], [6, 7]]
    assert token_budget_batches([], 10) == []


def test_scoring_batches_pad_little(make_tiny_lm):
    method = SoftPrompt(make_tiny_lm("gpt2"), "{soft:2} {text_a} It was {mask}.", VERBALIZER, init="vocab")
    data = method.encode(EXAMPLES * 5)
    lengths = [len(e.input_ids) for e in data.encodings[1]]
    padded = sum(len(rows) * max(lengths[i] for i in rows) for rows in method.scoring_batches(data, 32, 128))
    assert padded <= 1.2 * sum(lengths)


def test_a_state_is_scored_once_on_the_same_examples(lm):
    method = SoftPrompt(lm, SUFFIX, VERBALIZER, init="text")
    calls = []
    handle = lm.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        first = method.predict_scores(method.encode(EXAMPLES), 8)
        again = method.predict_scores(method.encode(EXAMPLES), 8)  # encoded again: the same examples
        n = len(calls)
        twin = SoftPrompt(lm, SUFFIX, VERBALIZER, init="text")  # another run's identical start
        torch.testing.assert_close(twin.predict_scores(method.encode(EXAMPLES), 8), first)
        assert len(calls) == n
        with torch.no_grad():
            twin.soft_prompt.add_(0.1)  # a trained state is scored
        twin.predict_scores(method.encode(EXAMPLES), 8)
        assert len(calls) > n
    finally:
        handle.remove()
    torch.testing.assert_close(again, first)
    assert SCORES.bytes <= SCORES.max_bytes


def test_length_grouped_training_batches_are_deterministic_and_cover_every_example(lm):
    method = SoftPrompt(lm, "{soft:2} {text_a} {mask}", VERBALIZER, init="vocab")
    data = method.encode(EXAMPLES * 4)
    make = lambda seed: method.training_batches(data, 3, torch.Generator().manual_seed(seed))
    assert make(1) == make(1) and make(1) != make(2)
    assert sorted(i for rows in make(1) for i in rows) == list(range(len(data)))
    lengths = [len(e.input_ids) for e in data.encodings[1]]
    padded = lambda batches: sum(len(r) * max(lengths[i] for i in r) for r in batches)
    shuffled = torch.randperm(len(data), generator=torch.Generator().manual_seed(1)).tolist()
    assert padded(make(1)) < padded([shuffled[i:i + 3] for i in range(0, len(data), 3)])


def test_spans_are_found_again_when_tuned_weights_are_put_back(lm):
    method = SoftPrompt(lm, SUFFIX, VERBALIZER, init="vocab")
    data = method.encode(EXAMPLES)
    first = method.predict_scores(data, 8, cached=False)
    snapshot = lm.snapshot()
    with torch.no_grad():  # as PET's fine-tuning does
        for p in lm.model.parameters():
            p.mul_(1.5)
    tuned = method.predict_scores(data, 8, cached=False)
    assert lm.spans.computed == 2 * len(EXAMPLES) and not torch.allclose(tuned, first, atol=1e-3)
    lm.restore(snapshot)
    again = method.predict_scores(data, 8, cached=False)
    assert lm.spans.computed == 2 * len(EXAMPLES)  # the original weights' spans, not computed again
    torch.testing.assert_close(again, first, atol=1e-5, rtol=0)


def test_a_few_shot_set_in_one_length_group_is_shuffled_anew_each_epoch(lm):
    """32 examples in batches of 8 fit one group: sorted by length, every epoch would have the same four
    batches. They are shuffled instead, so what shares a batch changes from epoch to epoch."""
    method = SoftPrompt(lm, "{soft:2} {text_a} {mask}", VERBALIZER, init="vocab")
    data = method.encode((EXAMPLES * 6)[:32])
    generator = torch.Generator().manual_seed(1)
    epochs = [method.training_batches(data, 8, generator) for _ in range(3)]
    expected = torch.Generator().manual_seed(1)
    for batches in epochs:
        order = torch.randperm(len(data), generator=expected).tolist()
        assert batches == [order[i:i + 8] for i in range(0, 32, 8)]
    assert len({tuple(sorted(map(tuple, (sorted(b) for b in batches)))) for batches in epochs}) == 3
