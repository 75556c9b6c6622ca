"""A learned linear blend: logistic regression over each scorer's evidence for a candidate.

Per scorer the features are its score relative to its best score for the post, its
reciprocal rank, and whether it put the candidate forward at all; product-level priors
(log popularity, tagged before) are added. Weights are fitted on a held-out fold
(``fit``), never set by hand; unfitted, every scorer's relative score counts once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from consumer.fusion.base import FUSIONS, Fusion, Pool

FEATURES_PER_SCORER = ("relative", "recip_rank", "present")
PRIORS = ("log_popularity", "tagged_before")


def features(candidates: Pool) -> np.ndarray:
    """(candidates, 3 × scorers + priors) feature matrix of one post."""
    present = candidates.ranks >= 0
    top = np.where(np.nan_to_num(candidates.top, nan=0.0) > 0, candidates.top, 1.0)
    relative = np.where(present, np.nan_to_num(candidates.scores) / top, 0.0)
    recip = np.where(present, 1.0 / np.where(present, candidates.ranks + 1.0, 1.0), 0.0)
    stacked = np.stack([relative, recip, present.astype(np.float32)], axis=2)
    per_scorer = stacked.reshape(len(candidates.rows), -1)
    return np.hstack([per_scorer, candidates.priors]).astype(np.float64)


def feature_names(scorers: Sequence[str], n_priors: int = len(PRIORS)) -> list[str]:
    return [f"{s}.{f}" for s in scorers for f in FEATURES_PER_SCORER] + list(PRIORS[:n_priors])


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

    def __init__(
        self, scorers: list[str], weights: dict[str, float] | None = None, bias: float = 0.0, **params: Any
    ) -> None:
        names = feature_names(scorers)
        if weights is None:
            weights = {f"{s}.relative": 1.0 for s in scorers}
        unknown = set(weights) - set(names)
        if unknown:
            raise ValueError(f"weights for unknown features {sorted(unknown)}; valid: {names}")
        super().__init__(scorers, weights=weights, bias=bias, **params)
        self._w = np.array([weights.get(n, 0.0) for n in names])

    def combine(self, candidates: Pool) -> np.ndarray:
        x = features(candidates)
        w = self._w[: x.shape[1]]  # without priors the prior weights are unused
        fused: np.ndarray = (x @ w + float(self.params["bias"])).astype(np.float32)
        return fused

    @classmethod
    def fit(
        cls, scorers: list[str], pools: Sequence[Pool], relevant: Sequence[set[int]], l2: float = 1.0
    ) -> LinearFusion:
        """Learn weights from posts whose tagged rows (``relevant``) are known."""
        xs, ys = [], []
        for candidates, rel in zip(pools, relevant, strict=True):
            if len(candidates.rows) == 0:
                continue
            xs.append(features(candidates))
            ys.append(np.isin(candidates.rows, list(rel)).astype(np.float64))
        x, y = np.vstack(xs), np.concatenate(ys)
        w = fit_logistic(x, y, l2=l2)
        names = feature_names(scorers, n_priors=x.shape[1] - 3 * len(scorers))
        return cls(
            scorers,
            weights={n: float(v) for n, v in zip(names, w[:-1], strict=True)},
            bias=float(w[-1]),
            l2=l2,
        )
