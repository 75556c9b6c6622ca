"""Offline evaluation: rank the published catalog for held-out posts, score the rankings.

Metrics are binary-relevance IR metrics (checked against hand-worked values in
tests/test_evaluation.py). ``model_export.pipeline.run_evaluation`` runs the engine through
the worker's own path (ONNX encoder, catalog index, scorers, fusion) and the baselines.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from schemas.events import PebbleUploaded

CUTOFFS = (1, 5, 10, 50)


def recall_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant) if relevant else 0.0


def ndcg_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Binary gains, log2 discount; the ideal ranking puts min(|relevant|, k) hits first."""
    dcg = sum(1.0 / math.log2(i + 2) for i, pid in enumerate(ranked[:k]) if pid in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / ideal if ideal else 0.0


def mrr_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    for i, pid in enumerate(ranked[:k]):
        if pid in relevant:
            return 1.0 / (i + 1)
    return 0.0


def score_rankings(
    rankings: Sequence[Sequence[str]], relevant: Sequence[set[str]], catalog_size: int | None = None
) -> dict[str, float]:
    """Mean metrics over posts (each post counts once), plus top-10 catalog coverage."""
    if not rankings:
        return {}
    out: dict[str, float] = {}
    for k in CUTOFFS:
        out[f"recall@{k}"] = float(
            np.mean([recall_at(r, s, k) for r, s in zip(rankings, relevant, strict=True)])
        )
    out["ndcg@10"] = float(np.mean([ndcg_at(r, s, 10) for r, s in zip(rankings, relevant, strict=True)]))
    out["mrr@10"] = float(np.mean([mrr_at(r, s, 10) for r, s in zip(rankings, relevant, strict=True)]))
    if catalog_size:
        shown = {pid for r in rankings for pid in r[:10]}
        out["coverage@10"] = len(shown) / catalog_size
    out["posts"] = float(len(rankings))
    return out


class Ranker(Protocol):
    """Anything that ranks product ids for posts: the engine, or a baseline."""

    def rank_ids(self, posts: Sequence[PebbleUploaded], k: int) -> list[list[str]]: ...


@dataclass(frozen=True)
class EvalSet:
    posts: list[PebbleUploaded]
    relevant: list[set[str]]
    train_tag_counts: dict[str, int]  # product id → times tagged in training
    brand_of: dict[str, str]  # product id → brand id (empty when the catalog has none)


def slices(rankings: Sequence[Sequence[str]], data: EvalSet) -> dict[str, dict[str, float]]:
    """Metrics per slice: tags per post, cold (never tagged in training) vs warm, brand."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, rel in enumerate(data.relevant):
        n = len(rel)
        groups["tags=1" if n == 1 else "tags=2-3" if n <= 3 else "tags=4+"].append(i)
        cold = [p for p in rel if data.train_tag_counts.get(p, 0) == 0]
        groups["posts: all tags warm" if not cold else "posts: some tag cold"].append(i)
    out: dict[str, dict[str, float]] = {}
    for name, idx in sorted(groups.items()):
        out[name] = score_rankings([rankings[i] for i in idx], [data.relevant[i] for i in idx])
    # Product-level: of the (post, tagged product) pairs, how many made the top 10.
    pairs: dict[str, list[float]] = defaultdict(list)
    for ranked, rel in zip(rankings, data.relevant, strict=True):
        top = set(ranked[:10])
        for pid in rel:
            kind = "products: cold" if data.train_tag_counts.get(pid, 0) == 0 else "products: warm"
            pairs[kind].append(float(pid in top))
            brand = data.brand_of.get(pid)
            if brand:
                pairs[f"brand: {brand}"].append(float(pid in top))
    for name, hits in sorted(pairs.items()):
        out[name] = {"recall@10": float(np.mean(hits)), "pairs": float(len(hits))}
    return out


def evaluate_ranker(
    ranker: Ranker, data: EvalSet, catalog_size: int, k: int = 50, batch_size: int = 64
) -> tuple[dict[str, float], list[list[str]]]:
    rankings: list[list[str]] = []
    for start in range(0, len(data.posts), batch_size):
        rankings.extend(ranker.rank_ids(data.posts[start : start + batch_size], k))
    return score_rankings(rankings, data.relevant, catalog_size), rankings


def format_table(report: dict[str, Any]) -> str:
    """The overall metrics of the engine and every baseline as a Markdown table."""
    columns = ["recall@1", "recall@5", "recall@10", "recall@50", "ndcg@10", "mrr@10", "coverage@10"]
    rows = [("engine", report), *sorted(report.get("baselines", {}).items())]
    lines = ["| method | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, metrics in rows:
        cells = [f"{metrics[c]:.3f}" if c in metrics else "" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
