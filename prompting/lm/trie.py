"""Exact scores of many multi-token candidates, sharing work: a causal LM reads the query once.

Fact probing ranks hundreds of candidate objects (LAMA: 86-911 per relation, many of several
tokens) after one query ("The native language of Jean Marais is"). Scoring each candidate with
its own forward pass over query + candidate (what :meth:`LanguageModel.word_logprobs` does for a
multi-token label word) repeats the query once per candidate. Here:

1. the query is run once, keeping its keys and values (a key/value cache); its last position gives
   the first token's log-probability of every candidate;
2. the candidates' proper prefixes (``" New"`` of ``" New York"``, ``" New Zealand"``) form a trie:
   each distinct prefix is one node, fed once, in one forward pass over all nodes after the cached
   query, with an attention mask that lets a node see the query and its own ancestors only (tree
   attention) and positions numbered by depth;
3. a candidate's score is the sum of its tokens' log-probabilities read at the root and along its
   path: the same teacher-forced log-probability the per-candidate pass computes.

Methods opt in with :func:`shared_scoring` (their words become :class:`CandidateWords`, which
:meth:`LanguageModel.word_logprobs` routes here). Prompts that change the input embeddings (manual,
soft prompt, P-tuning, AutoPrompt's triggers) are scored this way; a prompt that changes the LM
call itself (prefix-tuning) keeps the per-candidate pass. A masked LM needs nothing of this: it
already scores every candidate of n tokens from one pass with n masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from prompting.lm.logprobs import log_normaliser, log_softmax
from prompting.core.template import PromptBatch
from prompting.core.verbalizer import LabelWordIds

__all__ = ["CandidateTrie", "CandidateWords", "shared_scoring", "shared_word_logprobs", "NODE_ROWS"]

#: at most this many (query x trie node) rows per forward pass: each row holds a whole-vocabulary
#: logit vector (SmolLM2: 49k floats), so a chunk of queries is scored at a time
NODE_ROWS = 2048
#: prefixes this far below the gold score are still expanded: two forward passes that compute the same
#: log-probability differently agree only to float32 rounding
SLACK = 1e-4


@dataclass(frozen=True)
class CandidateTrie:
    """The candidates' proper prefixes as trie nodes, and where each candidate's tokens are read.

    ``node_token[n]``: the last token of prefix n; ``node_depth[n]``: its length (1 = the first
    token); ``ancestors[n, m]``: m is n or an ancestor of n. ``first[i]``: candidate i's first
    token. Every later token t of candidate i (at step d) is a pair (``pair_word`` i,
    ``pair_node`` = the node of its first d tokens, ``pair_token`` = t).
    """

    first: torch.Tensor
    node_token: torch.Tensor
    node_depth: torch.Tensor
    ancestors: torch.Tensor
    pair_word: torch.Tensor
    pair_node: torch.Tensor
    pair_token: torch.Tensor
    prefixes: tuple[tuple[int, ...], ...] = ()

    @classmethod
    def build(cls, word_ids) -> "CandidateTrie":
        nodes: dict[tuple[int, ...], int] = {}
        for word in sorted(word_ids, key=len):  # shorter prefixes first: parents before children
            for d in range(1, len(word)):
                nodes.setdefault(tuple(word[:d]), len(nodes))
        prefixes = sorted(nodes, key=lambda p: (len(p), nodes[p]))
        nodes = {p: n for n, p in enumerate(prefixes)}
        ancestors = torch.zeros(len(nodes), len(nodes), dtype=torch.bool)
        for prefix, n in nodes.items():
            for d in range(1, len(prefix) + 1):
                ancestors[n, nodes[prefix[:d]]] = True
        pairs = [(i, nodes[tuple(w[:d])], w[d]) for i, w in enumerate(word_ids) for d in range(1, len(w))]
        pw, pn, pt = (torch.tensor(c, dtype=torch.long) for c in zip(*pairs)) if pairs else \
            (torch.zeros(0, dtype=torch.long),) * 3
        return cls(torch.tensor([w[0] for w in word_ids], dtype=torch.long),
                   torch.tensor([p[-1] for p in prefixes], dtype=torch.long),
                   torch.tensor([len(p) for p in prefixes], dtype=torch.long), ancestors, pw, pn, pt,
                   tuple(prefixes))

    @property
    def n_nodes(self) -> int:
        return len(self.node_token)

    @cached_property
    def index(self) -> dict[tuple[int, ...], int]:
        """Each proper prefix's node (built once per trie, used for every query)."""
        return {prefix: n for n, prefix in enumerate(self.prefixes)}

    @cached_property
    def edges(self) -> "TrieEdges":
        """The trie as index tensors for ranking many facts at once (:mod:`prompting.lm.ranking`)."""
        return TrieEdges.of(self)

    @cached_property
    def children(self) -> dict[tuple[int, ...], list[int]]:
        """The nodes one token longer than each prefix (``()``: the first tokens' nodes)."""
        out: dict[tuple[int, ...], list[int]] = {}
        for n, prefix in enumerate(self.prefixes):
            out.setdefault(prefix[:-1], []).append(n)
        return out


