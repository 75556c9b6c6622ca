"""The contract every vector index keeps: rows in, top-k rows out, filters always honoured."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from consumer.candidates import Candidates
from consumer.registry import Registry


class VectorIndex(ABC):
    """Unit vectors keyed by catalog row; inner product is the similarity."""

    kind: str
    # Worth a snapshot beside the embedding cache: rebuilding costs minutes (an HNSW graph of
    # a million rows), not the seconds of copying cached vectors into a matrix.
    snapshot: ClassVar[bool] = False

    def __init__(self, dim: int, **params: Any) -> None:
        self.dim = dim
        self.params = params

    def reserve(self, n_rows: int) -> None:  # noqa: B027 - a hint most kinds do not need
        """A hint before rows arrive in chunks: how many the index will hold (sizes storage)."""

    @abstractmethod
    def upsert(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace the vectors of ``rows``."""

    @abstractmethod
    def remove(self, rows: np.ndarray) -> None:
        """Forget ``rows``; they are never returned again until re-inserted."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> Candidates:
        """The k most similar rows per query, only rows where ``allowed[row]`` is True."""

    @abstractmethod
    def __len__(self) -> int:
        """Live rows."""

    @abstractmethod
    def memory_bytes(self) -> int:
        """Approximate resident size of vectors and graph."""

    @abstractmethod
    def save(self, path: Path) -> None: ...

    @classmethod
    @abstractmethod
    def load(cls, path: Path) -> VectorIndex: ...


INDEXES: Registry[VectorIndex] = Registry("index kind")


def make_index(kind: str, dim: int, **params: Any) -> VectorIndex:
    return INDEXES.get(kind)(dim, **params)
