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

from consumer.candidates import Candidates, stable, top_k
from consumer.scorers.base import SCORERS, MatchState, QueryBatch, Scorer
from consumer.scorers.bm25 import Bm25, Postings
from consumer.text import lexical_tokens
from schemas.events import Reason


@SCORERS.register("profile")
class ProfileScorer(Scorer):
    """Only tagged products have a profile of their own; every other product's profile is its
    own text (BM25: the shared product postings, scaled) or vector (the engine's index), so
    the scorer holds memory for the tagged products alone, whatever the catalog's size."""

    name = "profile"
    reason_kind = "similar_posts"

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
        self._posts: dict[int, list[int]] = {}

    def fit(self, state: MatchState) -> None:
        self._state = state
        self._tag_counts = state.product_frequency()
        self._posts = {}
        if self.params["similarity"] == "bm25":
            base = state.product_postings()
            # Repeating the product's own words weighs them against many posts' words.
            self._repeat = round(float(self.params["product_weight"]))
            self._overlay = Postings(vocab=base.vocab)
            self._index = Bm25(self._overlay, k1=self.params["k1"], b=self.params["b"],
                               base=base, base_weight=self._repeat)
        self._update(state, set())

    def refresh(self, state: MatchState, changed_rows: set[int]) -> None:
        self._state = state
        self._tag_counts = state.product_frequency()
        self._update(state, changed_rows)

    def _update(self, state: MatchState, changed_rows: set[int]) -> None:
        """Profiles of rows whose product or tagging posts changed (all of them on a fit)."""
        posts = {r: p for r, p in state.tagged_by().items() if state.catalog.is_live(r)}
        stale = {r for r in set(posts) | set(self._posts) if posts.get(r) != self._posts.get(r)}
        stale |= changed_rows & (set(posts) | set(self._posts))
        self._posts = posts
        if self.params["similarity"] == "bm25":
            write = sorted(r for r in stale if r in posts)
            docs = [[t for i in posts[r] for t in state.history_tokens[i]]
                    + lexical_tokens(state.catalog.text(r)) * self._repeat for r in write]
            self._overlay.upsert(write, docs)
            self._overlay.remove(r for r in stale if r not in posts)
            return
        rows = np.array(sorted(posts), dtype=np.int64)
        self._rows = rows
        self._tagged = np.zeros(state.catalog.n_rows, dtype=bool)
        self._tagged[rows] = True
        if not len(rows):
            self._vectors = np.zeros((0, state.history_vectors.shape[1]), dtype=np.float32)
            return
        sums = np.stack([state.history_vectors[posts[int(r)]].sum(axis=0) for r in rows])
        profile = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        assert state.encode is not None
        profile += float(self.params["product_weight"]) * state.encode(
            [state.catalog.text(int(r)) for r in rows])
        norms = np.linalg.norm(profile, axis=1, keepdims=True)
        self._vectors = (profile / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    def score(self, batch: QueryBatch, k: int, allowed: np.ndarray) -> Candidates:
        if self.params["similarity"] == "bm25":
            return self._index.top(batch.tokens, k, allowed)
        tagged = self._tagged[: len(allowed)] if len(self._tagged) >= len(allowed) else np.pad(
            self._tagged, (0, len(allowed) - len(self._tagged)))
        # Untagged products: their profile is their own vector, so the index answers for them.
        untagged = self._state.index.search(batch.vectors, k, allowed & ~tagged)
        own = self._rows[allowed[self._rows]] if len(self._rows) else self._rows
        sims = stable(batch.vectors @ self._vectors[np.searchsorted(self._rows, own)].T)
        out = Candidates.empty(len(batch), k)
        for q in range(len(batch)):
            valid = untagged.rows[q] >= 0
            rows = np.concatenate([untagged.rows[q][valid], own])
            scores = np.concatenate([untagged.scores[q][valid], sims[q]])
            best, best_scores = top_k(rows, scores, k)
            out.rows[q, : len(best)], out.scores[q, : len(best)] = best, best_scores
        return out

    def explain(self, batch: QueryBatch, query: int, row: int, score: float) -> Reason | None:
        times = int(self._tag_counts[row]) if row < len(self._tag_counts) else 0
        if times == 0:
            return None
        how = "in words" if self.params["similarity"] == "bm25" else "in meaning"
        return Reason(
            kind=self.reason_kind,
            text=f"post is like the {times} past post{'s' if times > 1 else ''} that tagged it ({how})",
        )
