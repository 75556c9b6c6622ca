"""HNSW-specific behaviour: the graph path (not the small-index exact path) keeps the contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from consumer.index import ExactIndex, make_index
from consumer.index.hnsw import HnswIndex

DIM = 32
# exact_below=0 and min_fraction=0 force the graph walk, which the small contract tests skip.
GRAPH = {"exact_below": 0, "min_fraction": 0.0, "M": 16, "ef_construction": 80, "ef_search": 64}


def _clustered(n: int, seed: int, clusters: int = 40, noise: float = 0.35) -> np.ndarray:
    """Clustered unit vectors, like sentence embeddings (not isotropic Gaussians); every seed
    draws around the same centres, so queries look like the data."""
    centres = np.random.default_rng(12345).normal(size=(clusters, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    v = centres[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, DIM)).astype(np.float32)
    out: np.ndarray = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return _clustered(5000, 0), _clustered(200, 1)


@pytest.fixture(scope="module")
def built(data: tuple[np.ndarray, np.ndarray]) -> HnswIndex:
    """One 5k graph shared by the read-only tests (building is the slow part)."""
    return _graph(data[0])


def _exact(vectors: np.ndarray, rows: np.ndarray | None = None) -> ExactIndex:
    index = ExactIndex(DIM)
    index.upsert(np.arange(len(vectors)) if rows is None else rows, vectors)
    return index


def _recall(got: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(g[g >= 0]) & set(t[t >= 0])) / max(1, (t >= 0).sum())
                          for g, t in zip(got, truth, strict=True)]))


def _graph(vectors: np.ndarray, **params: object) -> HnswIndex:
    index = HnswIndex(DIM, **{**GRAPH, **params})
    index.upsert(np.arange(len(vectors)), vectors)
    return index


def test_registered_and_rejects_unknown_parameters() -> None:
    assert isinstance(make_index("hnsw", DIM), HnswIndex)
    with pytest.raises(ValueError, match="unknown hnsw parameters"):
        HnswIndex(DIM, efSearch=10)
    with pytest.raises(ValueError, match="storage"):
        HnswIndex(DIM, storage="pq")


def test_recall_at_10_against_exact_on_clustered_data(
    data: tuple[np.ndarray, np.ndarray], built: HnswIndex
) -> None:
    vectors, queries = data
    got = built.search(queries, 10)
    truth = _exact(vectors).search(queries, 10)
    assert _recall(got.rows, truth.rows) >= 0.98
    assert (np.diff(got.scores, axis=1) <= 1e-6).all()


@pytest.mark.parametrize("storage", ["fp32", "fp16", "sq8"])
def test_storage_kinds_search_and_report_memory(storage: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, queries = data
    index = _graph(vectors[:2000], storage=storage)
    got = index.search(queries[:50], 10)
    truth = _exact(vectors[:2000]).search(queries[:50], 10)
    assert _recall(got.rows, truth.rows) >= (0.9 if storage == "sq8" else 0.97)
    assert index.memory_bytes() >= 2000 * DIM * {"fp32": 4, "fp16": 2, "sq8": 1}[storage]


def test_auto_storage_is_fp32_when_small(tmp_path: Path) -> None:
    index = make_index("hnsw", DIM)
    index.upsert(np.arange(10), _clustered(10, 3))
    index.save(tmp_path / "i")
    assert '"storage": "fp32"' in (tmp_path / "i" / "index.json").read_text()


@pytest.mark.parametrize("fraction", [0.003, 0.05, 0.3, 0.9])
def test_filters_of_every_selectivity_return_only_allowed_rows_and_enough_of_them(
    fraction: float, data: tuple[np.ndarray, np.ndarray], built: HnswIndex
) -> None:
    vectors, queries = data
    index, queries = built, queries[:50]
    allowed = np.random.default_rng(4).random(len(vectors)) < fraction
    got = index.search(queries, 10, allowed)
    truth = _exact(vectors).search(queries, 10, allowed)
    valid = got.rows[got.rows >= 0]
    assert allowed[valid].all()
    want = min(10, int(allowed.sum()))
    assert ((got.rows >= 0).sum(axis=1) == want).all()  # never short, even when very selective
    assert _recall(got.rows, truth.rows) >= 0.95


def test_default_exact_path_for_selective_filters_is_exactly_right(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    vectors, queries = data[0][:2000], data[1]
    index = HnswIndex(DIM, exact_below=300, M=8, ef_construction=16)
    index.upsert(np.arange(len(vectors)), vectors)
    allowed = np.zeros(len(vectors), dtype=bool)
    allowed[::10] = True  # 200 rows: below exact_below
    got = index.search(queries, 10, allowed)
    truth = _exact(vectors).search(queries, 10, allowed)
    np.testing.assert_allclose(got.scores, truth.scores, atol=1e-5)  # exact, up to rounding
    assert _recall(got.rows, truth.rows) >= 0.995  # only exact ties may swap


def test_replace_retires_the_old_vector_and_compact_keeps_answers(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    vectors, _ = data
    index = _graph(vectors[:1000], compact_ratio=100.0)
    moved = np.arange(0, 1000, 7)
    fresh = _clustered(len(moved), 5)
    index.upsert(moved, fresh)
    index.upsert(moved[:20], fresh[:20])  # the same rows again: still one live slot each
    assert len(index) == 1000 and index.retired == len(moved) + 20
    # The old vectors no longer find their rows at top 1; the new ones do.
    old_hits = index.search(vectors[moved], 1).rows[:, 0]
    assert (old_hits != moved).mean() > 0.9
    assert (index.search(fresh, 1).rows[:, 0] == moved).all()
    before = index.search(fresh[:30], 5)
    index.compact()
    assert index.retired == 0 and len(index) == 1000
    after = index.search(fresh[:30], 5)
    assert _recall(after.rows, before.rows) >= 0.98


def test_heavy_churn_compacts_on_its_own(data: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, _ = data
    index = _graph(vectors[:500], compact_ratio=0.5)
    for _ in range(3):
        index.upsert(np.arange(200), _clustered(200, 6))
    assert len(index) == 500 and index.retired <= 250


def test_removed_rows_never_return_from_the_graph(data: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, queries = data[0][:2000], data[1]
    index = _graph(vectors)
    removed = np.arange(0, 2000, 3)
    index.remove(removed)
    index.remove(np.array([10**7, -1]))  # unknown rows are harmless
    assert len(index) == 2000 - len(removed)
    got = index.search(np.concatenate([queries, vectors[removed[:100]]]), 20)
    assert not np.isin(got.rows, removed).any()
    assert ((got.rows >= 0).sum(axis=1) == 20).all()
    index.upsert(removed[:5], vectors[removed[:5]])
    assert index.search(vectors[removed[:5]], 1).rows[:, 0].tolist() == removed[:5].tolist()


def test_save_load_round_trip_keeps_retired_slots_and_answers(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    vectors, queries = data
    index = _graph(vectors[:2000], storage="fp16")
    index.upsert(np.arange(10), _clustered(10, 8))
    index.remove(np.arange(100, 150))
    allowed = np.arange(2000) % 2 == 0
    before = index.search(queries, 10, allowed)
    index.save(tmp_path / "hnsw")
    loaded = HnswIndex.load(tmp_path / "hnsw")
    assert len(loaded) == len(index) and loaded.retired == index.retired
    after = loaded.search(queries, 10, allowed)
    np.testing.assert_array_equal(after.rows, before.rows)
    np.testing.assert_allclose(after.scores, before.scores, rtol=1e-6)
    # Still writable after loading.
    loaded.upsert(np.array([2000]), queries[:1])
    assert loaded.search(queries[:1], 1).rows[0, 0] == 2000


def test_empty_and_fully_masked_searches() -> None:
    index = HnswIndex(DIM, **GRAPH)
    assert (index.search(_clustered(2, 9), 5).rows == -1).all()
    index.upsert(np.arange(100), _clustered(100, 9))
    assert (index.search(_clustered(2, 10), 5, np.zeros(100, dtype=bool)).rows == -1).all()
    short = index.search(_clustered(2, 10), 5, np.ones(3, dtype=bool))  # short mask: rest not allowed
    assert set(short.rows[0][short.rows[0] >= 0].tolist()) == {0, 1, 2}


def test_a_row_given_twice_in_one_upsert_keeps_its_last_vector() -> None:
    vectors = _clustered(3, 11)
    index = HnswIndex(DIM, **GRAPH)
    index.upsert(np.array([1, 2, 1]), vectors)
    assert len(index) == 2 and index.retired == 0
    assert index.search(vectors[[2]], 1).rows[0, 0] == 1
    assert index.search(vectors[[1]], 1).rows[0, 0] == 2
