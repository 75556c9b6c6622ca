"""Vector indexes over catalog rows: one module per kind behind ``VectorIndex``."""

from consumer.index.base import INDEXES, VectorIndex, make_index
from consumer.index.exact import ExactIndex

__all__ = ["INDEXES", "ExactIndex", "VectorIndex", "make_index"]

try:  # faiss is a core dependency, but keep the exact path importable without it
    from consumer.index import hnsw as _hnsw  # noqa: F401
except ImportError:  # pragma: no cover
    pass
