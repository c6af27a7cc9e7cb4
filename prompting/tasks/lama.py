"""LAMA fact probing: relations as many-label cloze tasks, two ranking protocols, P@1 / P@10 / MRR.

    rel = load_relation("data/lama", "P103")            # doctest: +SKIP
    rel.template     # 'The native language of {sub_label} is {mask} .'
    rel.candidates   # the relation's distinct objects over train, dev and test

A fact is a subject and an object (``sub_label``, ``obj_label`` in LAMA's JSONL; any JSONL/CSV with
other column names works through ``subject=`` / ``object=``). The relation's template comes from
``relations.tsv`` (``[X]`` -> ``{sub_label}``, ``[Y]`` -> ``{mask}``) or from the user.

Protocols (each record names its own):

- ``candidates``: rank the relation's distinct objects (from all its splits, or a candidate list
  the user gives), each scored exactly with all its tokens (see :mod:`prompting.lm.trie`; many facts are
  ranked at once, :mod:`prompting.lm.ranking`).
- ``vocab``: LAMA's: keep only the facts whose object is one token of the model's tokenizer (as it
  follows the prompt, with its leading space) and rank that token over the whole vocabulary.

Ranks are 1-based; ties go to the candidate listed first (as ``argmax`` does), so P@1 is the
accuracy of the top prediction.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from prompting.core.data import ENCODING, DataError, Example, Task, wide_csv_fields
from prompting.core.template import collate
from prompting.lm.logprobs import log_softmax
from prompting.lm.ranking import TOP, Ranking, rank_candidates, ranking_of_scores
from prompting.lm.trie import gold_rank, shared_scoring
from prompting.tasks.schema import LAMA_PROTOCOLS

__all__ = ["PROTOCOLS", "Relation", "load_facts", "load_relation", "relation_template", "lama_template",
           "ranks", "ranking_metrics", "macro_average", "vocab_facts", "majority_scores", "vocab_ranks",
           "candidate_ranks", "candidate_ranking", "candidate_ranks_one_by_one", "RANK_BATCH"]

PROTOCOLS = LAMA_PROTOCOLS
SPLITS = ("train", "dev", "test")


@dataclass
class Relation:
    """One relation: its template, facts by split, and the candidate objects (labels)."""

    name: str
    template: str
    train: list[Example]
    dev: list[Example]
    test: list[Example]
    candidates: tuple[str, ...]
    description: str = ""
    files: dict[str, str] = field(default_factory=dict)

    def task(self) -> Task:
        """The relation as a task of the harness: one label per candidate object, fixed splits."""
        return Task(f"lama-{self.name}", self.candidates, ("sub_label",), self.train, self.test, dev=self.dev,
                    description=self.description, fixed_split=True)


def lama_template(text: str) -> str:
    """``[X] was born in [Y] .`` -> ``{sub_label} was born in {mask} .`` (a template already in this
    library's language, with ``{sub_label}`` and ``{mask}``, is returned as it is)."""
    text = str(text)
    if "[X]" in text or "[Y]" in text:
        missing = [slot for slot in ("[X]", "[Y]") if slot not in text]
        if missing:
            raise DataError(f"template {text!r} has no {missing[0]} slot; a LAMA template needs [X] (the "
                            "subject) and [Y] (the object)")
        return text.replace("[X]", "{sub_label}").replace("[Y]", "{mask}")
    missing = [slot for slot in ("{sub_label}", "{mask}") if slot not in text]
    if missing:
        raise DataError(f"template {text!r} has no {missing[0]}; write it with [X] and [Y] (LAMA) or with "
                        "{sub_label} and {mask}")
    return text


def relation_template(data_dir: str | Path, relation: str) -> tuple[str, str]:
    """(template, relation name) of ``relation`` from ``data_dir/relations.tsv``."""
    path = Path(data_dir) / "relations.tsv"
    if not path.is_file():
        raise DataError(f"{str(path)!r} does not exist; give the relation's template with template=")
    wide_csv_fields()
    with open(path, encoding=ENCODING, newline="") as f:
        rows = {row.get("relation"): row for row in csv.DictReader(f, delimiter="\t")}
    if relation not in rows:
        raise DataError(f"relation {relation!r} is not in {str(path)!r}; relations there: "
                        f"{', '.join(r for r in rows if r)}")
    row = rows[relation]
    if not row.get("template"):
        raise DataError(f"{str(path)!r}: relation {relation!r} has no value in column 'template'")
    return lama_template(row["template"]), row.get("name") or ""


def _rows(path: Path, fmt: str):
    """A fact file's rows: JSON objects a line, or csv / tsv rows by header."""
    import json

    wide_csv_fields()
    with open(path, encoding=ENCODING, newline="") as f:
        if fmt != "jsonl":
            reader = csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",")
            for n, row in enumerate(reader):
                if any(str(v).strip() for v in row.get(None) or []):  # DictReader keeps extra fields under None
                    name = "tab" if fmt == "tsv" else "comma"
                    raise DataError(f"{path}: row {n} (line {reader.line_num} of the file) has more fields than the "
                                    f"header ({', '.join(reader.fieldnames)}); a {name} inside a text makes an "
                                    "extra field: remove it or quote the text, or save the facts as JSONL")
                row.pop(None, None)
                yield row
            return
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}: line {n} is not valid JSON ({err.msg})") from None


