"""What each signal adds: refit the blend without it (and with it alone), score validation.

Works on candidate pools computed once, so an ablation costs a few logistic fits, not
re-encoding: dropping a scorer drops its feature columns and the candidates only it
put forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from consumer.fusion.base import Pool
from consumer.fusion.linear import LinearFusion
from model_export.evaluation import score_rankings


def restrict(candidates: Pool, keep: Sequence[int]) -> Pool:
    """The pool as if only the scorers at positions ``keep`` had run."""
    keep_list = list(keep)
    ranks = candidates.ranks[:, keep_list]
    rows_kept = (ranks >= 0).any(axis=1)
    return replace(
        candidates,
        rows=candidates.rows[rows_kept],
        scores=candidates.scores[rows_kept][:, keep_list],
        ranks=ranks[rows_kept],
        top=candidates.top[keep_list],
        priors=candidates.priors[rows_kept],
    )


def _rank(fusion: LinearFusion, pools: Sequence[Pool], k: int) -> list[list[str]]:
    out: list[list[str]] = []
    for p in pools:
        if len(p.rows) == 0:
            out.append([])
            continue
        order = np.argsort(-fusion.combine(p), kind="stable")[:k]
        out.append([str(r) for r in p.rows[order]])
    return out


def ablation(
    scorers: Sequence[str],
    tune_pools: Sequence[Pool],
    tune_relevant: Sequence[set[int]],
    val_pools: Sequence[Pool],
    val_relevant: Sequence[set[int]],
    kept: Sequence[str] | None = None,
    l2: float = 1.0,
    k: int = 50,
) -> dict[str, dict[str, float]]:
    """Validation metrics of the blend refit on the engine's signals (``kept``, default all),
    without each of them, with each other signal added, and with each signal alone."""
    engine = [scorers.index(name) for name in (kept or scorers)]
    variants: dict[str, list[int]] = {"engine's signals": engine}
    for i in engine:
        variants[f"without {scorers[i]}"] = [j for j in engine if j != i]
    for i, name in enumerate(scorers):
        if i not in engine:
            variants[f"with {name}"] = [*engine, i]
    for i, name in enumerate(scorers):
        variants[f"only {name}"] = [i]
    relevant_ids = [{str(r) for r in rel} for rel in val_relevant]
    out = {}
    for label, keep in variants.items():
        names = [scorers[j] for j in keep]
        fusion = LinearFusion.fit(names, [restrict(p, keep) for p in tune_pools], tune_relevant, l2=l2)
        rankings = _rank(fusion, [restrict(p, keep) for p in val_pools], k)
        metrics = score_rankings(rankings, relevant_ids)
        out[label] = {m: metrics[m] for m in ("recall@1", "recall@10", "recall@50", "ndcg@10", "mrr@10")}
    return out
