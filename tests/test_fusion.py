"""Fusion: the pool, RRF and the learned linear blend, checked against hand-worked numbers."""

from __future__ import annotations

import numpy as np
import pytest

from consumer.candidates import Candidates
from consumer.fusion import FUSIONS, make_fusion, pool
from consumer.fusion.linear import LinearFusion, feature_names, features, fit_logistic


def _runs() -> dict[str, Candidates]:
    # Scorer a: rows 10, 20, 30 (best first); scorer b: rows 30, 10.
    a = Candidates.from_lists([[(10, 0.9), (20, 0.5), (30, 0.1)]], k=3)
    b = Candidates.from_lists([[(30, 4.0), (10, 2.0)]], k=3)
    return {"a": a, "b": b}


def test_pool_is_the_union_with_nan_and_minus_one_for_absent() -> None:
    p = pool(_runs(), 0)
    assert p.rows.tolist() == [10, 20, 30]
    assert p.ranks.tolist() == [[0, 1], [1, -1], [2, 0]]
    assert p.scores[0].tolist() == pytest.approx([0.9, 2.0])
    assert p.scores[1, 0] == pytest.approx(0.5) and np.isnan(p.scores[1, 1])
    assert p.top.tolist() == pytest.approx([0.9, 4.0])  # each scorer's best for the post
    assert p.priors.shape == (3, 0)


def test_rrf_three_candidates_by_hand() -> None:
    fused = make_fusion("rrf", ["a", "b"], k=60.0).fuse(_runs(), k=5)
    # rank counted from 1:  row 10: 1/61 + 1/62 = 0.0325221
    #                       row 30: 1/63 + 1/61 = 0.0322664
    #                       row 20: 1/62        = 0.0161290
    assert [r for r, _ in fused.query(0)] == [10, 30, 20]
    scores = [s for _, s in fused.query(0)]
    assert scores == pytest.approx([1 / 61 + 1 / 62, 1 / 63 + 1 / 61, 1 / 62], rel=1e-6)


def test_rrf_weights_can_flip_the_order_by_hand() -> None:
    fused = make_fusion("rrf", ["a", "b"], k=60.0, weights={"b": 2.0}).fuse(_runs(), k=5)
    # With b counted twice:  row 30: 1/63 + 2/61 = 0.0486600
    #                        row 10: 1/61 + 2/62 = 0.0486511  → 30 now beats 10.
    assert [r for r, _ in fused.query(0)] == [30, 10, 20]
    assert fused.query(0)[0][1] == pytest.approx(1 / 63 + 2 / 61, rel=1e-6)


def _tiny_runs() -> dict[str, Candidates]:
    return {"a": Candidates.from_lists([[(1, 0.9), (2, 0.5), (3, 0.1)]], 3),
            "b": Candidates.from_lists([[(3, 4.0), (4, 2.0)]], 3)}


def test_linear_features_on_a_tiny_pool_by_hand() -> None:
    x = features(pool(_tiny_runs(), 0))
    assert feature_names(["a", "b"], n_priors=0) == [
        "a.relative", "a.recip_rank", "a.present", "b.relative", "b.recip_rank", "b.present"]
    # a: best 0.9 → relative s / 0.9; b: best 4 → relative s / 4; recip 1/(rank+1)
    expected = [
        [1.0, 1.0, 1.0, 0.0, 0.0, 0.0],  # row 1: a rank 0
        [0.5 / 0.9, 0.5, 1.0, 0.0, 0.0, 0.0],  # row 2: a rank 1
        [0.1 / 0.9, 1 / 3, 1.0, 1.0, 1.0, 1.0],  # row 3: a rank 2, b rank 0
        [0.0, 0.0, 0.0, 0.5, 0.5, 1.0],  # row 4: b rank 1, 2 / 4
    ]
    np.testing.assert_allclose(x, expected, rtol=1e-6, atol=1e-7)


def test_linear_features_append_the_rows_priors() -> None:
    priors = np.zeros((6, 2), dtype=np.float32)
    priors[3] = [np.log1p(4.0), 1.0]  # row 3 was tagged 4 times before
    x = features(pool(_tiny_runs(), 0, priors))
    assert x.shape == (4, 8)
    np.testing.assert_allclose(x[:, 6:], [[0, 0], [0, 0], [np.log1p(4.0), 1.0], [0, 0]], rtol=1e-6)


def test_linear_unfitted_sums_relative_scores_plus_bias() -> None:
    fusion = make_fusion("linear", ["a", "b"], bias=0.25)
    # a.relative + b.relative + 0.25:
    #   row 1 → 1 + 0.25 = 1.25           row 2 → 0.5/0.9 + 0.25 = 0.8056
    #   row 3 → 0.1/0.9 + 1 + 0.25 = 1.3611  row 4 → 0.5 + 0.25 = 0.75
    fused = fusion.fuse(_tiny_runs(), k=4)
    assert [r for r, _ in fused.query(0)] == [3, 1, 2, 4]
    assert dict(fused.query(0)) == {1: pytest.approx(1.25), 2: pytest.approx(0.5 / 0.9 + 0.25),
                                    3: pytest.approx(0.1 / 0.9 + 1.25), 4: pytest.approx(0.75)}


