"""The project's demo data: realistic, deterministic, readable by every reader, and useful."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from consumer.catalog import Catalog
from consumer.demo import (
    BRANDS,
    demo_catalog,
    demo_pebbles,
    demo_products,
    demo_tags,
    malformed_events,
    write_demo_files,
)
from consumer.encoder import HashingEncoder
from consumer.history import History
from consumer.matcher import Engine
from consumer.settings import Settings
from consumer.text import FILLER_WORDS, normalize, words
from schemas.events import SCHEMA_VERSION, PebbleUploaded

ERROR_TYPES = {"too_large", "not_utf8", "not_json", "invalid", "unknown_version"}


def test_products_look_like_a_real_catalog() -> None:
    products = demo_products()
    assert 250 <= len(products) <= 350
    assert len({p.id for p in products}) == len(products)
    per_brand = Counter(p.brand_id for p in products)
    assert len(BRANDS) == 8 and per_brand.keys() == {b.id for b in BRANDS}
    assert min(per_brand.values()) >= 15
    brand_names = {b.id: b.name for b in BRANDS}
    for p in products:
        assert p.brand_name == brand_names.get(p.brand_id or "")
        assert p.cat_one and p.cat_two and p.cat_three and p.keywords
        if p.retail_price is not None and p.base_price is not None:
            assert 0 < p.retail_price <= p.base_price
    statuses = Counter(p.status for p in products)
    assert statuses["unpublished"] >= 3 and statuses["draft"] >= 3
    assert sum(p.is_published for p in products) >= 0.8 * len(products)
    assert sum(p.retail_price is None for p in products) >= 1


def test_products_carry_real_export_quirks() -> None:
    products = demo_products()
    names = [p.name for p in products]
    assert any(re.search(r"[^\x00-\x7f]", n) and any(c in n for c in "éèûï") for n in names)
    assert any("“" in n for n in names), "smart quotes"
    assert any(ord(c) > 0x2600 for n in names for c in n), "emoji"
    with_filler = sum(any(k in FILLER_WORDS for k in p.keywords) for p in products)
    assert with_filler > len(products) // 2
    # Near-duplicate listings: different ids, names equal once punctuation and case go.
    by_key = Counter("".join(words(n)) for n in names)
    assert sum(1 for c in by_key.values() if c > 1) >= 2


def test_everything_is_deterministic(tmp_path: Path) -> None:
    assert demo_products() == demo_products()
    assert demo_pebbles() == demo_pebbles() and demo_tags() == demo_tags()
    assert demo_catalog().fingerprint() == demo_catalog().fingerprint()
    first = {p.name: p.read_bytes() for p in write_demo_files(tmp_path / "a")}
    second = {p.name: p.read_bytes() for p in write_demo_files(tmp_path / "b")}
    assert first == second
    assert malformed_events() == malformed_events()


def test_demo_catalog_is_a_fresh_object_each_time() -> None:
    one, two = demo_catalog(), demo_catalog()
    one.delete(next(iter(one)).id)
    assert len(two) == len(one) + 1


def test_pebbles_and_tags_are_consistent() -> None:
    pebbles = demo_pebbles()
    tags = demo_tags()
    catalog = demo_catalog()
    assert 35 <= len(pebbles) <= 50 and len({p.id for p in pebbles}) == len(pebbles)
    assert len(tags) >= 0.8 * len(pebbles) and len(tags) < len(pebbles), "most, not all, tagged"
    brand_ids = {b.id for b in BRANDS}
    for pebble in pebbles:
        assert pebble.caption and pebble.hashtags and pebble.label.interests
        assert pebble.created_at is not None and pebble.created_at.tzinfo is not None
        assert set(pebble.brand_ids) <= brand_ids
        assert set(pebble.catalog_ids) <= set(tags.get(pebble.id, []))
    for product_ids in tags.values():
        assert product_ids and all(pid in catalog for pid in product_ids)
        assert len(product_ids) == len(set(product_ids))
    assert sum(bool(p.catalog_ids) for p in pebbles) >= 5
    assert sum(bool(p.brand_ids) for p in pebbles) >= 5
    captions = " ".join(p.caption for p in pebbles)
    assert "@" in captions and re.search(r"#[a-z]{12,}", captions), "mentions, run-together tags"
    assert any(ord(c) > 0x2600 for c in captions)


def test_demo_files_load_through_every_reader_to_the_same_catalog(tmp_path: Path) -> None:
    paths = {p.name: p for p in write_demo_files(tmp_path)}
    assert set(paths) == {"products.jsonl", "products.csv", "products.mongo.json", "posts.csv",
                          "tags.csv"}
    expected = demo_catalog().fingerprint()
    for name in ("products.jsonl", "products.csv", "products.mongo.json"):
        catalog, report = Catalog.from_file(paths[name])
        assert report.rejected == 0, report.summary()
        assert catalog.fingerprint() == expected, name
    mongo = json.loads(paths["products.mongo.json"].read_text(encoding="utf-8"))
    assert isinstance(mongo, list) and "$oid" in mongo[0]["_id"]
    assert "$date" in mongo[0]["created_at"]
    header = paths["products.csv"].read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("id,name,keywords,")
    history, reports = History.from_files(paths["posts.csv"], paths["tags.csv"])
    assert [r.rejected for r in reports] == [0, 0]
    assert len(history) == len(demo_tags())
    assert {i.post.id: list(i.tags) for i in history} == demo_tags()
    original = {p.id: p for p in demo_pebbles()}
    for item in history:
        assert item.post.caption == original[item.post.id].caption
        assert item.post.hashtags == original[item.post.id].hashtags


def _classify(raw: bytes, limit: int) -> str:
    """The order of checks ``malformed_events`` documents."""
    if len(raw) > limit:
        return "too_large"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8"
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return "not_json"
    if isinstance(data, dict) and data.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        return "unknown_version"
    try:
        PebbleUploaded.model_validate(data)
    except ValidationError:
        return "invalid"
    return "valid"


def test_malformed_events_are_bad_in_the_way_they_say() -> None:
    events = malformed_events()
    assert len(events) >= 20
    assert {kind for _, kind in events} == ERROR_TYPES
    limit = Settings().max_event_bytes
    assert limit == 64 * 1024
    for raw, kind in events:
        assert isinstance(raw, bytes)
        assert _classify(raw, limit) == kind, raw[:80]
    assert any(len(raw) > limit for raw, _ in events)
    assert any(len(raw) > 30_000 and kind != "too_large" for raw, kind in events), \
        "hostile but under the size limit"


@pytest.mark.parametrize("hint", ["hashtags", "label", "caption"])
def test_malformed_events_include_hostile_fields(hint: str) -> None:
    assert any(hint.encode() in raw for raw, kind in malformed_events() if kind == "invalid")


def test_the_demo_is_good_enough_to_demo() -> None:
    """Untrained (hashing encoder, no history), a tagged product still tops most demo posts."""
    engine = Engine(demo_catalog(), HashingEncoder(64))
    tags = demo_tags()
    tagged = [p for p in demo_pebbles() if set(tags.get(p.id, [])) - set(p.catalog_ids)]
    results = engine.suggest_batch(tagged, k=10)
    hits = sum(bool({r.product_id for r in s.recommendations} & set(tags[p.id]))
               for p, s in zip(tagged, results, strict=True))
    assert hits >= 0.6 * len(tagged)
    top = engine.suggest("Summer glow serum #summerglowup", k=3)
    assert any("glow" in normalize(r.name) for r in top)
