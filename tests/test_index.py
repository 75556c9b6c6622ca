"""Vector indexes: one contract over every registered kind, plus exact-index arithmetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from consumer.index import INDEXES, ExactIndex, make_index

DIM = 16


def _unit(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    unit: np.ndarray = v / np.linalg.norm(v, axis=1, keepdims=True)
    return unit


def _valid(rows: np.ndarray) -> list[int]:
    return [int(r) for r in rows if r >= 0]


@pytest.fixture(params=INDEXES.names())
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def test_contract_kind_and_len(kind: str) -> None:
    index = make_index(kind, DIM)
    assert index.kind == kind and index.dim == DIM
    assert len(index) == 0
    index.upsert(np.arange(20), _unit(20, 0))
    assert len(index) == 20
    assert index.memory_bytes() > 0


def test_contract_identical_vector_is_top_1(kind: str) -> None:
    vectors = _unit(60, 1)
    index = make_index(kind, DIM)
    index.upsert(np.arange(60), vectors)
    got = index.search(vectors[[5, 17, 42]], k=3)
    assert got.rows[:, 0].tolist() == [5, 17, 42]
    assert got.scores[:, 0] == pytest.approx([1.0, 1.0, 1.0], abs=1e-4)
    assert (np.diff(got.scores, axis=1) <= 1e-6).all()  # best first


def test_contract_allowed_filter_is_always_honoured(kind: str) -> None:
    vectors = _unit(60, 2)
    index = make_index(kind, DIM)
    index.upsert(np.arange(60), vectors)
    allowed = np.zeros(60, dtype=bool)
    allowed[::3] = True
    got = index.search(vectors[:10], k=10, allowed=allowed)
    for q in range(10):
        rows = _valid(got.rows[q])
        assert rows, "an allowed row exists, so something comes back"
        assert all(allowed[r] for r in rows)
    # The best allowed row for a query that is itself allowed is the query's own row.
    assert got.rows[3, 0] == 3
    nothing = index.search(vectors[:2], k=5, allowed=np.zeros(60, dtype=bool))
    assert (nothing.rows == -1).all()


def test_contract_removed_rows_never_return(kind: str) -> None:
    vectors = _unit(40, 3)
    index = make_index(kind, DIM)
    index.upsert(np.arange(40), vectors)
    removed = np.array([0, 7, 8, 39])
    index.remove(removed)
    assert len(index) == 36
    got = index.search(vectors, k=40, allowed=np.ones(40, dtype=bool))
    returned = {r for q in range(40) for r in _valid(got.rows[q])}
    assert returned.isdisjoint(removed.tolist())
    assert got.rows[7, 0] != 7  # its own vector no longer finds it
    index.remove(np.array([1000]))  # removing an unknown row is harmless
    # Re-inserted, a row is found again.
    index.upsert(np.array([7]), vectors[[7]])
    assert index.search(vectors[[7]], k=1).rows[0, 0] == 7


def test_contract_upsert_replaces_a_rows_vector(kind: str) -> None:
    vectors = _unit(30, 4)
    index = make_index(kind, DIM)
    index.upsert(np.arange(30), vectors)
    fresh = _unit(1, 99)
    index.upsert(np.array([12]), fresh)
    assert len(index) == 30
    assert index.search(fresh, k=1).rows[0, 0] == 12
    old = index.search(vectors[[12]], k=30)
    pos = _valid(old.rows[0]).index(12) if 12 in old.rows[0] else None
    expected = float(fresh[0] @ vectors[12])
    assert pos is None or old.scores[0, pos] == pytest.approx(expected, abs=1e-4)


def test_contract_sparse_rows_and_k_beyond_len(kind: str) -> None:
    vectors = _unit(3, 5)
    index = make_index(kind, DIM)
    index.upsert(np.array([2, 9, 4]), vectors)
    got = index.search(vectors, k=6)
    for q in range(3):
        assert set(_valid(got.rows[q])) == {2, 9, 4}
        assert (got.rows[q, 3:] == -1).all()
    assert got.rows.shape == (3, 6)


def test_contract_save_load_round_trip(kind: str, tmp_path: Path) -> None:
    vectors = _unit(50, 6)
    index = make_index(kind, DIM)
    index.upsert(np.arange(50), vectors)
    index.remove(np.array([3, 4]))
    allowed = np.arange(50) % 2 == 0
    before = index.search(vectors[:8], k=5, allowed=allowed)
    index.save(tmp_path / "index")
    loaded = type(index).load(tmp_path / "index")
    assert loaded.kind == kind and len(loaded) == 48
    after = loaded.search(vectors[:8], k=5, allowed=allowed)
    np.testing.assert_array_equal(after.rows, before.rows)
    np.testing.assert_allclose(after.scores, before.scores, rtol=1e-5)


def test_exact_scores_are_inner_products_by_hand() -> None:
    index = ExactIndex(2)
    s = np.sqrt(0.5)
    index.upsert(np.array([0, 1, 2]), np.array([[1, 0], [0, 1], [s, s]], dtype=np.float32))
    got = index.search(np.array([[1.0, 0.0]], dtype=np.float32), k=3)
    # q·r0 = 1, q·r2 = √½ ≈ 0.70711, q·r1 = 0 (scores are rounded to 5 decimals)
    assert got.rows[0].tolist() == [0, 2, 1]
    assert got.scores[0] == pytest.approx([1.0, 0.70711, 0.0], abs=1e-6)


def test_exact_short_allowed_mask_treats_missing_rows_as_not_allowed() -> None:
    index = ExactIndex(DIM)
    vectors = _unit(10, 7)
    index.upsert(np.arange(10), vectors)
    got = index.search(vectors[[8]], k=10, allowed=np.ones(5, dtype=bool))
    assert set(_valid(got.rows[0])) == {0, 1, 2, 3, 4}


def test_exact_matrix_keeps_rows_aligned() -> None:
    index = ExactIndex(DIM)
    vectors = _unit(4, 8)
    index.upsert(np.array([3, 0]), vectors[[3, 0]])
    assert index.matrix.shape == (4, DIM)
    np.testing.assert_array_equal(index.matrix[3], vectors[3])
    assert not index.matrix[1].any()
