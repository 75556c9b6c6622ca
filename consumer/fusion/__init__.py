"""Ways to combine scorers' candidates into one ranking: one module each, chosen by name."""

from consumer.fusion import linear, rrf  # noqa: F401  (register)
from consumer.fusion.base import FUSIONS, Fusion, Pool, make_fusion, pool

__all__ = ["FUSIONS", "Fusion", "Pool", "make_fusion", "pool"]
