"""The one training loop, on tiny *randomly initialised* LMs (see conftest) and a tiny sentiment task.

Tests that update weights get a private model from ``make_tiny_lm``. Where a test needs a dev curve of
a known shape (best-state restore, early stopping) the dev evaluation is scripted, so the loop's
bookkeeping is checked exactly rather than through a model's trajectory.
"""

import math

import pytest
import torch

from conftest import NEGATIVE, POSITIVE, SUBJECTS
from prompting.core.data import Example
from prompting.methods import PromptMethod, build_method
from prompting.training.loop import TrainConfig, TrainingError, evaluate, train
from prompting.core.verbalizer import Verbalizer

TEMPLATE = "{text_a} It was {mask}."
VERBALIZER = Verbalizer({"0": ["bad"], "1": ["good"]})
TRAIN = [Example({"text_a": f"{s} was {adjective}."}, label)
         for i, s in enumerate(SUBJECTS[:8])
         for adjective, label in ((POSITIVE[i], "1"), (NEGATIVE[i], "0"))]
FLIPPED = [Example(e.fields, "0" if e.label == "1" else "1") for e in TRAIN]


class BiasedPrompt(PromptMethod):
    """The manual prompt plus a learned bias per label: a method with parameters of its own."""

    name = "biased-test"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_bias = torch.nn.Parameter(torch.zeros(len(self.labels)))

    def forward(self, batch):
        return super().forward(batch) + self.label_bias


def no_dropout(lm):
    # a 32-wide BERT does not fit 16 examples through dropout 0.1 in a few steps
    for module in lm.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return lm


def manual(lm):
    return build_method("manual", lm, TEMPLATE, VERBALIZER, labels=["0", "1"])


