"""The contract every scorer keeps: fit on the catalog and history, score a batch of posts.

A scorer returns, per post, its own top candidates (catalog rows with scores); fusion
combines them. Shared, expensive state (vectors, the index) lives in ``MatchState`` and
is computed once by the engine, not once per scorer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy import sparse

from consumer.candidates import Candidates, stable, top_k
from consumer.catalog import Catalog
from consumer.history import History
from consumer.index.base import VectorIndex
from consumer.registry import Registry
from consumer.scorers.bm25 import Postings
from consumer.text import lexical_tokens, words
from schemas.events import PebbleUploaded, Reason, ReasonKind


@dataclass(frozen=True)
class QueryBatch:
    """Posts prepared once for every scorer: text, stemmed tokens, handles, vectors."""

    pebbles: list[PebbleUploaded]
    texts: list[str]
    tokens: list[list[str]]
    handles: list[frozenset[str]]
    vectors: np.ndarray  # (posts, dim), unit length

    def __len__(self) -> int:
        return len(self.pebbles)


@dataclass
class MatchState:
    """What scorers are fitted on; rows of the history matrices follow ``history`` order."""

    catalog: Catalog
    index: VectorIndex
    history: History
    history_texts: list[str]
    history_tokens: list[list[str]]
    history_handles: list[frozenset[str]]
    history_vectors: np.ndarray
    encode: Callable[[list[str]], np.ndarray] | None = None  # cached text → vector
    history_rows: list[np.ndarray] = field(default_factory=list)  # catalog rows tagged per post
    history_row_sets: list[frozenset[int]] = field(default_factory=list)  # the same, for lookups
    segment: Callable[[str], tuple[str, ...]] | None = None  # the catalog-aware hashtag segmenter
    product_words: set[str] = field(default_factory=set)  # every word of a product text, as written
    _lexical: Postings | None = None

    def map_history_rows(self) -> None:
        """Tagged product ids → catalog rows (products missing from the catalog are skipped)."""
        self.history_rows = []
        for item in self.history:
            rows = [self.catalog.row_of(pid) for pid in item.tags]
            self.history_rows.append(np.array([r for r in rows if r is not None], dtype=np.int64))
        self.history_row_sets = [frozenset(rows.tolist()) for rows in self.history_rows]

    def product_postings(self) -> Postings:
        """Stemmed product texts by catalog row, shared by every lexical scorer (built once)."""
        if self._lexical is None:
            rows = [r for r in range(self.catalog.n_rows) if self.catalog.is_live(r)]
            self._lexical = Postings()
            self._lexical.upsert(rows, (self._tokens(r) for r in rows))
        return self._lexical

    def _tokens(self, row: int) -> list[str]:
        text = self.catalog.text(row)
        self.product_words.update(words(text))
        return lexical_tokens(text)

    def sync_products(self, changed_rows: set[int]) -> None:
        """Bring the shared product postings up to date (before the scorers refresh)."""
        if self._lexical is None or not changed_rows:
            return
        live = sorted(r for r in changed_rows if self.catalog.is_live(r))
        self._lexical.upsert(live, [self._tokens(r) for r in live])
        self._lexical.remove(r for r in changed_rows if not self.catalog.is_live(r))

    def items(self) -> sparse.csr_matrix:
        return items_matrix(self.history_rows, self.catalog.n_rows)

    def tagged_by(self) -> dict[int, list[int]]:
        """Catalog row → the past posts (history indices) that tagged it."""
        posts: dict[int, list[int]] = {}
        for i, rows in enumerate(self.history_rows):
            for row in rows.tolist():
                posts.setdefault(row, []).append(i)
        return posts

    def product_frequency(self) -> np.ndarray:
        """Times each catalog row was tagged in the history."""
        counts = np.zeros(self.catalog.n_rows, dtype=np.float32)
        for rows in self.history_rows:
            np.add.at(counts, rows, 1.0)
        return counts


class Scorer(ABC):
    """One signal. Parameters are plain keyword arguments, saved in the engine's config."""

    name: ClassVar[str]
    reason_kind: ClassVar[ReasonKind]  # the kind of Reason ``explain`` gives (the engine shows one per kind)

    def __init__(self, **params: Any) -> None:
        self.params = params

    @abstractmethod
    def fit(self, state: MatchState) -> None:
        """Build whatever the scorer holds in memory."""

    def refresh(self, state: MatchState, changed_rows: set[int]) -> None:
        """Catalog rows changed (upsert/delete); the default refits."""
        self.fit(state)

    @abstractmethod
    def score(self, batch: QueryBatch, k: int, allowed: np.ndarray) -> Candidates:
        """Per post, up to k catalog rows (only where ``allowed``), best first."""

    def explain(self, batch: QueryBatch, query: int, row: int, score: float) -> Reason | None:
        """A readable reason this scorer put ``row`` forward for ``query``, if it has one."""
        return None


SCORERS: Registry[Scorer] = Registry("scorer")


def make_scorer(name: str, **params: Any) -> Scorer:
    return SCORERS.get(name)(**params)


def items_matrix(item_rows: list[np.ndarray], n_rows: int) -> sparse.csr_matrix:
    """(past posts, catalog rows) 0/1 matrix: which products each past post tagged."""
    lengths = [len(r) for r in item_rows]
    indices = np.concatenate(item_rows) if item_rows else np.zeros(0, np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    data = np.ones(len(indices), dtype=np.float32)
    return sparse.csr_matrix((data, indices, indptr), shape=(len(item_rows), n_rows))


def propagate(
    similarity: np.ndarray, items: sparse.csr_matrix, neighbors: int, power: float
) -> sparse.csr_matrix:
    """Let each post's ``neighbors`` most similar past posts vote for the products they tagged.

    A vote weighs (sim / best sim of this post) ** power: relative, so scales of different
    similarity measures don't matter, and sharpened, so the closest posts dominate. The
    votes come back sparse: (posts, catalog rows), only rows some neighbour tagged.
    """
    n_queries, n_items = similarity.shape
    if n_items == 0 or n_queries == 0:
        return sparse.csr_matrix((n_queries, items.shape[1]), dtype=np.float32)
    k = min(neighbors, n_items)
    top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    weights = np.maximum(np.take_along_axis(similarity, top, axis=1), 0.0)
    best = weights.max(axis=1, keepdims=True)
    weights = (weights / np.where(best > 0, best, 1.0)) ** power
    votes = sparse.csr_matrix(
        (weights.ravel().astype(np.float32), (np.repeat(np.arange(n_queries), k), top.ravel())),
        shape=(n_queries, n_items),
    )
    result: sparse.csr_matrix = (votes @ items).tocsr()
    result.data = stable(result.data)
    return result


def sparse_top(
    rows: list[np.ndarray], scores: list[np.ndarray], k: int, allowed: np.ndarray
) -> Candidates:
    """Per query, evidence as (rows, scores) pieces, summed per row: top-k positive, allowed."""
    out = Candidates.empty(len(rows), k)
    for q, (r, s) in enumerate(zip(rows, scores, strict=True)):
        if not len(r):
            continue
        unique, inverse = np.unique(r, return_inverse=True)
        total = stable(np.bincount(inverse, weights=s).astype(np.float32))
        keep = (total > 0) & (unique < len(allowed))
        keep[keep] = allowed[unique[keep]]
        best, best_scores = top_k(unique[keep], total[keep], k)
        out.rows[q, : len(best)], out.scores[q, : len(best)] = best, best_scores
    return out
