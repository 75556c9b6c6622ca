"""BM25 (bm25s) from the post's words to the product's name, brand and keywords.

Lexical evidence lets an unfamiliar brand or model name match even when the encoder
has never seen it.
"""

from __future__ import annotations

from typing import Any

import bm25s
import numpy as np

from consumer.candidates import Candidates
from consumer.scorers.base import SCORERS, MatchState, QueryBatch, Scorer
from consumer.text import lexical_tokens, shared_words
from schemas.events import Reason


@SCORERS.register("bm25")
class BM25Scorer(Scorer):
    name = "bm25"

    def __init__(self, k1: float = 1.2, b: float = 0.75, **params: Any) -> None:
        super().__init__(k1=k1, b=b, **params)
        self._retriever: bm25s.BM25 | None = None
        self._vocab: dict[str, int] = {}
        self._texts: list[str] = []
        self._n_rows = 0

    def fit(self, state: MatchState) -> None:
        tokens = [lexical_tokens(state.catalog.text(r)) for r in range(state.catalog.n_rows)]
        self._texts = state.catalog.texts()
        self._n_rows = len(tokens)
        retriever = bm25s.BM25(k1=self.params["k1"], b=self.params["b"])
        retriever.index([t or [""] for t in tokens], show_progress=False)
        self._retriever = retriever
        self._vocab = dict(retriever.vocab_dict)

    def score(self, batch: QueryBatch, k: int, allowed: np.ndarray) -> Candidates:
        if self._retriever is None or self._n_rows == 0:
            return Candidates.empty(len(batch), k)
        scores = np.zeros((len(batch), self._n_rows), dtype=np.float32)
        for q, tokens in enumerate(batch.tokens):
            known = [t for t in tokens if t in self._vocab]
            if known:
                scores[q] = self._retriever.get_scores(known)
        scores[scores <= 0] = -np.inf
        return Candidates.from_dense(scores, k, allowed[: self._n_rows])

    def explain(self, batch: QueryBatch, query: int, row: int, score: float) -> Reason | None:
        if row >= len(self._texts):
            return None
        post_terms, product_terms = shared_words(batch.texts[query], self._texts[row])
        if not post_terms:
            return None
        pairs = [p if p == q else f"{p}~{q}" for p, q in zip(post_terms, product_terms, strict=True)]
        return Reason(kind="words", text="post and product share " + ", ".join(pairs),
                      post_terms=post_terms, product_terms=product_terms)
