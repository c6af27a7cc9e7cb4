"""Generation tasks (the model writes text at ``{mask}``): data and configs, text metrics against
sacreBLEU and rouge-score, the teacher-forced target path against a plain forward, every method learning
to write on tiny random causal, T5 and BART models, and whole runs through the harness."""

import json
from pathlib import Path

import pytest
import torch

from conftest import build_bpe_tokenizer, build_t5_tokenizer, build_tiny_lm
from prompting.config.experiment import ConfigError, load_configs, parse_config
from prompting.core.data import DataError
from prompting.core.settings import TrainConfig
from prompting.core.texts import TextExample, group_references, load_text_task, sample_pairs
from prompting.core.textmetrics import corpus_score, text_scores
from prompting.experiment.harness import build_experiment
from prompting.lm.generating import Decoding, stop_token_ids, target_logprobs, written_text
from prompting.methods import build_method
from prompting.methods.targets import WRITTEN, encode_targets, target_nll, write
from prompting.tasks.textspec import load_generation_task
from prompting.training.loop import train

ROOT = Path(__file__).resolve().parents[1]
E2E = ROOT.parent / "shared" / "data" / "e2e"
needs_e2e = pytest.mark.skipif(not (E2E / "test.csv").exists(), reason="the E2E data is not here")
NAMES = ["Aromi", "Bibimbap", "Cotto", "Zizzi"]
PAIRS = [TextExample({"mr": f"name[{n}]"}, None, i, (f"{n} is good.",)) for i, n in enumerate(NAMES)]
TEMPLATE = "{mr} = {mask}"
# every method that learns to write, with a template it takes and a learning rate it learns at in a few steps
LEARNERS = [("manual", TEMPLATE, 1e-2), ("soft", "{soft:2} {mr} = {mask}", 1.0), ("prefix", TEMPLATE, 1e-2),
            ("ptuning", "{soft:2} {mr} {soft:2} {mask}", 0.3)]


@pytest.fixture(scope="module")
def tokenizers():
    return {"bpe": build_bpe_tokenizer(), "t5": build_t5_tokenizer()}


def tiny(kind, tokenizers, seed=0):
    return build_tiny_lm(kind, tokenizers["t5" if kind == "t5" else "bpe"], seed)


def own_files(tmp_path, rows, test_rows=None):
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    test.write_text("".join(json.dumps(r) + "\n" for r in (test_rows or rows)))
    return {"name": "dishes", "type": "generation", "train": str(train), "test": str(test),
            "fields": {"mr": "mr"}, "target_column": "ref"}


# ------------------------------------------------------------------------------------ data and configs
@needs_e2e
def test_e2e_pools_its_dev_pairs_and_groups_every_test_reference_under_its_input():
    task = load_text_task("e2e", E2E)
    lines = sum(1 for _ in (E2E / "test.csv").open(encoding="utf-8")) - 1
    assert len(task.test) == 630 and sum(len(e.references) for e in task.test) <= lines
    assert len({e.fields["mr"] for e in task.test}) == 630 and min(len(e.references) for e in task.test) >= 1
    assert len(task.train) > 4000 and all(len(e.references) == 1 for e in task.train)


def test_pairs_of_one_input_are_one_test_input_with_all_their_references(tmp_path):
    rows = [{"mr": "a", "ref": "A one."}, {"mr": "b", "ref": "B."}, {"mr": "a", "ref": "A two."}]
    task = load_generation_task(own_files(tmp_path, rows))
    assert [(e.fields["mr"], e.references) for e in task.test] == [("a", ("A one.", "A two.")), ("b", ("B.",))]
    assert len(task.train) == 3  # training keeps pairs


def test_dev_pairs_come_from_inputs_no_training_pair_has():
    pool = [TextExample({"mr": f"m{i % 10}"}, None, i, (f"t{i}",)) for i in range(60)]
    train_pairs, dev = sample_pairs(pool, 5, seed=13)
    assert len(train_pairs) == len(dev) == 5
    assert not {e.fields["mr"] for e in train_pairs} & {e.fields["mr"] for e in dev}
    assert sample_pairs(pool, 5, seed=13) == (train_pairs, dev)
    with pytest.raises(DataError, match="k=70 needs at least 70"):
        sample_pairs(pool, 70, seed=13)


