"""Metric values checked against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest

from model_export.evaluation import mrr_at, ndcg_at, recall_at, score_rankings

RANKED = ["a", "b", "c", "d"]
RELEVANT = {"b", "d"}


def test_recall_counts_hits_over_relevant() -> None:
    assert recall_at(RANKED, RELEVANT, 1) == 0.0
    assert recall_at(RANKED, RELEVANT, 2) == 0.5
    assert recall_at(RANKED, RELEVANT, 4) == 1.0


def test_ndcg_by_hand() -> None:
    # Hits at ranks 2 and 4: DCG = 1/log2(3) + 1/log2(5) = 0.630930 + 0.430677 = 1.061606.
    # Ideal: two hits at ranks 1 and 2: IDCG = 1 + 0.630930 = 1.630930. nDCG = 0.650920.
    assert ndcg_at(RANKED, RELEVANT, 4) == pytest.approx(0.650920, abs=1e-6)
    # Cut at 2: DCG = 0.630930, IDCG (two relevant, k=2) = 1.630930 → 0.386853.
    assert ndcg_at(RANKED, RELEVANT, 2) == pytest.approx(0.386853, abs=1e-6)
    assert ndcg_at(["b", "d"], RELEVANT, 10) == pytest.approx(1.0)


def test_ndcg_ideal_is_capped_at_k() -> None:
    # Three relevant, k=1, first is a hit: DCG = IDCG = 1.
    assert ndcg_at(["x"], {"x", "y", "z"}, 1) == 1.0


def test_mrr_is_reciprocal_rank_of_first_hit_within_k() -> None:
    assert mrr_at(RANKED, RELEVANT, 10) == 0.5
    assert mrr_at(RANKED, RELEVANT, 1) == 0.0
    assert mrr_at(["z"], {"q"}, 10) == 0.0


def test_score_rankings_averages_over_posts_and_counts_coverage() -> None:
    rankings = [["a", "b"], ["c", "a"]]
    relevant = [{"a"}, {"b"}]
    metrics = score_rankings(rankings, relevant, catalog_size=10)
    # Post 1: hit at rank 1 (recall@1 = 1, MRR 1); post 2: no hit. Means: 0.5.
    assert metrics["recall@1"] == 0.5
    assert metrics["mrr@10"] == 0.5
    assert metrics["ndcg@10"] == pytest.approx(0.5)
    # Shown in top 10: a, b, c → 3 of 10 products.
    assert metrics["coverage@10"] == pytest.approx(0.3)
    assert metrics["posts"] == 2


def test_log_discount_matches_definition() -> None:
    assert ndcg_at(["n", "y"], {"y"}, 10) == pytest.approx(1 / math.log2(3))
