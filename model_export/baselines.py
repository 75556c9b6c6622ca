"""Honest baselines, each ranking through the same engine code where it can.

Every baseline but the original recipe is an ``EngineConfig`` (one scorer, or RRF of
two), so it shares the worker's encoder, index and filters with the engine it is
compared against.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from consumer.catalog import Catalog
from consumer.encoder import Encoder
from consumer.matcher import EngineConfig, ScorerSpec
from consumer.text import words
from schemas.events import PebbleUploaded


def baseline_configs(has_history: bool) -> dict[str, EngineConfig]:
    def single(name: str, **params: object) -> list[ScorerSpec]:
        return [ScorerSpec(name=name, params=dict(params))]

    configs = {
        "bm25 (name+keywords)": EngineConfig(version="bm25", scorers=single("bm25")),
        "base model (name+keywords)": EngineConfig(version="dense", scorers=single("dense")),
        "rrf(bm25, base model)": EngineConfig(
            version="rrf", scorers=single("bm25") + single("dense"), fusion={"name": "rrf", "k": 60.0}
        ),
    }
    if has_history:
        configs["popularity"] = EngineConfig(version="popularity", scorers=single("popularity"))
        # The definition: tags of the 20 nearest past posts by BM25, summed.
        configs["nearest past posts (bm25, 20)"] = EngineConfig(
            version="knn", scorers=single("neighbors", similarity="bm25", neighbors=20, power=1.0)
        )
    return configs


def finetuned_baselines() -> dict[str, EngineConfig]:
    """Run with the trained model's encoder: what fine-tuning alone buys, and the issue's
    strongest reference (RRF of nearest past posts and the fine-tuned model)."""
    dense = ScorerSpec(name="dense")
    knn = ScorerSpec(name="neighbors", params={"similarity": "bm25", "neighbors": 20, "power": 1.0})
    return {
        "fine-tuned model (name+keywords)": EngineConfig(version="dense-ft", scorers=[dense]),
        "rrf(nearest past posts, fine-tuned model)": EngineConfig(
            version="rrf-ft", scorers=[knn, dense], fusion={"name": "rrf", "k": 60.0}
        ),
    }


class OriginalRecipe:
    """The recipe KeyBlend replaces: the base model on product names only, with the post's
    words filtered to the vocabulary of product names."""

    def __init__(self, catalog: Catalog, encoder: Encoder) -> None:
        self.catalog = catalog
        self.encoder = encoder
        self.rows = np.flatnonzero(catalog.published)
        names = [p.name for p in (catalog.product(int(r)) for r in self.rows) if p is not None]
        self.vocabulary = {w for name in names for w in words(name)}
        self.matrix = encoder.encode(names)
        self.ids = [catalog.product(int(r)).id for r in self.rows]  # type: ignore[union-attr]

    def filtered_text(self, post: PebbleUploaded) -> str:
        text = " ".join([post.caption, *post.hashtags, *post.label.interests])
        return " ".join(w for w in words(text) if w in self.vocabulary)

    def rank_ids(self, posts: Sequence[PebbleUploaded], k: int) -> list[list[str]]:
        vectors = self.encoder.encode([self.filtered_text(p) or p.caption or "post" for p in posts])
        scores = vectors @ self.matrix.T
        top = np.argsort(-scores, axis=1)[:, :k]
        return [[self.ids[i] for i in row] for row in top]
