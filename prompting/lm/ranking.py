"""Exact ranks of many facts' gold candidates at once, with each fact's top candidates and their scores.

Fact probing needs, per fact, the rank of its gold object among hundreds of multi-token candidates
and the few candidates the model puts first. Scoring every candidate costs a forward pass over every
trie node (:mod:`prompting.lm.trie`); most of them cannot matter. Ranking one fact at a time
(:func:`prompting.lm.trie.gold_rank`) feeds only the nodes that matter, but in many small forward
passes, each of which reads every weight of the model for a handful of tokens. Here a batch of facts
is ranked together:

1. the facts' queries run once, as one left-padded batch, keeping their keys and values;
2. the candidate tries of all facts are then expanded in rounds. A round feeds, for every fact at
   once, the trie nodes that can still hold a candidate scoring at least as high as the gold object
   or as the fact's ``top``-th best candidate found so far (log-probabilities only fall along a path,
   so a prefix scoring below both holds no such candidate), the best prefixes first and at most
   ``ROUND_NODES`` per fact, so that the ``top``-th best score rises before the wide levels are fed.
   The first round also feeds the gold object's own prefixes, so that its score is known from then on;
3. a round's nodes are packed into rows of ``ROW`` tokens, one row holding nodes of several facts:
   a node attends to its own fact's query and to its own ancestors only (tree attention), its position
   numbered by depth after the query; the keys and values of what was fed before are gathered per row
   (every fed token is one slot of a key/value store). Rows go ``NODE_TOKENS`` tokens to a forward pass.

A candidate's score is the teacher-forced log-probability of all its tokens (softmax normaliser summed
in float64, as everywhere in the library): the candidate's rank counts the candidates scoring higher
and those scoring the same that come before it (the order ``argmax`` gives), exactly as if every
candidate had been scored. The top candidates are exact too: every candidate at least as high as the
``top``-th best is scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prompting.lm.logprobs import log_normaliser, log_softmax
from prompting.lm.trie import SLACK, CandidateTrie, CandidateWords

__all__ = ["Ranking", "rank_candidates", "ranking_of_scores", "TOP", "NODE_TOKENS", "ROW", "ROUND_NODES"]

#: candidates kept per fact, best first, with their scores
TOP = 10
#: node tokens per forward pass (each returns a whole-vocabulary logit vector)
NODE_TOKENS = 512
#: node tokens per row of a forward pass (a row holds the nodes of one or more facts)
ROW = 64
#: the most nodes one fact feeds in a round (its best prefixes first)
ROUND_NODES = 64


@dataclass
class Ranking:
    """Per fact: the gold candidate's 1-based rank, the ``top`` best candidates (indices, best first,
    ties in candidate order) and their log-probabilities; ``nodes``: trie nodes computed in all."""

    ranks: torch.Tensor
    top: torch.Tensor
    top_scores: torch.Tensor
    nodes: int = 0

    @classmethod
    def cat(cls, parts: list["Ranking"]) -> "Ranking":
        return cls(torch.cat([p.ranks for p in parts]), torch.cat([p.top for p in parts]),
                   torch.cat([p.top_scores for p in parts]), sum(p.nodes for p in parts))

    def select(self, order: torch.Tensor) -> "Ranking":
        """The facts in ``order`` (rows of this ranking)."""
        return Ranking(self.ranks[order], self.top[order], self.top_scores[order], self.nodes)


def ranking_of_scores(scores: torch.Tensor, gold: torch.Tensor, top: int = TOP) -> Ranking:
    """The ranking of every candidate's score [B, n] (all computed): ranks, and the best ``top``."""
    scores = scores.double().cpu()
    gold = gold.long().cpu()
    target = scores.gather(1, gold.unsqueeze(1))
    before = torch.arange(scores.shape[1]).unsqueeze(0) < gold.unsqueeze(1)
    ranks = 1 + (scores > target).sum(1) + ((scores == target) & before).sum(1)
    order = torch.sort(scores, dim=1, descending=True, stable=True)
    k = min(top, scores.shape[1])
    return Ranking(ranks, order.indices[:, :k], order.values[:, :k])


