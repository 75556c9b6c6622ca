"""Product profiles: each product described by the posts that tagged it.

Creators describe a product in their own words ("glass skin", "gym fit"), which rarely
appear in the catalog's text. A profile joins the product's own text with the texts of
the past posts that tagged it; a new post is matched against profiles by BM25 or, with
``similarity="dense"``, against the mean of those posts' vectors blended with the
product's own vector (products never tagged keep just their own text or vector).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from consumer.candidates import Candidates, stable
from consumer.scorers.base import SCORERS, MatchState, QueryBatch, Scorer, top_candidates
from consumer.scorers.bm25 import Bm25Matrix
from consumer.text import lexical_tokens
from schemas.events import Reason


@SCORERS.register("profile")
class ProfileScorer(Scorer):
    name = "profile"

    def __init__(
        self,
        similarity: str = "bm25",
        product_weight: float = 4.0,
        k1: float = 1.2,
        b: float = 0.75,
        **params: Any,
    ) -> None:
        if similarity not in ("bm25", "dense"):
            raise ValueError(f"unknown similarity {similarity!r}; valid: bm25, dense")
        super().__init__(similarity=similarity, product_weight=product_weight, k1=k1, b=b, **params)

    def fit(self, state: MatchState) -> None:
        n_rows = state.catalog.n_rows
        self._tag_counts = state.product_frequency()
        if self.params["similarity"] == "bm25":
            docs: list[list[str]] = [[] for _ in range(n_rows)]
            for tokens, rows in zip(state.history_tokens, state.history_rows, strict=True):
                for row in rows:
                    docs[row].extend(tokens)
            # Repeating the product's own words weighs them against many posts' words.
            repeat = round(float(self.params["product_weight"]))
            for row in range(n_rows):
                docs[row].extend(lexical_tokens(state.catalog.text(row)) * repeat)
            self._bm25 = Bm25Matrix(docs, k1=self.params["k1"], b=self.params["b"])
        else:
            sums = np.asarray(state.items().T @ state.history_vectors, dtype=np.float32)
            norms = np.linalg.norm(sums, axis=1, keepdims=True)
            profile = sums / np.where(norms > 0, norms, 1.0)
            profile += float(self.params["product_weight"]) * state.product_vectors()
            norms = np.linalg.norm(profile, axis=1, keepdims=True)
            self._vectors = profile / np.where(norms > 0, norms, 1.0)

    def score(self, batch: QueryBatch, k: int, allowed: np.ndarray) -> Candidates:
        if self.params["similarity"] == "bm25":
            scores = self._bm25.scores(batch.tokens)
        else:
            scores = stable(batch.vectors @ self._vectors.T)
        return top_candidates(scores, k, allowed)

    def explain(self, batch: QueryBatch, query: int, row: int, score: float) -> Reason | None:
        times = int(self._tag_counts[row]) if row < len(self._tag_counts) else 0
        if times == 0:
            return None
        how = "in words" if self.params["similarity"] == "bm25" else "in meaning"
        return Reason(
            kind="similar_posts",
            text=f"post is like the {times} past post{'s' if times > 1 else ''} that tagged it ({how})",
        )
