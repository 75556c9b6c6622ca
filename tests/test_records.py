"""Readers of platform exports: CSV, JSON Lines, JSON arrays and MongoDB extended JSON."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.records import (
    ReadReport,
    RecordError,
    parse_list,
    read_records,
    unwrap_mongo,
)


def _records(path: Path) -> list[tuple[int, object]]:
    return list(read_records(path))


def test_unwrap_mongo_extended_json() -> None:
    doc = {
        "_id": {"$oid": "64f1c0a2e4b0a1b2c3d4e5f6"},
        "created": {"$date": "2024-01-02T03:04:05Z"},
        "updated": {"$date": {"$numberLong": "1704164645000"}},
        "stock": {"$numberInt": "7"},
        "price": {"$numberDecimal": "12.50"},
        "ratio": {"$numberDouble": "0.25"},
        "tags": [{"$oid": "a"}, "plain"],
        "nested": {"inner": {"$numberLong": "3"}},
        "two_keys": {"$oid": "x", "other": 1},
    }
    assert unwrap_mongo(doc) == {
        "_id": "64f1c0a2e4b0a1b2c3d4e5f6",
        "created": "2024-01-02T03:04:05Z",
        "updated": 1704164645000,
        "stock": 7,
        "price": 12.5,
        "ratio": 0.25,
        "tags": ["a", "plain"],
        "nested": {"inner": 3},
        "two_keys": {"$oid": "x", "other": 1},  # not a wrapper: left as is
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, []),
        ("", []),
        ("   ", []),
        (["a", "b"], ["a", "b"]),
        ("['vitamin c', 'serum']", ["vitamin c", "serum"]),
        ('["json", "list"]', ["json", "list"]),
        ("[]", []),
        ("just one keyword", ["just one keyword"]),
    ],
)
def test_parse_list_accepts_the_export_forms(value: object, expected: list[str]) -> None:
    assert parse_list(value) == expected


@pytest.mark.parametrize(
    "value", ["['unterminated", "[1, 2", "[__import__('os')]", "[x for x in y]"])
def test_parse_list_refuses_bad_literals_without_evaluating_them(value: str) -> None:
    with pytest.raises(ValueError, match="not a list literal"):
        parse_list(value)


def test_parse_list_refuses_other_types() -> None:
    with pytest.raises(ValueError, match="expected a list, got int"):
        parse_list(42)


def test_csv_records_and_extra_cells(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text('id,name\n1,one\n2,two,surplus\n3,"multi\nline"\n4,four\n', encoding="utf-8")
    got = _records(path)
    assert got[0] == (2, {"id": "1", "name": "one"})
    line, error = got[1]
    assert isinstance(error, RecordError) and line == 3
    assert "more cells than columns" in str(error) and str(path) in str(error)
    assert got[2][1] == {"id": "3", "name": "multi\nline"}
    assert got[3] == (6, {"id": "4", "name": "four"})  # lines are counted through the quoted break


def test_csv_invalid_utf8_rejects_only_its_row(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    good = b"".join(b"g%d,good %d\n" % (i, i) for i in range(300))  # past one read buffer
    path.write_bytes(b"id,name\n" + good + b"bad,caf\xe9\n" + good.replace(b"g", b"h"))
    got = _records(path)
    errors = [r for _, r in got if isinstance(r, RecordError)]
    rows = [r for _, r in got if isinstance(r, dict)]
    assert len(rows) == 600
    assert len(errors) == 1
    assert errors[0].line == 302 and errors[0].field == "name"
    assert "UTF-8" in errors[0].message


def test_csv_huge_field_is_read_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    path.write_text("id,name\n1," + "x" * 2_000_000 + "\n2,after\n", encoding="utf-8")
    got = _records(path)
    assert len(got) == 2
    assert got[1] == (3, {"id": "2", "name": "after"})


def test_json_lines_with_broken_lines(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(
        b'{"id": "a"}\n'
        b"\n"  # blank lines are skipped, not errors
        b'{"id": "b", broken\n'
        b'["not", "an", "object"]\n'
        b'{"id": "caf\xe9"}\n'
        b'{"_id": {"$oid": "c"}}\n'
    )
    got = _records(path)
    assert got[0] == (1, {"id": "a"})
    assert [(line, type(r).__name__) for line, r in got[1:4]] == [
        (3, "RecordError"), (4, "RecordError"), (5, "RecordError")]
    messages = [r.message for _, r in got[1:4] if isinstance(r, RecordError)]
    assert "broken JSON" in messages[0]
    assert "not a JSON object" in messages[1]
    assert "invalid UTF-8" in messages[2]
    assert got[4] == (6, {"_id": "c"})


def test_json_array_form(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    path.write_text('  [{"_id": {"$oid": "x1"}}, 7, {"id": "x2"}]', encoding="utf-8")
    got = _records(path)
    assert got[0] == (1, {"_id": "x1"})
    assert isinstance(got[1][1], RecordError) and got[1][0] == 2
    assert got[2] == (3, {"id": "x2"})


def test_broken_json_array_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    path.write_text('[{"id": "x1"}, {"id": ', encoding="utf-8")
    ((line, error),) = _records(path)
    assert line == 1 and isinstance(error, RecordError) and "broken JSON array" in error.message


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "products.xlsx"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"unknown format '\.xlsx'"):
        _records(path)


def test_error_and_report_text_name_file_line_and_field() -> None:
    error = RecordError("p.csv", 12, "keywords", "not a list literal")
    assert str(error) == "p.csv:12: keywords: not a list literal"
    assert str(RecordError("p.csv", 3, None, "broken")) == "p.csv:3: broken"
    report = ReadReport("p.csv", 5, 1, (error,))
    assert report.summary().splitlines() == ["p.csv: 5 loaded, 1 rejected",
                                             "  p.csv:12: keywords: not a list literal"]