def test_linear_prior_weights_apply_only_when_priors_are_given() -> None:
    fusion = make_fusion("linear", ["a", "b"], weights={"a.relative": 1.0, "tagged_before": 2.0})
    priors = np.zeros((6, 2), dtype=np.float32)
    priors[4] = [np.log1p(1.0), 1.0]
    # Without priors row 4 scores 0 (a.relative only); with them 0 + 2 × 1 = 2, the best.
    assert fusion.fuse(_tiny_runs(), 4).query(0)[0][0] == 1
    best_row, best_score = fusion.fuse(_tiny_runs(), 4, priors).query(0)[0]
    assert best_row == 4 and best_score == pytest.approx(2.0)


def test_linear_relative_score_of_a_non_positive_best_is_the_raw_score() -> None:
    runs = {"a": Candidates.from_lists([[(7, -0.5), (8, -2.0)]], 2)}
    np.testing.assert_allclose(features(pool(runs, 0))[:, 0], [-0.5, -2.0])


def test_linear_rejects_weights_for_unknown_features() -> None:
    with pytest.raises(ValueError, match=r"c\.relative"):
        LinearFusion(["a", "b"], weights={"c.relative": 1.0})


def test_fit_logistic_recovers_a_separable_ordering() -> None:
    # Feature 0 separates the classes; feature 1 is spread alike over both classes.
    x = np.array([[-2.0, 1.0], [-1.0, 0.0], [-0.5, 1.0], [0.5, 1.0], [1.0, 0.0], [2.0, 1.0]])
    y = np.array([0, 0, 0, 1, 1, 1], dtype=float)
    w = fit_logistic(x, y, l2=0.1)
    assert w.shape == (3,)
    assert w[0] > 0 and abs(w[0]) > 5 * abs(w[1])
    margin = x @ w[:-1] + w[-1]
    assert margin[y == 1].min() > margin[y == 0].max()
    # A stronger penalty shrinks the weight but keeps the ordering.
    w_strong = fit_logistic(x, y, l2=10.0)
    assert 0 < w_strong[0] < w[0]


def test_linear_fit_learns_which_scorer_to_trust() -> None:
    rng = np.random.default_rng(3)
    pools, relevant = [], []
    for _ in range(30):  # scorer "good" ranks the tagged row first; "noise" is random
        rows = rng.choice(1000, size=8, replace=False)
        target = int(rows[0])
        good = [(int(r), float(5.0 if r == target else rng.random())) for r in rows]
        noise = [(int(r), float(rng.random())) for r in rows]
        runs = {"noise": Candidates.from_lists([noise], 8),
                "good": Candidates.from_lists([good], 8)}
        pools.append(pool(runs, 0))
        relevant.append({target})
    fitted = LinearFusion.fit(["noise", "good"], pools, relevant, l2=1.0)
    weights = fitted.params["weights"]
    assert weights["good.relative"] + weights["good.recip_rank"] > \
        abs(weights["noise.relative"]) + abs(weights["noise.recip_rank"])
    # A fresh post: the learned blend puts the row "good" likes first despite "noise".
    runs = {"noise": Candidates.from_lists([[(1, 0.9), (2, 0.1)]], 2),
            "good": Candidates.from_lists([[(2, 5.0), (1, 0.2)]], 2)}
    assert fitted.fuse(runs, k=2).query(0)[0][0] == 2
    # Its config rebuilds the same fusion.
    config = fitted.config()
    rebuilt = make_fusion(config.pop("name"), config.pop("scorers"), **config)
    assert rebuilt.fuse(runs, 2).query(0) == fitted.fuse(runs, 2).query(0)


@pytest.mark.parametrize("name", FUSIONS.names())
def test_fusion_contract(name: str) -> None:
    """Every registered fusion: ordered output, only pooled rows, no duplicates, k respected."""
    rng = np.random.default_rng(11)
    lists_a, lists_b = [], []
    for _ in range(4):
        rows_a = rng.choice(40, size=10, replace=False)
        rows_b = rng.choice(40, size=6, replace=False)
        lists_a.append([(int(r), float(s)) for r, s in zip(rows_a, rng.random(10), strict=True)])
        scores_b = rng.normal(size=6)
        lists_b.append([(int(r), float(s)) for r, s in zip(rows_b, scores_b, strict=True)])
    lists_a.append([])  # a post neither scorer had anything for
    lists_b.append([])
    runs = {"a": Candidates.from_lists(lists_a, 10), "b": Candidates.from_lists(lists_b, 10)}
    fusion = make_fusion(name, ["a", "b"])
    assert fusion.name == name
    fused = fusion.fuse(runs, k=8)
    assert len(fused) == 5 and fused.rows.shape == (5, 8)
    for q in range(4):
        got = fused.query(q)
        pooled = {r for r, _ in runs["a"].query(q)} | {r for r, _ in runs["b"].query(q)}
        rows = [r for r, _ in got]
        assert rows and set(rows) <= pooled
        assert len(rows) == len(set(rows)) == min(8, len(pooled))
        scores = [s for _, s in got]
        assert scores == sorted(scores, reverse=True)
    assert fused.query(4) == []
    # Deterministic, and rebuilt from its saved config it ranks the same.
    assert fusion.fuse(runs, 8).query(0) == fused.query(0)
    config = fusion.config()
    rebuilt = make_fusion(config.pop("name"), config.pop("scorers"), **config)
    assert rebuilt.fuse(runs, 8).query(1) == fused.query(1)
