"""BM25 postings: values by hand, parity with bm25s, exact under changes, overlays, MaxScore."""

from __future__ import annotations

import bm25s
import numpy as np
import pytest

from consumer.candidates import Candidates, stable
from consumer.demo import demo_catalog
from consumer.scorers.bm25 import Bm25, Postings
from consumer.text import lexical_tokens


def test_scores_worked_by_hand() -> None:
    # N = 3, dl = 2, 1, 3, avgdl = 2; k1 = 1.2, b = 0.75.
    index = Bm25.build([["a", "b"], ["a"], ["c", "c", "b"]], k1=1.2, b=0.75)
    got = index.dense_scores([["a"], ["b"], ["c"], ["a", "a"], ["zz"]])
    # "a": df 2 → idf ln(1 + 1.5 / 2.5) = ln 1.6 = 0.470004.
    #   doc 0: tf 1, norm 1 → 1 / (1 + 1.2) → 0.213638;  doc 1: norm 0.625 → 1 / 1.75 → 0.268574.
    np.testing.assert_allclose(got[0], [0.213638, 0.268574, 0.0], atol=1e-6)
    # "b": same idf; doc 2: norm 0.25 + 0.75 · 1.5 = 1.375 → 1 / (1 + 1.65) → 0.177360.
    np.testing.assert_allclose(got[1], [0.213638, 0.0, 0.177360], atol=1e-6)
    # "c": df 1 → idf ln(1 + 2.5 / 1.5) = 0.980829; doc 2: tf 2 → 2 / (2 + 1.65) → 0.537441.
    np.testing.assert_allclose(got[2], [0.0, 0.0, 0.537441], atol=1e-6)
    np.testing.assert_allclose(got[3], 2 * got[0], atol=1e-6)  # a repeated query word counts twice
    assert not got[4].any()


def _demo_documents() -> list[list[str]]:
    catalog = demo_catalog()
    return [lexical_tokens(catalog.text(r)) or ["empty"] for r in range(catalog.n_rows)]


def _queries() -> list[list[str]]:
    return [lexical_tokens(t) for t in (
        "kolhapuri chappals for the festive season", "vitamin c glow serum glow", "matte lipstick red",
        "nothing matches qqq", "men beard oil and beard wash")]


def _bm25s_scores(documents: list[list[str]], queries: list[list[str]], k1: float, b: float) -> np.ndarray:
    reference = bm25s.BM25(k1=k1, b=b, method="lucene")
    reference.index(documents, show_progress=False)
    vocab = reference.vocab_dict
    return np.array([reference.get_scores([t for t in q if t in vocab]) if any(t in vocab for t in q)
                     else np.zeros(len(documents)) for q in queries])


@pytest.mark.parametrize(("k1", "b"), [(1.2, 0.75), (0.9, 0.4)])
def test_matches_bm25s_on_the_demo_catalog(k1: float, b: float) -> None:
    documents, queries = _demo_documents(), _queries()
    for bulk in (True, False):  # one vectorised main segment, or every document in the delta
        postings = Postings(min_merge=10 if bulk else 10**9)
        postings.upsert(list(range(len(documents))), documents)
        got = Bm25(postings, k1, b).dense_scores(queries)
        np.testing.assert_allclose(got, _bm25s_scores(documents, queries, k1, b), rtol=1e-5, atol=1e-6)


def test_stays_exact_through_upserts_removes_and_merges() -> None:
    documents, queries = _demo_documents(), _queries()
    rng = np.random.default_rng(3)
    postings = Postings(min_merge=16, merge_fraction=0.05)
    postings.upsert(list(range(len(documents))), documents)
    current: dict[int, list[str]] = dict(enumerate(documents))
    vocabulary = [*sorted({t for d in documents for t in d}), "brandnew", "zzzword"]
    merges = 0
    for step in range(300):
        doc = int(rng.integers(0, len(documents) + 20))
        if rng.random() < 0.3:
            postings.remove([doc])
            current.pop(doc, None)
        else:
            tokens = list(rng.choice(vocabulary, size=int(rng.integers(1, 12))))
            postings.upsert([doc], [tokens])
            current[doc] = tokens
        merges += not postings._delta
        if step % 60 == 59:
            live = sorted(current)
            got = Bm25(postings, 1.2, 0.75).dense_scores(queries)[:, live]
            expected = _bm25s_scores([current[d] for d in live], queries, 1.2, 0.75)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
            assert postings.n_live == len(live)
    assert merges > 0  # the delta was folded into main along the way