def _csr(owners: list[int], size: int) -> torch.Tensor:
    """Row starts [size + 1] of items sorted by owner (``owners`` already in that order)."""
    counts = torch.bincount(torch.tensor(owners, dtype=torch.long), minlength=size) if owners else \
        torch.zeros(size, dtype=torch.long)
    return torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])


def _expand(starts: torch.Tensor, items: torch.Tensor, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row in ``nodes``, item) of every item owned by each of ``nodes``."""
    counts = starts[nodes + 1] - starts[nodes]
    rows = torch.repeat_interleave(torch.arange(len(nodes)), counts)
    offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    return rows, items[starts[nodes][rows] + offsets]


@dataclass(frozen=True)
class TrieEdges:
    """Per node, its children and the candidates that end one token after it, as index tensors; the
    candidates of one token; the first tokens' nodes; each candidate's chain of proper prefixes."""

    single: torch.Tensor
    roots: torch.Tensor
    chains: tuple[tuple[int, ...], ...]
    child_starts: torch.Tensor
    child_nodes: torch.Tensor
    end_starts: torch.Tensor
    end_words: torch.Tensor
    end_tokens: torch.Tensor

    @classmethod
    def of(cls, trie: "CandidateTrie") -> "TrieEdges":
        n_words, index = len(trie.first), trie.index
        chains = [[] for _ in range(n_words)]
        for word, node in zip(trie.pair_word.tolist(), trie.pair_node.tolist()):
            chains[word].append(node)
        parents = [index[p[:-1]] if len(p) > 1 else -1 for p in trie.prefixes]
        by_parent = sorted((p, n) for n, p in enumerate(parents) if p >= 0)
        last = [(c[-1], i, trie.pair_token[pair].item()) for i, c, pair in
                zip(range(n_words), chains, _last_pairs(trie.pair_word, n_words)) if c]
        last.sort()
        return cls(torch.tensor([i for i, c in enumerate(chains) if not c], dtype=torch.long),
                   torch.tensor([n for n, p in enumerate(parents) if p < 0], dtype=torch.long),
                   tuple(tuple(c) for c in chains),
                   _csr([p for p, _ in by_parent], trie.n_nodes), torch.tensor([n for _, n in by_parent], dtype=torch.long),
                   _csr([n for n, _, _ in last], trie.n_nodes), torch.tensor([i for _, i, _ in last], dtype=torch.long),
                   torch.tensor([t for _, _, t in last], dtype=torch.long))

    def children(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row in ``nodes``, child node) of every child of ``nodes``."""
        return _expand(self.child_starts, self.child_nodes, nodes)

    def ends(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(row in ``nodes``, candidate, its last token) of every candidate that ends after ``nodes``."""
        rows, items = _expand(self.end_starts, torch.arange(len(self.end_words)), nodes)
        return rows, self.end_words[items], self.end_tokens[items]


def _last_pairs(pair_word: torch.Tensor, n_words: int) -> list[int]:
    """Per candidate, the index of its last (word, node, token) pair (-1: a one-token candidate)."""
    last = [-1] * n_words
    for pair, word in enumerate(pair_word.tolist()):
        last[word] = pair
    return last


@dataclass(frozen=True)
class CandidateWords(LabelWordIds):
    """Label words scored with a trie (see the module docstring); otherwise plain :class:`LabelWordIds`."""

    trie: CandidateTrie | None = None

    @classmethod
    def of(cls, words: LabelWordIds) -> "CandidateWords":
        return cls(words.word_ids, words.word_label, words.n_labels, words.aggregate,
                   CandidateTrie.build(words.word_ids))


def shared_scoring(method):
    """Switch a method (causal LM) to shared-work candidate scoring; returns the method."""
    if method.lm.causal and not isinstance(method.words, CandidateWords):
        method.words = CandidateWords.of(method.words)
    return method


def shared_word_logprobs(lm, batch: PromptBatch, words: CandidateWords, hooks) -> torch.Tensor:
    """[B, n_words] exact log-probabilities of every candidate after each query of ``batch``
    (left-padded, as a causal LM's batches are), the query computed once, each trie node once."""
    trie = words.trie
    rows = max(1, NODE_ROWS // max(1, trie.n_nodes))
    embeds = hooks.embed(lm, batch.input_ids, batch)
    parts = [_score_rows(lm, embeds[s:s + rows], batch.attention_mask[s:s + rows],
                         batch.position_ids[s:s + rows], trie) for s in range(0, len(batch), rows)]
    return torch.cat(parts)


def _score_rows(lm, embeds, attention, positions, trie: CandidateTrie) -> torch.Tensor:
    cache = lm.prefix_cache()
    argument = {lm.cache_argument(): cache}
    logits = lm.forward(embeds, attention, positions, 1, **argument)
    first = log_softmax(logits[:, -1])
    scores = first[:, trie.first.to(first.device)]
    if trie.n_nodes == 0:
        return scores
    size, device = embeds.shape[0], embeds.device
    tokens = trie.node_token.to(device)
    node_embeds = lm.embed(tokens).unsqueeze(0).expand(size, -1, -1).to(embeds.dtype)
    node_positions = positions[:, -1:] + trie.node_depth.to(device).unsqueeze(0)
    seen = torch.cat([attention.bool().unsqueeze(1).expand(-1, trie.n_nodes, -1),
                      trie.ancestors.to(device).unsqueeze(0).expand(size, -1, -1)], 2)
    mask = torch.zeros(seen.shape, dtype=embeds.dtype, device=device)
    mask = mask.masked_fill(~seen, torch.finfo(embeds.dtype).min).unsqueeze(1)  # [B, 1, N, Lq + N]
    node_logits = lm.forward(node_embeds, mask, node_positions, 0, **argument).float()
    norm = log_normaliser(node_logits)  # [B, N], float64
    pair_node, pair_token = trie.pair_node.to(device), trie.pair_token.to(device)
    steps = (node_logits[:, pair_node, pair_token].double() - norm[:, pair_node]).float()
    return scores.index_add(1, trie.pair_word.to(device), steps)


# ------------------------------------------------------------------------------ ranks only
@dataclass
class _Expansion:
    """The trie nodes fed so far for one query: each node's prefix log-probability and next-token
    log-probabilities."""

    fed: list[int]
    prefix: dict[int, float]
    dist: dict[int, torch.Tensor]


@torch.no_grad()
def gold_rank(lm, embeds: torch.Tensor, positions: torch.Tensor, words: CandidateWords, gold: int,
              gold_score: float | None = None) -> int:
    """The exact 1-based rank of candidate ``gold`` for one query, feeding only the trie nodes that
    can still lead to a candidate scoring at least as high.

    Log-probabilities are <= 0, so a candidate scores at most its prefix: a subtree whose prefix scores
    below the gold candidate holds no candidate that ranks before it and is never computed. The gold
    candidate's own score comes from the same pass (its prefixes fed first, after the cached query),
    unless ``gold_score`` is given. Ties go to the candidate listed first, as in
    :func:`prompting.tasks.lama.ranks`. ``embeds`` / ``positions``: the query alone, [1, L, H] / [1, L], no
    padding.
    """
    trie = words.trie
    argument = {lm.cache_argument(): lm.prefix_cache()}
    ones = torch.ones(positions.shape, dtype=torch.long, device=positions.device)
    first = log_softmax(lm.forward(embeds, ones, positions, 1, **argument)[0, -1]).cpu()
    children = trie.children
    state = _Expansion([], {}, {})
    for n in children.get((), []):
        state.prefix[n] = first[trie.node_token[n]].item()
    feed = lambda nodes: _feed(lm, trie, state, nodes, positions, embeds.dtype, argument)  # noqa: E731
    if gold_score is None:
        gold_score = _gold_path(trie, state, first, words.word_ids[gold], feed)
    level = [n for n in children.get((), []) if state.prefix[n] >= gold_score - SLACK]
    while level:
        new = [n for n in level if n not in state.dist]
        for n, row in zip(new, feed(new) if new else []):
            state.dist[n] = row
        nxt = []
        for n in level:
            for child in children.get(trie.prefixes[n], []):
                state.prefix[child] = state.prefix[n] + state.dist[n][trie.node_token[child]].item()
                if state.prefix[child] >= gold_score - SLACK:
                    nxt.append(child)
        level = nxt
    return _count_before(trie, words.word_ids, first, state, gold, gold_score)


def _gold_path(trie: CandidateTrie, state: _Expansion, first: torch.Tensor, word, feed) -> float:
    """The gold candidate's score: its proper prefixes (a chain of trie nodes) fed in one pass."""
    chain = [trie.index[tuple(word[:d])] for d in range(1, len(word))]
    score = first[word[0]].item()
    for n, row, token in zip(chain, feed(chain) if chain else [], word[1:]):
        state.dist[n] = row
        state.prefix[n] = score
        score += row[token].item()
    return score


def _feed(lm, trie: CandidateTrie, state: _Expansion, level: list[int], positions, dtype, argument) -> torch.Tensor:
    """Feed ``level``'s nodes after the query and the nodes fed before; their next-token log-probs."""
    device = positions.device
    columns = state.fed + level
    seen = torch.cat([torch.ones(len(level), positions.shape[1], dtype=torch.bool),
                      trie.ancestors[level][:, columns]], 1).to(device)
    mask = torch.zeros(seen.shape, dtype=dtype, device=device).masked_fill(~seen, torch.finfo(dtype).min)
    tokens = trie.node_token[level].to(device)
    node_positions = positions[:, -1:] + trie.node_depth[level].to(device).unsqueeze(0)
    logits = lm.forward(lm.embed(tokens).unsqueeze(0).to(dtype), mask[None, None], node_positions, 0, **argument)
    state.fed.extend(level)
    return log_softmax(logits[0]).cpu()


def _count_before(trie: CandidateTrie, word_ids, first: torch.Tensor, state: _Expansion, gold: int,
                  gold_score: float) -> int:
    """1 + the candidates that score above the gold one, or the same and come before it."""
    index = trie.index
    rank = 1
    for i, word in enumerate(word_ids):
        if i == gold:
            continue
        if len(word) == 1:
            score = first[word[0]].item()
        else:
            node = index[tuple(word[:-1])]
            if node not in state.dist:
                continue  # a prefix below the gold score: the candidate cannot rank before it
            score = state.prefix[node] + state.dist[node][word[-1]].item()
        if score > gold_score or (score == gold_score and i < gold):
            rank += 1
    return rank
