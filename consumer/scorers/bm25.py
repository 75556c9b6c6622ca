"""BM25 over token lists (bm25s), scoring whole corpora per query: shared by several scorers."""

from __future__ import annotations

from collections.abc import Sequence

import bm25s
import numpy as np

_EMPTY = "\x00empty"  # bm25s needs a token in every document


class Bm25Matrix:
    """A BM25 index whose ``scores`` gives a dense (queries, documents) matrix."""

    def __init__(self, documents: Sequence[Sequence[str]], k1: float = 1.2, b: float = 0.75) -> None:
        self.n_docs = len(documents)
        self._retriever = bm25s.BM25(k1=k1, b=b)
        if self.n_docs:
            self._retriever.index([list(d) or [_EMPTY] for d in documents], show_progress=False)
            self._vocab: dict[str, int] = dict(self._retriever.vocab_dict)
        else:
            self._vocab = {}

    def scores(self, queries: Sequence[Sequence[str]]) -> np.ndarray:
        out = np.zeros((len(queries), self.n_docs), dtype=np.float32)
        for q, tokens in enumerate(queries):
            known = [t for t in tokens if t in self._vocab]
            if known:
                out[q] = self._retriever.get_scores(known)
        return out