def lm_state(lm):
    return {k: v.detach().clone() for k, v in lm.model.state_dict().items()}


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def recording_optimizer(monkeypatch):
    """Replace AdamW by a subclass that records each step's learning rates and gradient norm."""
    seen = {}

    class RecordingAdamW(torch.optim.AdamW):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.lrs, self.grad_norms = [], []
            seen["optimizer"] = self

        def step(self, closure=None):
            self.lrs.append([group["lr"] for group in self.param_groups])
            grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
            self.grad_norms.append(torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    return seen


@pytest.fixture
def scripted_dev(monkeypatch):
    """Dev evaluations inside ``train`` return the given accuracies in turn (the first is the
    evaluation before training), or (accuracy, dev cross-entropy) pairs, and snapshot the LM
    weights at each one."""
    snapshots, script = [], []

    def fake_dev_score(method, data, batch_size, metric):
        snapshots.append(lm_state(method.lm))
        entry = script[len(snapshots) - 1]
        accuracy, loss = entry if isinstance(entry, tuple) else (entry, 0.0)
        metrics = {"accuracy": accuracy, "macro_f1": accuracy}
        return metrics, loss, (metrics[metric], -loss), None

    monkeypatch.setattr("prompting.training.loop.dev_score", fake_dev_score)
    return script, snapshots


# ------------------------------------------------------------------------------------ learning
@pytest.mark.parametrize("kind, lr, steps", [("llama", 3e-3, 30), ("bert", 1e-2, 40)])
def test_tuning_the_lm_lowers_the_loss_and_fits_the_training_set(make_tiny_lm, kind, lr, steps):
    method = manual(no_dropout(make_tiny_lm(kind)))
    data = method.encode(TRAIN)
    assert evaluate(method, data)[0]["accuracy"] < 1.0
    result = train(method, data, None, TrainConfig(lr=lr, tune_lm=True, max_steps=steps, batch_size=16),
                   progress=False)
    losses = [h["loss"] for h in result.history]
    assert result.steps == len(losses) == steps
    assert sum(losses[-5:]) / 5 < losses[0] / 4
    assert evaluate(method, data)[0]["accuracy"] == 1.0


def test_training_leaves_the_lm_frozen_and_in_eval_mode(make_tiny_lm):
    lm = make_tiny_lm("llama")
    method = manual(lm)
    train(method, method.encode(TRAIN), None, TrainConfig(lr=1e-3, tune_lm=True, max_steps=2), progress=False)
    assert not lm.model.training and not method.training
    assert not any(p.requires_grad for p in lm.model.parameters())


# ------------------------------------------------------------------------------- optimiser setup
def test_parameter_groups_have_their_own_rates_and_follow_warmup_then_linear_decay(make_tiny_lm, recording_optimizer):
    lm = make_tiny_lm("llama")
    method = BiasedPrompt(lm, TEMPLATE, VERBALIZER, labels=["0", "1"])
    config = TrainConfig(lr=0.1, lm_lr=1e-3, tune_lm=True, max_steps=8, warmup_ratio=0.25, batch_size=4)
    train(method, method.encode(TRAIN), None, config, progress=False)
    optimizer = recording_optimizer["optimizer"]
    assert [g["name"] for g in optimizer.param_groups] == ["biased-test", "lm"]
    assert optimizer.param_groups[0]["params"] == [method.label_bias]
    assert len(optimizer.param_groups[1]["params"]) == len(list(lm.model.parameters()))
    # warm-up over int(0.25 * 8) = 2 steps ((s + 1) / 2), then linear decay (8 - s) / 6
    factors = [0.5, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6]
    assert len(optimizer.lrs) == 8
    for (own, lm_rate), factor in zip(optimizer.lrs, factors):
        assert own == pytest.approx(0.1 * factor) and lm_rate == pytest.approx(1e-3 * factor)


def test_gradients_are_clipped_to_max_grad_norm(make_tiny_lm, recording_optimizer):
    def grad_norms(max_grad_norm):
        method = manual(make_tiny_lm("llama"))
        train(method, method.encode(TRAIN), None, TrainConfig(lr=1e-3, tune_lm=True, max_steps=3,
                                                              max_grad_norm=max_grad_norm), progress=False)
        return recording_optimizer["optimizer"].grad_norms

    unclipped = grad_norms(0.0)
    assert min(unclipped) > 0.1  # so clipping to 0.05 has something to do
    clipped = grad_norms(0.05)
    assert len(clipped) == 3 and all(n == pytest.approx(0.05, rel=1e-4) for n in clipped)


# ------------------------------------------------------------------------ dev selection, stopping
def test_the_best_dev_state_is_restored_not_the_last(make_tiny_lm, scripted_dev):
    script, snapshots = scripted_dev
    script += [0.5, 0.6, 0.9, 0.7, 0.9, 0.4, 0.3]  # before training, then after steps 1..6
    lm = make_tiny_lm("llama")
    method = manual(lm)
    data = method.encode(TRAIN)
    result = train(method, data, data, TrainConfig(lr=3e-3, tune_lm=True, max_steps=6, eval_every=1),
                   progress=False)
    assert len(snapshots) == 7 and result.steps == 6
    assert result.best_step == 2 and result.best_dev == {"accuracy": 0.9, "macro_f1": 0.9}  # a tie keeps the first
    assert same_state(lm_state(lm), snapshots[2])
    assert not same_state(lm_state(lm), snapshots[6])
    assert [h["dev"]["accuracy"] for h in result.history] == script[1:]


def test_a_dev_metric_tie_goes_to_the_lower_dev_loss_but_the_metric_comes_first(make_tiny_lm, scripted_dev):
    script, snapshots = scripted_dev
    # before training, then steps 1..4: step 2 ties step 0's accuracy with a lower loss, step 3 is
    # worse, step 4 has a better accuracy despite a higher loss
    script += [(0.75, 0.7), (0.5, 0.2), (0.75, 0.4), (0.75, 0.5), (0.8, 0.9)]
    lm = make_tiny_lm("llama")
    method = manual(lm)
    data = method.encode(TRAIN)
    config = TrainConfig(lr=3e-3, tune_lm=True, max_steps=3, eval_every=1)
    result = train(method, data, data, config, progress=False)
    assert result.best_step == 2 and same_state(lm_state(lm), snapshots[2])
    assert [h["dev_loss"] for h in result.history] == [0.2, 0.4, 0.5]
    script[:], snapshots[:] = script[:5], []
    result = train(manual(make_tiny_lm("llama")), data, data,
                   TrainConfig(lr=3e-3, tune_lm=True, max_steps=4, eval_every=1), progress=False)
    assert result.best_step == 4 and result.best_dev["accuracy"] == 0.8


def test_without_select_untrained_the_best_trained_state_is_kept_even_when_the_start_was_better(
        make_tiny_lm, scripted_dev):
    script, snapshots = scripted_dev
    script += [0.6, 0.8, 0.7]  # steps 1..3 only: the state before training is not scored
    lm = make_tiny_lm("llama")
    before = lm_state(lm)
    method = manual(lm)
    data = method.encode(TRAIN)
    result = train(method, data, data, TrainConfig(lr=3e-3, tune_lm=True, max_steps=3, eval_every=1,
                                                   select_untrained=False), progress=False)
    assert len(snapshots) == 3 and result.best_step == 2 and result.best_dev["accuracy"] == 0.8
    assert same_state(lm_state(lm), snapshots[1]) and not same_state(lm_state(lm), before)
    # the same dev scores with the start allowed and scoring 0.9: training is undone
    script[:], snapshots[:] = [0.9, 0.6, 0.8, 0.7], []
    lm = make_tiny_lm("llama")
    before = lm_state(lm)
    method = manual(lm)
    assert train(method, data, data, TrainConfig(lr=3e-3, tune_lm=True, max_steps=3, eval_every=1),
                 progress=False).best_step == 0
    assert same_state(lm_state(lm), before)


def test_pet_fine_tuning_selects_among_trained_states_and_learned_prompts_may_keep_their_start(make_tiny_lm):
    from prompting.methods import build_method

    lm = make_tiny_lm("llama")
    pet = build_method("manual", lm, TEMPLATE, VERBALIZER, labels=["0", "1"])
    soft = build_method("soft", lm, "{soft:2} " + TEMPLATE, VERBALIZER, labels=["0", "1"])
    assert TrainConfig(**pet.config_class.train_defaults).select_untrained is False
    assert TrainConfig(**soft.config_class.train_defaults).select_untrained is True
    with pytest.raises(ValueError, match="select_untrained='no' is not valid; use true or false"):
        TrainConfig(select_untrained="no")


def test_the_real_dev_score_is_the_gold_cross_entropy_of_the_label_scores(make_tiny_lm):
    from prompting.training.loop import dev_score

    method = manual(make_tiny_lm("llama"))
    data = method.encode(TRAIN)
    metrics, loss, key, scores_seen = dev_score(method, data, 8, "accuracy")
    scores = method.predict_scores(data)
    expected = -scores.log_softmax(-1).gather(1, data.labels.unsqueeze(1)).mean().item()
    assert loss == pytest.approx(expected, rel=1e-5)
    assert metrics == evaluate(method, data)[0] and key == (metrics["accuracy"], -loss)
    assert torch.equal(scores_seen, scores)


def test_the_own_parameters_are_restored_too(make_tiny_lm, scripted_dev):
    script, _ = scripted_dev
    script += [0.5, 0.8, 0.6, 0.6]
    method = BiasedPrompt(make_tiny_lm("llama"), TEMPLATE, VERBALIZER, labels=["0", "1"])
    biases = []
    method.register_forward_hook(lambda module, args, out: biases.append(module.label_bias.detach().clone()))
    data = method.encode(TRAIN)
    train(method, data, data, TrainConfig(lr=0.1, max_steps=3, eval_every=1, batch_size=16), progress=False)
    # forward k+1 ran with the parameters after step k; the best is step 1
    assert torch.equal(method.label_bias.detach(), biases[1])
    assert not torch.equal(biases[1], biases[2])


def test_with_a_real_dev_set_that_gets_worse_the_initial_state_is_kept(make_tiny_lm):
    lm = make_tiny_lm("llama")
    method = manual(lm)
    before = lm_state(lm)
    train_data, dev = method.encode(TRAIN), method.encode(FLIPPED)  # fitting train unlearns dev
    initial = evaluate(method, dev)[0]
    result = train(method, train_data, dev, TrainConfig(lr=3e-3, tune_lm=True, max_steps=12, eval_every=3),
                   progress=False)
    final_dev = [h["dev"] for h in result.history if "dev" in h][-1]
    assert final_dev["accuracy"] < initial["accuracy"]
    best = max([initial["accuracy"]] + [h["dev"]["accuracy"] for h in result.history if "dev" in h])
    assert result.best_dev["accuracy"] == best
    assert evaluate(method, dev)[0] == result.best_dev
    if result.best_step == 0:
        assert same_state(lm_state(lm), before)


def test_early_stopping_after_patience_evaluations_without_improvement(make_tiny_lm, scripted_dev):
    script, snapshots = scripted_dev
    script += [0.5, 0.6, 0.9, 0.7, 0.8, 0.85, 0.95, 0.95, 0.95, 0.95]
    method = manual(make_tiny_lm("llama"))
    data = method.encode(TRAIN)
    result = train(method, data, data, TrainConfig(lr=1e-3, tune_lm=True, max_steps=9, eval_every=1, patience=3),
                   progress=False)
    assert result.steps == 5 and len(result.history) == 5 and len(snapshots) == 6
    assert result.best_step == 2


def test_without_patience_all_steps_run_and_dev_is_evaluated_every_n_steps_and_at_the_end(make_tiny_lm, scripted_dev):
    script, snapshots = scripted_dev
    script += [0.5, 0.4, 0.4, 0.4]
    method = manual(make_tiny_lm("llama"))
    data = method.encode(TRAIN)
    result = train(method, data, data, TrainConfig(lr=1e-3, tune_lm=True, max_steps=5, eval_every=2),
                   progress=False)
    assert result.steps == 5 and result.best_step == 0
    assert [h["step"] for h in result.history if "dev" in h] == [2, 4, 5]


def test_epochs_set_the_number_of_steps(make_tiny_lm):
    method = manual(make_tiny_lm("llama"))
    result = train(method, method.encode(TRAIN), None, TrainConfig(lr=1e-3, tune_lm=True, epochs=1.5, batch_size=6),
                   progress=False)
    assert result.steps == math.ceil(1.5 * math.ceil(16 / 6))  # 16 examples, 3 batches an epoch


# ---------------------------------------------------------------------------------- determinism
def test_same_seed_same_weights_and_scores_different_seed_different_weights(make_tiny_lm):
    def run(seed, draws=0):
        lm = make_tiny_lm("bert")  # dropout on: its random draws must follow the seed too
        method = manual(lm)
        torch.rand(draws)  # whatever ran before must not matter
        data = method.encode(TRAIN)
        # no dev set: with one, both seeds could fall back to the same (initial) best state
        result = train(method, data, None, TrainConfig(lr=1e-3, tune_lm=True, max_steps=6, batch_size=4,
                                                       seed=seed), progress=False)
        return lm_state(lm), result.history, method.predict_scores(data)

    first, again, other = run(5), run(5, draws=3), run(6)
    assert same_state(first[0], again[0]) and first[1] == again[1] and torch.equal(first[2], again[2])
    assert not same_state(first[0], other[0])


# ------------------------------------------------------------------------------------ failures
def test_nan_loss_from_a_poisoned_weight_raises_a_training_error(make_tiny_lm):
    lm = make_tiny_lm("llama")
    with torch.no_grad():
        lm.embeddings.weight[:] = float("nan")
    method = manual(lm)
    with pytest.raises(TrainingError) as err:
        train(method, method.encode(TRAIN), None, TrainConfig(lr=1e-3, tune_lm=True, max_steps=3), progress=False)
    message = str(err.value)
    assert "loss became nan at step 0 of manual" in message and "lr=0.001" in message
    assert "lower the learning rate" in message


def test_an_absurd_learning_rate_raises_a_training_error_not_nan_weights(make_tiny_lm):
    method = manual(make_tiny_lm("llama"))
    with pytest.raises(TrainingError, match=r"loss became (nan|inf) at step [1-9].*lr=1e\+30"):
        train(method, method.encode(TRAIN), None, TrainConfig(lr=1e30, tune_lm=True, max_steps=10), progress=False)


def test_frozen_lm_is_unchanged_when_only_the_method_learns(make_tiny_lm):
    lm = make_tiny_lm("llama")
    before = lm_state(lm)
    method = BiasedPrompt(lm, TEMPLATE, VERBALIZER, labels=["0", "1"])
    data = method.encode(TRAIN)
    train(method, data, None, TrainConfig(lr=0.1, tune_lm=False, max_steps=4), progress=False)
    assert same_state(lm_state(lm), before)
    assert not torch.equal(method.label_bias.detach(), torch.zeros(2))
    assert not any(p.requires_grad for p in lm.model.parameters())


def test_manual_prompt_with_a_frozen_lm_has_nothing_to_train(make_tiny_lm):
    method = manual(make_tiny_lm("llama"))
    with pytest.raises(ValueError, match="method 'manual' has nothing to train.*set tune_lm: true or use train: false"):
        train(method, method.encode(TRAIN), None, TrainConfig(lr=1e-3, tune_lm=False, max_steps=2), progress=False)


def test_training_needs_labelled_examples(make_tiny_lm):
    method = manual(make_tiny_lm("llama"))
    unlabelled = method.encode([Example({"text_a": "it was fine."})])
    with pytest.raises(ValueError, match="labels the verbalizer knows"):
        train(method, unlabelled, None, TrainConfig(tune_lm=True, max_steps=1), progress=False)


@pytest.mark.parametrize("bad, message", [
    ({"lr": 0}, "lr=0 is not valid"), ({"batch_size": -1}, "batch_size=-1 is not valid"),
    ({"epochs": 0}, "epochs=0 is not valid"), ({"max_steps": 0}, "max_steps=0 is not valid"),
    ({"warmup_ratio": 1.0}, "warmup_ratio=1.0 is not valid"),
    ({"lr": "1e-5"}, "lr='1e-5' is not valid; give a number"), ({"patience": True}, "patience=True is not valid"),
    ({"tune_lm": 1}, "tune_lm=1 is not valid; use true or false"),
])
def test_train_config_rejects_bad_values_by_name(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**bad)


def test_the_dev_scores_handed_back_are_those_of_the_restored_state(make_tiny_lm):
    """The harness records these instead of scoring dev again: they must be what scoring gives now,
    after the best state is restored, not the last evaluation's."""
    lm = make_tiny_lm("llama")
    method = manual(lm)
    train_data, dev = method.encode(TRAIN), method.encode(FLIPPED)  # fitting train unlearns dev
    config = TrainConfig(lr=3e-3, tune_lm=True, max_steps=12, eval_every=3)
    result = train(method, train_data, dev, config, progress=False)
    assert result.best_step < result.steps  # the last evaluation is not the kept state
    assert torch.equal(result.dev_scores, method.predict_scores(dev, config.eval_batch_size))
    assert train(method, train_data, None, config, progress=False).dev_scores is None  # never scored