@pytest.mark.parametrize("row, message", [
    ({"mr": "a", "text": "A."}, "'ref'"),  # the target column is missing
    ({"mr": "a", "ref": ""}, "row 0 has no text in the target column 'ref'"),
])
def test_a_pair_without_its_target_is_refused_with_the_column_named(tmp_path, row, message):
    with pytest.raises((DataError, ValueError), match=message):
        load_generation_task(own_files(tmp_path, [row]))


@needs_e2e
@pytest.mark.parametrize("name", ["e2e_check", "e2e_fewshot"])
def test_the_shipped_e2e_configs_run_patterns_without_verbalizers_and_plan_shared_runs(name, tokenizers):
    from prompting.experiment.harness import task_type_of

    [cfg] = load_configs(ROOT / "experiments" / f"{name}.yaml")
    [check] = load_configs(ROOT / "experiments" / "e2e_check.yaml")
    assert cfg.prompts == [("Table: {mr}\nText: {mask}", {})]
    plan = lambda c: {r.run_id for r in task_type_of(c).plan(c.methods, c.prompts, c.protocol, c.model,
                                                             torch.float32, c.max_length)}
    assert plan(check) <= plan(cfg)  # one output folder holds both configs' runs, each run once
    lm = tiny("llama", tokenizers)
    for spec in cfg.methods:  # every entry builds on its template
        build_method(spec.name, lm, spec.template or cfg.prompts[0][0], None, labels=(), **spec.params)


def e2e_config(tmp_path, **changes):
    data = {"name": "t", "model": "x", "task": own_files(tmp_path, [{"mr": "a", "ref": "A."}]),
            "fewshot": {"k": 1, "data_seeds": [13]}, "templates": {"patterns": [TEMPLATE]},
            "methods": [{"name": "manual", "train": False}]}
    return parse_config({**data, **changes}, tmp_path)


@pytest.mark.parametrize("changes, message", [
    ({"templates": {"patterns": [TEMPLATE], "verbalizers": [{"a": "b"}]}}, "verbalizers word labels"),
    ({"methods": [{"name": "autoprompt"}]}, "autoprompt searches trigger words"),
    ({"methods": [{"name": "manual", "train": False, "calibration": ["contextual"]}]}, "calibration is for label"),
])
def test_what_scores_label_words_is_refused_on_a_generation_task_before_the_model_loads(tmp_path, changes,
                                                                                        message):
    with pytest.raises((ConfigError, ValueError), match=message):
        build_experiment(e2e_config(tmp_path, **changes), tmp_path / "out", lm=object())


# ------------------------------------------------------------------------------------ metrics
def test_bleu_and_chrf_are_sacrebleu_s_corpus_scores_over_every_reference_and_resample_from_inputs():
    import sacrebleu

    outputs = ["the cat sat on the mat", "a dog ran fast", "hello there world"]
    refs = [["the cat sat on a mat", "a cat is on the mat"], ["the dog ran quickly"], ["hello world", "hi there"]]
    totals, rows = text_scores(outputs, refs)
    streams = [[r[j] if j < len(r) else None for r in refs] for j in range(2)]
    assert totals["bleu"] == pytest.approx(sacrebleu.corpus_bleu(outputs, streams).score, abs=1e-5)
    assert totals["chrf"] == pytest.approx(sacrebleu.corpus_chrf(outputs, streams).score, abs=1e-5)
    # a subset's corpus score from its inputs' statistics is sacreBLEU's score of that subset
    part = corpus_score("bleu", [rows[0]["bleu"], rows[1]["bleu"]])
    assert part == pytest.approx(sacrebleu.corpus_bleu(outputs[:2], [s[:2] for s in streams]).score, abs=1e-5)


def test_rouge_l_takes_each_input_s_closest_reference():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    totals, rows = text_scores(["a b c d", "x y"], [["a b c d", "z"], ["x q", "q"]])
    assert rows[0]["rouge_l"] == pytest.approx(100.0)
    assert rows[1]["rouge_l"] == pytest.approx(100 * scorer.score("x q", "x y")["rougeL"].fmeasure)
    assert totals["rouge_l"] == pytest.approx((rows[0]["rouge_l"] + rows[1]["rouge_l"]) / 2)


