"""Brand evidence: the post names a brand the product belongs to.

Three kinds, each IDF-weighted so a handle shared by hundreds of products says little:
- the post's ``brand_ids`` equal the product's brand id;
- a hashtag or @mention appears inside the product's run-together name, brand and
  keywords (``#themancompany`` in "the man company …") — works for never-tagged products;
- a handle was used on past posts that tagged the product (the brand's own tags).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

import numpy as np

from consumer.candidates import Candidates
from consumer.scorers.base import SCORERS, MatchState, QueryBatch, Scorer, top_candidates
from consumer.text import words
from schemas.events import Reason


@SCORERS.register("brand")
class BrandScorer(Scorer):
    name = "brand"

    def __init__(
        self, max_products: int = 300, min_length: int = 4, memory: bool = True, **params: Any
    ) -> None:
        super().__init__(max_products=max_products, min_length=min_length, memory=memory, **params)
        self._last: list[list[tuple[str, str, frozenset[int]]]] = []

    def fit(self, state: MatchState) -> None:
        catalog = state.catalog
        self._n_rows = catalog.n_rows
        self._compact: list[str] = []
        self._by_brand: dict[str, list[int]] = defaultdict(list)
        for row in range(catalog.n_rows):
            product = catalog.product(row)
            if product is None:
                self._compact.append("")
                continue
            parts = [product.brand_name or "", product.name, *product.keywords]
            self._compact.append("|".join("".join(words(p)) for p in parts if p))
            if product.brand_id:
                self._by_brand[product.brand_id].append(row)
        self._joined = "\n".join(self._compact)
        self._matches: dict[str, tuple[np.ndarray, float] | None] = {}
        # Handles seen on past posts, per product: log(1 + uses) × IDF over products.
        self._memory: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if self.params["memory"]:
            uses: dict[str, Counter[int]] = defaultdict(Counter)
            for handles, rows in zip(state.history_handles, state.history_rows, strict=True):
                for h in handles:
                    uses[h].update(rows.tolist())
            tagged = max(1, int((state.product_frequency() > 0).sum()))
            for h, counter in uses.items():
                if not counter:  # every product its posts tagged is gone from the catalog
                    continue
                idf = math.log(1 + tagged / len(counter))
                rows_arr = np.fromiter(counter.keys(), dtype=np.int64, count=len(counter))
                vals = np.log1p(np.fromiter(counter.values(), dtype=np.float32, count=len(counter))) * idf
                self._memory[h] = (rows_arr, vals.astype(np.float32))

    def _text_match(self, handle: str) -> tuple[np.ndarray, float] | None:
        """Products whose compact text contains the handle, and the handle's IDF."""
        if handle in self._matches:
            return self._matches[handle]
        compact = "".join(words(handle))
        found = None
        if len(compact) >= int(self.params["min_length"]) and compact in self._joined:
            rows = np.array([i for i, s in enumerate(self._compact) if compact in s], dtype=np.int64)
            if 0 < len(rows) < int(self.params["max_products"]):
                found = (rows, math.log(max(self._n_rows, 2) / len(rows)))
        self._matches[handle] = found
        return found

    def score(self, batch: QueryBatch, k: int, allowed: np.ndarray) -> Candidates:
        scores = np.zeros((len(batch), self._n_rows), dtype=np.float32)
        # Per post, what matched which rows: explain() looks rows up here instead of the
        # scorer writing one entry per matched row (a brand can hold thousands).
        self._last = [[] for _ in range(len(batch))]
        for q, (pebble, handles) in enumerate(zip(batch.pebbles, batch.handles, strict=True)):
            for brand_id in pebble.brand_ids:
                rows = self._by_brand.get(brand_id)
                if rows:
                    scores[q, rows] += math.log(max(self._n_rows, 2) / len(rows)) + 1.0
                    self._last[q].append((f"brand id {brand_id}", "is the post's brand", frozenset(rows)))
            for handle in handles:
                match = self._text_match(handle)
                if match is not None:
                    scores[q, match[0]] += match[1]
                    self._last[q].append((f"#{handle}", "is in the product's name, brand or keywords",
                                          frozenset(match[0].tolist())))
                remembered = self._memory.get(handle)
                if remembered is not None:
                    scores[q, remembered[0]] += remembered[1]
        return top_candidates(scores, k, allowed)

    def explain(self, batch: QueryBatch, query: int, row: int, score: float) -> Reason | None:
        if query >= len(self._last):
            return None
        matched = [(term, how) for term, how, rows in self._last[query] if row in rows][:3]
        if not matched:
            return None
        how = matched[0][1]
        terms = [term for term, _ in matched]
        return Reason(kind="brand", text=f"{', '.join(terms)} {how}", post_terms=terms)
