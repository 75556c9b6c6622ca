"""Scorers: one contract over every registered scorer, then each signal's own behaviour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from consumer.catalog import Catalog
from consumer.demo import demo_catalog, demo_pebbles, demo_tags
from consumer.encoder import HashingEncoder
from consumer.history import History, TaggedPost
from consumer.matcher import Engine, EngineConfig, ScorerSpec
from consumer.scorers import SCORERS
from consumer.scorers.base import QueryBatch, items_matrix, propagate
from consumer.scorers.brand import compact_fields, split_into
from schemas.events import PebbleUploaded, ProductChanged, ProductRecord, Reason

K = 15


@pytest.fixture(scope="module")
def engine() -> Engine:
    """The demo catalog and history, with every registered scorer switched on."""
    config = EngineConfig(scorers=[ScorerSpec(name=n) for n in SCORERS.names()])
    history = History.join(demo_pebbles(), demo_tags())
    return Engine(demo_catalog(), HashingEncoder(64), history, config)


@pytest.fixture(scope="module")
def batch(engine: Engine) -> QueryBatch:
    posts = [*demo_pebbles()[:8], PebbleUploaded(id="unknown-words", caption="qwzx vbnm plokij")]
    return engine.prepare(posts)


@pytest.mark.parametrize("name", SCORERS.names())
def test_scorer_contract(engine: Engine, batch: QueryBatch, name: str) -> None:
    scorer = engine.scorers[name]
    assert scorer.name == name
    allowed = engine.allowed() & (np.random.default_rng(5).random(engine.catalog.n_rows) > 0.3)
    got = scorer.score(batch, K, allowed)
    assert got.rows.shape == (len(batch), K) and got.scores.shape == (len(batch), K)
    returned_any = False
    for q in range(len(batch)):
        valid = got.rows[q] >= 0
        n = int(valid.sum())
        assert valid[:n].all() and not valid[n:].any(), "padding only after the candidates"
        rows = got.rows[q, :n].tolist()
        assert len(set(rows)) == n
        assert all(allowed[r] for r in rows), "only allowed rows"
        scores = got.scores[q, :n]
        assert np.isfinite(scores).all()
        assert (np.diff(scores) <= 1e-6).all(), "best first"
        returned_any |= n > 0
        for row, score in got.query(q)[:3]:
            reason = scorer.explain(batch, q, row, score)
            assert reason is None or (isinstance(reason, Reason) and reason.text.strip())
            # The engine shows one reason per kind and skips scorers of a kind it already has.
            assert reason is None or reason.kind == scorer.reason_kind
    assert returned_any
    again = scorer.score(batch, K, allowed)
    np.testing.assert_array_equal(again.rows, got.rows)
    np.testing.assert_array_equal(again.scores, got.scores)
    nothing = scorer.score(batch, K, np.zeros(engine.catalog.n_rows, dtype=bool))
    assert (nothing.rows == -1).all()


def test_every_scorer_forgets_deleted_products() -> None:
    config = EngineConfig(scorers=[ScorerSpec(name=n) for n in SCORERS.names()])
    engine = Engine(demo_catalog(), HashingEncoder(64), History.join(demo_pebbles(), demo_tags()),
                    config)
    batch = engine.prepare(demo_pebbles()[:4])
    top = {int(r) for s in engine.scorers.values()
           for r in s.score(batch, 3, engine.allowed()).rows.ravel() if r >= 0}
    ids = [engine.catalog.ids()[r] for r in top]
    engine.apply([ProductChanged(op="delete", product_id=pid) for pid in ids if pid])
    for name, scorer in engine.scorers.items():
        after = scorer.score(batch, K, engine.allowed())
        assert top.isdisjoint(after.rows.ravel().tolist()), name


def test_bm25_matches_rare_words_and_explains_them(engine: Engine) -> None:
    batch = engine.prepare([PebbleUploaded(id="q", caption="kolhapuri chappals for a festive day"),
                            PebbleUploaded(id="none", caption="zzqx")])
    got = engine.scorers["bm25"].score(batch, 10, engine.allowed())
    kolhapuri = {r for r in range(engine.catalog.n_rows) if engine.catalog.published[r]
                 and "Kolhapuri" in engine.catalog.text(r).title()}
    assert len(kolhapuri) >= 2
    # The rare words outrank "day" and "festive", which many products share.
    assert {r for r, _ in got.query(0)[: len(kolhapuri)]} == kolhapuri
    row, score = got.query(0)[0]
    reason = engine.scorers["bm25"].explain(batch, 0, row, score)
    assert reason is not None and reason.kind == "words"
    assert "kolhapuri" in reason.post_terms and "kolhapuri" in reason.text
    assert got.query(1) == []


def test_popularity_is_the_tag_count_prior(engine: Engine) -> None:
    counts: dict[str, int] = {}
    for tags in demo_tags().values():
        for pid in tags:
            counts[pid] = counts.get(pid, 0) + 1
    batch = engine.prepare(demo_pebbles()[:3])
    allowed = engine.allowed()
    got = engine.scorers["popularity"].score(batch, 5, allowed)
    assert got.query(0) == got.query(1) == got.query(2)  # the same list for every post
    best_row, best_score = got.query(0)[0]
    best_id = engine.catalog.ids()[best_row]
    assert best_id is not None
    published = {p.id for p in engine.catalog if p.is_published}
    published_max = max(c for pid, c in counts.items() if pid in published)
    assert counts[best_id] == published_max
    assert best_score == pytest.approx(np.log1p(published_max))
    reason = engine.scorers["popularity"].explain(batch, 0, best_row, best_score)
    assert reason is not None and reason.text == f"tagged {published_max} times before"
    assert engine.scorers["popularity"].explain(batch, 0, 0, float(np.log1p(1))) == \
        Reason(kind="popular", text="tagged 1 time before")


def test_neighbors_votes_for_what_similar_posts_tagged(engine: Engine) -> None:
    past = next(i for i in engine.history if len(i.tags) >= 2)
    batch = engine.prepare([past.post.model_copy(update={"id": "again", "catalog_ids": []})])
    got = engine.scorers["neighbors"].score(batch, 10, engine.allowed())
    rows = [r for r, _ in got.query(0)]
    tagged = {engine.catalog.row_of(pid) for pid in past.tags}
    assert tagged <= set(rows[: len(tagged) + 2])
    reason = engine.scorers["neighbors"].explain(batch, 0, rows[0], got.query(0)[0][1])
    assert reason is not None and reason.kind == "similar_posts"
    assert reason.text.startswith("tagged on ") and "past post" in reason.text


def test_dense_finds_a_products_own_text(engine: Engine) -> None:
    row = next(r for r in range(engine.catalog.n_rows) if engine.catalog.published[r])
    batch = engine.prepare([PebbleUploaded(id="q", caption=engine.catalog.text(row))])
    batch = QueryBatch(batch.pebbles, batch.texts, batch.tokens, batch.handles,
                       engine.encoder.encode([engine.catalog.text(row)]))
    got = engine.scorers["dense"].score(batch, 3, engine.allowed())
    assert got.query(0)[0][0] == row
    assert got.query(0)[0][1] == pytest.approx(1.0, abs=1e-5)


def test_items_matrix_and_propagate_by_hand() -> None:
    # Past post 0 tagged rows 0 and 2, post 1 tagged row 1, post 2 tagged row 2.
    items = items_matrix([np.array([0, 2]), np.array([1]), np.array([2])], n_rows=4)
    assert items.toarray().tolist() == [[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
    similarity = np.array([[0.8, 0.4, -0.1]], dtype=np.float32)
    # Two nearest posts: 0 (0.8) and 1 (0.4). Weight (sim / best) ** 2: post 0 → 1, post 1 → 0.25.
    # Votes: row 0 ← 1, row 1 ← 0.25, row 2 ← 1 (post 2 is not among the two).
    np.testing.assert_allclose(propagate(similarity, items, neighbors=2, power=2.0).toarray(),
                               [[1.0, 0.25, 1.0, 0.0]])
    # With all three, post 2's negative similarity counts as zero: the same votes.
    np.testing.assert_allclose(propagate(similarity, items, neighbors=3, power=2.0).toarray(),
                               [[1.0, 0.25, 1.0, 0.0]])
    # Power 1: post 1 weighs 0.5.
    np.testing.assert_allclose(propagate(similarity, items, neighbors=2, power=1.0).toarray(),
                               [[1.0, 0.5, 1.0, 0.0]])
    assert propagate(np.zeros((2, 0)), items_matrix([], 4), 5, 2.0).shape == (2, 4)


def test_every_scorer_after_changes_equals_a_fresh_build(tmp_path: Path) -> None:
    """Catalog changes are applied in place (no refit), and leave every scorer exactly where
    a build from scratch over the same catalog would be."""
    config = EngineConfig(scorers=[ScorerSpec(name=n) for n in SCORERS.names()]
                          + [ScorerSpec(name="profile", key="profile_dense", params={"similarity": "dense"}),
                             ScorerSpec(name="neighbors", key="knn_bm25", params={"similarity": "bm25"})])
    history = History.join(demo_pebbles(), demo_tags())
    live = Engine(demo_catalog(), HashingEncoder(64), history, config)
    catalog = live.catalog
    tagged = next(pid for tags in demo_tags().values() for pid in tags if pid in catalog)
    first = catalog.product(0)
    assert first is not None
    renamed = catalog.get(tagged)
    assert renamed is not None
    live.apply([
        ProductChanged(op="upsert", product_id=renamed.id,
                       product=renamed.model_copy(update={"name": "Kolhapuri glow serum deluxe"})),
        ProductChanged(op="upsert", product_id="new-1",
                       product=first.model_copy(update={"id": "new-1", "name": "Zyxw beard balm",
                                                        "brand_id": first.brand_id})),
        ProductChanged(op="delete", product_id=str(catalog.product(3).id)),  # type: ignore[union-attr]
    ])
    catalog.save(tmp_path / "snapshot")
    fresh = Engine(Catalog.load(tmp_path / "snapshot"), HashingEncoder(64), history, config)
    posts = [*demo_pebbles()[:12], PebbleUploaded(id="q", caption="zyxw beard balm, kolhapuri glow #zyxw")]
    live_batch, fresh_batch = live.prepare(posts), fresh.prepare(posts)
    for name in live.scorers:
        got = live.scorers[name].score(live_batch, K, live.allowed())
        expected = fresh.scorers[name].score(fresh_batch, K, fresh.allowed())
        np.testing.assert_array_equal(got.rows, expected.rows, err_msg=name)
        np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-5, err_msg=name)


def test_brand_handle_matches_the_run_together_brand_name() -> None:
    config = EngineConfig(scorers=[ScorerSpec(name="brand", params={"memory": False})])
    engine = Engine(demo_catalog(), HashingEncoder(64), History(), config)
    catalog = engine.catalog
    kinetiq = {r for r in range(catalog.n_rows)
               if (p := catalog.product(r)) is not None and p.brand_name == "Kinetiq Active"}
    batch = engine.prepare([PebbleUploaded(id="a", caption="leg day #KinetiqActive"),
                            PebbleUploaded(id="b", caption="nothing here #qqqzzzvvv"),
                            PebbleUploaded(id="c", caption="#kin is too short to say anything")])
    got = engine.scorers["brand"].score(batch, 100, np.ones(catalog.n_rows, dtype=bool))
    rows = {r for r, _ in got.query(0)}
    assert rows == kinetiq
    # Every match weighs the handle's IDF: ln(rows / products holding it).
    idf = np.log(catalog.n_rows / len(kinetiq))
    assert [s for _, s in got.query(0)] == pytest.approx([idf] * len(rows), abs=1e-5)
    reason = engine.scorers["brand"].explain(batch, 0, min(rows), got.query(0)[0][1])
    assert reason == Reason(kind="brand", text="#kinetiqactive is in the product's name, brand or keywords",
                            post_terms=["#kinetiqactive"])
    assert got.query(1) == [] and got.query(2) == []


def test_split_into_uses_the_fewest_catalog_words() -> None:
    vocabulary = {"the", "man", "company", "aakriti", "aa", "kriti", "them", "an"}
    assert split_into("themancompany", vocabulary) == ("the", "man", "company")
    assert split_into("aakriti", vocabulary) == ("aakriti",)  # one word beats aa + kriti
    assert split_into("manx", vocabulary) is None  # "x" is no catalog word
    assert split_into("", vocabulary) == ()


def test_compact_fields_runs_each_field_together() -> None:
    text = "the man co. beard-oil | men's_care, beard oil"
    assert compact_fields(text) == "themancobeardoil|menscare|beardoil"
    # Non-ASCII text takes the regex path: letters of any script stay, other symbols go.
    assert compact_fields("crème brûlée ✨ | glow, skin") == "crèmebrûlée|glow|skin"


def test_cotag_passes_a_seed_products_score_to_its_tag_partners() -> None:
    # Three past posts: A+B, A+B, A+C. Co-tag cosine: A–B = 2/√(3·2), A–C = 1/√(3·1).
    catalog = Catalog([
        ProductRecord(id="A", name="alpha kurta"), ProductRecord(id="B", name="beta dupatta"),
        ProductRecord(id="C", name="gamma juttis"), ProductRecord(id="D", name="delta saree"),
    ])
    history = History([
        TaggedPost(post=PebbleUploaded(id=f"p{i}", caption=f"look {i}"), tags=tags)
        for i, tags in enumerate([("A", "B"), ("A", "B"), ("A", "C")])
    ])
    config = EngineConfig(scorers=[ScorerSpec(name="cotag", params={"seed": "bm25", "seeds": 1})])
    engine = Engine(catalog, HashingEncoder(64), history, config)
    scorer = engine.scorers["cotag"]
    batch = engine.prepare([PebbleUploaded(id="q", caption="alpha kurta")])
    got = scorer.score(batch, 10, np.ones(4, dtype=bool))
    # The seed (A, relative score 1) votes for its partners, never for itself.
    rows, scores = zip(*got.query(0), strict=True)
    assert rows == (1, 2)
    assert scores == pytest.approx((2 / np.sqrt(6), 1 / np.sqrt(3)), abs=1e-5)
    reason = scorer.explain(batch, 0, 1, got.query(0)[0][1])
    assert reason == Reason(kind="co_tagged", text="often tagged together with “alpha kurta”")
    with pytest.raises(ValueError, match="cannot seed itself"):
        type(scorer)(seed="cotag")
