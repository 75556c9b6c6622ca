"""Ranked candidate lists for a batch of queries: the currency between index, scorers and fusion."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse


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
        """Top-k of a (queries, rows) score matrix; rows outside ``allowed`` or at -inf dropped.

        Best first; equal scores in row order, also at the cut, so ties never depend on batch
        composition or on the storage (``from_sparse`` picks the same rows)."""
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
        order = np.lexsort((top, -top_scores), axis=1)
        rows = np.take_along_axis(top, order, axis=1).astype(np.int64)
        vals = np.take_along_axis(top_scores, order, axis=1)
        out = cls.empty(n_queries, k)
        out.rows[:, :k_eff], out.scores[:, :k_eff] = rows, vals
        if k_eff < n_rows:
            # argpartition cuts ties arbitrarily: redo the rows where the cut splits a tie.
            cut = vals[:, -1]
            straddling = np.flatnonzero(np.isfinite(cut) & ((scores >= cut[:, None]).sum(axis=1) > k_eff))
            for q in straddling:
                keep = np.flatnonzero(np.isfinite(scores[q]))
                r, v = top_k(keep, scores[q, keep], k_eff)
                out.rows[q, :k_eff], out.scores[q, :k_eff] = r, v
        out.rows[~np.isfinite(out.scores)] = -1
        return out

    @classmethod
    def from_sparse(cls, matrix: sparse.csr_matrix, k: int, allowed: np.ndarray | None = None) -> Candidates:
        """Top-k of the positive stored entries of a (queries, rows) sparse score matrix."""
        matrix = sparse.csr_matrix(matrix)
        out = cls.empty(matrix.shape[0], k)
        for q in range(matrix.shape[0]):
            start, end = matrix.indptr[q], matrix.indptr[q + 1]
            cols = matrix.indices[start:end].astype(np.int64)
            vals = matrix.data[start:end].astype(np.float32)
            keep = vals > 0
            if allowed is not None:
                inside = cols < len(allowed)
                keep &= inside
                keep[inside] &= allowed[cols[inside]]
            rows, scores = top_k(cols[keep], vals[keep], k)
            out.rows[q, : len(rows)], out.scores[q, : len(rows)] = rows, scores
        return out

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


def top_k(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (row, score) pairs, best first, equal scores in row order (also at the cut)."""
    if len(scores) > k:
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores > kth
        ties = np.flatnonzero(scores == kth)
        keep[ties[np.argsort(rows[ties], kind="stable")][: k - int(keep.sum())]] = True
        rows, scores = rows[keep], scores[keep]
    order = np.lexsort((rows, -scores))
    return rows[order], scores[order]


def stable(similarities: np.ndarray, decimals: int = 5) -> np.ndarray:
    """Similarities rounded so that batch size and padding (which move the last bits of a
    matrix product or an encoding) never reorder results: a post ranks the same alone
    or in any batch."""
    return np.round(similarities, decimals).astype(np.float32, copy=False)
