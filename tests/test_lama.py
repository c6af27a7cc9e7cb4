"""Fact probing: the LAMA loader and its errors, the vocab protocol's filter, exact multi-token
candidate ranking (shared-work trie and pruned ranks) against brute force on tiny random LMs, the
ranking metrics, and a whole probing run on a tiny random Llama."""

import json

import pytest
import torch

from prompting.core.data import DataError, Example
from prompting.tasks.lama import (candidate_ranks, lama_template, load_facts, load_relation, macro_average,
                            majority_scores, ranking_metrics, ranks, vocab_facts, vocab_ranks)
from prompting.methods import build_method
from prompting.lm.trie import CandidateTrie, shared_scoring
from prompting.core.verbalizer import LabelWordIds, Verbalizer

pytestmark = pytest.mark.filterwarnings("ignore:template .* causal LM predicts:UserWarning")

# objects of 1, 2 and 3 tokens, sharing first tokens (" great"/" greatest", " the movie"/" the film")
OBJECTS = ["great", "greatest", "horrible", "the movie", "the film", "the story was good", "bad", "terrible film"]
SUBJECTS = ["I loved it", "A very long and boring story that goes on", "No", "The plot", "yes it was",
            "Bad writing, bad editing", "The cast", "Two hours of noise"]
TEMPLATE = "{sub_label} It was {mask}"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_relation(root, name="P1", template="[X] It was [Y] .", test_objects=None):
    folder = root / name
    folder.mkdir(parents=True)
    for split, offset in (("train", 0), ("dev", 3), ("test", 5)):
        objs = test_objects if split == "test" and test_objects else OBJECTS
        write_jsonl(folder / f"{split}.jsonl", [
            {"sub_uri": f"{split}{i}", "sub_label": s, "obj_uri": f"o{o}", "obj_label": o}
            for i, (s, o) in enumerate(zip(SUBJECTS, objs[offset:] + objs[:offset]))])
    (root / "relations.tsv").write_text(f"relation\tname\ttemplate\n{name}\ttest relation\t{template}\n")
    return root


# ------------------------------------------------------------------------------------------ loader
def test_relation_loads_template_and_candidates_from_all_splits(tmp_path):
    rel = load_relation(write_relation(tmp_path), "P1")
    assert rel.template == "{sub_label} It was {mask} ."
    assert rel.candidates == tuple(sorted(OBJECTS))
    assert rel.test[0].fields == {"sub_label": SUBJECTS[0]} and rel.test[0].label == OBJECTS[5]
    assert rel.task().labels == rel.candidates and rel.task().fixed_split


def test_user_template_replaces_the_relation_row(tmp_path):
    rel = load_relation(write_relation(tmp_path), "P1", template="Q: [X]? A: [Y]")
    assert rel.template == "Q: {sub_label}? A: {mask}"
    assert lama_template("{sub_label} is {mask}") == "{sub_label} is {mask}"
    with pytest.raises(DataError, match=r"no \[Y\] slot"):
        lama_template("[X] was born somewhere")


def test_missing_field_names_the_row_and_column(tmp_path):
    path = write_jsonl(tmp_path / "facts.jsonl", [{"sub_label": "a", "obj_label": "b"}, {"sub_label": "c"}])
    with pytest.raises(DataError, match=r"row 1 has no object in column 'obj_label'; columns: sub_label"):
        load_facts(path)
    path = write_jsonl(tmp_path / "blank.jsonl", [{"sub_label": " ", "obj_label": "b"}])
    with pytest.raises(DataError, match=r"row 0 has no subject in column 'sub_label'"):
        load_facts(path)


def test_csv_with_own_column_names(tmp_path):
    path = tmp_path / "facts.csv"
    path.write_text("person,city\nAda,London\nAlan,Maida Vale\n")
    facts = load_facts(path, subject="person", object="city")
    assert [(f["sub_label"], f.label) for f in facts] == [("Ada", "London"), ("Alan", "Maida Vale")]


def test_duplicate_facts_are_refused(tmp_path):
    rows = [{"sub_label": "a", "obj_label": "b"}, {"sub_label": "c", "obj_label": "d"},
            {"sub_label": "a", "obj_label": "b"}]
    with pytest.raises(DataError, match=r"row 2 repeats the fact of row 0 \('a' -> 'b'\)"):
        load_facts(write_jsonl(tmp_path / "dup.jsonl", rows))
    # two entities that share a name are two facts
    rows = [{"sub_uri": "Q1", "sub_label": "a", "obj_uri": "Q9", "obj_label": "b"},
            {"sub_uri": "Q2", "sub_label": "a", "obj_uri": "Q9", "obj_label": "b"}]
    assert len(load_facts(write_jsonl(tmp_path / "uris.jsonl", rows))) == 2