# ------------------------------------------------------------------------------------ writing and decoding
def test_decoding_stops_at_a_newline_or_the_end_of_text(tokenizers):
    lm = tiny("llama", tokenizers)
    stops = stop_token_ids(lm)
    assert lm.tokenizer.eos_token_id in stops
    assert all("\n" in lm.tokenizer.decode([t]) for t in stops if t != lm.tokenizer.eos_token_id)
    ids = lm.tokenizer("good food\nmore text", add_special_tokens=False)["input_ids"]
    assert written_text(lm, ids) == "good food"


@pytest.mark.parametrize("kind", ["llama", "t5", "bart"])
def test_teacher_forced_target_log_probs_are_a_plain_forward_s(tokenizers, kind):
    lm = tiny(kind, tokenizers)
    method = build_method("manual", lm, TEMPLATE, None, labels=())
    data = encode_targets(method, PAIRS)
    batch = next(iter(method.batches(data, 4)))
    prompt = batch.prompts[min(batch.prompts)]
    with torch.no_grad():
        ours = target_logprobs(lm, prompt, batch.targets, batch.known, hooks=method)
        if lm.seq2seq:
            start = torch.tensor(lm.decoder_start_ids).expand(len(PAIRS), -1)
            logits = lm.model(input_ids=prompt.input_ids, attention_mask=prompt.attention_mask,
                              decoder_input_ids=torch.cat([start, batch.targets[:, :-1]], 1)).logits
        else:
            ids = torch.cat([prompt.input_ids, batch.targets[:, :-1]], 1)
            mask = torch.cat([prompt.attention_mask, batch.known[:, :-1].long()], 1)
            logits = lm.model(input_ids=ids, attention_mask=mask,
                              position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits
    width = batch.targets.shape[1]
    plain = logits[:, -width:].float().log_softmax(-1).gather(2, batch.targets.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(ours, plain * batch.known, atol=1e-5)
    # each target is its text after {mask}, then the end of text
    assert lm.tokenizer.decode(data.target_ids[0], skip_special_tokens=True).strip() == "Aromi is good."
    assert data.target_ids[0][-1] == lm.tokenizer.eos_token_id


@pytest.mark.parametrize("kind", ["llama", "t5", "bart"])
@pytest.mark.parametrize("name, template, lr", LEARNERS, ids=[m for m, *_ in LEARNERS])
def test_every_method_learns_its_targets_on_causal_and_encoder_decoder_lms(tokenizers, kind, name, template, lr):
    lm = tiny(kind, tokenizers)
    method = build_method(name, lm, template, None, labels=())
    data = encode_targets(method, PAIRS)
    before = target_nll(method, data)[0].mean()
    frozen = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    result = train(method, data, encode_targets(method, PAIRS[:2]),
                   TrainConfig(lr=lr, max_steps=25, batch_size=4, tune_lm=name == "manual"), progress=False)
    after = target_nll(method, data)[0].mean()
    assert after < before - 0.5, (before, after)  # nats per target token
    assert result.best_dev and "nll" in result.best_dev  # dev selects by the targets' token NLL
    if name != "manual":  # a learned prompt leaves the LM as it was
        assert all(torch.equal(p, frozen[n]) for n, p in lm.model.named_parameters())
    WRITTEN.clear()
    texts = write(method, PAIRS, Decoding(max_new_tokens=6))
    assert len(texts) == 4 and all(isinstance(t, str) and "\n" not in t for t in texts)


def test_fine_tuning_writes_the_targets_it_learned(tokenizers):
    lm = tiny("llama", tokenizers)
    method = build_method("manual", lm, TEMPLATE, None, labels=())
    WRITTEN.clear()
    untrained = write(method, PAIRS, Decoding(max_new_tokens=8))
    train(method, encode_targets(method, PAIRS), None, TrainConfig(lr=1e-2, max_steps=40, batch_size=4, tune_lm=True),
          progress=False)
    references = [p.references for p in PAIRS]
    for beams in (1, 3):
        written = write(method, PAIRS, Decoding(num_beams=beams, max_new_tokens=8))
        assert text_scores(written, references)[0]["chrf"] > 70, written
    assert text_scores(untrained, references)[0]["chrf"] < 20, untrained


# ------------------------------------------------------------------------------------ whole runs
@pytest.fixture(scope="module")
def finished(tmp_path_factory, tokenizers):
    """A generation config of one's own files run on a tiny causal LM: every method, two data seeds."""
    tmp = tmp_path_factory.mktemp("gen")
    rows = [{"mr": f"name[{n}] food[{f}]", "ref": f"{n} serves {f}."}
            for n in NAMES for f in ("tea", "rice", "fish")]
    tests = [{"mr": "name[Aromi] food[soup]", "ref": "Aromi serves soup."},
             {"mr": "name[Aromi] food[soup]", "ref": "Soup at Aromi."},
             {"mr": "name[Cotto] food[pie]", "ref": "Cotto serves pie."}]
    task = own_files(tmp, rows, tests)
    fast = {"max_steps": 2, "batch_size": 2}
    cfg = parse_config({"name": "gen", "model": "x", "task": {**task, "decoding": {"max_new_tokens": 6}},
                        "fewshot": {"k": 3, "data_seeds": [13, 21]}, "templates": {"patterns": [TEMPLATE]},
                        "seeds": {"train_seeds": [1]},
                        "methods": [{"name": "manual", "train": False},
                                    {"name": "manual", "train": True, "lr": 1e-3, **fast},
                                    {"name": "prefix", **fast}, {"name": "soft", **fast},
                                    {"name": "ptuning", **fast, "template": LEARNERS[3][1]},
                                    {"name": "icl", "k": 1}]}, tmp)
    out = tmp / "out"
    records = build_experiment(cfg, out, lm=tiny("llama", tokenizers)).run(progress=False)
    return cfg, records, out


def test_a_run_records_bleu_chrf_and_rouge_l_of_what_it_wrote(finished):
    _, records, out = finished
    assert len(records) == 12  # 6 entries, 2 data seeds
    for record in records:
        assert set(record["test"]) == {"bleu", "chrf", "rouge_l"}
        assert all(0 <= v <= 100 for v in record["test"].values())
        assert (record["n_test"], record["n_references"]) == (2, 3)
        saved = json.loads((out / "predictions" / f"{record['run_id']}.json").read_text())
        outputs, refs = saved["test_outputs"], [("Aromi serves soup.", "Soup at Aromi."), ("Cotto serves pie.",)]
        order = [i["mr"] for i in saved["test_inputs"]]
        refs = [refs[0] if "Aromi" in mr else refs[1] for mr in order]
        assert text_scores(outputs, refs)[0] == record["test"]  # the record is the outputs' score
        # dev selects by the targets' token NLL: trained runs, and zero-shot and in-context runs too
        assert record["dev"]["nll"] > 0 and record["dev_loss"] == record["dev"]["nll"]


def test_in_context_demonstrations_show_training_targets(finished, tokenizers):
    cfg, records, _ = finished
    lm = tiny("llama", tokenizers)
    icl = build_method("icl", lm, TEMPLATE, None, labels=(), k=1)
    icl.share_block = False
    pool = [TextExample({"mr": "x"}, None, 0, ("Y serves z.",))]
    icl.set_demonstration_pool(pool)
    encoded = icl.encode([TextExample({"mr": "q"}, None, 1, ("r",))])
    text = lm.tokenizer.decode(encoded.encodings[min(encoded.encodings)][0].input_ids)
    assert "x = Y serves z." in text and text.rstrip().endswith("q =")


def test_in_context_dev_nll_reads_every_prompt_with_its_demonstrations(tokenizers):
    lm = tiny("llama", tokenizers)
    icl = build_method("icl", lm, TEMPLATE, None, labels=(), k=1)
    icl.set_demonstration_pool([TextExample({"mr": "x"}, None, 0, ("Y serves z.",))])
    assert icl.shared_block() is not None  # decoding attends to one shared block of demonstrations
    shared = target_nll(icl, encode_targets(icl, PAIRS))[0]
    icl.share_block = False
    whole = target_nll(icl, encode_targets(icl, PAIRS))[0]
    manual = build_method("manual", lm, TEMPLATE, None, labels=())
    plain = target_nll(manual, encode_targets(manual, PAIRS))[0]
    torch.testing.assert_close(shared, whole, atol=1e-5, rtol=0)
    assert not torch.allclose(whole, plain, atol=1e-3)  # the demonstrations are read


def test_a_finished_generation_run_is_not_run_again(finished, tokenizers):
    cfg, records, out = finished
    again = build_experiment(cfg, out, lm=tiny("llama", tokenizers))
    assert [r["run_id"] for r in again.run(progress=False)] == [r["run_id"] for r in records]
    assert len((out / "results.jsonl").read_text().splitlines()) == len(records)


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_an_encoder_decoder_lm_in_a_folder_loads_as_one_and_writes_what_it_wrote_in_memory(tmp_path, tokenizers,
                                                                                           kind):
    from prompting.lm.model import LanguageModel

    built = tiny(kind, tokenizers)
    built.model.save_pretrained(tmp_path / kind)
    built.tokenizer.save_pretrained(tmp_path / kind)
    loaded = LanguageModel.load(str(tmp_path / kind), device="cpu")
    assert loaded.seq2seq and loaded.decoder_start_ids == built.decoder_start_ids
    WRITTEN.clear()
    texts = [write(build_method("manual", lm, TEMPLATE, None, labels=()), PAIRS, Decoding(max_new_tokens=5))
             for lm in (built, loaded)]
    assert texts[0] == texts[1]


# ------------------------------------------------------------------------------------ encoder-decoder LMs: labels
@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_an_encoder_decoder_lm_scores_label_words_by_the_decoder_s_log_probability(tokenizers, kind):
    from prompting.core.data import Example
    from prompting.core.verbalizer import Verbalizer

    lm = tiny(kind, tokenizers)
    words = {"0": ["bad"], "1": ["good"]}
    method = build_method("manual", lm, "{text_a} It was {mask}.", Verbalizer(words), labels=("0", "1"))
    examples = [Example({"text_a": "The food was cold"}), Example({"text_a": "A fine place"})]
    scores = method.predict_scores(method.encode(examples), cached=False)
    batch = next(iter(method.batches(method.encode(examples), 2)))
    prompt = batch.prompts[min(batch.prompts)]
    start = torch.tensor(lm.decoder_start_ids).expand(2, -1)
    plain = []
    with torch.no_grad():
        for label in ("0", "1"):
            word = lm.tokenizer(" " + words[label][0] if kind == "bart" else words[label][0],
                                add_special_tokens=False)["input_ids"]
            ids = torch.tensor(word).expand(2, -1)
            logits = lm.model(input_ids=prompt.input_ids, attention_mask=prompt.attention_mask,
                              decoder_input_ids=torch.cat([start, ids[:, :-1]], 1)).logits
            token = logits[:, -len(word):].float().log_softmax(-1).gather(2, ids.unsqueeze(-1)).squeeze(-1)
            plain.append(token.sum(1))
    assert torch.allclose(scores[:, 1] - scores[:, 0], plain[1] - plain[0], atol=1e-5)


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_every_method_classifies_through_the_harness_on_an_encoder_decoder_lm(tokenizers, kind, tmp_path):
    from test_harness import PATTERNS, VERBALIZER, toy_task
    from prompting.experiment.harness import Experiment, MethodSpec, Protocol

    fast = {"lr": 1e-2, "max_steps": 2, "batch_size": 4}
    specs = [MethodSpec("manual"), MethodSpec("manual", train=True, train_config=fast),
             MethodSpec("soft", train_config=fast), MethodSpec("prefix", train_config=fast),
             MethodSpec("ptuning", train_config=fast, template="{soft:2} {text_a} {soft:2} {mask}"),
             MethodSpec("autoprompt", train_config={"max_steps": 2, "batch_size": 4},
                        template="{text_a} {trigger:2} {mask}"),
             MethodSpec("icl", params={"k": 1})]
    records = Experiment(tiny(kind, tokenizers), toy_task(), specs, [(PATTERNS[0], VERBALIZER)],
                         Protocol(k=4, data_seeds=(13,), train_seeds=(1,)), output_dir=tmp_path).run(progress=False)
    assert sorted(r["method"] for r in records) == sorted(s.name for s in specs)
    assert all(0 <= r["test"]["accuracy"] <= 1 and r["n_test"] == 10 for r in records)


# ------------------------------------------------------------------------------------ a learned slot after the input
@pytest.mark.parametrize("template", ["{mr} {soft:2} = {mask}", "{mr} = {soft:2} {mask}"])
def test_a_soft_prompt_after_the_input_writes_and_learns_as_without_the_input_s_cached_keys(tokenizers, template):
    """With the LM frozen and the learned slot after the input, batches leave the input out and attend to its
    cached keys and values: the target's log-probabilities, their gradient and what is written are as when
    every prompt is run whole."""
    lm = tiny("llama", tokenizers)
    lm.model.requires_grad_(False)  # as training a prompt leaves it
    method = build_method("soft", lm, template, None, labels=())
    data = encode_targets(method, PAIRS)
    outcomes = []
    for cap in (lm.spans.cap, 0):
        kept, lm.spans.cap = lm.spans.cap, cap
        try:
            assert method.frozen_text == (cap > 0)
            method.zero_grad()
            batch = next(iter(method.batches(data, 4)))
            assert (batch.prompts[min(batch.prompts)].frozen is not None) == (cap > 0)
            loss = batch.loss(method)
            loss.backward()
            grad = [p.grad.clone() for p in method.parameters() if p.requires_grad]
            WRITTEN.clear()
            outcomes.append((loss.item(), grad, write(method, PAIRS, Decoding(max_new_tokens=6))))
        finally:
            lm.spans.cap = kept
    (fast_loss, fast_grad, fast_text), (slow_loss, slow_grad, slow_text) = outcomes
    assert fast_loss == pytest.approx(slow_loss, abs=1e-5)
    for fast, slow in zip(fast_grad, slow_grad):
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)
    assert fast_text == slow_text


@pytest.mark.parametrize("kind", ["llama", "t5", "bart"])
@pytest.mark.parametrize("name", ["soft", "ptuning"])
def test_a_prompt_learned_from_words_starts_where_the_words_are(tokenizers, kind, name):
    """A soft prompt (or P-tuning's, whose encoder adds to its inputs) started from "It was" gives the
    targets, before any step, the log-probabilities the words written in the template give them."""
    lm = tiny(kind, tokenizers)
    found = []
    for method in (build_method("manual", lm, "{mr} It was {mask}", None, labels=()),
                   build_method(name, lm, '{mr} {soft:"It was"} {mask}', None, labels=())):
        data = encode_targets(method, PAIRS)
        batch = next(iter(method.batches(data, 4)))
        with torch.no_grad():
            found.append(target_logprobs(lm, batch.prompts[min(batch.prompts)], batch.targets, batch.known,
                                         hooks=method))
    torch.testing.assert_close(found[1], found[0], atol=1e-5, rtol=0)


@needs_e2e
def test_the_committed_e2e_records_are_the_runs_the_shipped_config_plans():
    """`prompting run experiments/e2e_fewshot.yaml --output-dir experiments/results/e2e` finds every run recorded."""
    from prompting.experiment.harness import task_type_of

    [cfg] = load_configs(ROOT / "experiments" / "e2e_fewshot.yaml")
    planned = {r.run_id for r in task_type_of(cfg).plan(cfg.methods, cfg.prompts, cfg.protocol, cfg.model,
                                                        torch.float32, cfg.max_length)}
    lines = (ROOT / "experiments" / "results" / "e2e" / "results.jsonl").read_text().splitlines()
    assert planned == {json.loads(line)["run_id"] for line in lines if line}


@needs_e2e
def test_the_committed_full_scale_e2e_records_are_runs_of_its_config_each_split_whole():
    """`prompting run experiments/e2e_full.yaml --output-dir experiments/results/e2e_full` resumes the committed
    folder: each record is one of its runs, and each data split it holds has every method's run."""
    from prompting.experiment.harness import task_type_of

    [cfg] = load_configs(ROOT / "experiments" / "e2e_full.yaml")
    plan = task_type_of(cfg).plan(cfg.methods, cfg.prompts, cfg.protocol, cfg.model, torch.float32, cfg.max_length)
    lines = (ROOT / "experiments" / "results" / "e2e_full" / "results.jsonl").read_text().splitlines()
    recorded = {json.loads(line)["run_id"] for line in lines if line}
    assert recorded <= {r.run_id for r in plan}
    splits = {r.data_seed for r in plan if r.run_id in recorded}
    assert splits and all(r.run_id in recorded for r in plan if r.data_seed in splits)
    assert all(json.loads(line)["n_test"] == 630 for line in lines if line)
