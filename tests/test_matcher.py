"""The engine end to end on the demo catalog, with the deterministic hashing encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumer.catalog import Catalog
from consumer.demo import demo_catalog, demo_pebbles, demo_tags
from consumer.encoder import HashingEncoder
from consumer.history import History
from consumer.matcher import Engine, EngineConfig, Recommendation, ScorerSpec
from schemas.events import PebbleUploaded, ProductChanged, ProductRecord, SuggestedProduct

GLOW = "Summer glow serum #summerglowup"


@pytest.fixture(scope="module")
def engine() -> Engine:
    """Read-only: tests that change the catalog build their own."""
    return Engine(demo_catalog(), HashingEncoder(64))


def _fresh(fake_encoder: HashingEncoder, **config: object) -> Engine:
    return Engine(demo_catalog(), fake_encoder, config=EngineConfig.model_validate(config))


def _ids(recs: list[Recommendation]) -> list[str]:
    return [r.product_id for r in recs]


def test_suggest_ranks_published_products_best_first(engine: Engine) -> None:
    recs = engine.suggest(GLOW, k=10)
    assert [r.rank for r in recs] == list(range(1, 11))
    assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)
    assert len(set(_ids(recs))) == 10
    for rec in recs:
        product = engine.catalog.get(rec.product_id)
        assert product is not None and product.is_published and product.name == rec.name
    top3 = " ".join(r.name for r in recs[:3]).lower()
    assert "glow" in top3 and ("serum" in top3 or "kit" in top3)


def test_unpublished_products_are_never_suggested(engine: Engine) -> None:
    hidden = [p for p in engine.catalog if not p.is_published]
    assert {p.status for p in hidden} >= {"unpublished", "draft"}
    for product in hidden:
        # Even the product's own name as the post text does not bring it back.
        assert product.id not in _ids(engine.suggest(product.name, k=40))


def test_products_already_tagged_are_excluded(engine: Engine) -> None:
    before = _ids(engine.suggest(GLOW, k=6))
    tagged = PebbleUploaded(id="p", caption=GLOW, catalog_ids=before[:2])
    after = _ids(engine.suggest(tagged, k=4))
    assert not set(before[:2]) & set(after)
    assert after == before[2:6]  # the rest keep their order


def test_apply_upsert_is_visible_and_delete_removes(fake_encoder: HashingEncoder) -> None:
    engine = _fresh(fake_encoder)
    text = "moonbeam zircon anklet"
    new = ProductRecord(id="new-1", name="Moonbeam Zircon Anklet", brand_id="br-zevar",
                        brand_name="Zevar & Co", keywords=["zircon", "anklet"])
    assert "new-1" not in _ids(engine.suggest(text, k=10))
    engine.apply([ProductChanged(op="upsert", product_id="new-1", product=new)])
    assert _ids(engine.suggest(text, k=3))[0] == "new-1"

    renamed = new.model_copy(update={"name": "Stardust Opal Toe Ring", "keywords": ["opal"]})
    engine.apply([ProductChanged(op="upsert", product_id="new-1", product=renamed)])
    assert _ids(engine.suggest("stardust opal toe ring", k=3))[0] == "new-1"
    assert engine.catalog.row_of("new-1") == engine.catalog.n_rows - 1  # rewritten in place

    engine.apply([ProductChanged(op="delete", product_id="new-1")])
    assert "new-1" not in _ids(engine.suggest("stardust opal toe ring", k=50))


def test_apply_unpublish_and_delete_of_existing_products(fake_encoder: HashingEncoder) -> None:
    engine = _fresh(fake_encoder)
    first, second = _ids(engine.suggest(GLOW, k=2))
    product = engine.catalog.get(first)
    assert product is not None
    engine.apply([
        ProductChanged(op="upsert", product_id=first,
                       product=product.model_copy(update={"status": "unpublished"})),
        ProductChanged(op="delete", product_id=second),
    ])
    after = _ids(engine.suggest(GLOW, k=50))
    assert first not in after and second not in after


def test_brand_filter_restricts_to_the_posts_brands(fake_encoder: HashingEncoder) -> None:
    post = PebbleUploaded(id="p", caption="glow serum for summer skin", brand_ids=["br-tresse"])
    plain = _fresh(fake_encoder)
    assert "br-glowora" in _brands(plain, plain.suggest(post, k=10))
    filtering = _fresh(fake_encoder, brand_filter=True)
    filtered = filtering.suggest(post, k=10)
    assert filtered, "the brand has products: some come back"
    assert _brands(filtering, filtered) == {"br-tresse"}
    # A post without brand ids is not filtered.
    assert "br-glowora" in _brands(filtering, filtering.suggest(GLOW, k=10))


def _brands(engine: Engine, recs: list[Recommendation]) -> set[str | None]:
    products = [engine.catalog.get(r.product_id) for r in recs]
    return {p.brand_id for p in products if p is not None}


def test_reasons_are_present_and_readable(engine: Engine) -> None:
    top = engine.suggest(GLOW, k=1)[0]
    kinds = {r.kind for r in top.reasons}
    assert "words" in kinds and "semantic" in kinds
    words = next(r for r in top.reasons if r.kind == "words")
    assert "glow" in words.post_terms
    assert words.text.startswith("post and product share ") and "glow" in words.text
    text = str(top)
    assert text.startswith(f"1. {top.name} [{top.product_id}]") and words.text in text
    event = top.to_event()
    assert isinstance(event, SuggestedProduct) and event.rank == 1
    assert SuggestedProduct.model_validate_json(event.model_dump_json()) == event


def test_suggest_batch_keeps_order_ids_and_timings(engine: Engine) -> None:
    posts = demo_pebbles()[:5]
    results = engine.suggest_batch([*posts, "plain text post"], k=3)
    assert [r.pebble_id for r in results] == [p.id for p in posts] + ["text-5"]
    again = engine.suggest_batch([*posts, "plain text post"], k=3)
    for result, repeat, post in zip(results, again, posts, strict=False):
        assert result.recommendations == repeat.recommendations  # deterministic
        alone = engine.suggest(post, k=3)
        # Alone or in a batch, the same post ranks alike; BLAS rounding differs by batch size
        # (last-ulp cosines), which can only swap near-ties, so scores are compared loosely.
        assert result.recommendations[0].product_id == alone[0].product_id
        assert [r.score for r in result.recommendations] == \
            pytest.approx([r.score for r in alone], abs=1e-3)
        assert result.encode_ms >= 0 and result.match_ms >= 0
    assert engine.suggest_batch([], k=3) == []
    assert engine.rank_ids(posts, k=3) == [[r.product_id for r in s.recommendations]
                                           for s in engine.suggest_batch(posts, k=3)]


def test_config_errors_name_the_problem(fake_encoder: HashingEncoder) -> None:
    catalog = Catalog(list(demo_catalog())[:20])
    with pytest.raises(ValueError, match="unknown scorer 'nope'"):
        Engine(catalog, fake_encoder, config=EngineConfig(scorers=[ScorerSpec(name="nope")]))
    with pytest.raises(ValueError, match="two scorers named 'bm25'"):
        Engine(catalog, fake_encoder,
               config=EngineConfig(scorers=[ScorerSpec(name="bm25"), ScorerSpec(name="bm25")]))
    with pytest.raises(ValueError, match="unknown fusion 'magic'"):
        Engine(catalog, fake_encoder, config=EngineConfig(fusion={"name": "magic"}))


def test_save_load_round_trip_gives_identical_top_10(fake_encoder: HashingEncoder,
                                                     tmp_path: Path) -> None:
    history = History.join(demo_pebbles(), demo_tags())
    config = EngineConfig(
        version="test-1",
        scorers=[ScorerSpec(name="dense"), ScorerSpec(name="bm25"),
                 ScorerSpec(name="neighbors", key="memory", params={"neighbors": 5})],
        fusion={"name": "rrf", "k": 30.0, "weights": {"memory": 2.0}},
    )
    engine = Engine(demo_catalog(), fake_encoder, history, config)
    engine.save(tmp_path / "model", manifest={"note": "unit test"})
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["version"] == "test-1" and manifest["note"] == "unit test"
    assert manifest["catalog_fingerprint"] == engine.catalog.fingerprint()
    assert manifest["history_posts"] == len(history)

    loaded = Engine.load(tmp_path / "model", demo_catalog())
    assert loaded.version == "test-1" and len(loaded.history) == len(history)
    assert list(loaded.scorers) == ["dense", "bm25", "memory"]
    assert loaded.fusion.config() == engine.fusion.config()
    assert loaded.cache.misses == 0, "catalog and history vectors come from the saved cache"
    posts = [*demo_pebbles()[::4], PebbleUploaded(id="x", caption=GLOW)]
    for before, after in zip(engine.suggest_batch(posts, k=10), loaded.suggest_batch(posts, k=10),
                             strict=True):
        assert [(r.product_id, r.score) for r in before.recommendations] == \
            [(r.product_id, r.score) for r in after.recommendations]


def test_hnsw_snapshot_is_reused_and_only_changed_rows_are_reindexed(
    fake_encoder: HashingEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    indexed: list[int] = []
    original = Engine._index_rows

    def counting(self: Engine, rows: object) -> None:
        indexed.append(len(rows))  # type: ignore[arg-type]
        original(self, rows)  # type: ignore[arg-type]

    monkeypatch.setattr(Engine, "_index_rows", counting)
    config = EngineConfig.model_validate({"index": "hnsw"})
    first = Engine.build(demo_catalog(), fake_encoder, config=config, cache_dir=tmp_path)
    rows = first.catalog.n_rows
    assert indexed == [rows]
    snapshots = list(tmp_path.glob("*.index-hnsw"))
    assert len(snapshots) == 1

    second = Engine.build(demo_catalog(), fake_encoder, config=config, cache_dir=tmp_path)
    assert indexed == [rows, 0]  # nothing changed: the graph came from the snapshot
    assert _ids(second.suggest(GLOW, k=10)) == _ids(first.suggest(GLOW, k=10))

    # One product renamed, one deleted: only those rows are re-indexed, and the answers
    # equal those of an engine built from scratch on the changed catalog.
    catalog = demo_catalog()
    renamed = catalog.product(0)
    assert renamed is not None
    catalog.upsert(renamed.model_copy(update={"name": "Summer glow serum deluxe"}))
    gone = catalog.product_id(1)
    assert gone is not None
    catalog.delete(gone)
    catalog.take_changes()
    third = Engine.build(catalog, fake_encoder, config=config, cache_dir=tmp_path)
    assert indexed[-1] == 2
    scratch = Engine.build(catalog, fake_encoder, config=config)  # no cache dir: no snapshot
    assert _ids(third.suggest(GLOW, k=10)) == _ids(scratch.suggest(GLOW, k=10))
    assert gone not in _ids(third.suggest(GLOW, k=50))


def test_index_snapshot_goes_to_index_dir_when_given(fake_encoder: HashingEncoder, tmp_path: Path) -> None:
    # A worker's model folder may be read-only: snapshots then live in its writable cache dir.
    config = EngineConfig.model_validate({"index": "hnsw"})
    Engine(demo_catalog(), fake_encoder, config=config, index_dir=tmp_path / "index")
    assert [p.name for p in (tmp_path / "index").iterdir()] == [f"{fake_encoder.cache_key()}.index-hnsw"]


def test_exact_index_keeps_no_snapshot(fake_encoder: HashingEncoder, tmp_path: Path) -> None:
    Engine.build(demo_catalog(), fake_encoder, config=EngineConfig.model_validate({"index": "exact"}),
                 cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.index-*"))
