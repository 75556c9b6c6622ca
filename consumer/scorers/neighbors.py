"""Products tagged on the most similar past posts: the platform's own memory.

Most tagged products recur (85% of held-out tags were tagged before), so a new post
that reads like earlier ones is likely to tag what they tagged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from consumer.candidates import Candidates
from consumer.scorers.base import SCORERS, MatchState, QueryBatch, Scorer, spread_rows
from schemas.events import Reason


@SCORERS.register("neighbors")
class NeighborsScorer(Scorer):
    """Each of the ``neighbors`` nearest past posts votes sim**power for each product it tagged."""

    name = "neighbors"

    def __init__(self, neighbors: int = 20, power: float = 2.0, **params: Any) -> None:
        super().__init__(neighbors=neighbors, power=power, **params)
        self._vectors = np.zeros((0, 0), dtype=np.float32)
        self._rows: list[np.ndarray] = []
        self._n_rows = 0
        self._last: dict[tuple[int, int], int] = {}

    def fit(self, state: MatchState) -> None:
        self._vectors = state.history_vectors
        self._rows = state.history_rows
        self._n_rows = state.catalog.n_rows

    def refresh(self, state: MatchState, changed_rows: set[int]) -> None:
        self.fit(state)  # cheap: references, no copies

    def score(self, batch: QueryBatch, k: int, allowed: np.ndarray) -> Candidates:
        if len(self._rows) == 0:
            return Candidates.empty(len(batch), k)
        sims = batch.vectors @ self._vectors.T
        n = min(int(self.params["neighbors"]), sims.shape[1])
        top = np.argpartition(-sims, n - 1, axis=1)[:, :n]
        weights = np.zeros_like(sims)
        picked = np.take_along_axis(sims, top, axis=1).clip(min=0) ** float(self.params["power"])
        np.put_along_axis(weights, top, picked, axis=1)
        votes = spread_rows(weights, self._rows, self._n_rows)
        counts = spread_rows((weights > 0).astype(np.float32), self._rows, self._n_rows)
        self._last = {(q, int(r)): int(counts[q, r]) for q, r in zip(*np.nonzero(counts), strict=True)}
        votes[votes <= 0] = -np.inf
        return Candidates.from_dense(votes, k, allowed[: self._n_rows])

    def explain(self, batch: QueryBatch, query: int, row: int, score: float) -> Reason | None:
        count = self._last.get((query, row), 0)
        if count == 0:
            return None
        posts = "post" if count == 1 else "posts"
        return Reason(kind="similar_posts", text=f"tagged on {count} similar past {posts}")
