"""Ranked candidate lists for a batch of queries: the currency between index, scorers and fusion."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Candidates:
    """Per query, catalog rows best first with their scores; row -1 pads short lists."""

    rows: np.ndarray  # (queries, k) int64
    scores: np.ndarray  # (queries, k) float32

    @classmethod
    def empty(cls, n_queries: int, k: int = 0) -> Candidates:
        return cls(np.full((n_queries, k), -1, dtype=np.int64), np.full((n_queries, k), -np.inf, np.float32))

    @classmethod
    def from_dense(cls, scores: np.ndarray, k: int, allowed: np.ndarray | None = None) -> Candidates:
        """Top-k of a (queries, rows) score matrix; rows outside ``allowed`` or at -inf dropped."""
        scores = np.asarray(scores, dtype=np.float32)
        n_queries, n_rows = scores.shape
        if allowed is not None:
            scores = np.where(allowed[None, :n_rows], scores, -np.inf)
        k_eff = min(k, n_rows)
        if k_eff == 0:
            return cls.empty(n_queries, k)
        top = (
            np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
            if k_eff < n_rows
            else np.tile(np.arange(n_rows), (n_queries, 1))
        )
        top_scores = np.take_along_axis(scores, top, axis=1)
        # Best first; equal scores in row order, so ties never depend on batch composition.
        order = np.lexsort((top, -top_scores), axis=1)
        rows = np.take_along_axis(top, order, axis=1).astype(np.int64)
        vals = np.take_along_axis(top_scores, order, axis=1)
        rows[~np.isfinite(vals)] = -1
        out_rows = np.full((n_queries, k), -1, dtype=np.int64)
        out_scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
        out_rows[:, :k_eff], out_scores[:, :k_eff] = rows, vals
        return cls(out_rows, out_scores)

    @classmethod
    def from_lists(cls, lists: list[list[tuple[int, float]]], k: int) -> Candidates:
        """From per-query (row, score) pairs, already in any order."""
        out = cls.empty(len(lists), k)
        for q, pairs in enumerate(lists):
            best = sorted(pairs, key=lambda p: (-p[1], p[0]))[:k]
            for j, (row, score) in enumerate(best):
                out.rows[q, j], out.scores[q, j] = row, score
        return out

    def query(self, q: int) -> list[tuple[int, float]]:
        keep = self.rows[q] >= 0
        return list(zip(self.rows[q][keep].tolist(), self.scores[q][keep].tolist(), strict=True))

    def __len__(self) -> int:
        return int(self.rows.shape[0])


def stable(similarities: np.ndarray, decimals: int = 5) -> np.ndarray:
    """Similarities rounded so that batch size and padding (which move the last bits of a
    matrix product or an encoding) never reorder results: a post ranks the same alone
    or in any batch."""
    return np.round(similarities, decimals).astype(np.float32, copy=False)
