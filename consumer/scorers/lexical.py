"""BM25 from the post's words to the product's name, brand and keywords.

Lexical evidence lets an unfamiliar brand or model name match even when the encoder
has never seen it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from consumer.candidates import Candidates
from consumer.scorers.base import SCORERS, MatchState, QueryBatch, Scorer
from consumer.scorers.bm25 import Bm25
from consumer.text import shared_words
from schemas.events import Reason


@SCORERS.register("bm25")
class BM25Scorer(Scorer):
    name = "bm25"
    reason_kind = "words"

    def __init__(self, k1: float = 0.9, b: float = 0.4, **params: Any) -> None:
        super().__init__(k1=k1, b=b, **params)

    def fit(self, state: MatchState) -> None:
        self._catalog = state.catalog
        # The shared product postings: the engine keeps them current, so nothing to refit.
        self._index = Bm25(state.product_postings(), k1=self.params["k1"], b=self.params["b"])

    def refresh(self, state: MatchState, changed_rows: set[int]) -> None:
        self._catalog = state.catalog

    def score(self, batch: QueryBatch, k: int, allowed: np.ndarray) -> Candidates:
        return self._index.top(batch.tokens, k, allowed)

    def explain(self, batch: QueryBatch, query: int, row: int, score: float) -> Reason | None:
        if row >= self._catalog.n_rows:
            return None
        post_terms, product_terms = shared_words(batch.texts[query], self._catalog.text(row))
        if not post_terms:
            return None
        pairs = [p if p == q else f"{p}~{q}" for p, q in zip(post_terms, product_terms, strict=True)]
        return Reason(
            kind=self.reason_kind,
            text="post and product share " + ", ".join(pairs),
            post_terms=post_terms,
            product_terms=product_terms,
        )
