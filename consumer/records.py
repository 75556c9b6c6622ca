"""Readers for the platform's exports: CSV, JSON Lines and MongoDB JSON (``$oid``/``$date``).

Readers never stop at a bad record: they yield the good ones and a ``RecordError`` that
names file, line and field for each bad one, so a loader can count and report rejects.
"""

from __future__ import annotations

import ast
import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

# A field bigger than this is read (so the row can be rejected with a reason by the
# schema's own limits) instead of aborting the whole CSV with csv.Error.
csv.field_size_limit(16 * 1024 * 1024)

Record = dict[str, Any]


@dataclass(frozen=True)
class RecordError:
    file: str
    line: int
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


@dataclass(frozen=True)
class ReadReport:
    """What a reader loaded and what it refused (the first ``max_errors`` reasons kept)."""

    path: str
    loaded: int
    rejected: int
    errors: tuple[RecordError, ...] = field(default_factory=tuple)

    def summary(self) -> str:
        text = f"{self.path}: {self.loaded} loaded, {self.rejected} rejected"
        return "\n  ".join([text, *map(str, self.errors[:10])])


def unwrap_mongo(value: Any) -> Any:
    """MongoDB extended JSON to plain values: {"$oid": x} → x, {"$date": x} → x, …"""
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, inner),) = value.items()
            if key in ("$oid", "$date", "$numberLong", "$numberInt", "$numberDecimal", "$numberDouble"):
                if key == "$date" and isinstance(inner, dict):
                    return unwrap_mongo(inner)
                if key in ("$numberLong", "$numberInt"):
                    return int(inner)
                if key in ("$numberDecimal", "$numberDouble"):
                    return float(inner)
                return inner
        return {k: unwrap_mongo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_mongo(v) for v in value]
    return value


def parse_list(value: Any) -> list[Any]:
    """A list, a Python/JSON list literal (the HYPD exports), or a blank cell."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError) as exc:
                raise ValueError(f"not a list literal: {text[:60]!r}") from exc
            if not isinstance(parsed, list):
                raise ValueError(f"not a list literal: {text[:60]!r}")
            return parsed
        return [text]
    raise ValueError(f"expected a list, got {type(value).__name__}")


def _not_utf8(value: object) -> bool:
    """True for text read with ``surrogateescape`` that held bytes which are not UTF-8."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _csv_records(path: Path) -> Iterator[tuple[int, Record | RecordError]]:
    # surrogateescape: a bad byte rejects its own row, not the rest of the file.
    with path.open(newline="", encoding="utf-8", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle)
        try:
            for row in reader:
                line = reader.line_num
                if None in row:  # more cells than header columns
                    yield line, RecordError(str(path), line, None, "more cells than columns")
                    continue
                bad = next((k for k, v in row.items() if _not_utf8(v)), None)
                if bad is not None:
                    name = None if _not_utf8(bad) else bad
                    yield line, RecordError(str(path), line, name, "invalid UTF-8")
                    continue
                yield line, dict(row)
        except (csv.Error, UnicodeDecodeError) as exc:
            yield reader.line_num, RecordError(str(path), reader.line_num, None, f"unreadable CSV: {exc}")


def _json_records(path: Path) -> Iterator[tuple[int, Record | RecordError]]:
    with path.open("rb") as handle:
        head = handle.read(64).lstrip()
    if head.startswith(b"["):  # one JSON array (mongoexport --jsonArray)
        try:
            docs = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            yield 1, RecordError(str(path), 1, None, f"broken JSON array: {exc}")
            return
        for i, doc in enumerate(docs, start=1):
            if isinstance(doc, dict):
                yield i, unwrap_mongo(doc)
            else:
                yield i, RecordError(str(path), i, None, "array item is not an object")
        return
    with path.open("rb") as handle:  # JSON Lines (mongoexport's default)
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                doc = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                yield line_no, RecordError(str(path), line_no, None, f"invalid UTF-8: {exc}")
                continue
            except json.JSONDecodeError as exc:
                yield line_no, RecordError(str(path), line_no, None, f"broken JSON: {exc.msg}")
                continue
            if not isinstance(doc, dict):
                yield line_no, RecordError(str(path), line_no, None, "line is not a JSON object")
                continue
            yield line_no, unwrap_mongo(doc)


def read_records(path: Path) -> Iterator[tuple[int, Record | RecordError]]:
    """(line, record or error) for every record of a CSV, JSON Lines or MongoDB JSON export."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _csv_records(path)
    elif suffix in (".json", ".jsonl", ".ndjson"):
        yield from _json_records(path)
    else:
        raise ValueError(f"{path}: unknown format {suffix!r}; expected .csv, .json, .jsonl or .ndjson")


def validation_error(path: Path, line: int, exc: ValidationError | ValueError) -> RecordError:
    """The first problem of a pydantic error, with the dotted field name it concerns."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        return RecordError(str(path), line, where, first["msg"])
    return RecordError(str(path), line, None, str(exc))


def field_error(path: Path, line: int, name: str, exc: Exception) -> RecordError:
    return RecordError(str(path), line, name, str(exc))
