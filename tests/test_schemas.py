"""Event schemas: required fields, limits, versions, and JSON Schema files that cannot go stale."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.events import (
    SCHEMA_VERSION,
    PebbleUploaded,
    ProductChanged,
    ProductRecord,
    ProductSuggestions,
    RejectedEvent,
    Timings,
)
from schemas.generate import EVENTS, SCHEMA_DIR, main, render


def _pebble(**fields: Any) -> PebbleUploaded:
    return PebbleUploaded.model_validate({"id": "p1", "caption": "glow", **fields})


def _field_of(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return ".".join(str(p) for p in exc.value.errors()[0]["loc"])


def test_minimal_pebble_and_defaults() -> None:
    pebble = _pebble()
    assert pebble.schema_version == SCHEMA_VERSION == 1
    assert pebble.hashtags == [] and pebble.catalog_ids == [] and pebble.label.interests == []
    assert pebble.created_at is None


def test_pebble_requires_an_id() -> None:
    with pytest.raises(ValidationError) as info:
        PebbleUploaded.model_validate({"caption": "glow"})
    assert _field_of(info) == "id"
    for bad in ("", "   ", "x" * 129):
        with pytest.raises(ValidationError):
            _pebble(id=bad)
    with pytest.raises(ValidationError):
        _pebble(id=42)  # not coerced from a number


@pytest.mark.parametrize(
    "fields",
    [{"caption": "ok"}, {"caption": "", "hashtags": ["glow"]},
     {"caption": "", "label": {"interests": ["skincare"]}}],
)
def test_any_one_text_field_is_enough(fields: dict[str, Any]) -> None:
    assert PebbleUploaded.model_validate({"id": "p", **fields}).id == "p"


@pytest.mark.parametrize(
    "fields",
    [{}, {"caption": "  \n "}, {"caption": "", "hashtags": [], "label": {"interests": []}},
     {"hashtags": "# ##"}],
)
def test_no_text_at_all_is_rejected(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="nothing to match"):
        PebbleUploaded.model_validate({"id": "p", **fields})


def test_hashtags_string_from_exports_is_split() -> None:
    assert _pebble(hashtags="#summer  glowup #ootd #").hashtags == ["summer", "glowup", "ootd"]
    assert _pebble(hashtags=["already", "a", "list"]).hashtags == ["already", "a", "list"]


@pytest.mark.parametrize("version", [0, 2, "2", "v1", None, 1.5])
def test_unknown_schema_version_is_rejected(version: object) -> None:
    with pytest.raises(ValidationError) as info:
        _pebble(schema_version=version)
    assert _field_of(info) == "schema_version"


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"caption": "x" * 8193}, "caption"),
        ({"hashtags": [f"t{i}" for i in range(65)]}, "hashtags"),
        ({"hashtags": ["x" * 129]}, "hashtags.0"),
        ({"catalog_ids": ["p"] * 257}, "catalog_ids"),
        ({"brand_ids": ["b"] * 33}, "brand_ids"),
        ({"label": {"interests": ["i"] * 65}}, "label.interests"),
        ({"label": {"genders": ["g" * 257]}}, "label.genders.0"),
        ({"created_at": "yesterday-ish"}, "created_at"),
        ({"hashtags": [{"nested": "junk"}]}, "hashtags.0"),
    ],
)
def test_field_limits_name_the_field(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as info:
        _pebble(**fields)
    assert _field_of(info) == where


def test_limits_are_inclusive() -> None:
    pebble = _pebble(caption="x" * 8192, hashtags=["t" * 128] * 64, id="i" * 128)
    assert len(pebble.caption) == 8192 and len(pebble.hashtags) == 64


def test_unknown_fields_ignored_strings_stripped_events_frozen() -> None:
    pebble = _pebble(id="  p9 ", producer_only_field={"x": 1})
    assert pebble.id == "p9" and not hasattr(pebble, "producer_only_field")
    with pytest.raises(ValidationError):
        pebble.id = "other"


def test_product_record_status_and_prices() -> None:
    assert ProductRecord(id="a", name="A").is_published
    assert ProductRecord(id="a", name="A", status="Live").is_published
    assert not ProductRecord(id="a", name="A", status="unpublished").is_published
    with pytest.raises(ValidationError):
        ProductRecord(id="a", name="A", retail_price=-1)
    with pytest.raises(ValidationError):
        ProductRecord.model_validate({"id": "a", "name": ""})


def test_product_changed_upsert_needs_a_matching_product() -> None:
    product = ProductRecord(id="a", name="A")
    assert ProductChanged(op="upsert", product_id="a", product=product).product == product
    assert ProductChanged(op="delete", product_id="a").product is None
    with pytest.raises(ValidationError, match="needs a product"):
        ProductChanged(op="upsert", product_id="a")
    with pytest.raises(ValidationError, match="differs"):
        ProductChanged(op="upsert", product_id="b", product=product)
    with pytest.raises(ValidationError):
        ProductChanged.model_validate({"op": "rename", "product_id": "a"})


def test_suggestions_key_and_rejected_event_types() -> None:
    assert ProductSuggestions.key_for("p1", "v3") == "p1:v3"
    event = ProductSuggestions(pebble_id="p1", idempotency_key="p1:v3", suggestions=[],
                               model_version="v3", catalog_version="c",
                               timings=Timings(encode_ms=1, match_ms=2, total_ms=3))
    assert json.loads(event.model_dump_json())["schema_version"] == 1
    common = {"source_topic": "t", "partition": 0, "offset": 5, "original_b64": "", "reason": "r"}
    for kind in ("too_large", "not_utf8", "not_json", "invalid", "unknown_version",
                 "processing_failed"):
        assert RejectedEvent(error_type=kind, **common).error_type == kind  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        RejectedEvent(error_type="made_up", **common)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_committed_json_schema_matches_the_models(name: str) -> None:
    committed = (SCHEMA_DIR / f"{name}.v1.json").read_text(encoding="utf-8")
    assert committed == render(EVENTS[name]), f"run `python -m schemas.generate` ({name})"


def test_generate_writes_one_file_per_event(tmp_path: Path) -> None:
    written = main(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{n}.v1.json" for n in EVENTS)
    schema = json.loads((tmp_path / "pebble_uploaded.v1.json").read_text(encoding="utf-8"))
    assert schema["required"] == ["id"]
    assert schema["properties"]["caption"]["maxLength"] == 8192