class _Store:
    """The keys and values of every token fed so far, per layer: one slot per token (the queries'
    tokens first, then trie nodes as they are fed); rows of a forward pass gather their own slots."""

    def __init__(self, cache, reserve: int):
        flat = lambda t: t.permute(0, 2, 1, 3).reshape(-1, t.shape[1], t.shape[3])  # noqa: E731
        self.keys = [flat(layer.keys) for layer in cache.layers]
        self.values = [flat(layer.values) for layer in cache.layers]
        self.size = self.keys[0].shape[0]
        self._reserve(reserve)

    def _reserve(self, n: int) -> None:
        need = self.size + n
        if need <= self.keys[0].shape[0]:
            return
        grow = lambda t: torch.cat([t, t.new_empty(max(need, 2 * t.shape[0]) - t.shape[0], *t.shape[1:])])  # noqa: E731
        self.keys = [grow(k) for k in self.keys]
        self.values = [grow(v) for v in self.values]

    def gather(self, lm, slots: torch.Tensor):
        """A fresh cache holding, per row, the keys and values of ``slots`` [R, T]."""
        pick = lambda t: t[slots].permute(0, 2, 1, 3)  # noqa: E731
        return lm.prefix_cache(torch.stack([pick(k) for k in self.keys]), torch.stack([pick(v) for v in self.values]))

    def append(self, cache, start: int, valid: torch.Tensor) -> torch.Tensor:
        """Keep the keys and values the model added after column ``start`` at the ``valid`` [R, C] places;
        their new slots, row by row."""
        count = int(valid.sum())
        self._reserve(count)
        for i, layer in enumerate(cache.layers):
            self.keys[i][self.size:self.size + count] = layer.keys[:, :, start:].permute(0, 2, 1, 3)[valid]
            self.values[i][self.size:self.size + count] = layer.values[:, :, start:].permute(0, 2, 1, 3)[valid]
        slots = torch.arange(self.size, self.size + count)
        self.size += count
        return slots


