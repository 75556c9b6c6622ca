"""Signals that put products forward for a post: one module per scorer, chosen by name."""

from consumer.scorers import dense, lexical, neighbors, popularity  # noqa: F401  (register)
from consumer.scorers.base import SCORERS, MatchState, QueryBatch, Scorer, make_scorer

__all__ = ["SCORERS", "MatchState", "QueryBatch", "Scorer", "make_scorer"]
