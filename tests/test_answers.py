"""Answers the model writes (``answer: generate``) and prompts as chat turns (``chat: true``): how an answer is
read as a label, what a run records and saves, what the model sees, and the errors before the model loads."""

import copy

import pytest
import torch

from conftest import NEGATIVE, POSITIVE, build_tiny_lm
from prompting.config.experiment import ConfigError, parse_config
from prompting.core.data import Example, Task
from prompting.core.settings import MethodSpec
from prompting.core.verbalizer import Verbalizer
from prompting.experiment.harness import Experiment, Protocol, build_experiment
from prompting.experiment.results import ResultsStore
from prompting.lm.chat import ChatTemplateError
from prompting.methods import build_method
from prompting.methods.icl import InContext
from prompting.methods.saving import load_prompt, save_prompt
from prompting.methods.targets import WRITTEN
from prompting.tasks.answers import answer_label, answer_metrics, written_answers
from test_harness import PATTERNS, TEST, TRAIN, VERBALIZER, toy_task

WORDS = {"0": ["bad"], "1": ["good"]}
PROMPT = [(PATTERNS[1], VERBALIZER)]  # "Review: {text_a} Sentiment: {mask}"
PROTOCOL = Protocol(k=4, data_seeds=(13,))
# a chat template in the usual form: each turn between markers, then the assistant's turn opened
CHAT = ("{% for m in messages %}<s>[{{ m['role'] }}]\n{{ m['content'] }}</s>\n{% endfor %}"
        "{% if add_generation_prompt %}<s>[assistant]\n{% endif %}")
USER, REPLY = "<s>[user]\n", "</s>\n<s>[assistant]\n"


@pytest.fixture(scope="module")
def chat_lm(bpe_tokenizer):
    """A tiny random Llama whose tokenizer has a chat template."""
    tokenizer = copy.deepcopy(bpe_tokenizer)
    tokenizer.chat_template = CHAT
    return build_tiny_lm("llama", tokenizer)


@pytest.fixture
def prompts_written(monkeypatch):
    """The prompts decoding starts from (each row's tokens, padding left out) and the prefix each batch had."""
    import prompting.methods.targets as targets

    seen, original = [], targets.generate_ids

    def generate_ids(lm, batch, hooks=None, decoding=None, prefix=None):
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(batch.input_ids, batch.attention_mask)]
        seen.extend((lm.tokenizer.decode(row), prefix is not None) for row in rows)
        return original(lm, batch, hooks, decoding, prefix)

    monkeypatch.setattr(targets, "generate_ids", generate_ids)
    WRITTEN.clear()
    return seen


# ------------------------------------------------------------------------------------ reading an answer
@pytest.mark.parametrize("answer, expected", [
    ("good", "1"), ("Good.", "1"), ("It was BAD, really", "0"),  # any case, punctuation around
    ("good, not bad", "1"), ("bad, not good", "0"),  # the word that comes first wins
    ("goodness me", None), ("a badly made film", None), ("notgood", None),  # whole words only
    ("", None), ("I liked it", None),  # no label word: unmatched
])
def test_an_answer_names_the_label_whose_word_comes_first_as_a_whole_word(answer, expected):
    assert answer_label(answer, WORDS) == expected


def test_a_longer_word_at_the_same_place_wins_and_a_tie_goes_to_the_label_listed_first():
    words = {"neg": ["not good", "awful"], "pos": ["not", "good"]}
    assert answer_label("Not  good at all", words) == "neg"  # "not good" over "not" (spaces between: any)
    assert answer_label("not great", words) == "pos"
    assert answer_label("Yes", {"a": ["yes"], "b": ["YES"]}) == "a"
    assert answer_label("C++ is fine", {"x": ["c++"], "y": ["fine"]}) == "x"  # a word ending in symbols


def test_an_unmatched_answer_is_wrong_and_counted():
    metrics = answer_metrics(["1", "0", "0", "1"], ["1", None, "0", None], ["0", "1"])
    assert metrics["accuracy"] == 0.5 and metrics["unmatched"] == 0.5
    assert metrics["macro_f1"] == pytest.approx(2 / 3)  # each class: precision 1, recall 1/2


