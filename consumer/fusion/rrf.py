"""Reciprocal rank fusion (Cormack et al., 2009): sum of w / (k + rank), rank from 1."""

from __future__ import annotations

from typing import Any

import numpy as np

from consumer.fusion.base import FUSIONS, Fusion, Pool


@FUSIONS.register("rrf")
class RRFusion(Fusion):
    name = "rrf"

    def __init__(
        self, scorers: list[str], k: float = 60.0, weights: dict[str, float] | None = None, **params: Any
    ) -> None:
        super().__init__(scorers, k=k, weights=weights or {}, **params)
        self._w = np.array([float((weights or {}).get(s, 1.0)) for s in scorers], dtype=np.float32)

    def combine(self, candidates: Pool) -> np.ndarray:
        present = candidates.ranks >= 0
        contrib = np.where(present, self._w / (float(self.params["k"]) + candidates.ranks + 1), 0.0)
        fused: np.ndarray = contrib.sum(axis=1).astype(np.float32)
        return fused