def load_facts(path: str | Path, subject: str = "sub_label", object: str = "obj_label") -> list[Example]:
    """Facts from a JSONL or CSV file: ``Example({"sub_label": subject}, label=object)``.

    Raises :class:`DataError` for a missing column or empty value (naming the row) and for a
    duplicate fact: the same subject and object twice (compared by ``sub_uri`` / ``obj_uri`` where
    the file has them, as two entities may share a name).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"fact file {str(path)!r} does not exist")
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in ("jsonl", "csv", "tsv"):
        raise DataError(f"fact file {str(path)!r}: format {fmt!r} is not supported; use jsonl, csv or tsv")
    facts, seen = [], {}
    for n, row in enumerate(_rows(path, fmt)):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {n} is {row!r}, not an object with named columns")
        values = {}
        for role, column in (("subject", subject), ("object", object)):
            value = row.get(column)
            if value is None or not str(value).strip():
                raise DataError(f"{path}: row {n} has no {role} in column {column!r}"
                                f"{'' if column in row else '; columns: ' + ', '.join(map(str, row))}")
            values[role] = str(value).strip()
        key = (row.get("sub_uri") or values["subject"], row.get("obj_uri") or values["object"])
        if key in seen:
            raise DataError(f"{path}: row {n} repeats the fact of row {seen[key]} "
                            f"({values['subject']!r} -> {values['object']!r}); each fact once")
        seen[key] = n
        facts.append(Example({"sub_label": values["subject"]}, values["object"], row.get("sub_uri", n)))
    if not facts:
        raise DataError(f"fact file {str(path)!r} has no facts")
    return facts


def _split_file(folder: Path, split: str) -> Path:
    for suffix in ("jsonl", "csv", "tsv"):
        if (folder / f"{split}.{suffix}").is_file():
            return folder / f"{split}.{suffix}"
    raise DataError(f"{str(folder)!r} has no {split}.jsonl (nor .csv / .tsv); a relation folder holds "
                    "train, dev and test files")


def load_relation(data_dir: str | Path, relation: str, template: str | None = None,
                  candidates: Sequence[str] | None = None, subject: str = "sub_label",
                  object: str = "obj_label") -> Relation:
    """A relation from ``data_dir/RELATION/{train,dev,test}.jsonl`` (or .csv).

    ``template``: the user's (``[X]``/``[Y]`` or ``{sub_label}``/``{mask}``); default the relation's
    row of ``data_dir/relations.tsv``. ``candidates``: the objects to rank; default every distinct
    object of the relation's splits. A fact whose object is not a candidate is an error.
    """
    root = Path(data_dir).expanduser()
    folder = root / relation
    if not folder.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise DataError(f"relation {relation!r}: {str(folder)!r} is not a folder"
                        + (f"; relations in {str(root)!r}: {', '.join(found)}" if found else ""))
    description = ""
    if template is None:
        template, description = relation_template(root, relation)
    files = {split: _split_file(folder, split) for split in SPLITS}
    splits = {split: load_facts(path, subject, object) for split, path in files.items()}
    if candidates is None:
        candidates = sorted({ex.label for facts in splits.values() for ex in facts})
    candidates = tuple(dict.fromkeys(str(c).strip() for c in candidates))
    known = set(candidates)
    for split, facts in splits.items():
        for i, ex in enumerate(facts):
            if ex.label not in known:
                raise DataError(f"{files[split]}: fact {i} ({ex['sub_label']!r}) has object {ex.label!r}, "
                                f"which is not among the {len(candidates)} candidates; add it to the "
                                "candidate set or drop the fact")
    return Relation(relation, lama_template(template), splits["train"], splits["dev"], splits["test"],
                    candidates, description, {k: str(v) for k, v in files.items()})


# ------------------------------------------------------------------------------------ protocols
def one_token_id(tokenizer, word: str, leading_space: bool) -> int | None:
    """The token id of ``word`` as it follows the prompt, or None when it takes several tokens."""
    ids = tokenizer((" " if leading_space else "") + word, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def vocab_facts(facts: Sequence[Example], tokenizer, leading_space: bool) -> tuple[list[Example], list[int]]:
    """LAMA's filter: the facts whose object is one token, and that token's id for each."""
    kept, ids = [], []
    for ex in facts:
        token = one_token_id(tokenizer, ex.label, leading_space)
        if token is not None:
            kept.append(ex)
            ids.append(token)
    return kept, ids


def whole_prompts(method, data, batch_size: int):
    """Batches of whole prompts (``method.batches`` may leave out text whose keys and values it has cached;
    ranking here runs the LM itself and needs every token)."""
    encodings = data.encodings[min(data.encodings)]
    for start in range(0, len(encodings), batch_size):
        chunk = {n: collate(encs[start:start + batch_size], method.lm.pad_id, left=method.lm.causal).to(method.lm.device)
                 for n, encs in data.encodings.items()}
        yield chunk


@torch.no_grad()
def vocab_ranks(method, facts: Sequence[Example], token_ids: Sequence[int], batch_size: int = 32,
                top: int = TOP) -> Ranking:
    """Each fact's rank of its object token over the whole vocabulary, and the ``top`` best tokens (ids)
    with their log-probabilities, from the method's next-token distribution at ``{mask}`` (a causal LM:
    after the prompt; a masked LM: at its one mask)."""
    method.eval()
    data = method.encode(facts)
    gold = torch.tensor(list(token_ids), dtype=torch.long)
    parts = []
    for start, prompts in zip(range(0, len(facts), batch_size), whole_prompts(method, data, batch_size)):
        prompt = prompts[min(prompts)]
        embeds = method.embed(method.lm, prompt.input_ids, prompt)
        if method.lm.causal:
            logits = method.forward_lm(method.lm, embeds, prompt.attention_mask, prompt.position_ids, 1)[:, -1]
        else:
            logits = method.forward_lm(method.lm, embeds, prompt.attention_mask, prompt.position_ids, 0)
            logits = logits[torch.arange(len(prompt)), prompt.mask_positions[:, 0]]
        logits = logits.float().cpu()
        best = log_softmax(logits).topk(min(top, logits.shape[1]), 1)
        parts.append(Ranking(ranks(logits, gold[start:start + len(prompt)]), best.indices, best.values.double()))
    return Ranking.cat(parts)


def majority_scores(train: Sequence[Example], candidates: Sequence[str], n: int) -> torch.Tensor:
    """The majority-object baseline: every fact gets the candidates' training frequencies as scores
    (the most frequent training object first; ties in candidate order)."""
    counts = Counter(ex.label for ex in train)
    return torch.tensor([float(counts.get(c, 0)) for c in candidates]).expand(n, -1)


# ------------------------------------------------------------------------------------ metrics
def ranks(scores: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """1-based rank of each row's gold column: 1 + the columns scoring higher + the columns before
    it scoring the same (the order ``argmax`` and a stable sort give)."""
    scores = scores.float()
    gold = gold.long()
    target = scores.gather(1, gold.unsqueeze(1))
    before = torch.arange(scores.shape[1]).unsqueeze(0) < gold.unsqueeze(1)
    return 1 + (scores > target).sum(1) + ((scores == target) & before).sum(1)


def ranking_metrics(rank: Sequence[int] | torch.Tensor) -> dict[str, float]:
    """P@1, P@10 and mean reciprocal rank from 1-based ranks."""
    rank = torch.as_tensor(rank, dtype=torch.float64)
    if rank.numel() == 0:
        raise DataError("no ranks to score: the split has no facts (for protocol 'vocab': no fact has "
                        "a one-token object)")
    if (rank < 1).any():
        raise DataError(f"ranks are 1-based; got {rank.min().item():g}")
    return {"p_at_1": float((rank <= 1).double().mean()), "p_at_10": float((rank <= 10).double().mean()),
            "mrr": float((1.0 / rank).mean())}


def macro_average(per_relation: dict[str, dict[str, float]]) -> dict[str, float]:
    """Each metric's mean over relations (each relation counts once, whatever its size)."""
    if not per_relation:
        return {}
    metrics = next(iter(per_relation.values())).keys()
    return {m: sum(r[m] for r in per_relation.values()) / len(per_relation) for m in metrics}