# ------------------------------------------------------------------------------------ runs
def fake_answers(method, examples, decoding, batch_size, progress=False):
    """Answers that depend on the example: positive texts 'Good!', negative ones 'BAD' or a non-answer."""
    out = []
    for ex in examples:
        positive = any(f" {word}." in ex["text_a"] for word in POSITIVE)
        out.append("Good! goodness" if positive else ("it was BAD" if len(ex["text_a"]) % 2 else "I cannot say"))
    return out


def test_written_answers_make_the_record_and_the_predictions_file(tiny_causal_lm, tmp_path, monkeypatch):
    import prompting.tasks.answers as answers
    from prompting.reporting.frame import load_results
    from prompting.reporting.paired import correct
    from prompting.reporting.report import write_report

    monkeypatch.setattr(answers, "write", fake_answers)
    spec = MethodSpec("manual", train=False, answer="generate")
    [record] = Experiment(tiny_causal_lm, toy_task(), [spec], PROMPT, PROTOCOL, output_dir=tmp_path).run(progress=False)
    store = ResultsStore(tmp_path)
    saved = store.load_predictions(record["run_id"])
    assert (record["label"], record["answer"], record["decoding"]) == \
        ("manual zero-shot (answer: generate)", "generate", {"num_beams": 1, "max_new_tokens": 8})
    for split in ("dev", "test"):
        answers_, named, gold = saved[f"{split}_answers"], saved[f"{split}_predicted"], saved[f"{split}_gold"]
        assert named == [answer_label(a, WORDS) for a in answers_] and None in named
        right = [n == g for n, g in zip(named, gold)]
        assert record[split]["accuracy"] == pytest.approx(sum(right) / len(right))
        assert record[split]["unmatched"] == pytest.approx(named.count(None) / len(named))
    assert record["dev_loss"] is None and "test" not in saved  # no label scores
    assert correct(store, record["run_id"])[1].tolist() == [float(n == g) for n, g in
                                                            zip(saved["test_predicted"], saved["test_gold"])]
    # the confusion matrix keeps the unmatched answers in a last column: every row sums to its examples
    assert [sum(row) for row in saved["test_confusion"]] == [saved["test_gold"].count(label) for label in ("0", "1")]
    report = write_report(tmp_path, plots=False)["report"].read_text()
    assert f"unmatched share (written answers that named no label word) of the dev-selected runs: " \
           f"manual zero-shot (answer: generate) {100 * record['test']['unmatched']:.1f}" in report
    _, rows = load_results(tmp_path, predictions=True)
    test_rows = rows[rows.split == "test"]
    assert test_rows.answer.tolist() == saved["test_answers"] and test_rows.correct.sum() == sum(
        n == g for n, g in zip(saved["test_predicted"], saved["test_gold"]))


def test_answers_are_written_by_the_model_and_the_label_scores_runs_keep_their_ids(tiny_causal_lm, tmp_path):
    specs = [MethodSpec("manual", train=False), MethodSpec("manual", train=False, answer="generate")]
    exp = Experiment(tiny_causal_lm, toy_task(), specs, PROMPT, PROTOCOL, output_dir=tmp_path)
    scored, written = exp.plan()
    assert "answer" not in scored.settings and "chat" not in scored.settings
    assert scored.settings == {k: v for k, v in written.settings.items() if k not in ("answer", "decoding")} | \
        {"label": "manual zero-shot"}
    records = exp.run(progress=False)
    saved = ResultsStore(tmp_path).load_predictions(records[1]["run_id"])
    assert len(saved["test_answers"]) == len(TEST) and all(isinstance(a, str) and "\n" not in a
                                                           for a in saved["test_answers"])
    assert [r["label"] for r in records] == ["manual zero-shot", "manual zero-shot (answer: generate)"]


