"""The contract every scorer keeps: fit on the catalog and history, score a batch of posts.

A scorer returns, per post, its own top candidates (catalog rows with scores); fusion
combines them. Shared, expensive state (vectors, the index) lives in ``MatchState`` and
is computed once by the engine, not once per scorer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from consumer.candidates import Candidates
from consumer.catalog import Catalog
from consumer.history import History
from consumer.index.base import VectorIndex
from consumer.registry import Registry
from schemas.events import PebbleUploaded, Reason


@dataclass(frozen=True)
class QueryBatch:
    """Posts prepared once for every scorer: text, stemmed tokens, handles, vectors."""

    pebbles: list[PebbleUploaded]
    texts: list[str]
    tokens: list[list[str]]
    handles: list[frozenset[str]]
    vectors: np.ndarray  # (posts, dim), unit length

    def __len__(self) -> int:
        return len(self.pebbles)


@dataclass
class MatchState:
    """What scorers are fitted on; rows of the history matrices follow ``history`` order."""

    catalog: Catalog
    index: VectorIndex
    history: History
    history_texts: list[str]
    history_tokens: list[list[str]]
    history_handles: list[frozenset[str]]
    history_vectors: np.ndarray
    history_rows: list[np.ndarray] = field(default_factory=list)  # catalog rows tagged per post

    def map_history_rows(self) -> None:
        """Tagged product ids → catalog rows (products missing from the catalog are skipped)."""
        self.history_rows = []
        for item in self.history:
            rows = [self.catalog.row_of(pid) for pid in item.tags]
            self.history_rows.append(np.array([r for r in rows if r is not None], dtype=np.int64))

    def product_frequency(self) -> np.ndarray:
        counts = np.zeros(self.catalog.n_rows, dtype=np.float32)
        for rows in self.history_rows:
            np.add.at(counts, rows, 1.0)
        return counts


class Scorer(ABC):
    """One signal. Parameters are plain keyword arguments, saved in the engine's config."""

    name: ClassVar[str]

    def __init__(self, **params: Any) -> None:
        self.params = params

    @abstractmethod
    def fit(self, state: MatchState) -> None:
        """Build whatever the scorer holds in memory."""

    def refresh(self, state: MatchState, changed_rows: set[int]) -> None:
        """Catalog rows changed (upsert/delete); the default refits."""
        self.fit(state)

    @abstractmethod
    def score(self, batch: QueryBatch, k: int, allowed: np.ndarray) -> Candidates:
        """Per post, up to k catalog rows (only where ``allowed``), best first."""

    def explain(self, batch: QueryBatch, query: int, row: int, score: float) -> Reason | None:
        """A readable reason this scorer put ``row`` forward for ``query``, if it has one."""
        return None


SCORERS: Registry[Scorer] = Registry("scorer")


def make_scorer(name: str, **params: Any) -> Scorer:
    return SCORERS.get(name)(**params)


def spread_rows(
    weights: np.ndarray, item_rows: list[np.ndarray], n_rows: int, per_item: np.ndarray | None = None
) -> np.ndarray:
    """Sum ``weights[q, i]`` onto the catalog rows of item i: (queries, items) → (queries, rows).

    Used by the memory signals: a similar past post votes for the products it tagged.
    """
    out = np.zeros((weights.shape[0], n_rows), dtype=np.float32)
    for i, rows in enumerate(item_rows):
        if rows.size == 0:
            continue
        w = weights[:, i] if per_item is None else weights[:, i] * per_item[i]
        nz = np.flatnonzero(w)
        if nz.size:
            out[np.ix_(nz, rows)] += w[nz, None]
    return out