def test_overlay_scores_like_the_combined_documents() -> None:
    documents, queries = _demo_documents(), _queries()
    base = Postings(min_merge=10)
    base.upsert(list(range(len(documents))), documents)
    overlay = Postings(vocab=base.vocab)
    extra = {3: ["glow", "glass", "skin"], 10: ["beard", "gym"], len(documents): ["only", "overlay"]}
    overlay.upsert(list(extra), [documents[d] * 2 + words if d < len(documents) else words
                                 for d, words in extra.items()])
    combined = [documents[d] * 2 + extra[d] if d in extra else documents[d] * 2
                for d in range(len(documents))] + [extra[len(documents)]]
    got = Bm25(overlay, 1.2, 0.75, base=base, base_weight=2.0).dense_scores(queries)
    np.testing.assert_allclose(got, _bm25s_scores(combined, queries, 1.2, 0.75), rtol=1e-5, atol=1e-6)
    # A change to the base shows through the overlay's statistics at once.
    base.upsert([0], [["vitamin", "glow", "serum"]])
    combined[0] = ["vitamin", "glow", "serum"] * 2
    got = Bm25(overlay, 1.2, 0.75, base=base, base_weight=2.0).dense_scores(queries)
    np.testing.assert_allclose(got, _bm25s_scores(combined, queries, 1.2, 0.75), rtol=1e-5, atol=1e-6)


def test_top_skips_common_terms_only_when_that_is_exact() -> None:
    rng = np.random.default_rng(0)
    common = ["trendy", "party", "glow"]
    rare = [f"w{i}" for i in range(300)]
    documents = [list(rng.choice(common, 2)) + list(rng.choice(rare, 3)) for _ in range(3000)]
    queries = [["trendy", "w1", "w7"], ["trendy", "party"], ["w3"], ["glow", "glow", "w9", "w200"], ["nope"]]
    pruned = Bm25.build(documents)
    pruned.heavy_min = 100  # "trendy", "party", "glow" are heavy here
    allowed = rng.random(len(documents)) > 0.2
    exhaustive = pruned.scores(queries)
    exhaustive.data = stable(exhaustive.data)
    for mask in (None, allowed):
        expected = Candidates.from_sparse(exhaustive, 20, mask)
        got = pruned.top(queries, 20, mask)
        np.testing.assert_array_equal(got.rows, expected.rows)
        np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-6)
    assert (got.rows[4] == -1).all()


@pytest.mark.parametrize("build_chunk", [65_536, 7, 1])
def test_first_load_streams_a_generator_and_checks_the_count(build_chunk: int) -> None:
    documents = _demo_documents()
    ids = [2 * i + 1 for i in range(len(documents))]  # ascending, with gaps
    streamed = Postings(min_merge=10, build_chunk=build_chunk)  # the bulk path, in chunks
    streamed.upsert(ids, (d for d in documents))
    one_by_one = Postings(min_merge=10**9)  # the delta path
    one_by_one.upsert(ids, documents)
    queries = _queries()
    np.testing.assert_allclose(Bm25(streamed).dense_scores(queries), Bm25(one_by_one).dense_scores(queries),
                               atol=1e-6)
    for term in range(len(streamed.vocab)):  # postings ascending by document, as the delta's
        docs, tf = streamed.postings(term)
        assert (np.diff(docs) > 0).all()
        expected = one_by_one.postings(term)
        order = np.argsort(expected[0])
        np.testing.assert_array_equal(docs, expected[0][order])
        np.testing.assert_array_equal(tf, expected[1][order])
    ids = list(range(len(documents)))
    for bulk in (10, 10**9):
        with pytest.raises(ValueError, match="one token list"):
            Postings(min_merge=bulk).upsert([*ids, len(ids)], iter(documents))
        with pytest.raises(ValueError, match="one token list"):
            Postings(min_merge=bulk).upsert(ids[:-1], iter(documents))
