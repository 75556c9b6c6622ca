"""Exact inner-product search: one matrix product per batch of queries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from consumer.candidates import Candidates, stable
from consumer.index.base import INDEXES, VectorIndex
from consumer.versions import versions


@INDEXES.register("exact")
class ExactIndex(VectorIndex):
    """A contiguous float32 matrix by row; absent rows are masked, never returned."""

    kind = "exact"

    def __init__(self, dim: int, **params: Any) -> None:
        super().__init__(dim, **params)
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._present = np.zeros(0, dtype=bool)
        self._n_rows = 0

    def _grow(self, n_rows: int) -> None:
        if n_rows <= len(self._matrix):
            return
        capacity = max(n_rows, 2 * len(self._matrix), 64)  # amortised growth
        matrix = np.zeros((capacity, self.dim), dtype=np.float32)
        matrix[: len(self._matrix)] = self._matrix
        present = np.zeros(capacity, dtype=bool)
        present[: len(self._present)] = self._present
        self._matrix, self._present = matrix, present

    def upsert(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        self._grow(int(rows.max()) + 1)
        self._matrix[rows] = vectors
        self._present[rows] = True
        self._n_rows = max(self._n_rows, int(rows.max()) + 1)

    def remove(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        rows = rows[rows < self._n_rows]
        self._present[rows] = False
        self._matrix[rows] = 0.0

    def __len__(self) -> int:
        return int(self._present[: self._n_rows].sum())

    @property
    def matrix(self) -> np.ndarray:
        return self._matrix[: self._n_rows]

    def memory_bytes(self) -> int:
        return int(self._matrix.nbytes + self._present.nbytes)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> Candidates:
        n = self._n_rows
        mask = self._present[:n].copy()
        if allowed is not None:
            mask &= allowed[:n] if len(allowed) >= n else np.pad(allowed, (0, n - len(allowed)))
        scores = stable(np.asarray(queries, dtype=np.float32) @ self._matrix[:n].T)
        return Candidates.from_dense(scores, k, mask)

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "vectors.npy", self._matrix[: self._n_rows])
        np.save(path / "present.npy", self._present[: self._n_rows])
        meta = {"kind": self.kind, "dim": self.dim, "params": self.params, "versions": versions()}
        (path / "index.json").write_text(json.dumps(meta), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> ExactIndex:
        meta = json.loads((path / "index.json").read_text(encoding="utf-8"))
        index = cls(int(meta["dim"]), **meta.get("params", {}))
        vectors = np.load(path / "vectors.npy")
        present = np.load(path / "present.npy")
        index.upsert(np.flatnonzero(present), vectors[present])
        return index
