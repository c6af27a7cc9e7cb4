"""Automatic label-word search: which vocabulary words should stand for each label.

Two rankings, both over single tokens that read as whole words in the ``{mask}`` slot:

- ``"classifier"`` (AutoPrompt, Shin et al. 2020): fit a logistic-regression classifier on the
  hidden state that the LM head reads at ``{mask}`` (for a causal LM: the last position, the one
  that predicts the next token); a word scores how well its output embedding matches the class's
  weight vector (cosine by default; the paper's dot product on request).
- ``"likelihood"`` (LM-BFF / PETAL style): keep the ``prune`` words the LM finds most likely at
  ``{mask}`` for each class's examples, then choose the words that maximise the log-likelihood of
  the training labels when the verbalizer scores each class by its word (coordinate ascent over
  classes); a word scores the mean log-likelihood of the labels with it standing for its class.

>>> result = search_label_words(lm, "Review: {text_a}\\nSentiment: {mask}", examples, task.labels)  # doctest: +SKIP
>>> result.top(3)                                                                             # doctest: +SKIP
{'0': ['negative', 'bad', 'disappointing'], '1': ['positive', 'good', 'great']}
>>> write_verbalizer("templates/sst2.yaml", result.verbalizer(2), task="sst2")               # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
import yaml

from prompting.lm.logprobs import MAX_BATCH_TOKENS, log_softmax, token_budget_batches
from prompting.lm.model import LanguageModel
from prompting.core.paths import atomic_write
from prompting.core.template import Template, collate
from prompting.core.verbalizer import Verbalizer
from prompting.lm.vocab import token_mask, token_strings

__all__ = ["LabelSearchResult", "search_label_words", "mask_outputs", "rank_by_classifier",
           "rank_by_likelihood", "write_verbalizer", "read_templates_file", "RANKINGS"]

RANKINGS = ("classifier", "likelihood")


@dataclass
class LabelSearchResult:
    """Top words per label, best first, with their scores (higher is better)."""

    ranking: str
    template: str
    words: dict[str, list[tuple[str, float]]]
    token_ids: dict[str, list[int]] = field(default_factory=dict)
    n_examples: int = 0

    def top(self, n: int = 10) -> dict[str, list[str]]:
        return {label: [w for w, _ in ranked[:n]] for label, ranked in self.words.items()}

    def verbalizer(self, n: int = 1) -> Verbalizer:
        """A verbalizer with the ``n`` best words of each label."""
        return Verbalizer(self.top(n))

    def to_dict(self) -> dict:
        return {"ranking": self.ranking, "template": self.template, "n_examples": self.n_examples,
                "words": {label: [[w, round(s, 6)] for w, s in ranked] for label, ranked in self.words.items()}}

    def to_markdown(self, n: int = 10) -> str:
        lines = ["| label | words (score) |", "|---|---|"]
        for label, ranked in self.words.items():
            lines.append(f"| {label} | " + ", ".join(f"{w} ({s:.3g})" for w, s in ranked[:n]) + " |")
        return "\n".join(lines)


@torch.no_grad()
def mask_outputs(lm: LanguageModel, template: Template | str, examples: Sequence, batch_size: int = 32,
                 features: bool = True, logprobs: bool = True, progress: bool = False, chat: bool = False):
    """What the LM head sees and says at ``{mask}`` for each example.

    Returns ``(features [N, H] or None, logprobs [N, V] or None)``: the hidden state fed to the
    output embedding layer (read with a hook on ``get_output_embeddings()``, so every architecture
    works) and the log-probability of every vocabulary token at the slot. ``chat``: the prompt up to
    ``{mask}`` is the user turn of the tokenizer's chat template (as a method entry's ``chat: true``), so the
    slot is the start of the assistant's reply.
    """
    from tqdm.auto import tqdm

    template = template if isinstance(template, Template) else Template(template)
    if template.n_trigger or template.has_soft:
        raise ValueError(f"label search reads a plain template; {template.text!r} has trigger or soft slots "
                         "(write the found trigger words in first, e.g. AutoPrompt.found_template())")
    encoder = _encoder(lm, template, chat)
    fields = [getattr(ex, "fields", ex) for ex in examples]
    captured: list[torch.Tensor] = []
    head = lm.model.get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach()))
    all_features, all_logprobs = [], []
    encodings = encoder.encode(fields, n_mask=1)
    # length-sorted batches under a token budget (little padding); the outputs go back to input order
    order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].input_ids))
    batches = [[order[i] for i in rows] for rows in
               token_budget_batches([len(encodings[i].input_ids) for i in order], MAX_BATCH_TOKENS, batch_size)]
    try:
        for rows in tqdm(batches, desc="label search", disable=not progress, leave=False):
            batch = collate([encodings[i] for i in rows], lm.pad_id, left=lm.causal).to(lm.device)
            captured.clear()
            logits = lm.forward(lm.embed(batch.input_ids), batch.attention_mask, batch.position_ids,
                                logits_to_keep=1)
            rows = torch.arange(len(batch), device=logits.device)
            # causal: left padding puts every context's end last; masked LM: read the mask position
            at = (slice(None), -1) if lm.causal else (rows, batch.mask_positions[:, 0])
            if features:
                all_features.append(captured[-1][at].float().cpu())
            if logprobs:
                all_logprobs.append(log_softmax(logits[at]).cpu())
    finally:
        handle.remove()
    back = torch.argsort(torch.tensor([i for rows in batches for i in rows], dtype=torch.long))
    return (torch.cat(all_features)[back] if features else None, torch.cat(all_logprobs)[back] if logprobs else None)


def _encoder(lm: LanguageModel, template: Template, chat: bool):
    """The template's encoder for ``lm``; with ``chat``, inside the chat template's user turn."""
    from prompting.lm.chat import chat_turn

    return template.encoder(lm.tokenizer, lm.causal, lm.max_length, **({"around": chat_turn(lm)} if chat else {}))


def rank_by_classifier(features: torch.Tensor, labels: torch.Tensor, n_labels: int,
                       output_embeddings: torch.Tensor, allowed: torch.Tensor, regularization: float = 1e-3,
                       similarity: str = "cosine", seed: int = 0) -> torch.Tensor:
    """``[n_labels, V]`` match of each class's logistic-regression weights with each output embedding.

    The classifier reads the raw features, as the LM head does (standardising them would blow up
    the weights of the few near-constant, very large dimensions a causal LM's final hidden state has).
    ``regularization`` is scikit-learn's ``C``: small values pull the weights towards the difference
    of the class means, which is what carries over from a handful of examples. ``similarity``:
    ``"cosine"`` (default; a token's embedding norm does not decide) or ``"dot"`` (the paper's).
    Disallowed tokens score ``-inf``.
    """
    from sklearn.linear_model import LogisticRegression

    if similarity not in ("cosine", "dot"):
        raise ValueError(f"similarity={similarity!r} is not known; choose cosine or dot")
    model = LogisticRegression(C=regularization, max_iter=5000, random_state=seed)
    model.fit(features.double().numpy(), labels.numpy())
    present = [int(c) for c in model.classes_]
    if len(present) != n_labels:
        raise ValueError(f"label search needs examples of all {n_labels} labels; got examples of "
                         f"{len(present)}")
    coef = torch.as_tensor(model.coef_, dtype=torch.float32)
    weights = torch.cat([-coef, coef]) if n_labels == 2 else coef  # binary: one vector for class 1
    embeddings = output_embeddings.float()
    if similarity == "cosine":
        weights = F.normalize(weights, dim=1)
        embeddings = F.normalize(embeddings, dim=1)
    scores = weights @ embeddings.T
    return scores.masked_fill(~allowed, float("-inf"))


def rank_by_likelihood(logprobs: torch.Tensor, labels: torch.Tensor, n_labels: int, allowed: torch.Tensor,
                       prune: int = 100, rounds: int = 10) -> torch.Tensor:
    """``[n_labels, V]`` mean log-likelihood of the training labels with each word standing for its
    class (the other classes keep their best word); words outside a class's pruned set: ``-inf``."""
    class_mean = torch.stack([logprobs[labels == c].mean(0) for c in range(n_labels)])
    if torch.isnan(class_mean).any():
        raise ValueError(f"label search needs examples of all {n_labels} labels")
    class_mean = class_mean.masked_fill(~allowed, float("-inf"))
    pruned = class_mean.topk(min(prune, int(allowed.sum())), dim=1).indices  # LM-BFF's candidate sets
    # start from the words most specific to each class: likely for it, less likely for the others
    others = (class_mean.sum(0, keepdim=True) - class_mean) / max(1, n_labels - 1)
    specific = (class_mean - others).gather(1, pruned)
    chosen = pruned[torch.arange(n_labels), specific.argmax(1)].clone()
    scores = torch.full((n_labels, pruned.shape[1]), float("-inf"))
    for _ in range(rounds):
        before = chosen.clone()
        for c in range(n_labels):
            candidates = logprobs[:, pruned[c]]                                   # [N, P]
            rest = [k for k in range(n_labels) if k != c]
            fixed = logprobs[:, chosen[rest]]                                     # [N, C-1]
            total = torch.logsumexp(torch.cat([candidates.unsqueeze(2),
                                               fixed.unsqueeze(1).expand(-1, candidates.shape[1], -1)], 2), 2)
            gold = logprobs.gather(1, chosen[labels].unsqueeze(1))                # words of the gold labels
            numerator = torch.where((labels == c).unsqueeze(1), candidates, gold)
            scores[c] = (numerator - total).mean(0)
            scores[c, torch.isin(pruned[c], chosen[rest])] = float("-inf")        # one word, one class
            chosen[c] = pruned[c, scores[c].argmax()]
        if torch.equal(chosen, before):
            break
    full = torch.full((n_labels, logprobs.shape[1]), float("-inf"))
    return full.scatter(1, pruned, scores)


def search_label_words(lm: LanguageModel, template: Template | str, examples: Sequence, labels: Sequence[str],
                       ranking: str = "classifier", k: int = 10, alphabetic: bool = True,
                       min_length: int = 2, exclude_special: bool = True, exclude_subwords: bool = True,
                       batch_size: int = 32, regularization: float = 1e-3, similarity: str = "cosine",
                       prune: int = 100, seed: int = 0, progress: bool = False,
                       outputs: tuple[torch.Tensor | None, torch.Tensor | None] | None = None,
                       chat: bool = False) -> LabelSearchResult:
    """The ``k`` best label words of each label for ``template``, from labelled ``examples``.

    ``alphabetic`` keeps only words made of letters, ``min_length`` drops shorter ones (a BPE
    vocabulary is full of one-letter word starts). ``regularization`` and ``similarity`` tune the
    ``"classifier"`` ranking, ``prune`` the ``"likelihood"`` ranking (see their functions).

    Only tokens that the verbalizer would tokenise back to exactly that one token in this slot are
    returned, so ``result.verbalizer()`` scores the very tokens that were ranked. ``outputs``:
    ``mask_outputs(lm, template, examples)`` computed once, to rank the same examples both ways.
    ``chat``: words for a ``chat: true`` entry: a word starts the assistant's reply, with no space before it.
    """
    if ranking not in RANKINGS:
        raise ValueError(f"ranking={ranking!r} is not known; choose one of {', '.join(RANKINGS)}")
    if k < 1:
        raise ValueError(f"k={k!r} is not valid; it must be >= 1")
    labels = [str(label) for label in labels]
    y = _label_indices(examples, labels)
    template = template if isinstance(template, Template) else Template(template)
    if outputs is None:
        outputs = mask_outputs(lm, template, examples, batch_size, features=ranking == "classifier",
                               logprobs=ranking == "likelihood", progress=progress, chat=chat)
    features, logprobs = outputs
    needed = features if ranking == "classifier" else logprobs
    if needed is None or len(needed) != len(examples):
        raise ValueError(f"outputs must come from mask_outputs on these {len(examples)} examples, with the "
                         f"{'features' if ranking == 'classifier' else 'logprobs'} that ranking={ranking!r} needs")
    vocab_size = lm.model.get_output_embeddings().weight.shape[0]
    allowed = token_mask(lm.tokenizer, vocab_size, exclude_special=exclude_special,
                         exclude_subwords=exclude_subwords and not chat,  # a reply's first word: no space
                         alphabetic=alphabetic, min_length=min_length)
    if ranking == "classifier":
        output_embeddings = lm.model.get_output_embeddings().weight.detach().cpu()
        scores = rank_by_classifier(features, y, len(labels), output_embeddings, allowed, regularization,
                                    similarity, seed)
    else:
        scores = rank_by_likelihood(logprobs, y, len(labels), allowed, prune)
    lead = _encoder(lm, template, chat).mask_leading_space
    words, token_ids = {}, {}
    for c, label in enumerate(labels):
        words[label], token_ids[label] = _best_words(lm.tokenizer, scores[c], k, lead)
    return LabelSearchResult(ranking, template.text, words, token_ids, len(examples))


def _label_indices(examples: Sequence, labels: list[str]) -> torch.Tensor:
    """Each example's label as its index in ``labels``; a label not among them is an error that names it."""
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({str(ex.label) for ex in examples if str(getattr(ex, "label", None)) not in index})
    if unknown:
        raise ValueError(f"examples have label {unknown[0]!r}, which is not one of {', '.join(labels)}")
    return torch.tensor([index[str(ex.label)] for ex in examples])


def _best_words(tokenizer, scores: torch.Tensor, k: int, lead: bool) -> tuple[list[tuple[str, float]], list[int]]:
    """The ``k`` best-scored tokens that the verbalizer would read back as that very token in this slot
    (``lead``: after a space), as (word, score) and token ids."""
    ranked, ids = [], []
    for token in scores.argsort(descending=True).tolist():
        if len(ranked) == k or scores[token] == float("-inf"):
            break
        word = token_strings(tokenizer, [token])[0]
        if tokenizer((" " if lead else "") + word, add_special_tokens=False)["input_ids"] != [token]:
            continue  # the verbalizer would see other tokens for this word
        ranked.append((word, float(scores[token])))
        ids.append(token)
    return ranked, ids


# ------------------------------------------------------------------------------ templates/*.yaml
def _flow(value) -> str:
    """One YAML flow scalar, quoted only where YAML needs it (``yes``, ``1.0``, ``a: b``)."""
    return yaml.safe_dump([value], default_flow_style=True, allow_unicode=True, width=10_000).strip()[1:-1]


def _label_key(label: str) -> str:
    return label if label.isdigit() and str(int(label)) == label else _flow(label)


def write_verbalizer(path: str | Path, verbalizer: Verbalizer | Mapping, task: str | None = None,
                     pattern: str | None = None) -> Path:
    """Add a verbalizer (and optionally a pattern) to a templates YAML file, creating it if needed.

    The file keeps the ``templates/*.yaml`` shape (``task``, ``patterns``, ``verbalizers``) and style
    (one flow mapping per verbalizer, ``{0: [terrible], 1: [great]}``); entries already there are
    not added twice. Leading comment lines are kept; comments elsewhere in the file are not.
    """
    path = Path(path)
    verbalizer = verbalizer if isinstance(verbalizer, Verbalizer) else Verbalizer(verbalizer)
    head, data = read_templates_file(path, task)
    patterns = list(data.get("patterns") or [])
    if pattern is not None and pattern not in patterns:
        Template(pattern)  # never write a pattern that does not parse
        patterns.append(pattern)
    verbalizers = list(data.get("verbalizers") or [])
    if verbalizer.to_dict() not in [Verbalizer(v).to_dict() for v in verbalizers]:
        verbalizers.append(verbalizer.to_dict())
    extra = {k: v for k, v in data.items() if k not in ("task", "patterns", "verbalizers")}
    lines = head + [f"task: {_flow(data['task'])}", "patterns:"]
    lines += [f"  - {json.dumps(p, ensure_ascii=False)}" for p in patterns]  # JSON strings are YAML strings
    lines.append("verbalizers:")
    for v in verbalizers:
        items = ", ".join(f"{_label_key(str(label))}: [{', '.join(_flow(str(w)) for w in ws)}]"
                          for label, ws in Verbalizer(v).to_dict().items())
        lines.append(f"  - {{{items}}}")
    if extra:
        lines.append(yaml.safe_dump(extra, sort_keys=False, allow_unicode=True).rstrip())
    text = "\n".join(lines) + "\n"
    # what is written must read back as the same verbalizers (a word YAML would turn into another
    # value, such as a bare yes or null, is quoted by _flow; this guards that promise)
    written = (yaml.safe_load(text) or {}).get("verbalizers") or []
    for wanted, got in zip(verbalizers, written + [None] * len(verbalizers)):
        try:
            same = got is not None and Verbalizer(got) == Verbalizer(wanted)
        except ValueError:  # it does not even read back as a verbalizer
            same = False
        if not same:
            raise ValueError(f"{path}: the verbalizer {Verbalizer(wanted).to_dict()} would read back from the "
                             f"file as {got!r}; nothing was written. Give label words that are plain text")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)
    return path


