"""Vector indexes over catalog rows: one module per kind behind ``VectorIndex``."""

import contextlib

from consumer.index.base import INDEXES, VectorIndex, make_index
from consumer.index.exact import ExactIndex

__all__ = ["INDEXES", "ExactIndex", "VectorIndex", "make_index"]

# faiss is a core dependency, but keep the exact path importable without it.
with contextlib.suppress(ImportError):
    import consumer.index.hnsw  # noqa: F401  (register)
