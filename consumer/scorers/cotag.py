"""Co-tagging: products tagged together with the products a post most likely shows.

Creators tag sets (a kurta with its dupatta and juttis; a serum with its moisturiser). A seed
scorer (by default the product profiles) names the post's likeliest products; each of the
best ``seeds`` passes its relative score on to the products it was tagged together with, in
proportion to their co-tag cosine (co-tags / √(tags of each)), never to itself. The co-tag
matrix holds only tagged products, so it stays small whatever the catalog's size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse

from consumer.candidates import Candidates, stable
from consumer.scorers.base import SCORERS, MatchState, QueryBatch, Scorer, make_scorer
from schemas.events import Reason


@SCORERS.register("cotag")
class CoTagScorer(Scorer):
    name = "cotag"
    reason_kind = "co_tagged"

    def __init__(self, seed: str = "profile", seeds: int = 5, seed_params: dict[str, Any] | None = None,
                 **params: Any) -> None:
        if seed == "cotag":
            raise ValueError("cotag cannot seed itself")
        super().__init__(seed=seed, seeds=seeds, seed_params=dict(seed_params or {}), **params)
        self._seed = make_scorer(seed, **self.params["seed_params"])
        self._last_seeds: list[list[int]] = []

    def fit(self, state: MatchState) -> None:
        self._seed.fit(state)
        self._build(state)

    def refresh(self, state: MatchState, changed_rows: set[int]) -> None:
        self._seed.refresh(state, changed_rows)
        self._build(state)

    def _build(self, state: MatchState) -> None:
        self._state = state
        items = state.items()
        co = (items.T @ items).tocsr().astype(np.float32)
        counts = np.asarray(items.sum(axis=0)).ravel().astype(np.float32)
        co.setdiag(0.0)
        co.eliminate_zeros()
        scale = 1.0 / np.sqrt(np.maximum(counts, 1.0))
        self._co: sparse.csr_matrix = sparse.diags(scale) @ co @ sparse.diags(scale)
        self._co = self._co.tocsr()

    def score(self, batch: QueryBatch, k: int, allowed: np.ndarray) -> Candidates:
        seeds = self._seed.score(batch, int(self.params["seeds"]), allowed)
        rows, cols, vals = [], [], []
        self._last_seeds = []
        for q in range(len(batch)):
            pairs = seeds.query(q)
            self._last_seeds.append([r for r, _ in pairs])
            if not pairs or pairs[0][1] <= 0:
                continue
            best = pairs[0][1]
            for row, score in pairs:
                rows.append(q)
                cols.append(row)
                vals.append(score / best)
        weights = sparse.csr_matrix((np.array(vals, dtype=np.float32), (rows, cols)),
                                    shape=(len(batch), self._co.shape[0]))
        votes: sparse.csr_matrix = (weights @ self._co).tocsr()
        votes.data = stable(votes.data)
        return Candidates.from_sparse(votes, k, allowed)

    def explain(self, batch: QueryBatch, query: int, row: int, score: float) -> Reason | None:
        if query >= len(self._last_seeds) or row >= self._co.shape[0]:
            return None
        partners = [s for s in self._last_seeds[query] if s < self._co.shape[0] and self._co[s, row] > 0]
        if not partners:
            return None
        partner = self._state.catalog.product(partners[0])
        if partner is None:
            return None
        return Reason(kind=self.reason_kind, text=f"often tagged together with “{partner.name}”")
