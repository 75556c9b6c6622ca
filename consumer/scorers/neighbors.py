"""Products tagged on the most similar past posts: the platform's own memory.

Most tagged products recur (85% of held-out tags were tagged before), so a new post
that reads like earlier ones is likely to tag what they tagged. Similarity between posts
is one of: ``dense`` (encoder cosine), ``bm25`` (words) or ``handles`` (shared hashtags
and @mentions, IDF-weighted: brand handles are rare and telling).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import sparse

from consumer.candidates import Candidates, stable
from consumer.scorers.base import SCORERS, MatchState, QueryBatch, Scorer, propagate
from consumer.scorers.bm25 import Bm25
from schemas.events import Reason

SIMILARITIES = ("dense", "bm25", "handles")


class HandleVectors:
    """Sets of handles as IDF-weighted, unit-length sparse vectors."""

    def __init__(self, handle_sets: Sequence[frozenset[str]]) -> None:
        df = Counter(h for hs in handle_sets for h in hs)
        self.vocab = {h: i for i, h in enumerate(sorted(df))}
        n = max(len(handle_sets), 1)
        self.idf = np.array([math.log(1 + n / df[h]) for h in sorted(df)], dtype=np.float32)
        self.matrix = self.vectors(handle_sets)

    def vectors(self, handle_sets: Sequence[frozenset[str]]) -> sparse.csr_matrix:
        rows, cols = [], []
        for i, hs in enumerate(handle_sets):
            for h in hs:
                j = self.vocab.get(h)
                if j is not None:
                    rows.append(i)
                    cols.append(j)
        m = sparse.csr_matrix((self.idf[cols], (rows, cols)), shape=(len(handle_sets), len(self.vocab)))
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        return sparse.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ m

    def similarity(self, handle_sets: Sequence[frozenset[str]]) -> np.ndarray:
        return np.asarray((self.vectors(handle_sets) @ self.matrix.T).todense(), dtype=np.float32)


@SCORERS.register("neighbors")
class NeighborsScorer(Scorer):
    name = "neighbors"
    reason_kind = "similar_posts"

    def __init__(
        self, similarity: str = "dense", neighbors: int = 20, power: float = 4.0, **params: Any
    ) -> None:
        if similarity not in SIMILARITIES:
            raise ValueError(f"unknown similarity {similarity!r}; valid: {', '.join(SIMILARITIES)}")
        super().__init__(similarity=similarity, neighbors=neighbors, power=power, **params)
        self._last_top = np.zeros((0, 0), dtype=np.int64)

    def fit(self, state: MatchState) -> None:
        self._state = state
        self._items = state.items()
        kind = self.params["similarity"]
        if kind == "bm25":
            self._bm25 = Bm25.build(state.history_tokens)
        elif kind == "handles":
            self._handles = HandleVectors(state.history_handles)

    def refresh(self, state: MatchState, changed_rows: set[int]) -> None:
        self._state = state
        self._items = state.items()  # new rows only widen the matrix; the history is unchanged

    def similarity(self, batch: QueryBatch) -> np.ndarray:
        kind = self.params["similarity"]
        if kind == "dense":
            return stable(batch.vectors @ self._state.history_vectors.T)
        if kind == "bm25":
            return self._bm25.dense_scores(batch.tokens)[:, : len(self._state.history_tokens)]
        return self._handles.similarity(batch.handles)

    def score(self, batch: QueryBatch, k: int, allowed: np.ndarray) -> Candidates:
        if self._items.shape[0] == 0:
            return Candidates.empty(len(batch), k)
        sims = self.similarity(batch)
        n = min(int(self.params["neighbors"]), sims.shape[1])
        self._last_top = np.argsort(-sims, axis=1)[:, :n]  # kept for explain()
        self._last_sims = np.take_along_axis(sims, self._last_top, axis=1)
        votes = propagate(sims, self._items, n, float(self.params["power"]))
        return Candidates.from_sparse(votes, k, allowed)

    def explain(self, batch: QueryBatch, query: int, row: int, score: float) -> Reason | None:
        if query >= len(self._last_top):
            return None
        tagged = self._state.history_row_sets
        voters = [
            i
            for i, s in zip(self._last_top[query].tolist(), self._last_sims[query].tolist(), strict=True)
            if s > 0 and row in tagged[i]
        ]
        if not voters:
            return None
        example = self._state.history[voters[0]].post
        snippet = " ".join(example.caption.split())[:60] or " ".join(example.hashtags[:4])
        by = {"dense": "meaning", "bm25": "words", "handles": "hashtags"}[self.params["similarity"]]
        posts = "post" if len(voters) == 1 else "posts"
        text = f"tagged on {len(voters)} past {posts} alike in {by}, e.g. “{snippet}”"
        return Reason(kind=self.reason_kind, text=text)
