"""Ranking many facts in one pass (prompting.lm.ranking) against ranking them one by one and against every
candidate scored, on tiny random causal LMs: multi-token candidates sharing prefixes, candidates of
different depths, queries of different lengths, rows that pack several facts and passes cut small; the
top candidates a probing run saves, and the template a learned prompt's record shows."""

import json

import pytest
import torch

from prompting.core.data import Example
from prompting.core.verbalizer import Verbalizer
from prompting.lm.ranking import TOP, rank_candidates, ranking_of_scores
from prompting.lm.trie import shared_scoring
from prompting.methods import build_method
from prompting.tasks.lama import candidate_ranking, candidate_ranks_one_by_one, ranks, whole_prompts

pytestmark = pytest.mark.filterwarnings("ignore:template .* causal LM predicts:UserWarning")

# 1 to 5 tokens; shared first tokens (" the", " great", " bad"), one object a prefix of another
OBJECTS = ["great", "greatest", "horrible", "the movie", "the film", "the story was good", "bad", "terrible film",
           "the movie was great", "the movie was bad", "good", "fine", "boring", "the acting", "the plot was dull",
           "bad writing", "bad editing", "the cast", "noise", "two hours of noise"]
# one word to eleven: queries of different lengths in one batch
SUBJECTS = ["I loved it", "A very long and boring story that goes on and on", "No", "The plot", "yes it was",
            "Bad writing, bad editing", "The cast", "Two hours of noise", "It", "The acting was fine but the story",
            "Great", "What a film"]
TEMPLATE = "{sub_label} It was {mask}"


def probing_method(lm, template=TEMPLATE, name="manual", **params):
    method = build_method(name, lm, template, Verbalizer({o: [o] for o in OBJECTS}), **params)
    method.eval()
    return shared_scoring(method)


def facts_for(method):
    return [Example({"sub_label": s}, OBJECTS[(5 * i) % len(OBJECTS)]) for i, s in enumerate(SUBJECTS)]


def every_score(method, facts):
    with torch.no_grad():
        return method.predict_scores(method.encode(facts))


def test_the_candidates_are_what_the_tests_claim(make_tiny_lm):
    lm = make_tiny_lm("llama")
    method = probing_method(lm)
    depths = {len(w) for w in method.words.word_ids}
    assert {1, 2, 3} <= depths and max(depths) >= 4
    firsts = [w[0] for w in method.words.word_ids if len(w) > 1]
    assert len(firsts) > len(set(firsts))  # multi-token candidates share first tokens
    encodings = method.encode(facts_for(method)).encodings
    lengths = {len(e.input_ids) for e in encodings[min(encodings)]}
    assert max(lengths) - min(lengths) >= 8


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("cut", [{}, {"row": 5, "node_tokens": 10, "round_nodes": 2}, {"round_nodes": 1}])
def test_batched_ranks_equal_one_by_one_and_every_score(make_tiny_lm, kind, cut):
    lm = make_tiny_lm(kind)
    method = probing_method(lm)
    facts = facts_for(method)
    gold = torch.tensor([OBJECTS.index(f.label) for f in facts])
    data = method.encode(facts)
    prompts = next(whole_prompts(method, data, len(facts)))
    prompt = prompts[min(prompts)]
    found = rank_candidates(lm, method.embed(lm, prompt.input_ids, prompt), prompt.attention_mask,
                            prompt.position_ids, method.words, gold, **cut)
    full = every_score(method, facts)
    assert found.ranks.tolist() == ranks(full, gold).tolist()
    assert found.ranks.tolist() == candidate_ranks_one_by_one(method, facts).tolist()
    assert len(set(found.ranks.tolist())) > 3  # the facts do not all rank alike
    assert 0 < found.nodes < len(facts) * method.words.trie.n_nodes  # pruned, yet something fed


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_top_candidates_are_the_best_of_every_score(make_tiny_lm, batch_size):
    lm = make_tiny_lm("llama", seed=1)
    method = probing_method(lm)
    facts = facts_for(method)
    got = candidate_ranking(method, facts, batch_size=batch_size)
    full = every_score(method, facts)
    best = full.double().sort(dim=1, descending=True, stable=True)
    assert got.top.shape == (len(facts), TOP)
    assert got.top.tolist() == best.indices[:, :TOP].tolist()
    assert torch.allclose(got.top_scores, best.values[:, :TOP], atol=1e-5)
    assert got.ranks.tolist() == ranks(full, torch.tensor([OBJECTS.index(f.label) for f in facts])).tolist()


