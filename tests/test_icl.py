"""In-context learning and demonstrations on tiny *randomly initialised* LMs (see conftest): what a
demonstration looks like, which ones a query gets, truncation that never cuts the query, and the
harness's ICL and "+ demos" runs."""

import pytest
import torch

from conftest import NEGATIVE, POSITIVE, SUBJECTS
from prompting.config.experiment import ConfigError, parse_config
from prompting.core.data import Example, Task
from prompting.core.demonstrations import render
from prompting.experiment.executor import RunExecutor
from prompting.experiment.harness import Experiment, MethodSpec, Protocol
from prompting.methods import build_method
from prompting.experiment.results import ResultsStore
from prompting.core.template import Template

VERBALIZER = {"0": ["bad"], "1": ["good"]}
POOL = [Example({"text_a": f"{s} was {adjective}."}, label)
        for s in SUBJECTS[:4] for adjective, label in zip(POSITIVE[:2] + NEGATIVE[:2], "1100")]
QUERY = Example({"text_a": "the music was lovely."}, "1")


def icl(lm, template="{text_a} It was {mask}.", seed=0, pool=POOL, **params):
    method = build_method("icl", lm, template, _verbalizer(), labels=("0", "1"), **params)
    method.set_demonstration_pool(pool, seed)
    return method


def _verbalizer():
    from prompting.core.verbalizer import Verbalizer

    return Verbalizer(VERBALIZER)


def decode(lm, encoding):
    return lm.tokenizer.decode(encoding.input_ids, skip_special_tokens=True)


def test_a_demonstration_is_the_template_with_its_label_word():
    example = Example({"text_a": " the plot was dull. "}, "0")
    assert render(Template("{text_a} It was {mask}."), example, "bad") == "the plot was dull. It was bad."
    # learned slots show as their starting words, or not at all; text after the mask stays
    assert render(Template('{soft:2} {text_a}{soft:" Sentiment:"} {mask}!'), example, "bad") == \
        "the plot was dull. Sentiment: bad!"


def test_icl_prompt_is_demonstrations_then_the_query(tiny_gpt2_lm):  # absolute positions: written out
    method = icl(tiny_gpt2_lm, k=1)
    encoding = method.encode([QUERY]).encodings[1][0]
    text = decode(tiny_gpt2_lm, encoding)
    demos, query = text.rsplit("\n\n", 1)
    assert query == "the music was lovely. It was"  # the query as without demonstrations, up to {mask}
    shown = demos.split("\n\n")
    assert len(shown) == 2 and sorted(s.rsplit(" ", 1)[1] for s in shown) == ["bad.", "good."]
    assert all(s in [render(method.template, ex, {"0": "bad", "1": "good"}[ex.label]) for ex in POOL] for s in shown)


def test_demonstrations_vary_with_the_seed_and_are_shared_by_queries_with_random_selection(tiny_causal_lm):
    other = Example({"text_a": "the cast was weak."}, "0")
    one = icl(tiny_causal_lm, k=2, seed=1)
    sets = {seed: [icl(tiny_causal_lm, k=2, seed=seed).demonstrations.choose(QUERY)] for seed in range(6)}
    assert len({tuple(s[0]) for s in sets.values()}) > 1  # other seeds, other demonstrations or order
    assert one.demonstrations.choose(QUERY) == one.demonstrations.choose(other)  # one set for every query
    chosen = one.demonstrations.choose(QUERY)
    assert sorted(one.demonstrations.pool[i].label for i in chosen) == ["0", "0", "1", "1"]  # k per class


def test_a_training_example_is_never_its_own_demonstration(tiny_causal_lm):
    method = icl(tiny_causal_lm, k=7)  # every other example of its class, and all of the other class
    for i, example in enumerate(POOL):
        assert i not in method.demonstrations.choose(example)
        assert len(method.demonstrations.choose(example)) == 14  # the 7 others of its class, 7 of the other


def test_similarity_selection_takes_the_nearest_examples_of_each_class(tiny_causal_lm):
    pool = [Example({"text_a": "the music was great."}, "1"), Example({"text_a": "a fine cast."}, "1"),
            Example({"text_a": "the music was bad."}, "0"), Example({"text_a": "a weak plot."}, "0")]
    method = icl(tiny_causal_lm, k=1, selection="similarity", pool=pool)
    assert sorted(method.demonstrations.choose(QUERY)) == [0, 2]  # both share "the music was"


