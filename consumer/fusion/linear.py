"""A learned linear blend: logistic regression over each scorer's evidence for a candidate.

Per scorer the features are its score scaled by the post's best score from that scorer,
its reciprocal rank, and whether it put the candidate forward at all. Weights are
fitted on a held-out fold (``fit``), never set by hand; unfitted, every scorer's scaled
score counts once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from consumer.fusion.base import FUSIONS, Fusion, Pool

FEATURES_PER_SCORER = ("scaled", "recip_rank", "present")


def features(candidates: Pool) -> np.ndarray:
    """(candidates, 3 × scorers) feature matrix of one post."""
    scores, ranks = candidates.scores, candidates.ranks
    present = ranks >= 0
    filled = np.where(present, scores, -np.inf)
    best = filled.max(axis=0, initial=-np.inf)
    worst = np.where(present, scores, np.inf).min(axis=0, initial=np.inf)
    span = np.where(np.isfinite(best) & np.isfinite(worst), best - worst, 0.0)
    # Scaled into [0, 1] within the post: raw scales differ by scorer and by post.
    scaled = np.where(present, (scores - worst) / np.where(span > 0, span, 1.0), 0.0)
    scaled = np.where(present & (span <= 0), 1.0, scaled)
    recip = np.where(present, 1.0 / (ranks + 1.0), 0.0)
    stacked = np.stack([scaled, recip, present.astype(np.float32)], axis=2)
    return stacked.reshape(len(candidates.rows), -1).astype(np.float64)


def feature_names(scorers: Sequence[str]) -> list[str]:
    return [f"{s}.{f}" for s in scorers for f in FEATURES_PER_SCORER]


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 50) -> np.ndarray:
    """Newton's method (IRLS) with an L2 penalty; returns weights with the bias last."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    penalty = np.full(xb.shape[1], l2)
    penalty[-1] = 0.0  # the bias is not shrunk
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -30, 30)))
        gradient = xb.T @ (p - y) + penalty * w
        hessian = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(penalty) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


@FUSIONS.register("linear")
class LinearFusion(Fusion):
    name = "linear"

    def __init__(self, scorers: list[str], weights: dict[str, float] | None = None, bias: float = 0.0,
                 **params: Any) -> None:
        names = feature_names(scorers)
        if weights is None:
            weights = {f"{s}.scaled": 1.0 for s in scorers}
        unknown = set(weights) - set(names)
        if unknown:
            raise ValueError(f"weights for unknown features {sorted(unknown)}; valid: {names}")
        super().__init__(scorers, weights=weights, bias=bias, **params)
        self._w = np.array([weights.get(n, 0.0) for n in names])

    def combine(self, candidates: Pool) -> np.ndarray:
        return (features(candidates) @ self._w + float(self.params["bias"])).astype(np.float32)

    @classmethod
    def fit(cls, scorers: list[str], pools: Sequence[Pool], relevant: Sequence[set[int]],
            l2: float = 1.0) -> LinearFusion:
        """Learn weights from posts whose tagged rows (``relevant``) are known."""
        xs, ys = [], []
        for candidates, rel in zip(pools, relevant, strict=True):
            if len(candidates.rows) == 0:
                continue
            xs.append(features(candidates))
            ys.append(np.isin(candidates.rows, list(rel)).astype(np.float64))
        x, y = np.vstack(xs), np.concatenate(ys)
        w = fit_logistic(x, y, l2=l2)
        names = feature_names(scorers)
        return cls(scorers, weights={n: float(v) for n, v in zip(names, w[:-1], strict=True)},
                   bias=float(w[-1]), l2=l2)