class _Search:
    """What is known of every fact's candidates: prefix scores of trie nodes, whole candidates'
    scores, which nodes were fed and where their keys and values are."""

    def __init__(self, words: CandidateWords, first: torch.Tensor, gold: torch.Tensor, top: int):
        trie = words.trie
        self.trie, self.edges, self.gold = trie, trie.edges, gold
        size, n_words = len(gold), len(words.word_ids)
        self.k = min(top, n_words)
        first = first.double()
        self.scores = torch.full((size, n_words), -torch.inf, dtype=torch.float64)
        self.scores[:, self.edges.single] = first[:, trie.first[self.edges.single]]
        self.prefix = torch.full((size, trie.n_nodes), -torch.inf, dtype=torch.float64)
        self.prefix[:, self.edges.roots] = first[:, trie.node_token[self.edges.roots]]
        self.fed = torch.zeros((size, trie.n_nodes), dtype=torch.bool)
        self.slot = torch.full((size, trie.n_nodes), -1, dtype=torch.long)
        self.chains = [self.edges.chains[g] for g in gold.tolist()]
        self.rounds = 0

    def threshold(self) -> torch.Tensor:
        """Per fact: the score a prefix needs to be expanded (the gold score, or before it is known its
        first token's; the ``k``-th best score known; the lower of the two, less the slack)."""
        kth = self.scores.topk(self.k, 1).values[:, -1]
        gold = self.scores.gather(1, self.gold.unsqueeze(1)).squeeze(1)
        roots = torch.tensor([c[0] if c else 0 for c in self.chains], dtype=torch.long)
        bound = torch.where(torch.isfinite(gold), gold, self.prefix.gather(1, roots.unsqueeze(1)).squeeze(1))
        return torch.minimum(bound, kth) - SLACK

    def next_nodes(self, most: int) -> list[list[int]]:
        """Per fact, the nodes the next round feeds: at most ``most`` of those above the threshold, the
        best prefixes first (the first round: the gold object's prefixes before them)."""
        want = (self.prefix >= self.threshold().unsqueeze(1)) & torch.isfinite(self.prefix) & ~self.fed
        counts = want.sum(1).clamp(max=most).tolist()
        order = torch.where(want, self.prefix, -torch.inf).sort(dim=1, descending=True, stable=True).indices
        out = []
        for b, count in enumerate(counts):
            nodes = order[b, :count].tolist()
            if self.rounds == 0 and self.chains[b]:
                chain = list(self.chains[b])
                nodes = chain + [n for n in nodes if n not in set(chain)]
            out.append(nodes)
        self.rounds += 1
        return out

    def update(self, facts: torch.Tensor, nodes: torch.Tensor, logits: torch.Tensor, slots: torch.Tensor) -> None:
        """Take in the next-token logits [M, V] of fed (fact, node) pairs: their children's prefix scores
        and the scores of the candidates that end there."""
        self.fed[facts, nodes] = True
        self.slot[facts, nodes] = slots
        norm = log_normaliser(logits)
        # float32 log-probabilities summed in float64, as the one-fact ranking adds them
        logprob = lambda rows, tokens: (logits[rows, tokens].double() - norm[rows]).float().double()  # noqa: E731
        rows, children = self.edges.children(nodes)
        steps = logprob(rows, self.trie.node_token[children])
        depth = self.trie.node_depth[nodes][rows]
        for d in torch.unique(depth).tolist():  # a gold chain fed in one round: parents before children
            at = depth == d
            b, parent = facts[rows[at]], nodes[rows[at]]
            self.prefix[b, children[at]] = self.prefix[b, parent] + steps[at]
        rows, ended, tokens = self.edges.ends(nodes)
        self.scores[facts[rows], ended] = self.prefix[facts[rows], nodes[rows]] + logprob(rows, tokens)

    def result(self, nodes: int) -> Ranking:
        found = ranking_of_scores(self.scores, self.gold, self.k)
        found.nodes = nodes
        return found


@dataclass
class _Query:
    slots: list[torch.Tensor]  # per fact, the store slots of its query's tokens (left padding left out)
    last: torch.Tensor  # [B] the position of each query's last token
    dtype: torch.dtype