#: facts ranked together by :func:`candidate_ranking` (their queries one batch, their tries expanded together)
RANK_BATCH = 64


@torch.no_grad()
def candidate_ranking(method, facts: Sequence[Example], progress: bool = False, batch_size: int = RANK_BATCH,
                      top: int = TOP) -> Ranking:
    """Each fact's exact rank of its object among the method's labels (the candidates), every candidate
    scored with all its tokens, and its ``top`` best candidates with their log-probabilities.

    A causal LM called as it is (every prompt but prefix-tuning) ranks ``batch_size`` facts at a time,
    computing only the trie nodes that could rank before the gold object or among the best ``top``
    (:func:`prompting.lm.ranking.rank_candidates`); facts of similar query length go together. Other
    methods and masked LMs score every candidate."""
    from tqdm.auto import tqdm

    method.eval()
    index = {label: i for i, label in enumerate(method.labels)}
    gold = torch.tensor([index[ex.label] for ex in facts], dtype=torch.long)
    if not method.lm.causal or not method.plain_lm_call:
        return ranking_of_scores(method.predict_scores(method.encode(facts)), gold, top)
    shared_scoring(method)
    data = method.encode(facts)
    encodings = data.encodings[min(data.encodings)]
    order = sorted(range(len(facts)), key=lambda i: len(encodings[i].input_ids))
    parts = []
    for start in tqdm(range(0, len(facts), batch_size), disable=not progress, leave=False,
                      desc=f"ranking ({len(method.labels)} candidates)"):
        rows = order[start:start + batch_size]
        prompt = collate([encodings[i] for i in rows], method.lm.pad_id, left=True).to(method.lm.device)
        embeds = method.embed(method.lm, prompt.input_ids, prompt)
        parts.append(rank_candidates(method.lm, embeds, prompt.attention_mask, prompt.position_ids, method.words,
                                     gold[rows], top))
    return Ranking.cat(parts).select(torch.argsort(torch.tensor(order)))


def candidate_ranks(method, facts: Sequence[Example], progress: bool = False) -> torch.Tensor:
    """The exact rank of each fact's object among the method's labels (see :func:`candidate_ranking`)."""
    return candidate_ranking(method, facts, progress).ranks


@torch.no_grad()
def candidate_ranks_one_by_one(method, facts: Sequence[Example]) -> torch.Tensor:
    """The same ranks as :func:`candidate_ranks`, one fact at a time (:func:`prompting.lm.trie.gold_rank`):
    the way facts were ranked before batches of them were, kept to check and measure against."""
    method.eval()
    index = {label: i for i, label in enumerate(method.labels)}
    shared_scoring(method)
    data = method.encode(facts)
    out = []
    for row, prompts in enumerate(whole_prompts(method, data, 1)):
        prompt = prompts[min(prompts)]
        embeds = method.embed(method.lm, prompt.input_ids, prompt)
        out.append(gold_rank(method.lm, embeds, prompt.position_ids, method.words, index[facts[row].label]))
    return torch.tensor(out, dtype=torch.long)