def read_templates_file(path: str | Path, task: str | None = None) -> tuple[list[str], dict]:
    """The leading comment lines and the contents of a templates YAML file (none if it does not
    exist yet), checked to be one :func:`write_verbalizer` can add to: call it before a long search."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a folder; give the path of a templates YAML file")
    if not path.exists():
        if task is None:
            raise ValueError(f"{path}: give task= to create a templates file")
        return [], {"task": task}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err.reason} byte {err.object[err.start:err.start + 1]!r}); "
                         "save it as UTF-8 or give another file") from None
    head = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        head.append(line)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({str(err).splitlines()[0]}); fix it or give another file") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a templates file is a mapping with task, patterns, verbalizers; "
                         f"it holds a {type(data).__name__}")
    if task is not None and data.get("task") not in (None, task):
        raise ValueError(f"{path} is the templates file of task {data['task']!r}, not {task!r}")
    data.setdefault("task", task)
    if data["task"] is None:
        raise ValueError(f"{path}: give task= to create a templates file")
    for key, kind in (("patterns", str), ("verbalizers", dict)):
        value = data.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, kind) for v in value)):
            raise ValueError(f"{path}: {key!r} must be a list of "
                             f"{'template strings' if kind is str else 'label-to-words mappings'}; got {value!r}")
    return head, data
