"""The catalog: stable rows, tombstones, snapshots, fingerprints, and reading product files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumer.catalog import Catalog, product_from_record, read_products
from schemas.events import ProductRecord


def _p(pid: str, name: str | None = None, **fields: object) -> ProductRecord:
    return ProductRecord.model_validate({"id": pid, "name": name or f"Product {pid}", **fields})


# -- the in-memory catalog -------------------------------------------------------------------
def test_upsert_appends_then_rewrites_in_place() -> None:
    catalog = Catalog([_p("a"), _p("b"), _p("c")])
    assert [catalog.row_of(i) for i in "abc"] == [0, 1, 2]
    version = catalog.version
    assert catalog.upsert(_p("b", "Renamed")) == 1
    assert catalog.n_rows == 3 and len(catalog) == 3
    renamed = catalog.get("b")
    assert renamed is not None and renamed.name == "Renamed"
    assert "renamed" in catalog.text(1)
    assert catalog.version > version
    assert catalog.upsert(_p("d")) == 3


def test_delete_leaves_a_tombstone_and_rows_do_not_move() -> None:
    catalog = Catalog([_p("a"), _p("b"), _p("c")])
    assert catalog.delete("b") == 1
    assert catalog.delete("b") is None and catalog.delete("never") is None
    assert catalog.n_rows == 3 and len(catalog) == 2
    assert catalog.product(1) is None and catalog.text(1) == ""
    assert catalog.row_of("c") == 2 and "b" not in catalog and "c" in catalog
    assert catalog.ids() == ["a", None, "c"]
    assert [p.id for p in catalog] == ["a", "c"]
    assert catalog.published.tolist() == [True, False, True]
    # The id comes back on a new row; the tombstone stays.
    assert catalog.upsert(_p("b")) == 3
    assert catalog.published.tolist() == [True, False, True, True]


def test_published_mask_follows_status() -> None:
    catalog = Catalog([_p("a"), _p("b", status="unpublished"), _p("c", status="Draft"),
                       _p("d", status="LIVE"), _p("e", status="active")])
    assert catalog.published.tolist() == [True, False, False, True, True]
    catalog.upsert(_p("b", status="publish"))
    assert catalog.published.tolist()[1] is True
    catalog.upsert(_p("a", status="unpublished"))
    assert catalog.published.tolist()[0] is False


def test_published_mask_grows_past_its_initial_capacity() -> None:
    catalog = Catalog(_p(f"p{i}", status="draft" if i % 7 == 0 else "published")
                      for i in range(100))
    assert catalog.published.shape == (100,)
    assert catalog.published.tolist() == [i % 7 != 0 for i in range(100)]


def test_take_changes_reports_changed_rows_once() -> None:
    catalog = Catalog([_p("a"), _p("b")])
    assert catalog.take_changes() == {0, 1}
    assert catalog.take_changes() == set()
    catalog.upsert(_p("b", "New name"))
    catalog.delete("a")
    assert catalog.take_changes() == {0, 1}


def test_fingerprint_ignores_order_and_tombstones_but_not_content() -> None:
    a, b, c = _p("a"), _p("b"), _p("c")
    assert Catalog([a, b, c]).fingerprint() == Catalog([c, a, b]).fingerprint()
    with_deleted = Catalog([a, b, c, _p("x")])
    with_deleted.delete("x")
    assert with_deleted.fingerprint() == Catalog([a, b, c]).fingerprint()
    priced = Catalog([a, b, _p("c", retail_price=10.0)])
    assert priced.fingerprint() != Catalog([a, b, c]).fingerprint()


def test_fingerprint_after_changes_equals_a_fresh_catalogs() -> None:
    catalog = Catalog([_p(str(i)) for i in range(40)])  # past the columns' first growth
    catalog.upsert(_p("3", name="Renamed"))
    catalog.upsert(_p("3", name="Renamed again"))
    catalog.delete("7")
    catalog.upsert(_p("7", name="Back"))
    catalog.delete("9")
    fresh = Catalog([*(_p(str(i)) for i in range(40) if i not in (3, 7, 9)),
                     _p("3", name="Renamed again"), _p("7", name="Back")])
    assert catalog.fingerprint() == fresh.fingerprint()
    assert Catalog().fingerprint() == "0" * 16


def test_copy_is_independent_and_names_come_without_models() -> None:
    catalog = Catalog([_p("a", name="Glow Serum", brand_name="Glowora"), _p("b", name="Tote")])
    copy = catalog.copy()
    copy.upsert(_p("c", name="Kurta"))
    copy.delete("a")
    assert [p.id for p in catalog] == ["a", "b"] and catalog.get("a") is not None
    assert [p.id for p in copy] == ["b", "c"]
    assert copy.fingerprint() == Catalog([_p("b", name="Tote"), _p("c", name="Kurta")]).fingerprint()
    assert catalog.fingerprint() != copy.fingerprint()
    assert list(catalog.names()) == [("Glow Serum", "Glowora"), ("Tote", None)]
    assert copy.text(0) == "" and catalog.text(0) == catalog.copy().text(0) != ""


def test_snapshot_round_trip_keeps_rows_and_tombstones(tmp_path: Path) -> None:
    catalog = Catalog([_p("a", keywords=["x"]), _p("b", status="draft"), _p("c"), _p("d")])
    catalog.delete("b")
    catalog.delete("d")
    catalog.save(tmp_path / "snap")
    manifest = json.loads((tmp_path / "snap" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["rows"] == 4 and manifest["products"] == 2
    assert manifest["fingerprint"] == catalog.fingerprint()

    loaded = Catalog.load(tmp_path / "snap")
    assert loaded.n_rows == 4 and len(loaded) == 2
    assert loaded.ids() == ["a", None, "c", None]
    assert loaded.texts() == catalog.texts()
    assert loaded.published.tolist() == catalog.published.tolist()
    assert loaded.fingerprint() == catalog.fingerprint()
    assert loaded.take_changes() == set()  # a fresh load has nothing pending
    assert loaded.upsert(_p("e")) == 4  # new ids still go after the tombstones


# -- from records ----------------------------------------------------------------------------
def test_product_from_record_maps_export_columns() -> None:
    product = product_from_record({
        "_id": "64f1", "title": "Serum", "brand": "br-1", "keywords": "['a', 'b']",
        "retail_price": {"value": 499, "currency": "INR"}, "base_price": "",
        "cat_one": "", "status": False, "unknown_column": "ignored",
    })
    assert product.id == "64f1" and product.name == "Serum" and product.brand_id == "br-1"
    assert product.keywords == ["a", "b"]
    assert product.retail_price == 499 and product.base_price is None
    assert product.cat_one is None
    assert product.status == "unpublished" and not product.is_published
    assert product_from_record({"product_id": "9", "name": "x", "status": ""}).status == "published"


def _write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_read_products_csv_names_file_line_and_field_and_keeps_good_rows(tmp_path: Path) -> None:
    huge = "y" * 1_200_000
    path = _write(tmp_path / "products.csv", (
        "id,name,keywords,retail_price\n"
        "p1,Good one,\"['a', 'b']\",10\n"
        "p2,Bad keywords,\"['unterminated\",10\n"
        ",Missing id,,10\n"
        "p4,Negative price,,-5\n"
        f"p5,{huge},,1\n"
        "p6,Too many cells,,1,extra\n"
        "p7,Not a price,,cheap\n"
        "p8,Good two,,\n"
    ))
    products, report = read_products(path)
    assert [p.id for p in products] == ["p1", "p8"]
    assert report.loaded == 2 and report.rejected == 6
    where = [(e.line, e.field) for e in report.errors]
    assert where == [(3, "keywords"), (4, "id"), (5, "retail_price"), (6, "name"), (7, None),
                     (8, "retail_price")]
    assert all(e.file == str(path) for e in report.errors)
    assert f"{path}:3: keywords: not a list literal" in report.summary()


def test_read_products_invalid_utf8_row_only(tmp_path: Path) -> None:
    path = _write(tmp_path / "products.csv",
                  b"id,name\np1,Caf\xc3\xa9 Tote\np2,Caf\xe9 Latin-1\np3,Plain\n")
    products, report = read_products(path)
    assert [p.name for p in products] == ["Café Tote", "Plain"]
    assert [(e.line, e.field) for e in report.errors] == [(3, "name")]


def test_read_products_jsonl_wrong_types_and_broken_lines(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "j1", "name": "Good", "keywords": ["a"]}),
        '{"id": "j2", "name": "Broken"',
        json.dumps({"id": 3, "name": "Numeric id"}),
        json.dumps({"id": "j4", "name": ["not", "a", "string"]}),
        json.dumps({"id": "j5", "name": "Keywords dict", "keywords": {"a": 1}}),
        json.dumps({"id": "j6", "name": "Nested junk", "cat_one": {"deep": [1, {"x": 2}]}}),
        json.dumps({"name": "No id"}),
        json.dumps({"id": "j8", "name": "Good too", "status": "draft"}),
    ]
    path = _write(tmp_path / "products.jsonl", "\n".join(lines) + "\n")
    products, report = read_products(path)
    assert [p.id for p in products] == ["j1", "j8"]
    assert [(e.line, e.field) for e in report.errors] == [
        (2, None), (3, "id"), (4, "name"), (5, "keywords"), (6, "cat_one"), (7, "id")]
    assert "broken JSON" in report.errors[0].message


def test_read_products_mongo_array_export(tmp_path: Path) -> None:
    docs = [
        {"_id": {"$oid": "m1"}, "name": "Mongo one", "status": True,
         "retail_price": {"value": {"$numberDecimal": "899.00"}, "currency": "INR"},
         "base_price": {"$numberDouble": "999.0"}, "created_at": {"$date": "2024-01-01T00:00:00Z"}},
        {"_id": {"$oid": "m2"}, "name": "Mongo two", "status": False,
         "updated_at": {"$date": {"$numberLong": "1700000000000"}}},
        {"_id": {"$oid": "m3"}},
    ]
    path = _write(tmp_path / "products.json", json.dumps(docs))
    products, report = read_products(path)
    assert [p.id for p in products] == ["m1", "m2"]
    assert products[0].retail_price == 899.0 and products[0].base_price == 999.0
    assert products[0].is_published and not products[1].is_published
    assert [(e.line, e.field) for e in report.errors] == [(3, "name")]


def test_read_products_caps_kept_errors_but_counts_all(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", "".join(f'{{"id": "x{i}"}}\n' for i in range(30)))
    products, report = read_products(path, max_errors=5)
    assert products == [] and report.rejected == 30 and len(report.errors) == 5


def test_catalog_from_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.csv", "id,name,status\na,A,published\nb,B,unpublished\n,C,\n")
    catalog, report = Catalog.from_file(path)
    assert len(catalog) == 2 and report.rejected == 1
    assert catalog.published.tolist() == [True, False]


@pytest.mark.parametrize("status", ["unpublished", "draft", "archived", "deleted"])
def test_not_published_statuses(status: str) -> None:
    assert not _p("a", status=status).is_published