def test_object_absent_from_the_candidate_set(tmp_path):
    root = write_relation(tmp_path)
    with pytest.raises(DataError, match=r"has object 'great', which is not among the 2 candidates"):
        load_relation(root, "P1", candidates=["bad", "horrible"])


def test_unknown_relation_lists_the_ones_there(tmp_path):
    root = write_relation(tmp_path)
    with pytest.raises(DataError, match=r"relation 'P9'.*relations in .*: P1"):
        load_relation(root, "P9")


# ------------------------------------------------------------------------------------------ vocab
def test_vocab_protocol_keeps_one_token_objects_only(bpe_tokenizer):
    facts = [Example({"sub_label": "x"}, w) for w in ("great", "horrible", "greatest", "bad")]
    kept, ids = vocab_facts(facts, bpe_tokenizer, leading_space=True)
    assert [f.label for f in kept] == ["great", "bad"]
    assert ids == [bpe_tokenizer(" great", add_special_tokens=False)["input_ids"][0],
                   bpe_tokenizer(" bad", add_special_tokens=False)["input_ids"][0]]
    assert len(bpe_tokenizer(" horrible", add_special_tokens=False)["input_ids"]) > 1


def test_vocab_ranks_are_ranks_in_the_next_token_distribution(tiny_causal_lm):
    lm = tiny_causal_lm
    method = build_method("manual", lm, TEMPLATE, Verbalizer({w: [w] for w in ("great", "bad")}))
    facts = [Example({"sub_label": s}, "great") for s in SUBJECTS[:3]]
    token = lm.tokenizer(" great", add_special_tokens=False)["input_ids"][0]
    found = vocab_ranks(method, facts, [token] * 3)
    for fact, rank, best, score in zip(facts, found.ranks, found.top, found.top_scores):
        ids = [lm.tokenizer.bos_token_id] + lm.tokenizer(f"{fact['sub_label']} It was",
                                                        add_special_tokens=False)["input_ids"]
        logits = lm.model(input_ids=torch.tensor([ids])).logits[0, -1]
        assert rank == 1 + (logits > logits[token]).sum()
        assert best[0] == logits.argmax()
        assert torch.allclose(score.float(), logits.log_softmax(-1).topk(len(best)).values, atol=1e-5)


# ------------------------------------------------------------------------------------------ exact ranking
def brute_force_scores(lm, subject: str, objects) -> torch.Tensor:
    """Each candidate on its own: the unpadded prompt and the candidate's tokens, teacher-forced."""
    context = [lm.tokenizer.bos_token_id] + lm.tokenizer(f"{subject} It was", add_special_tokens=False)["input_ids"]
    scores = []
    for obj in objects:
        word = lm.tokenizer(" " + obj, add_special_tokens=False)["input_ids"]
        logprobs = lm.model(input_ids=torch.tensor([context + word])).logits[0].log_softmax(-1)
        scores.append(sum(logprobs[len(context) - 1 + d, t] for d, t in enumerate(word)))
    return torch.stack(scores)


def test_trie_shares_prefixes(bpe_tokenizer):
    words = [tuple(bpe_tokenizer(" " + o, add_special_tokens=False)["input_ids"]) for o in OBJECTS]
    trie = CandidateTrie.build(words)
    proper = {w[:d] for w in words for d in range(1, len(w))}
    assert trie.n_nodes == len(proper) < sum(len(w) - 1 for w in words)
    assert len(trie.pair_word) == sum(len(w) - 1 for w in words)


@torch.no_grad()
def test_shared_scoring_equals_brute_force(tiny_causal_lm):
    lm = tiny_causal_lm
    method = build_method("manual", lm, TEMPLATE, Verbalizer({o: [o] for o in OBJECTS}))
    data = method.encode([Example({"sub_label": s}) for s in SUBJECTS])  # different lengths: padded
    plain = method.predict_scores(data, batch_size=4)
    shared = shared_scoring(method).predict_scores(data, batch_size=4)
    assert method.words.trie.n_nodes > 0
    expected = torch.stack([brute_force_scores(lm, s, OBJECTS) for s in SUBJECTS])
    assert torch.allclose(shared, expected, atol=1e-5)
    assert torch.allclose(shared, plain, atol=1e-5)


