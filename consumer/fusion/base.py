"""The contract every fusion keeps: several scorers' candidate lists in, one ranking out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from consumer.candidates import Candidates
from consumer.registry import Registry


@dataclass(frozen=True)
class Pool:
    """The union of every scorer's candidates for one post, as a feature table.

    ``scores[i, s]`` is scorer s's score for candidate i (NaN where s did not put it
    forward) and ``ranks[i, s]`` its 0-based rank there (-1 where absent).
    """

    rows: np.ndarray  # (candidates,) int64
    scores: np.ndarray  # (candidates, scorers) float32
    ranks: np.ndarray  # (candidates, scorers) int32
    top: np.ndarray  # (scorers,) each scorer's best score for this post (NaN if it had none)
    priors: np.ndarray  # (candidates, priors) product-level features, e.g. log popularity


def pool(runs: dict[str, Candidates], query: int, priors: np.ndarray | None = None) -> Pool:
    names = list(runs)
    per_scorer = [runs[n].query(query) for n in names]
    rows = np.array(sorted({r for pairs in per_scorer for r, _ in pairs}), dtype=np.int64)
    position = {int(r): i for i, r in enumerate(rows)}
    scores = np.full((len(rows), len(names)), np.nan, dtype=np.float32)
    ranks = np.full((len(rows), len(names)), -1, dtype=np.int32)
    top = np.full(len(names), np.nan, dtype=np.float32)
    for s, pairs in enumerate(per_scorer):
        if pairs:
            top[s] = pairs[0][1]
        for rank, (row, score) in enumerate(pairs):
            i = position[row]
            scores[i, s], ranks[i, s] = score, rank
    row_priors = priors[rows] if priors is not None else np.zeros((len(rows), 0), np.float32)
    return Pool(rows, scores, ranks, top, row_priors)


class Fusion(ABC):
    """Combines the named scorers' candidates; parameters (e.g. learned weights) are saved."""

    name: str

    def __init__(self, scorers: list[str], **params: Any) -> None:
        self.scorers = scorers
        self.params = params

    @abstractmethod
    def combine(self, candidates: Pool) -> np.ndarray:
        """A fused score for each candidate of one post (higher is better)."""

    def fuse(self, runs: dict[str, Candidates], k: int, priors: np.ndarray | None = None) -> Candidates:
        """Fused top-k per post; ``priors`` is a (catalog rows, features) table, if any."""
        ordered = {name: runs[name] for name in self.scorers}
        n_queries = len(next(iter(ordered.values())))
        lists = []
        for q in range(n_queries):
            p = pool(ordered, q, priors)
            fused = self.combine(p) if len(p.rows) else np.zeros(0, np.float32)
            lists.append(list(zip(p.rows.tolist(), fused.tolist(), strict=True)))
        return Candidates.from_lists(lists, k)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "scorers": self.scorers, **self.params}


FUSIONS: Registry[Fusion] = Registry("fusion")


def make_fusion(name: str, scorers: list[str], **params: Any) -> Fusion:
    return FUSIONS.get(name)(scorers, **params)
