"""Signals that put products forward for a post: one module per scorer, chosen by name."""

from consumer.scorers import brand, cotag, dense, lexical, neighbors, popularity, profile  # noqa: F401
from consumer.scorers.base import SCORERS, MatchState, QueryBatch, Scorer, make_scorer

__all__ = ["SCORERS", "MatchState", "QueryBatch", "Scorer", "make_scorer"]