def test_truncation_shortens_and_drops_demonstrations_never_the_query(tiny_gpt2_lm):  # written out
    long = Example({"text_a": " ".join(["the story was good and the music was nice"] * 3) + "."}, "1")
    method = icl(tiny_gpt2_lm, k=3)
    alone = build_method("manual", tiny_gpt2_lm, "{text_a} It was {mask}.", _verbalizer(), labels=("0", "1"))
    query_ids = alone.encode([long]).encodings[1][0].input_ids
    full = method.encode([long]).encodings[1][0].input_ids
    assert len(full) > len(query_ids) + 20
    for limit in (len(query_ids) + 20, len(query_ids) + 5, len(query_ids) + 1):
        method = build_method("icl", tiny_gpt2_lm, "{text_a} It was {mask}.", _verbalizer(), labels=("0", "1"),
                              max_length=limit, k=3)
        method.set_demonstration_pool(POOL, 0)
        ids = method.encode([long]).encodings[1][0].input_ids
        assert len(ids) <= limit - method.encoder.reserve
        # bos, then demonstrations, then the query whole
        assert ids[0] == query_ids[0] and ids[len(ids) - len(query_ids) + 1:] == query_ids[1:]
    # with room for a few tokens only, the nearest demonstration is cut short, not dropped
    method = build_method("icl", tiny_gpt2_lm, "{text_a} It was {mask}.", _verbalizer(), labels=("0", "1"),
                          max_length=len(query_ids) + 8, k=3)
    method.set_demonstration_pool(POOL, 0)
    ids = method.encode([long]).encodings[1][0].input_ids
    assert 0 < len(ids) - len(query_ids) <= 8
    assert decode(tiny_gpt2_lm, method.encode([long]).encodings[1][0]).split("\n\n")[0].endswith(("good.", "bad."))


def test_masked_lm_demonstrations_come_after_cls_and_move_the_mask(tiny_bert_lm):
    method = icl(tiny_bert_lm, k=1)
    plain = build_method("manual", tiny_bert_lm, "{text_a} It was {mask}.", _verbalizer(), labels=("0", "1"))
    with_demos = method.encode([QUERY]).encodings[1][0]
    without = plain.encode([QUERY]).encodings[1][0]
    shift = len(with_demos.input_ids) - len(without.input_ids)
    assert shift > 0 and with_demos.input_ids[0] == without.input_ids[0]  # [CLS] first
    assert with_demos.mask_positions == [p + shift for p in without.mask_positions]
    assert with_demos.input_ids[with_demos.mask_positions[0]] == tiny_bert_lm.tokenizer.mask_token_id
    scores = method.predict_scores(method.encode([QUERY, Example({"text_a": "it was dull."}, "0")]))
    assert scores.shape == (2, 2) and torch.isfinite(scores).all()


def test_several_sets_average_label_probabilities(tiny_causal_lm):
    method = icl(tiny_causal_lm, k=1, sets=3, seed=4)
    data = method.encode([QUERY])
    assert len(data) == 1 and len(data.encodings[1]) == 3
    each = []
    for s in range(3):
        one = icl(tiny_causal_lm, k=1, seed=4)
        one.demonstrations.sets = 3
        encoding = one.demonstrations.add(one.encoder.encode([QUERY.fields]), [QUERY], s)
        each.append(one.predict_scores(type(data)({1: encoding}, data.labels)).softmax(-1))
    expected = torch.stack(each).mean(0).log()
    assert torch.allclose(method.predict_scores(data), expected, atol=1e-5)


def test_icl_without_a_pool_says_what_is_missing(tiny_causal_lm):
    method = build_method("icl", tiny_causal_lm, "{text_a} It was {mask}.", _verbalizer(), labels=("0", "1"))
    with pytest.raises(ValueError, match="set_demonstration_pool"):
        method.encode([QUERY])


def test_config_errors_name_the_demonstration_setting():
    base = {"task": "sst2", "templates": {"patterns": ["{text_a} It was {mask}."], "verbalizers": [VERBALIZER]}}
    with pytest.raises(ConfigError, match=r"methods\[0\] \(manual\): demonstrations: k=0 is not valid"):
        parse_config({**base, "methods": [{"name": "manual", "demonstrations": {"k": 0}}]})
    with pytest.raises(ConfigError, match=r"\(manual\): demonstrations has no parameter 'kk'; its parameters: k, selection"):
        parse_config({**base, "methods": [{"name": "manual", "demonstrations": {"kk": 1}}]})
    with pytest.raises(ConfigError, match=r"selection='nearest' is not valid; give one of random, similarity"):
        parse_config({**base, "methods": [{"name": "icl", "selection": "nearest"}]})
    config = parse_config({**base, "methods": [{"name": "icl", "k": 4, "selection": "similarity"}]})
    assert config.methods[0].train and config.methods[0].params == {"k": 4, "selection": "similarity"}


TASK_TRAIN = [Example({"text_a": f"{s} was {adjective}."}, label)
              for s in SUBJECTS for adjective, label in zip(POSITIVE[:3] + NEGATIVE[:3], "111000")]