def test_a_trained_method_writes_its_answers_after_training_on_label_scores(make_tiny_lm, tmp_path):
    spec = MethodSpec("soft", train=True, answer="generate", train_config={"lr": 1e-2, "max_steps": 2, "batch_size": 4})
    [record] = Experiment(make_tiny_lm("llama"), toy_task(), [spec], PROMPT, PROTOCOL,
                          output_dir=tmp_path).run(progress=False)
    assert record["steps"] == 2 and set(record["test"]) == {"accuracy", "macro_f1", "unmatched"}


# ------------------------------------------------------------------------------------ chat
def test_chat_puts_the_prompt_in_a_user_turn_and_the_label_word_starts_the_reply(chat_lm):
    tokenizer = chat_lm.tokenizer
    method = build_method("manual", chat_lm, PATTERNS[1], Verbalizer(VERBALIZER), labels=["0", "1"], chat=True)
    example = Example({"text_a": "the movie was fun."}, "1")
    [encoding] = method.encode([example]).encodings[1]
    text = f"{USER}Review: the movie was fun. Sentiment:{REPLY}"
    assert tokenizer.decode(encoding.input_ids) == text
    assert encoding.input_ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert encoding.input_ids[0] == tokenizer.bos_token_id  # the template's <s> is the special token
    # no space before the label word: it is the first word of the reply
    words = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in ("bad", "good")]
    assert [list(w) for w in method.words.word_ids] == words
    with torch.no_grad():
        logprobs = [torch.log_softmax(chat_lm.model(torch.tensor([encoding.input_ids + w[:-1]])).logits[0], -1)
                    for w in words]
    by_hand = [sum(lp[len(encoding.input_ids) - 1 + i, t] for i, t in enumerate(w)) for lp, w in zip(logprobs, words)]
    scores = method.predict_scores(method.encode([example]))[0]
    assert torch.allclose(scores, torch.stack(by_hand), atol=1e-4)


def test_chat_and_written_answers_together(chat_lm, tmp_path, prompts_written):
    spec = MethodSpec("manual", train=False, chat=True, answer="generate")
    [record] = Experiment(chat_lm, toy_task(), [spec], PROMPT, PROTOCOL, output_dir=tmp_path).run(progress=False)
    assert record["label"] == "manual zero-shot (chat, answer: generate)" and record["chat"] is True
    queries = {f"{USER}Review: {e['text_a']} Sentiment:{REPLY}" for e in TEST}
    assert queries <= {text for text, _ in prompts_written}
    assert all(text.startswith(USER) and text.endswith(REPLY) for text, _ in prompts_written)


def test_demonstrations_come_inside_the_user_turn_before_the_query(chat_lm, tmp_path, prompts_written):
    spec = MethodSpec("manual", train=False, chat=True, answer="generate", params={"demonstrations": {"k": 1}})
    Experiment(chat_lm, toy_task(), [spec], PROMPT, PROTOCOL, output_dir=tmp_path).run(progress=False)
    for text, _ in prompts_written:
        shown, query = text[len(USER):-len(REPLY)].split("\n\n", 2)[:2], text.rsplit("\n\n", 1)[1]
        assert text.startswith(USER + "Review: ") and text.endswith(REPLY) and query.startswith("Review: ")
        assert all(s.endswith((" Sentiment: bad", " Sentiment: good")) for s in shown)


def test_in_context_answers_beside_the_shared_block_are_those_of_the_whole_prompt(tiny_causal_lm, prompts_written,
                                                                                  monkeypatch):
    def answers():
        WRITTEN.clear()
        method = build_method("icl", tiny_causal_lm, PATTERNS[1], Verbalizer(VERBALIZER), labels=["0", "1"], k=1)
        method.set_demonstration_pool(TRAIN[:8], 1)
        return written_answers(method, TEST, 4)

    shared = answers()
    assert all(prefixed for _, prefixed in prompts_written)  # the demonstrations as keys and values
    monkeypatch.setattr(InContext, "share_block", False)
    assert answers() == shared