def test_shared_scoring_under_a_soft_prompt_matches_and_trains(make_tiny_lm):
    lm = make_tiny_lm("llama")
    method = build_method("soft", lm, TEMPLATE, Verbalizer({o: [o] for o in OBJECTS}), prompt_tokens=3, init="vocab")
    data = method.encode([Example({"sub_label": s}, o) for s, o in zip(SUBJECTS, OBJECTS)])
    batch = next(method.batches(data, 8))
    with torch.no_grad():
        plain = method(batch)
    shared_scoring(method)
    scores = method(batch)
    assert torch.allclose(scores, plain, atol=1e-5)
    torch.nn.functional.cross_entropy(scores, batch.labels).backward()
    assert method.soft_prompt.grad is not None and method.soft_prompt.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_pruned_ranks_equal_ranks_of_all_scores(make_tiny_lm, kind):
    lm = make_tiny_lm(kind)
    objects = [o.split()[0] if kind == "bert" else o for o in OBJECTS]
    objects = list(dict.fromkeys(objects))
    method = build_method("manual", lm, TEMPLATE, Verbalizer({o: [o] for o in objects}))
    facts = [Example({"sub_label": s}, objects[i % len(objects)]) for i, s in enumerate(SUBJECTS)]
    gold = torch.tensor([objects.index(f.label) for f in facts])
    with torch.no_grad():
        full = method.predict_scores(method.encode(facts))
    assert candidate_ranks(method, facts).tolist() == ranks(full, gold).tolist()
    assert len(set(ranks(full, gold).tolist())) > 2  # the facts do not all rank alike