def test_a_soft_prompt_ranks_the_same_in_batches(make_tiny_lm):
    lm = make_tiny_lm("llama")
    method = probing_method(lm, "{soft:3}" + TEMPLATE, name="soft", init="vocab")
    facts = facts_for(method)
    assert candidate_ranking(method, facts, batch_size=4).ranks.tolist() == \
        candidate_ranks_one_by_one(method, facts).tolist()


def test_ranking_of_scores_breaks_ties_by_candidate_order():
    scores = torch.tensor([[0.5, 0.1, 0.5, 0.2], [1.0, 1.0, 1.0, 1.0]])
    got = ranking_of_scores(scores, torch.tensor([2, 3]), top=3)
    assert got.ranks.tolist() == [2, 4]
    assert got.top.tolist() == [[0, 2, 3], [0, 1, 2]]


def test_a_probing_run_saves_top_objects_and_the_learned_template(tmp_path, tiny_llama_dir):
    import yaml

    from prompting.cli import main
    from prompting.experiment.results import ResultsStore
    from tests.test_lama import OBJECTS as OBJS, write_relation

    root = write_relation(tmp_path / "lama")
    config = {"name": "tiny-lama", "model": str(tiny_llama_dir),
              "task": {"name": "lama", "data_dir": str(root), "relations": ["P1"]},
              "limits": {"train": 8, "dev": 4, "test": 5},
              "methods": [{"name": "manual", "train": False},
                          {"name": "soft", "prompt_tokens": 2, "epochs": 1, "batch_size": 4}]}
    path = tmp_path / "lama.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "runs"
    assert main(["run", str(path), "--output-dir", str(out), "-q"]) == 0
    store = ResultsStore(out)
    records = {(r["method"], r["protocol"]): r for r in store.records()}
    soft, manual = records[("soft", "candidates")], records[("manual", "candidates")]
    assert soft["template_used"] == "{soft:2}" + soft["template"] and "{soft" not in soft["template"]
    assert manual["template_used"] == manual["template"]
    report = (out / "report.md").read_text()  # the report shows the template each row ran
    templates = report.split("### Templates used")[1]
    assert f"| soft (candidates) | `{soft['template_used']}` |" in templates
    assert f"| manual zero-shot (candidates) | `{manual['template']}` |" in templates
    for protocol, facts in (("candidates", 5), ("vocab", records[("manual", "vocab")]["n_test"])):
        paired = report.split(f"#### {protocol}: P@1, learned prompt − manual template")[1].split("####")[0]
        assert f"| P1 | soft | {facts} | " in paired and "**soft** is above the manual template" in paired
    assert (out / "plots" / "lama_p_at_1.png").exists()
    saved = store.load_predictions(manual["run_id"])
    assert len(saved["test_top"]) == len(saved["test_ranks"]) == len(saved["test_subjects"]) == 5
    for rank, gold, top in zip(saved["test_ranks"], saved["test_objects"], saved["test_top"]):
        assert len(top) == min(TOP, len(OBJS)) and all(name in OBJS for name, _ in top)
        scores = [score for _, score in top]
        assert scores == sorted(scores, reverse=True) and all(s <= 0 for s in scores)
        assert (rank == 1) == (top[0][0] == gold)
        assert rank > len(top) or top[rank - 1][0] == gold
    vocab = store.load_predictions(records[("manual", "vocab")]["run_id"])
    assert all(len(top) == TOP for top in vocab["test_top"])
    assert json.loads(json.dumps(saved)) == saved
    import prompting

    _, frame = prompting.load_results(out, predictions=True)
    rows = frame[frame.run_id == manual["run_id"]]
    assert rows.subject.tolist() == saved["test_subjects"] and rows.gold.tolist() == saved["test_objects"]
    assert rows.predicted.tolist() == [top[0][0] for top in saved["test_top"]]
    assert rows.correct.tolist() == [r == 1 for r in saved["test_ranks"]]