def test_a_saved_chat_prompt_loads_as_a_chat_prompt(chat_lm, tmp_path):
    method = build_method("soft", chat_lm, PATTERNS[1], Verbalizer(VERBALIZER), labels=["0", "1"], chat=True)
    save_prompt(method, tmp_path / "soft")
    loaded = load_prompt(tmp_path / "soft", chat_lm)
    examples = TEST[:3]
    assert loaded.chat and torch.allclose(loaded.predict_scores(loaded.encode(examples)),
                                          method.predict_scores(method.encode(examples)))


def test_pet_recipe_runs_of_a_chat_entry_are_all_chat_runs(chat_lm):
    spec = MethodSpec("ipet", chat=True, train_config={"max_steps": 2}, params={"generations": 1})
    runs = Experiment(chat_lm, toy_task(unlabeled=8), [spec], PROMPT * 2 + [(PATTERNS[0], VERBALIZER)],
                      PROTOCOL).plan()
    assert runs and all(run.settings["chat"] and run.spec.chat for run in runs)


# ------------------------------------------------------------------------------------ refused
def test_a_masked_lm_is_refused_before_it_loads(tmp_path, make_tiny_lm, monkeypatch):
    import prompting.experiment.harness as harness

    bert = make_tiny_lm("bert")
    bert.model.save_pretrained(tmp_path / "bert")
    bert.tokenizer.save_pretrained(tmp_path / "bert")
    (tmp_path / "train.csv").write_text("sentence,label\n" + "".join(
        f"it was {w}.,{y}\n" for y, words in (("1", POSITIVE), ("0", NEGATIVE)) for w in words))
    monkeypatch.setattr(harness, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    for entry, said in (({"answer": "generate"}, "answer: generate has the model write its answer, but model "
                                                 f"'{tmp_path / 'bert'}' is a masked LM"),
                        ({"chat": True}, "chat: true makes the prompt a user turn .* is a masked LM")):
        cfg = parse_config({"model": str(tmp_path / "bert"), "fewshot": {"k": 2, "data_seeds": [1]},
                            "task": {"name": "toy", "train": "train.csv", "test": "train.csv",
                                     "fields": {"text_a": "sentence"}, "labels": ["0", "1"]},
                            "templates": {"patterns": ["{text_a} It was {mask}."],
                                          "verbalizers": [{"0": "bad", "1": "good"}]},
                            "methods": [{"name": "manual", "train": False, **entry}]}, base=tmp_path)
        with pytest.raises(ValueError, match=said):
            build_experiment(cfg, tmp_path / "out")


def test_a_loaded_masked_lm_and_a_tokenizer_without_chat_template_are_refused_before_any_run(tiny_bert_lm,
                                                                                              tiny_causal_lm):
    with pytest.raises(ValueError, match="model 'tiny-random-bert' is a masked LM, which fills"):
        Experiment(tiny_bert_lm, toy_task(), [MethodSpec("manual", train=False, answer="generate")], PROMPT)
    with pytest.raises(ValueError, match="chat: true .* model 'tiny-random-bert' is a masked LM"):
        Experiment(tiny_bert_lm, toy_task(), [MethodSpec("manual", train=False, chat=True)], PROMPT)
    with pytest.raises(ChatTemplateError, match="model 'tiny-random-llama': its tokenizer has no chat template"):
        Experiment(tiny_causal_lm, toy_task(), [MethodSpec("manual", train=False, chat=True)], PROMPT)


@pytest.mark.parametrize("spec, said", [
    (MethodSpec("manual", train=False, answer="generate", calibration="contextual"),
     r"leaves no label scores, which calibration combines; leave calibration out, or answer: score"),
    (MethodSpec("manual", train=True, answer="generate", ensemble="mean"), r"which ensemble combines"),
    (MethodSpec("ipet", answer="generate"), r"which ensemble and distill \(the ipet method's\) combine"),
    (MethodSpec("icl", answer="generate", params={"sets": 2}), r"sets=2 averages .* give sets: 1"),
])
def test_what_needs_label_scores_is_refused_with_written_answers(tiny_causal_lm, spec, said):
    with pytest.raises(ValueError, match=said):
        Experiment(tiny_causal_lm, toy_task(unlabeled=8), [spec], PROMPT * 2)


def test_a_multiple_choice_task_refuses_written_answers(tiny_causal_lm):
    task = Task("pick", ("0", "1"), ("premise", "choice1", "choice2"),
                [Example({"premise": "p", "choice1": "a", "choice2": "b"}, "0")] * 4,
                [Example({"premise": "p", "choice1": "a", "choice2": "b"}, "1")])
    prompts = [("{premise} {mask}", {"0": ["{choice1}"], "1": ["{choice2}"]})]
    with pytest.raises(ValueError, match="answer: generate is not valid with a multiple-choice verbalizer"):
        Experiment(tiny_causal_lm, task, [MethodSpec("manual", train=False, answer="generate")], prompts)


def test_a_config_names_a_bad_answer_or_chat_value():
    base = {"task": "sst2", "templates": {"patterns": ["{text_a} It was {mask}."],
                                          "verbalizers": [{"0": "bad", "1": "good"}]}}
    with pytest.raises(ConfigError, match=r"methods\[0\]: answer='write' is not valid; choose one of "
                                          r"score, generate"):
        parse_config({**base, "methods": [{"name": "manual", "answer": "write"}]})
    with pytest.raises(ConfigError, match=r"methods\[0\]: chat='yes' is not valid; use true or false"):
        parse_config({**base, "methods": [{"name": "manual", "chat": "yes"}]})
    [spec] = parse_config({**base, "methods": [{"name": "manual", "train": False, "answer": "generate",
                                                 "chat": True}]}).methods
    assert (spec.answer, spec.chat, spec.label) == ("generate", True, "manual zero-shot (chat, answer: generate)")


def test_label_search_for_a_chat_entry_reads_the_reply_s_first_token_and_finds_words_that_start_it(chat_lm, tmp_path,
                                                                                                     capsys):
    from prompting.core.template import Template
    from prompting.training.labelsearch import mask_outputs, search_label_words

    examples = [Example({"text_a": f"the movie was {w}."}, label) for w, label in
                (("fun", "1"), ("great", "1"), ("dull", "0"), ("bad", "0"))]
    _, logprobs = mask_outputs(chat_lm, PATTERNS[1], examples, features=False, chat=True)
    for example, found in zip(examples, logprobs):  # the reply's first token, after the whole chat turn
        ids = chat_lm.tokenizer(f"{USER}Review: {example['text_a']} Sentiment:{REPLY}", add_special_tokens=False)
        with torch.no_grad():
            by_hand = torch.log_softmax(chat_lm.model(torch.tensor([ids["input_ids"]])).logits[0, -1], -1)
        assert torch.allclose(found, by_hand, atol=1e-4)
    _, plain = mask_outputs(chat_lm, PATTERNS[1], examples, features=False)
    assert not torch.allclose(plain, logprobs, atol=1e-3)
    result = search_label_words(chat_lm, PATTERNS[1], examples, ["0", "1"], ranking="likelihood", k=3, chat=True)
    assert Template(PATTERNS[1]).encoder(chat_lm.tokenizer, True).mask_leading_space  # plain: after a space
    for label, ranked in result.words.items():
        assert len(ranked) == 3
        for (word, _), token in zip(ranked, result.token_ids[label]):  # read back with no space before it
            assert chat_lm.tokenizer(word, add_special_tokens=False)["input_ids"] == [token]
    # a verbalizer of those words on a chat entry scores the very tokens ranked
    words = {label: [ranked[0][0]] for label, ranked in result.words.items()}
    method = build_method("manual", chat_lm, PATTERNS[1], Verbalizer(words), labels=["0", "1"], chat=True)
    assert [w[0] for w in method.words.word_ids] == [result.token_ids["0"][0], result.token_ids["1"][0]]
