"""How often each product was tagged: a prior that breaks ties and serves cold posts."""

from __future__ import annotations

import numpy as np

from consumer.candidates import Candidates
from consumer.scorers.base import SCORERS, MatchState, QueryBatch, Scorer
from schemas.events import Reason


@SCORERS.register("popularity")
class PopularityScorer(Scorer):
    """The same list for every post; computed once, filtered per batch (no catalog pass)."""

    name = "popularity"
    reason_kind = "popular"

    def fit(self, state: MatchState) -> None:
        counts = state.product_frequency()
        tagged = np.flatnonzero(counts)
        self._order = tagged[np.argsort(-counts[tagged], kind="stable")]
        self._log_counts = np.log1p(counts[self._order]).astype(np.float32)

    def score(self, batch: QueryBatch, k: int, allowed: np.ndarray) -> Candidates:
        keep = allowed[self._order] if len(allowed) else np.zeros(len(self._order), bool)
        rows, scores = self._order[keep][:k], self._log_counts[keep][:k]
        out = Candidates.empty(len(batch), k)
        out.rows[:, : len(rows)] = rows
        out.scores[:, : len(rows)] = scores
        return out

    def explain(self, batch: QueryBatch, query: int, row: int, score: float) -> Reason | None:
        times = round(float(np.expm1(score)))
        if times <= 0:
            return None
        return Reason(kind=self.reason_kind, text=f"tagged {times} time{'s' if times > 1 else ''} before")
