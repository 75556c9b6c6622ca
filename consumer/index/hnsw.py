"""Approximate inner-product search with a faiss HNSW graph, for catalogs past ~200k rows.

Rows map to append-only graph *slots*: faiss HNSW cannot delete, so an upsert of a known
row adds a new slot and retires the old one, and a remove retires the slot. Retired slots
stay in the graph as stepping stones (they keep it connected) but are never returned: every
search that could meet one passes an ``IDSelectorBitmap`` of live-and-allowed slots, so the
``allowed`` mask is honoured inside the graph walk, not by filtering afterwards. When few
rows are allowed, the index answers exactly over just those rows (cheaper than a widened
walk, and never wrong), and re-answers exactly any query the walk left short of k.
``compact()`` rebuilds the graph without retired slots (automatic past ``compact_ratio``).

Parameters were chosen by measurement on synthetic catalogs made from real product
embeddings (all-MiniLM-L6-v2 over the HYPD catalog: each synthetic product is a random
convex mix of 2-3 real products, mostly near neighbours, plus N(0, 0.015²) noise,
renormalised), queried with real HYPD post embeddings; recall@10 against exact search, one
search thread, on a 2-core machine shared with other jobs (absolute times are inflated by
2-4×; see model_export/benchmark.py and bench-results/bench.md for a full run):

=========  ==  ====  ========  ========  ==========  ============
rows       M   efC   storage   efSearch  recall@10   ms per query
=========  ==  ====  ========  ========  ==========  ============
100k       16   40   fp32      128       0.911       0.19
100k       16   40   fp32      512       0.970       0.60
100k       32  100   fp32      256       0.985       0.35
100k       32  100   fp16      256       0.982       0.44
100k       32  100   fp16      512       0.990       1.09
100k       32  100   SQ8       512       0.975       1.50
1M         32  100   fp16      512       0.949-0.954  2.3
1M         32  100   fp16      1024      0.973       4.2
1M         32  100   fp16      1536      0.980       6.4
1M         32  100   fp16      2048      0.985       9.9
=========  ==  ====  ========  ========  ==========  ============

Post→product similarities are low and tightly packed (top-10 cosine ≈ 0.54, gap between
the 10th and 11th ≈ 0.004), so recall@10 needs a wide search; M=32 buys more recall per
millisecond than a larger efSearch on M=16. fp16 storage loses nothing measurable against
fp32 and halves the vectors (1M × 384: 0.77 GB instead of 1.54 GB; the whole 1M index is
1.0 GB); SQ8 loses recall that only a re-rank from fp16/fp32 copies would win back. The 1M
build took 11-12 min on 2 threads (efC=100) under load; save()/load() avoid rebuilding.
``keyblend bench`` with these defaults (k=100 as the engine asks, 1% of rows filtered out,
batches of 64, one thread, quiet machine): 1M rows 2.96 ms per pebble (exact 22.7 ms),
recall@10 0.981, index 1007 MB, a process serving it peaks at 1113 MB; 100k rows 0.38 ms
(exact 1.15 ms), recall@10 0.982; at 10k exact is as fast (0.11 ms), hence the engine's
``index_threshold``.

Filters (100k, queries as above, allowed fraction → ms per query, recall@10): widening
efSearch by n/allowed cost 4× at 20% (10.9 ms) and 25 ms at 10%; by sqrt(n/allowed) it kept
recall ≥ 0.98 (0.99 → 0.66 ms 0.983; 0.5 → 0.92 ms 0.992; 0.2 → 1.5 ms 0.993; 0.1 → 2.0 ms
0.993; 0.05 → 2.9 ms 0.993), while exact search over only the allowed rows cost 0.04 ms at
1%, 0.17 ms at 2%, 0.36 ms at 5%, 0.75 ms at 10% (recall 1.0): hence ``exact_below`` and
``min_fraction``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from consumer.candidates import Candidates
from consumer.index.base import INDEXES, VectorIndex
from consumer.versions import versions

# Measured at 1M synthetic rows (see the module docstring and bench-results/bench.md).
DEFAULTS: dict[str, Any] = {
    "M": 32,
    "ef_construction": 100,
    # 0: grow with the graph, 256 up to 100k slots, ~1540 at 1M (see auto_ef_search).
    "ef_search": 0,
    # "auto": exact fp32 while the vectors fit in AUTO_FP32_BYTES, fp16 beyond.
    "storage": "auto",
    # Searches over at most this many allowed rows are answered exactly: at this size a
    # matrix product costs less than a filtered graph walk and is never wrong.
    "exact_below": 20_000,
    # Below this allowed fraction the graph walk is abandoned for exact search too.
    "min_fraction": 0.05,
    "threads": 1,  # search threads: one worker process per core is the deployment unit
    "build_threads": 0,  # 0: every core this process may use (builds are startup work)
    "compact_ratio": 1.0,  # rebuild when retired slots exceed this × live rows
}
AUTO_FP32_BYTES = 256 << 20
_STORAGE: dict[str, Any] = {"fp16": faiss.ScalarQuantizer.QT_fp16, "sq8": faiss.ScalarQuantizer.QT_8bit}
_MAX_EF = 4096
_EXACT_CHUNK = 65_536  # rows decoded at a time: exact fallback never copies the whole index


def auto_ef_search(n_slots: int) -> int:
    """The efSearch that kept recall@10 ≥ 0.98 on the synthetic catalogs: 256 at 100k and
    1536 at 1M (fp16, M=32, efC=100; 0.954 at 512, 0.973 at 1024, 0.980 at 1536, 0.985 at
    2048), interpolated as a power law between them and held at 256 below 100k."""
    return int(min(_MAX_EF, round(256 * max(1.0, n_slots / 100_000) ** 0.78)))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@INDEXES.register("hnsw")
class HnswIndex(VectorIndex):
    """A faiss HNSW graph over catalog rows; filters and deletes are exact, ranking approximate."""

    kind = "hnsw"
    snapshot = True

    def __init__(self, dim: int, **params: Any) -> None:
        unknown = set(params) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown hnsw parameters: {sorted(unknown)}")
        super().__init__(dim, **params)
        settings = {**DEFAULTS, **params}
        self.M = int(settings["M"])
        self.ef_construction = int(settings["ef_construction"])
        self.ef_search = int(settings["ef_search"])
        self.storage = str(settings["storage"])
        if self.storage not in ("auto", "fp32", *_STORAGE):
            raise ValueError(f"hnsw storage must be auto, fp32, fp16 or sq8, not {self.storage!r}")
        self.exact_below = int(settings["exact_below"])
        self.min_fraction = float(settings["min_fraction"])
        self.threads = max(1, int(settings["threads"]))
        self.build_threads = int(settings["build_threads"]) or _cores()
        self.compact_ratio = float(settings["compact_ratio"])
        self._index: Any = None  # faiss.IndexHNSW, created on the first upsert
        self._slot_row = np.zeros(0, dtype=np.int64)  # slot → row; -1 once retired
        self._row_slot = np.zeros(0, dtype=np.int64)  # row → live slot; -1 when absent
        self._n_slots = 0
        self._live = 0
        self._bitmap_key: tuple[int, bytes] | None = None
        self._bitmap: np.ndarray | None = None
        self._bitmap_count = 0
        self._version = 0  # bumps on every change, so cached selectors go stale
        self._expected_rows = 0

    # -- the graph -------------------------------------------------------------------------
    def reserve(self, n_rows: int) -> None:
        self._expected_rows = max(self._expected_rows, n_rows)

    def _resolved_storage(self, expected_rows: int) -> str:
        if self.storage != "auto":
            return self.storage
        expected_rows = max(expected_rows, self._expected_rows)
        return "fp32" if expected_rows * self.dim * 4 <= AUTO_FP32_BYTES else "fp16"

    def _new_graph(self, storage: str) -> Any:
        index: Any
        if storage == "fp32":
            index = faiss.IndexHNSWFlat(self.dim, self.M, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexHNSWSQ(self.dim, _STORAGE[storage], self.M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search or auto_ef_search(0)
        return index

    def _add(self, vectors: np.ndarray) -> np.ndarray:
        """Append vectors as new slots (multi-threaded build), return their slot numbers."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self._index is None:
            self._index = self._new_graph(self._resolved_storage(len(vectors)))
        faiss.omp_set_num_threads(self.build_threads)
        try:
            if not self._index.is_trained:  # SQ8 learns value ranges from the first batch
                self._index.train(vectors)
            self._index.add(vectors)
        finally:
            faiss.omp_set_num_threads(self.threads)
        slots = np.arange(self._n_slots, self._n_slots + len(vectors), dtype=np.int64)
        self._n_slots += len(vectors)
        return slots

    @staticmethod
    def _grown(array: np.ndarray, size: int) -> np.ndarray:
        if size <= len(array):
            return array
        out = np.full(max(size, 2 * len(array), 64), -1, dtype=np.int64)
        out[: len(array)] = array
        return out

    # -- the contract ----------------------------------------------------------------------
    def upsert(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(rows), self.dim)
        unique, first = np.unique(rows[::-1], return_index=True)
        if len(unique) < len(rows):  # a row given twice keeps its last vector
            keep = np.sort(len(rows) - 1 - first)
            rows, vectors = rows[keep], vectors[keep]
        self._row_slot = self._grown(self._row_slot, int(rows.max()) + 1)
        old = self._row_slot[rows]
        retired = old[old >= 0]
        slots = self._add(vectors)
        self._slot_row = self._grown(self._slot_row, self._n_slots)
        self._slot_row[retired] = -1
        self._slot_row[slots] = rows
        self._row_slot[rows] = slots
        self._live += int((old < 0).sum())
        self._version += 1
        if self._n_slots - self._live > self.compact_ratio * max(self._live, 1):
            self.compact()

    def remove(self, rows: np.ndarray) -> None:
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        rows = rows[(rows >= 0) & (rows < len(self._row_slot))]
        slots = self._row_slot[rows]
        slots = slots[slots >= 0]
        if slots.size == 0:
            return
        self._slot_row[slots] = -1
        self._row_slot[rows] = -1
        self._live -= int(slots.size)
        self._version += 1

    def __len__(self) -> int:
        return self._live

    @property
    def retired(self) -> int:
        """Graph slots that belong to no row (replaced or removed), until ``compact()``."""
        return self._n_slots - self._live

    def memory_bytes(self) -> int:
        own = self._slot_row.nbytes + self._row_slot.nbytes
        if self._index is None:
            return int(own)
        hnsw = self._index.hnsw
        graph = hnsw.neighbors.size() * 4 + hnsw.offsets.size() * 8 + hnsw.levels.size() * 4
        codes = self._index.ntotal * self._index.storage.sa_code_size()
        bitmap = 0 if self._bitmap is None else self._bitmap.nbytes
        return int(own + graph + codes + bitmap)

    def compact(self) -> None:
        """Rebuild the graph from the live rows only (costs a full build)."""
        if self._index is None:
            return
        slots = np.flatnonzero(self._slot_row[: self._n_slots] >= 0)
        rows = self._slot_row[slots]
        vectors = self._vectors(slots)
        self._index = None
        self._n_slots = 0
        self._slot_row = np.full(len(slots), -1, dtype=np.int64)
        self._row_slot[:] = -1
        new = self._add(vectors) if len(slots) else np.zeros(0, dtype=np.int64)
        self._slot_row[new] = rows
        self._row_slot[rows] = new
        self._version += 1

    def _vectors(self, slots: np.ndarray) -> np.ndarray:
        if slots.size == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out: np.ndarray = self._index.reconstruct_batch(np.ascontiguousarray(slots, dtype=np.int64))
        return out.reshape(len(slots), self.dim)

    def _selection(self, allowed: np.ndarray | None) -> tuple[np.ndarray | None, int]:
        """(bitmap of searchable slots or None when every slot is, their count); cached."""
        n = self._n_slots
        if allowed is None and self._live == n:
            return None, n
        key = (self._version, b"" if allowed is None else np.packbits(allowed).tobytes())
        if key != self._bitmap_key:
            ok = self._slot_row[:n] >= 0
            if allowed is not None:
                rows = self._slot_row[:n]
                in_mask = (rows < len(allowed)) & ok
                ok = in_mask.copy()
                ok[in_mask] = allowed[rows[in_mask]]
            count = int(ok.sum())
            self._bitmap = None if count == n else np.packbits(ok, bitorder="little")
            self._bitmap_key, self._bitmap_count = key, count
        return self._bitmap, self._bitmap_count

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> Candidates:
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        n_q = len(queries)
        if self._index is None or k <= 0 or n_q == 0:
            return Candidates.empty(n_q, max(k, 0))
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=bool)
        bitmap, count = self._selection(allowed)
        if count == 0:
            return Candidates.empty(n_q, k)
        if count <= max(self.exact_below, k) or count < self.min_fraction * self._n_slots:
            return self._exact(queries, k, bitmap)
        # A filtered walk meets allowed slots at rate count/n; widening ef by sqrt(n/count)
        # kept recall@10 at or above the unfiltered walk's (widening by n/count cost 4× more).
        base = self.ef_search or auto_ef_search(self._n_slots)
        ef = min(_MAX_EF, max(base, k, int(base * (self._n_slots / count) ** 0.5)))
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # not in the stubs
        params.efSearch = ef
        selector = None
        if bitmap is not None:
            selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
            params.sel = selector
        faiss.omp_set_num_threads(self.threads)
        scores, slots = self._index.search(queries, k, params=params)
        del selector  # params held a raw pointer to it; the bitmap array outlives both
        out = self._to_rows(scores, slots)
        # The walk can end short of k allowed rows; those queries get the exact answer.
        short = np.flatnonzero((out.rows >= 0).sum(axis=1) < min(k, count))
        if short.size:
            fixed = self._exact(queries[short], k, bitmap)
            out.rows[short], out.scores[short] = fixed.rows, fixed.scores
        return out

    def _to_rows(self, scores: np.ndarray, slots: np.ndarray) -> Candidates:
        found = slots >= 0
        rows = np.where(found, self._slot_row[np.where(found, slots, 0)], -1)
        rows[rows < 0] = -1  # a retired slot can never be selected, but never trust it
        scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
        return Candidates(rows.astype(np.int64), scores)

    def _exact(self, queries: np.ndarray, k: int, bitmap: np.ndarray | None) -> Candidates:
        """Inner products against every searchable slot, decoded from storage in chunks."""
        if bitmap is None:
            slots = np.arange(self._n_slots, dtype=np.int64)
        else:
            bits = np.unpackbits(bitmap, count=self._n_slots, bitorder="little").astype(bool)
            slots = np.flatnonzero(bits)
        best = Candidates.empty(len(queries), k)
        for start in range(0, len(slots), _EXACT_CHUNK):
            chunk = slots[start : start + _EXACT_CHUNK]
            top = Candidates.from_dense(queries @ self._vectors(chunk).T, k)
            found = top.rows >= 0
            rows = np.where(found, self._slot_row[chunk[np.where(found, top.rows, 0)]], -1)
            if start == 0:
                best = Candidates(rows.astype(np.int64), top.scores)
                continue
            both_rows = np.concatenate([best.rows, rows], axis=1)
            both_scores = np.concatenate([best.scores, top.scores], axis=1)
            order = np.argsort(-both_scores, axis=1, kind="stable")[:, :k]
            best = Candidates(np.take_along_axis(both_rows, order, axis=1),
                              np.take_along_axis(both_scores, order, axis=1))
        return best

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if self._index is not None:
            faiss.write_index(self._index, str(path / "hnsw.faiss"))
        np.save(path / "slot_rows.npy", self._slot_row[: self._n_slots])
        meta = {
            "kind": self.kind,
            "dim": self.dim,
            "params": self.params,
            "storage": None if self._index is None else self._storage_name(),
            "slots": self._n_slots,
            "live": self._live,
            "versions": versions(),
        }
        (path / "index.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")

    def _storage_name(self) -> str:
        if isinstance(self._index, faiss.IndexHNSWFlat):
            return "fp32"
        storage: Any = faiss.downcast_index(self._index.storage)
        qtype = storage.sq.qtype
        return next(name for name, q in _STORAGE.items() if q == qtype)

    @classmethod
    def load(cls, path: Path) -> HnswIndex:
        meta = json.loads((path / "index.json").read_text(encoding="utf-8"))
        index = cls(int(meta["dim"]), **meta.get("params", {}))
        slot_rows = np.load(path / "slot_rows.npy").astype(np.int64)
        if (path / "hnsw.faiss").exists():
            index._index = faiss.read_index(str(path / "hnsw.faiss"))
            if index._index.ntotal != len(slot_rows):
                raise ValueError(f"{path}: graph has {index._index.ntotal} slots, map {len(slot_rows)}")
        index._n_slots = len(slot_rows)
        index._slot_row = slot_rows.copy()
        live = slot_rows >= 0
        index._live = int(live.sum())
        n_rows = int(slot_rows.max()) + 1 if index._live else 0
        index._row_slot = np.full(n_rows, -1, dtype=np.int64)
        index._row_slot[slot_rows[live]] = np.flatnonzero(live)
        return index