# ------------------------------------------------------------------------------------------ metrics
def test_ranks_count_higher_scores_and_earlier_ties():
    scores = torch.tensor([[0.1, 0.5, 0.5, 0.2], [3.0, 1.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    assert ranks(scores, torch.tensor([2, 0, 3])).tolist() == [2, 1, 4]
    assert ranks(scores, torch.tensor([1, 3, 0])).tolist() == [1, 4, 1]


def test_ranking_metrics_and_macro_average():
    got = ranking_metrics([1, 2, 11, 10])
    assert got["p_at_1"] == pytest.approx(0.25)
    assert got["p_at_10"] == pytest.approx(0.75)
    assert got["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 11 + 1 / 10) / 4)
    macro = macro_average({"a": {"p_at_1": 0.5, "mrr": 1.0}, "b": {"p_at_1": 0.0, "mrr": 0.5}})
    assert macro == {"p_at_1": 0.25, "mrr": 0.75}
    with pytest.raises(DataError, match="1-based"):
        ranking_metrics([0, 1])
    with pytest.raises(DataError, match="no ranks"):
        ranking_metrics([])


def test_majority_baseline_ranks_by_training_frequency():
    train = [Example({"sub_label": str(i)}, o) for i, o in enumerate(["b", "c", "c", "b", "c"])]
    scores = majority_scores(train, ["a", "b", "c"], 2)
    assert ranks(scores, torch.tensor([2, 0])).tolist() == [1, 3]


# ------------------------------------------------------------------------------------------ runs
def test_zero_shot_entry_point_records_both_protocols(tmp_path, tiny_llama_dir, capsys):
    from prompting.cli import main
    from prompting.experiment.results import ResultsStore

    root = write_relation(tmp_path / "lama")
    out = tmp_path / "out"
    assert main(["eval", "--task", "lama", "--relation", "P1", "--data-dir", str(root), "--model",
                 str(tiny_llama_dir), "--limit", "5", "--output-dir", str(out), "-q"]) == 0
    records = ResultsStore(out).records()
    assert {r["protocol"] for r in records} == {"candidates", "vocab"}
    cand = next(r for r in records if r["protocol"] == "candidates")
    assert cand["n_test"] == 5 and cand["n_candidates"] == len(OBJECTS)
    ranks_saved = ResultsStore(out).load_predictions(cand["run_id"])["test_ranks"]
    assert ranking_metrics(ranks_saved) == cand["test"]
    vocab = next(r for r in records if r["protocol"] == "vocab")
    assert vocab["n_vocab_facts"] < vocab["n_test_all"]  # multi-token objects left out
    assert "manual zero-shot (candidates)" in capsys.readouterr().out


def test_probe_config_runs_every_method_and_reports(tmp_path, tiny_llama_dir, monkeypatch):
    """A LAMA config runs through the one harness: every (method, protocol) is a run its executor does."""
    import yaml

    from prompting.cli import main
    from prompting.experiment.executor import RunExecutor
    from prompting.reporting.report import write_report

    executed, original = [], RunExecutor.execute
    monkeypatch.setattr(RunExecutor, "execute", lambda self, run, *a, **k: executed.append(run.evaluation)
                        or original(self, run, *a, **k))

    root = write_relation(tmp_path / "lama")
    config = {"name": "tiny-lama", "model": str(tiny_llama_dir),
              "task": {"name": "lama", "data_dir": str(root), "relations": ["P1"]},
              "limits": {"train": 8, "dev": 4, "test": 4},
              "methods": [{"name": "majority"}, {"name": "manual", "train": False},
                          {"name": "soft", "prompt_tokens": 2, "epochs": 1, "batch_size": 4},
                          {"name": "autoprompt", "template": "{sub_label} {trigger:2} {mask}", "iterations": 1,
                           "num_candidates": 2, "score_examples": 4, "gradient_examples": 4}]}
    path = tmp_path / "lama.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "runs"
    assert main(["run", str(path), "--output-dir", str(out), "-q"]) == 0
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 3 * 2  # majority: candidates only; the others: both protocols
    assert sorted(executed) == ["candidates"] * 4 + ["vocab"] * 3
    trained = [json.loads(l) for l in lines if json.loads(l)["method"] == "soft"]
    assert trained[0]["steps"] == 2 and trained[0]["n_first_tokens"] <= len(OBJECTS)
    assert main(["run", str(path), "--output-dir", str(out), "-q"]) == 0  # resumes: nothing new
    assert len((out / "results.jsonl").read_text().splitlines()) == 7
    report = write_report(out, plots=False)["report"].read_text()
    assert "| P1 | 4 / " in report and "autoprompt (vocab)" in report


def test_probe_config_errors_name_the_key(tmp_path):
    from prompting.config.experiment import ConfigError
    from prompting.config.experiment import parse_probe_config

    base = {"task": {"name": "lama", "data_dir": str(tmp_path), "relations": ["P1"]},
            "methods": [{"name": "manual", "train": False}]}
    with pytest.raises(ConfigError, match=r"limits.test=0 is not valid"):
        parse_probe_config({**base, "limits": {"test": 0}})
    with pytest.raises(ConfigError, match=r"protocols: 'all' is not known; choose from candidates, vocab"):
        parse_probe_config({**base, "protocols": ["all"]})
    with pytest.raises(ConfigError, match=r"task: a lama task needs data_dir and relations"):
        parse_probe_config({**base, "task": {"name": "lama", "data_dir": str(tmp_path)}})


def test_ranks_under_triggers_after_the_subject_match_the_library_scores(make_tiny_lm):
    # the text before AutoPrompt's triggers is a frozen span the library caches and leaves out of its
    # batches; ranking runs the whole prompt and must agree with the library's scores
    lm = make_tiny_lm("llama")
    method = build_method("autoprompt", lm, "{sub_label} {trigger:2} {mask}", Verbalizer({o: [o] for o in OBJECTS}))
    method.trigger_ids.copy_(torch.tensor(lm.tokenizer(" movie story", add_special_tokens=False)["input_ids"][:2]))
    facts = [Example({"sub_label": s}, OBJECTS[i % len(OBJECTS)]) for i, s in enumerate(SUBJECTS)]
    gold = torch.tensor([OBJECTS.index(f.label) for f in facts])
    with torch.no_grad():
        full = method.predict_scores(method.encode(facts))
    assert candidate_ranks(method, facts).tolist() == ranks(full, gold).tolist()
    with torch.no_grad():
        assert method.frozen_text  # scoring: the library's batches leave the subject out
    token = lm.tokenizer(" great", add_special_tokens=False)["input_ids"][0]
    got = vocab_ranks(method, facts, [token] * len(facts)).ranks
    size = lm.embeddings.num_embeddings
    every = LabelWordIds(tuple((i,) for i in range(size)), torch.arange(size), size)
    batch = next(method.batches(method.encode(facts), len(facts)))
    with torch.no_grad():
        library = lm.word_logprobs(batch.prompts, every, hooks=method)  # frozen spans and all
    assert got.tolist() == ranks(library, torch.full((len(facts),), token)).tolist()


def test_shipped_lama_config_parses_and_its_methods_build(tiny_causal_lm):
    from pathlib import Path

    import yaml

    from prompting.config.experiment import parse_probe_config

    path = Path(__file__).resolve().parents[1] / "experiments" / "lama.yaml"
    cfg = parse_probe_config(yaml.safe_load(path.read_text()), base=path.parent)
    assert cfg.relations == ["P101", "P103", "P138", "P1412", "P176", "P19"]
    assert set(cfg.protocols) == {"candidates", "vocab"}
    for spec in cfg.methods:
        if spec.name == "majority":  # the task's baseline, not a prompt method
            continue
        method = build_method(spec.name, tiny_causal_lm, spec.template or TEMPLATE,
                              Verbalizer({o: [o] for o in OBJECTS}), **spec.params)
        assert len(method.encode([Example({"sub_label": "the movie"}, OBJECTS[0])])) == 1
