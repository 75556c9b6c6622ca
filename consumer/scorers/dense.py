"""Semantic similarity between the post and the product text, from the vector index."""

from __future__ import annotations

import numpy as np

from consumer.candidates import Candidates
from consumer.index.base import VectorIndex
from consumer.scorers.base import SCORERS, MatchState, QueryBatch, Scorer
from schemas.events import Reason


@SCORERS.register("dense")
class DenseScorer(Scorer):
    name = "dense"
    reason_kind = "semantic"
    _index: VectorIndex

    def fit(self, state: MatchState) -> None:
        self._index = state.index  # the engine keeps the index current; nothing to rebuild

    def refresh(self, state: MatchState, changed_rows: set[int]) -> None:
        self._index = state.index

    def score(self, batch: QueryBatch, k: int, allowed: np.ndarray) -> Candidates:
        return self._index.search(batch.vectors, k, allowed)

    def explain(self, batch: QueryBatch, query: int, row: int, score: float) -> Reason | None:
        return Reason(kind=self.reason_kind, text=f"post and product read alike (cosine {score:.2f})")