@torch.no_grad()
def rank_candidates(lm, embeds: torch.Tensor, attention: torch.Tensor, positions: torch.Tensor,
                    words: CandidateWords, gold: torch.Tensor, top: int = TOP, node_tokens: int = NODE_TOKENS,
                    row: int = ROW, round_nodes: int = ROUND_NODES) -> Ranking:
    """The exact rank of candidate ``gold[b]`` after each query b of a left-padded batch (``embeds``
    [B, L, H], ``attention`` and ``positions`` [B, L]), and each query's ``top`` best candidates, from
    a causal LM called as it is (a prompt may change the query's embeddings, not the LM call)."""
    cache = lm.prefix_cache()
    logits = lm.forward(embeds, attention, positions, 1, **{lm.cache_argument(): cache})
    search = _Search(words, log_softmax(logits[:, -1]).cpu(), gold.cpu(), top)
    if words.trie.n_nodes == 0:
        return search.result(0)
    size, length = attention.shape
    store = _Store(cache, size * 32)
    seen = attention.bool().cpu()
    query = _Query([torch.arange(b * length, (b + 1) * length)[seen[b]] for b in range(size)],
                   positions[:, -1].cpu(), embeds.dtype)
    fed = 0
    while True:
        wanted = search.next_nodes(round_nodes)
        if not any(wanted):
            return search.result(fed)
        atomic = [len(c) if search.rounds == 1 else 1 for c in search.chains]
        width = max([row] + atomic)
        rows = _pack(wanted, atomic, width)
        per_pass = max(1, node_tokens // width)
        for start in range(0, len(rows), per_pass):
            facts, nodes, node_logits, slots = _feed(lm, store, search, query, rows[start:start + per_pass], width)
            search.update(facts, nodes, node_logits, slots)
            fed += len(nodes)


def _pack(wanted: list[list[int]], atomic: list[int], width: int) -> list[list[tuple[int, list[int]]]]:
    """The round's nodes as rows of at most ``width`` nodes, each row a list of (fact, its nodes); a
    fact's first ``atomic[b]`` nodes (a gold chain: each node attends to the one before) stay in one row."""
    rows: list[list[tuple[int, list[int]]]] = []
    row: list[tuple[int, list[int]]] = []
    used = 0
    for b, nodes in enumerate(wanted):
        i = 0
        while i < len(nodes):
            need = max(atomic[b], 1) if i == 0 else 1
            if width - used < need:
                rows.append(row)
                row, used = [], 0
            take = max(need, min(width - used, len(nodes) - i))
            row.append((b, nodes[i:i + take]))
            used, i = used + take, i + take
    if row:
        rows.append(row)
    return rows


def _row_layout(search: _Search, query: _Query, segments: list[tuple[int, list[int]]], width: int):
    """One row: the store slots it reads, what each of its nodes sees of them [W, C] and of the row
    [W, W], its tokens and positions."""
    trie: CandidateTrie = search.trie
    slots, context, inner = [], [], torch.zeros((width, width), dtype=torch.bool)
    tokens = torch.zeros(width, dtype=torch.long)
    where = torch.zeros(width, dtype=torch.long)
    at = 0
    for b, nodes in segments:
        own = torch.tensor(nodes, dtype=torch.long)
        n, ancestors = len(nodes), trie.ancestors[own]
        above = (ancestors.any(0) & search.fed[b]).nonzero().squeeze(1)
        slots += [query.slots[b], search.slot[b, above]]
        block = torch.zeros((width, len(query.slots[b]) + len(above)), dtype=torch.bool)
        block[at:at + n, :len(query.slots[b])] = True
        block[at:at + n, len(query.slots[b]):] = ancestors[:, above]
        context.append(block)
        inner[at:at + n, at:at + n] = ancestors[:, own]
        tokens[at:at + n] = trie.node_token[own]
        where[at:at + n] = query.last[b] + trie.node_depth[own]
        at += n
    pad = torch.arange(at, width)
    inner[pad, pad] = True  # padding attends to itself only
    where[at:] = where[max(at - 1, 0)]
    return torch.cat(slots), torch.cat(context, 1), inner, tokens, where, at


def _feed(lm, store: _Store, search: _Search, query: _Query, rows, width: int):
    """One forward pass over packed ``rows``: (fact, node) of every fed node, its logits [M, V] and its
    store slots."""
    layouts = [_row_layout(search, query, segments, width) for segments in rows]
    size, start = len(rows), max(len(s) for s, *_ in layouts)
    slots = torch.zeros((size, start), dtype=torch.long)
    seen = torch.zeros((size, width, start + width), dtype=torch.bool)
    for r, (row_slots, context, inner, _, _, _) in enumerate(layouts):
        slots[r, :len(row_slots)] = row_slots
        seen[r, :, :context.shape[1]] = context
        seen[r, :, start:] = inner
    tokens = torch.stack([layout[3] for layout in layouts])
    where = torch.stack([layout[4] for layout in layouts])
    lengths = torch.tensor([layout[5] for layout in layouts])
    device = lm.embeddings.weight.device
    mask = torch.zeros(seen.shape, dtype=query.dtype).masked_fill(~seen, torch.finfo(query.dtype).min)
    cache = store.gather(lm, slots.to(device))
    logits = lm.forward(lm.embed(tokens.to(device)).to(query.dtype), mask[:, None].to(device), where.to(device), 0,
                        **{lm.cache_argument(): cache})
    valid = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)
    new = store.append(cache, start, valid.to(device))
    facts = torch.tensor([b for segments in rows for b, nodes in segments for _ in nodes], dtype=torch.long)
    nodes = torch.tensor([n for segments in rows for _, ns in segments for n in ns], dtype=torch.long)
    return facts, nodes, logits[valid.to(logits.device)].float().cpu(), new.cpu()