TASK_TEST = [Example({"text_a": f"{s} is {adjective}."}, label)
             for s in SUBJECTS[:4] for adjective, label in ((POSITIVE[5], "1"), (NEGATIVE[5], "0"))]


def test_harness_icl_runs_vary_with_data_and_training_seed(tiny_causal_lm, tmp_path):
    task = Task("toy", ("0", "1"), ("text_a",), list(TASK_TRAIN), list(TASK_TEST))
    experiment = Experiment(tiny_causal_lm, task, [MethodSpec("icl", params={"k": 2})],
                            [("{text_a} It was {mask}.", VERBALIZER)],
                            Protocol(k=4, data_seeds=[1, 2], train_seeds=[1, 2]), output_dir=tmp_path)
    records = experiment.run(progress=False)
    assert len(records) == 4 and all(r["trainable_params"] == 0 and r["steps"] == 0 for r in records)
    store = ResultsStore(tmp_path)
    tests = {(r["data_seed"], r["train_seed"]): store.load_predictions(r["run_id"])["test"] for r in records}
    assert len({str(t) for t in tests.values()}) == 4  # every split and seed its own demonstrations
    shown = [r["describe"]["demonstrations"][0] for r in records]
    train_texts = {e["text_a"] for e in TASK_TRAIN}
    assert all(any(t in d for t in train_texts) for demos in shown for d in demos)


def test_pet_with_demonstrations_trains_on_inputs_that_carry_them(make_tiny_lm, tmp_path, monkeypatch):
    lm = make_tiny_lm("llama")
    task = Task("toy", ("0", "1"), ("text_a",), list(TASK_TRAIN), list(TASK_TEST))
    spec = MethodSpec("manual", params={"demonstrations": {"k": 1}},
                      train_config={"lr": 1e-3, "max_steps": 2, "batch_size": 4, "tune_lm": True})
    seen = []
    experiment = Experiment(lm, task, [spec], [("{text_a} It was {mask}.", VERBALIZER)],
                            Protocol(k=4, data_seeds=[1], train_seeds=[1]), output_dir=tmp_path)
    original = RunExecutor.fit
    monkeypatch.setattr(RunExecutor, "fit", lambda self, run, method, *a: seen.append(method.encode(TASK_TEST[:1]))
                        or original(self, run, method, *a))
    records = experiment.run(progress=False)
    assert records[0]["steps"] == 2 and records[0]["describe"]["demonstrations"] == {"k": 1}
    assert lm.tokenizer.decode(seen[0].encodings[1][0].input_ids).count("It was") == 3  # 2 demos + the query


def test_one_shared_set_scored_as_a_prefix_gives_the_whole_prompts_scores(tiny_causal_lm):
    queries = [QUERY, Example({"text_a": "the cast was weak and the plot was slow."}, "0")]
    method = icl(tiny_causal_lm, k=2, seed=3)
    data = method.encode(queries)
    assert data.shared and len(data.encodings[1][0].input_ids) < 12  # the inputs alone
    shared = method.predict_scores(data)
    # the same demonstrations written into every prompt
    method.share_block = False
    whole = method.encode(queries)
    assert not whole.shared and len(whole.encodings[1][0].input_ids) > 30
    assert torch.allclose(shared, method.predict_scores(whole), atol=1e-4)


def test_an_input_too_long_for_theshared_block_is_scored_whole_and_the_others_beside_the_block(
        tiny_causal_lm):
    """The shared block is not given up for every input because one does not fit beside it: that one
    is scored with its own (shortened) demonstrations, the rest as the inputs alone after the block."""
    long_query = Example({"text_a": " ".join(["the plot was slow and the cast was weak"] * 12)}, "0")
    queries = [QUERY, long_query, Example({"text_a": "the cast was weak."}, "0")]
    method = build_method("icl", tiny_causal_lm, "{text_a} It was {mask}.", _verbalizer(), labels=("0", "1"),
                          max_length=96, k=2)
    method.set_demonstration_pool(POOL, 3)
    block = len(method.shared_block())
    data = method.encode(queries)
    assert data.rows_shared == (True, False, True) and block + len(data.encodings[1][1].input_ids) > 96
    mixed = method.predict_scores(data, cached=False)
    short = method.predict_scores(method.encode([QUERY, queries[2]]), cached=False)
    torch.testing.assert_close(mixed[[0, 2]], short, atol=1e-5, rtol=0)
    method.share_block = False  # every prompt whole
    whole = method.predict_scores(method.encode(queries), cached=False)
    torch.testing.assert_close(mixed[1], whole[1], atol=1e-5, rtol=0)
