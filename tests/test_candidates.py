"""Candidates: top-k from dense scores and from lists, padding, masks."""

from __future__ import annotations

import numpy as np
import pytest

from consumer.candidates import Candidates

NEG = -np.inf


def test_from_dense_top_k_with_mask_worked_by_hand() -> None:
    scores = np.array([[0.1, 0.9, 0.5, NEG],
                       [0.3, 0.2, 0.8, 0.7]], dtype=np.float32)
    allowed = np.array([True, True, False, True])
    got = Candidates.from_dense(scores, k=3, allowed=allowed)
    # Query 0: row 2 is masked, row 3 is -inf → rows 1 (0.9), 0 (0.1), then padding.
    assert got.rows[0].tolist() == [1, 0, -1]
    assert got.scores[0, :2] == pytest.approx([0.9, 0.1])
    assert got.scores[0, 2] == NEG
    # Query 1: row 2 (0.8) is masked → rows 3 (0.7), 0 (0.3), 1 (0.2).
    assert got.rows[1].tolist() == [3, 0, 1]
    assert got.scores[1] == pytest.approx([0.7, 0.3, 0.2])


def test_from_dense_k_larger_than_rows_pads() -> None:
    got = Candidates.from_dense(np.array([[0.2, 0.4]]), k=4)
    assert got.rows.shape == (1, 4) and got.scores.shape == (1, 4)
    assert got.rows[0].tolist() == [1, 0, -1, -1]
    assert np.isneginf(got.scores[0, 2:]).all()
    assert got.rows.dtype == np.int64 and got.scores.dtype == np.float32


def test_from_dense_all_masked_and_empty_catalog() -> None:
    scores = np.array([[0.5, 0.6]])
    got = Candidates.from_dense(scores, k=2, allowed=np.array([False, False]))
    assert got.query(0) == []
    empty = Candidates.from_dense(np.zeros((3, 0)), k=5)
    assert empty.rows.shape == (3, 5) and (empty.rows == -1).all()


def test_from_dense_partition_path_matches_full_sort() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(4, 50)).astype(np.float32)
    allowed = rng.random(50) > 0.3
    got = Candidates.from_dense(scores, k=7, allowed=allowed)
    for q in range(4):
        masked = np.where(allowed, scores[q], -np.inf)
        expected = np.argsort(-masked, kind="stable")[:7]
        assert got.rows[q].tolist() == expected.tolist()
        assert got.scores[q] == pytest.approx(masked[expected])


def test_from_lists_orders_truncates_and_pads() -> None:
    got = Candidates.from_lists([[(5, 0.1), (2, 0.7), (9, 0.7), (4, 0.3)], []], k=3)
    # Ties broken by the lower row: (2, 0.7) before (9, 0.7).
    assert [r for r, _ in got.query(0)] == [2, 9, 4]
    assert [s for _, s in got.query(0)] == pytest.approx([0.7, 0.7, 0.3])
    assert got.query(1) == []
    assert len(got) == 2 and got.rows.shape == (2, 3)


def test_empty_and_query_drop_padding() -> None:
    empty = Candidates.empty(2, 3)
    assert len(empty) == 2
    assert empty.query(1) == []
    assert np.isneginf(empty.scores).all()
